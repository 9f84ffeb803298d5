"""What a new user trips over: interrupts, unreachable boards, committed results, progress lines, help, list."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest

from labnas.cli import main as labnas_main

TINY = str(Path(__file__).parent / "data" / "tiny_space.toml")


def _search_cmd(results: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "labnas.cli", "search", "--budget-ms", "1000", "--space", TINY, "--trials", "6",
            "--results", str(results), *extra]


def test_ctrl_c_stops_the_search_at_once_with_130_and_the_resume_command(tmp_path):
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.Popen(_search_cmd(tmp_path, "--no-progress"), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    db = tmp_path / "tiny-host-1000ms" / "study.db"
    deadline = time.time() + 300
    while time.time() < deadline:  # wait until a trial is running (compiling, timing or training)
        if db.exists():
            with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
                try:
                    if con.execute("SELECT COUNT(*) FROM trials").fetchone()[0] >= 1:
                        break
                except sqlite3.OperationalError:
                    pass
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, out + err
    assert "interrupted" in err and "resume with: labnas search --budget-ms 1000" in err
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
        n_trials = con.execute("SELECT COUNT(*) FROM trials").fetchone()[0]
    assert n_trials < 6  # it stopped instead of going on
    assert (tmp_path / "tiny-host-1000ms" / "trials.csv").exists()  # what was stored is written

    # the interrupted trial is not counted as done: the resumed search runs its candidate again and ends with the
    # trials it was asked for, each with an answer of its own
    import optuna

    study = optuna.load_study(study_name="tiny-host-1000ms", storage=f"sqlite:///{db}")
    stopped = [t for t in study.trials if t.user_attrs.get("stopped_by") == "interrupted"]
    assert len(stopped) == 1 and stopped[0].state == optuna.trial.TrialState.FAIL, [(t.state, t.user_attrs) for t in study.trials]
    done_before = len([t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE])
    asked = done_before + 1
    again = _search_cmd(tmp_path, "--no-progress")
    again[again.index("--trials") + 1] = str(asked)
    r = subprocess.run(again, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "running again the 1 candidate(s) that Ctrl-C or a busy machine stopped" in r.stderr
    study = optuna.load_study(study_name="tiny-host-1000ms", storage=f"sqlite:///{db}")
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE and "duplicate_of" not in t.user_attrs]
    assert len(complete) == asked
    assert stopped[0].user_attrs["spec_key"] in {t.user_attrs["spec_key"] for t in complete}


def test_an_unreachable_board_fails_before_any_compile(tmp_path, capsys):
    start = time.time()
    code = labnas_main(["search", "--budget-ms", "20", "--space", TINY, "--target", "x86", "--rpc", "127.0.0.1:9",
                        "--rpc-timeout", "5", "--results", str(tmp_path / "res")])
    assert code == 2 and time.time() - start < 60
    err = capsys.readouterr().err
    assert "cannot reach the board at rpc 127.0.0.1:9" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "res").exists()


def test_a_results_folder_without_its_storage_is_not_overwritten(tmp_path, capsys):
    folder = tmp_path / "tiny-host-1000ms"
    folder.mkdir()
    (folder / "trials.csv").write_text("trial,state\n0,COMPLETE\n1,COMPLETE\n")
    code = labnas_main(["search", "--budget-ms", "1000", "--space", TINY, "--trials", "1", "--results", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err
    assert "cannot be resumed and would be overwritten" in err and "--results DIR or --study NAME" in err
    assert (folder / "trials.csv").read_text() == "trial,state\n0,COMPLETE\n1,COMPLETE\n"
    assert not (folder / "study.db").exists()


def test_no_progress_prints_one_line_per_trial(tmp_path, capsys):
    assert labnas_main(["search", "--budget-ms", "1000", "--space", TINY, "--trials", "2", "--results", str(tmp_path), "--no-progress", "--threads", "1"]) == 0
    lines = [l for l in capsys.readouterr().out.splitlines() if l.startswith("trial ")]
    assert [l.split(":")[0] for l in lines] == ["trial 0", "trial 1"]
    assert all("latency" in l and "best: trial" in l for l in lines)


def test_list_names_spaces_targets_binarizers_and_estimators(capsys):
    assert labnas_main(["list"]) == 0
    out = capsys.readouterr().out
    for word in ("bireal18_placement (default)", "labbnn", "published", "arm-a76", "approx_sign", "reactnet_mbv1", "supernet"):
        assert word in out


def test_help_explains_objectives_sampler_seed_and_binarizers(capsys):
    with pytest.raises(SystemExit):
        labnas_main(["search", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "{'accuracy','accuracy,latency','accuracy,latency,ops'}" in text and "Pareto front" in text
    assert "NSGA-II" in text and "seed of the sampler" in text
    with pytest.raises(SystemExit):
        labnas_main(["profile", "--help"])
    assert "approx_sign" in capsys.readouterr().out


def test_profile_repeat_zero_is_refused_before_compiling(capsys):
    start = time.time()
    assert labnas_main(["profile", "bireal18", "--input", "3x16x16", "--repeat", "0"]) == 2
    assert "--repeat and --number must be >= 1" in capsys.readouterr().err and time.time() - start < 10


def test_missing_cross_compiler_fails_before_compiling(tmp_path):
    # a PATH with python only: the aarch64 cross compiler is not found, whatever this machine has installed
    env = {**os.environ, "PATH": str(Path(sys.executable).parent)}
    start = time.time()
    r = subprocess.run([sys.executable, "-m", "labnas.cli", "profile", "bireal18", "--input", "3x16x16", "--target", "arm",
                        "--out", str(tmp_path)], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "apt-get install gcc-aarch64-linux-gnu" in r.stderr
    assert not list(tmp_path.iterdir())  # nothing compiled, nothing written
    assert time.time() - start < 60


@pytest.mark.slow
def test_every_verb_once_on_tiny_inputs_without_a_traceback(tmp_path):
    """The user-level smoke run: each verb once, output checked for tracebacks."""
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    study = tmp_path / "res" / "tiny-host-1000ms"
    steps = [
        ["list"],
        ["ops", "bireal18", "--input", "3x16x16"],
        ["profile", "bireal18", "--input", "3x16x16", "--repeat", "2", "--number", "1", "--threads", "1", "--out", str(tmp_path / "prof")],
        ["search", "--budget-ms", "1000", "--space", TINY, "--trials", "2", "--results", str(tmp_path / "res"), "--no-progress", "--threads", "1"],
        ["report", str(study), "--no-measure"],
        ["plot", str(study), "--out", str(tmp_path / "plot.png")],
        ["train", str(study), "--epochs", "1", "--out", str(tmp_path / "run"), "--no-progress"],
        ["export", str(tmp_path / "run" / "model.pt"), "--out", str(tmp_path / "export")],
        ["profile", "--spec", str(tmp_path / "run" / "model.pt"), "--repeat", "2", "--number", "1", "--threads", "1",
         "--out", str(tmp_path / "prof")],
    ]
    for step in steps:
        r = subprocess.run([sys.executable, "-m", "labnas.cli", *step], env=env, capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, f"{step}: {r.stderr[-2000:]}"
        assert "Traceback" not in r.stdout + r.stderr, step
    r = subprocess.run([sys.executable, "-m", "labnas.run", str(tmp_path / "export" / "model.so"), "--check"],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "check OK" in r.stdout and "Traceback" not in r.stderr


def test_an_unwritable_results_folder_is_one_line(capsys):
    assert labnas_main(["search", "--budget-ms", "20", "--results", "/proc/labnas-results"]) == 2
    err = capsys.readouterr().err
    assert "cannot write /proc/labnas-results" in err and len(err.strip().splitlines()) == 1


def test_trials_csv_is_readable(tmp_path):
    import pandas as pd

    assert labnas_main(["search", "--budget-ms", "1000", "--space", TINY, "--trials", "2", "--results", str(tmp_path), "--no-progress", "--threads", "1"]) == 0
    text = (tmp_path / "tiny-host-1000ms" / "trials.csv").read_text()
    df = pd.read_csv(tmp_path / "tiny-host-1000ms" / "trials.csv")
    assert all(len(str(v).split(".")[-1]) <= 5 for v in df.accuracy.dropna())
    lab = df.L00_lab_kernel.dropna()
    assert ",3.0," not in text and ",5.0," not in text and all(float(v).is_integer() for v in lab)


def test_every_package_is_listed_for_the_wheel():
    """pyproject lists the packages explicitly (search_spaces/ is mapped into the wheel); a subpackage missing from
    the list would be missing from every non-editable install."""
    import tomllib

    repo = Path(__file__).resolve().parents[1]
    listed = set(tomllib.loads((repo / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(repo).parts) for p in (repo / "labnas").rglob("__init__.py")}
    assert found - listed == set()


@pytest.mark.slow
def test_a_wheel_install_finds_its_spaces_from_any_directory(tmp_path):
    """pip install . (not editable) into a fresh venv, then the main command from a folder outside the repo."""
    # a copy without build/ or *.egg-info: an in-tree build would reuse stale files of an earlier build
    repo = tmp_path / "src"
    shutil.copytree(Path(__file__).resolve().parents[1], repo,
                    ignore=shutil.ignore_patterns("build", "*.egg-info", ".git", "results", "__pycache__", ".venv"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=300)
    # When this interpreter is itself a venv, the new venv's "system" packages are the base interpreter's, without
    # torch: list this environment's site folders in the new venv (plain path lines: their .pth hooks, such as an
    # editable labnas, do not run, so labnas is the wheel installed below).
    import site
    import sysconfig

    inner = Path(subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                capture_output=True, text=True, check=True).stdout.strip())
    outer = [*site.getsitepackages(), sysconfig.get_paths()["purelib"]]
    (inner / "outer_environment.pth").write_text("".join(f"{d}\n" for d in dict.fromkeys(outer) if Path(d).is_dir()))
    r = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--no-deps", str(repo)], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    # TPE for two trials: this test is about finding the installed spaces; the front search's table build (minutes
    # at 224) is covered on the tiny space in test_front.py
    r = subprocess.run([str(venv / "bin" / "labnas"), "search", "--budget-ms", "20", "--trials", "2", "--sampler", "tpe", "--no-progress"],
                       cwd=elsewhere, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "space bireal18_placement" in " ".join(r.stdout.split())
    assert (elsewhere / "results" / "bireal18_placement-host-20ms" / "trials.csv").exists()


def test_stopping_an_rpc_server_group_leaves_no_worker_behind():
    """The fixture pattern of the RPC tests: a server started in its own session and killed as a group takes its
    popen workers with it (the emulated board's qemu workers used to outlive the test run)."""
    import psutil

    from test_tvm import _free_port, _wait_port

    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "tvm.exec.rpc_server", "--host", "127.0.0.1", "--port", str(port),
                               "--port-end", str(port + 1)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        _wait_port(port)
        from tvm import rpc

        session = rpc.connect("127.0.0.1", port, session_timeout=30)
        session.cpu().exist  # a session runs in a forked worker of the server
        family = [server.pid] + [c.pid for c in psutil.Process(server.pid).children(recursive=True)]
        assert len(family) >= 2
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
    time.sleep(0.5)
    alive = [p for p in family if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert alive == []


def test_optuna_dashboard_is_an_extra_and_documented():
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    repo = Path(__file__).resolve().parents[1]
    extras = tomllib.loads((repo / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(r.startswith("optuna-dashboard") for r in extras["dashboard"])
    readme = (repo / "README.md").read_text()
    assert 'pip install -e ".[dashboard]"' in readme and "optuna-dashboard sqlite:///results/" in readme


def test_the_progress_bar_shows_eta_phase_and_best():
    from rich.progress import TimeRemainingColumn

    from labnas.search.study import _Bar

    bar = _Bar(3, 0)
    try:
        assert any(isinstance(c, TimeRemainingColumn) for c in bar.progress.columns)
        bar.phase("trial 0: compile and time")
        assert bar.progress.tasks[0].fields["phase"] == "trial 0: compile and time"
    finally:
        bar.close()
