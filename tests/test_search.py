"""The search end to end on a tiny space: outputs, budgets, failures, resume, workers, storages."""

import json
import multiprocessing as mp
import os
import sqlite3
import signal
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import optuna
import pandas as pd
import pytest

from labnas.search import SearchConfig, SpaceError, load_space, run_search
from labnas.search.study import open_storage

TINY = str(Path(__file__).parent / "data" / "tiny_space.toml")


def cli(*args, cwd=None, timeout=900):
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    return subprocess.run([sys.executable, "-m", "labnas.cli", *args], capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env)


def load(study_dir: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{study_dir / 'study.db'}")


def test_short_search_writes_consistent_outputs(tmp_path):
    space = load_space(TINY)
    config = SearchConfig(budget_ms=1000.0, timing_number=1, timing_repeat=3, threads=1)
    run = run_search(space, config, "t1", tmp_path, n_trials=3, progress=False)
    study, out = run.study, run.path
    df = pd.read_csv(out / "trials.csv")
    assert len(df) == 3 and set(df.state) == {"COMPLETE"}
    assert pd.read_parquet(out / "trials.parquet").shape == df.shape
    assert df.feasible.all() and df.trained.all()
    assert ((df.accuracy > 0) & (df.accuracy <= 1)).all() and (df.latency_ms > 0).all()
    assert (df.ops == df.bops / 64 + df.flops).all()
    assert (df.reference_ms > 0).all()  # the drift probe is timed with every measured trial
    # paired timing: latency_ms = median per-round ratio x the reference's calibration (stored in the study)
    calibration = study.user_attrs["reference_calibration"]
    # a measured search times against the space's own all-sign network, named in its calibration and key
    assert calibration["workload"].startswith(f"baseline {space.family} all-sign ")
    assert calibration["key"].endswith(f" | reference {calibration['workload']}")
    assert df.reference_calibrated_ms.to_numpy() == pytest.approx([calibration["ms"]] * len(df), abs=1e-4)
    assert df.latency_ms.to_numpy() == pytest.approx((df.latency_ratio * df.reference_calibrated_ms).to_numpy(), rel=1e-3, abs=1e-4)  # CSV: 4 decimals
    assert (df.latency_raw_ms > 0).all()
    for row in df.itertuples():  # layer columns agree with the stored spec
        spec = json.loads(row.spec)
        assert spec["layers"][0]["binarizer"] == row.L00_binarizer and spec["layers"][15]["binarizer"] == row.L15_binarizer
        assert row.n_lab == sum(layer["binarizer"] == "lab" for layer in spec["layers"])
        trial = study.trials[row.trial]
        assert trial.values[0] == pytest.approx(row.accuracy, abs=1e-5)  # the CSV keeps 5 decimals
        assert trial.constraints["latency_ms"] == pytest.approx(row.latency_ms - 1000.0)
    front = pd.read_csv(out / "pareto.csv")
    assert len(front) >= 1 and set(front.trial) <= set(df.trial)
    best = json.loads((out / "best_spec.json").read_text())
    assert best["accuracy"] == pytest.approx(front.accuracy.max(), abs=1e-5)
    summary = run.results.summary()  # what the CLI prints, read back from the same files
    assert (summary.trials, summary.complete, summary.feasible, summary.failed, summary.pruned) == (3, 3, 3, 0, 0)
    assert summary.latency_range_ms == pytest.approx((df.latency_ms.min(), df.latency_ms.max()))
    assert summary.reference_ms == pytest.approx((df.reference_ms.min(), df.reference_ms.max()))
    assert summary.latency_median_ms == pytest.approx(df.latency_ms.median())
    # every candidate within 1000 ms: the summary says the budget did not bind and offers the median
    note = summary.budget_note(1000.0)
    assert note and "did not bind" in note and f"--budget-ms {df.latency_ms.median():.3g}" in note
    assert summary.budget_note(float(df.latency_ms.max()) * 0.99) is None  # one over the budget: it binds
    assert run.results.best["trial"] == best["trial"]


def _summary(**fields):
    from labnas.results import SearchSummary

    base = dict(trials=3, complete=3, feasible=3, failed=0, pruned=0, failures=(), latency_range_ms=(2.0, 4.0),
                latency_predicted=False, reference_ms=None, latency_median_ms=3.0, budget_ms=20.0, estimator="published")
    return SearchSummary(**{**base, **fields})


def test_the_summary_groups_failures_by_reason_and_says_how_many_more():
    failures = tuple((i, f"latency: TimingDisturbed: the reference ran at {1 + i / 10:.2f} ms") for i in range(10))
    failures += tuple((10 + k, f"accuracy: EstimatorError: reason {chr(97 + k)}") for k in range(7))
    lines = _summary(failed=17, failures=failures).failure_lines(most=5)
    assert lines[0] == "  trials 0, 1, 2, 3, 4, 5, 6, 7 and 2 more failed: latency: TimingDisturbed: the reference ran at 1.00 ms"
    assert lines[1] == "  trial 10 failed: accuracy: EstimatorError: reason a"
    assert len(lines) == 6 and lines[-1].startswith("  ... 3 more reasons")


def test_a_busy_machine_gets_advice_about_threads_not_the_budget():
    busy = _summary(complete=0, feasible=0, failed=14, latency_range_ms=None, latency_median_ms=None,
                    stopped={"disturbed": 14})
    text = str(busy)
    assert "too busy to time on" in text and "--threads 1" in text and "raise --budget-ms" not in text
    assert "14 disturbed trial(s) have no answer of their own and do not count" in text
    assert "raise --budget-ms or run more --trials" in _summary(feasible=0).next_step()


def test_suggestions_are_on_the_corrected_scale_and_python_callers_get_the_warnings():
    # calibrated while the machine ran 1.53x slow: the study's latencies read 1.53x high
    slow = _summary(latency_range_ms=(6.0, 8.2), latency_median_ms=6.6, reference_median_ms=4.2, reference_calibrated_ms=6.426)
    assert slow.scale_error() == pytest.approx(1.53, abs=0.005)
    note = slow.budget_note(20.0)
    assert "--budget-ms 4.31" in note and "3.92 .. 5.36 ms (corrected for the slow calibration)" in note
    text = str(slow)  # what print(run.results.summary()) shows
    assert "warning: the reference workload ran at 4.200 ms" in text and "warning: the budget did not bind" in text
    assert "--budget-ms 6.6" not in text


def test_the_budget_note_needs_enough_complete_trials():
    from labnas.results import SearchSummary

    def summary(complete):
        return SearchSummary(trials=complete, complete=complete, feasible=complete, failed=0, pruned=0, failures=(),
                             latency_range_ms=(2.0, 4.0), latency_predicted=False, reference_ms=None,
                             latency_median_ms=3.0)

    assert summary(2).budget_note(20.0) is None
    assert "all 3 complete candidates ran in 2.00 .. 4.00 ms, under 20 ms" in summary(3).budget_note(20.0)
    assert "--budget-ms 3 (their median)" in summary(3).budget_note(20.0)
    assert summary(3).budget_note(3.5) is None


def test_a_candidate_near_the_budget_is_timed_again_and_both_timings_are_recorded(tmp_path):
    from labnas.search.objective import near_budget

    assert near_budget(19.0, 20.0, 0.1) and near_budget(21.9, 20.0, 0.1) and not near_budget(17.9, 20.0, 0.1)
    assert not near_budget(20.0, 20.0, 0.0)
    # the window reaches further above the budget than below it: disturbances slow runs down
    assert near_budget(25.9, 20.0, 0.1, 0.3) and not near_budget(26.1, 20.0, 0.1, 0.3) and not near_budget(17.9, 20.0, 0.1, 0.3)
    assert SearchConfig(budget_ms=20.0).retime_margin_above > SearchConfig(budget_ms=20.0).retime_margin
    space = load_space(TINY)
    far = SearchConfig(budget_ms=1000.0, timing_number=1, timing_repeat=2, threads=1, accuracy="published")
    run = run_search(space, far, "far", tmp_path, n_trials=1, progress=False)
    study, _ = run.study, run.path
    first = study.trials[0].user_attrs
    assert "latency_retimed_ms" not in first  # far from the budget: one timing
    # a budget at the candidate's own latency, with a margin no host drift leaves
    near = SearchConfig(budget_ms=first["latency_ms"], timing_number=1, timing_repeat=2, threads=1, retime_margin=0.9,
                        retime_margin_above=0.9, accuracy="published", retime_pauses_s=(0.0, 0.1))
    run = run_search(space, near, "near", tmp_path, n_trials=1, progress=False)
    study, out = run.study, run.path
    attrs = study.trials[0].user_attrs
    assert attrs["latency_ms"] == min(attrs["latency_first_ms"], attrs["latency_retimed_ms"])
    assert attrs["latency_timings"] == 3  # the first timing and one re-timing per pause
    row = pd.read_csv(out / "trials.csv").iloc[0]
    assert row.latency_retimed_ms == pytest.approx(attrs["latency_retimed_ms"], abs=1e-4)


def test_over_budget_candidates_are_never_trained(tmp_path):
    space = load_space(TINY)
    config = SearchConfig(budget_ms=0.0001, timing_number=1, timing_repeat=2, threads=1)
    run = run_search(space, config, "t2", tmp_path, n_trials=3, progress=False)
    study, out = run.study, run.path
    for t in study.trials:
        assert t.state == optuna.trial.TrialState.COMPLETE
        assert t.user_attrs["feasible"] is False and t.user_attrs["trained"] is False
        assert "train_s" not in t.user_attrs
        assert "accuracy" not in t.user_attrs  # never trained: no accuracy, not 0
        assert t.constraints["latency_ms"] > 0
    assert pd.read_csv(out / "trials.csv").accuracy.isna().all()
    assert pd.read_csv(out / "pareto.csv").empty and not (out / "best_spec.json").exists()


def test_identical_specs_are_not_trained_twice_and_do_not_count(tmp_path, capsys):
    space = load_space(TINY)
    space.binarizers, space.lab_kernels = ["sign"], [3]  # a space of exactly one architecture
    config = SearchConfig(budget_ms=1000.0, timing_number=1, timing_repeat=2, threads=1)
    run = run_search(space, config, "t3", tmp_path, n_trials=3, progress=False)
    study, _ = run.study, run.path
    trained = [t for t in study.trials if "duplicate_of" not in t.user_attrs]
    assert len(trained) == 1 and len(study.trials) == 1  # the space is exhausted after one: the search stops
    assert "every one of the space's 1 architectures has been tried" in capsys.readouterr().err


@pytest.mark.slow
def test_repeated_specs_do_not_count_toward_the_trials(tmp_path):
    """TPE re-proposes specs in a small categorical space; the study still ends with n distinct candidates."""
    space = load_space(TINY)  # 9 architectures
    config = SearchConfig(budget_ms=1000.0, timing_number=1, timing_repeat=2, threads=1, startup_trials=2)
    run = run_search(space, config, "t3b", tmp_path, n_trials=6, progress=False)
    done = [t for t in run.study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    distinct = {t.user_attrs["spec_key"] for t in done}
    assert len(distinct) == 6 == len([t for t in done if "duplicate_of" not in t.user_attrs])
    assert all(t.user_attrs["duplicate_of"] < t.number for t in done if "duplicate_of" in t.user_attrs)


def test_failing_candidate_is_a_failed_trial_and_the_search_goes_on(tmp_path):
    # XNOR-Net's 11x11/4 stem at 3x100x100 leaves 2x2 features for its 6x6 'valid' binary conv: every compile fails.
    text = Path(TINY).read_text().replace('family = "bireal18"', 'family = "xnornet_alexnet"').replace("[3, 8, 8]", "[3, 100, 100]")
    text = text.replace("layers = [0, 15]", "layers = [0, 1]")
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    config = SearchConfig(budget_ms=1000.0, timing_number=1, timing_repeat=2, threads=1)
    run = run_search(load_space(str(bad)), config, "t4", tmp_path, n_trials=2, progress=False)
    study, out = run.study, run.path
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.FAIL] * 2
    assert all(t.user_attrs["error"].startswith("latency:") for t in study.trials)
    df = pd.read_csv(out / "trials.csv")
    assert list(df.state) == ["FAIL", "FAIL"] and df.error.str.startswith("latency:").all()


def test_a_diverging_proxy_is_recorded_as_a_failed_trial_with_its_reason(tmp_path):
    diverging = tmp_path / "diverging.toml"
    diverging.write_text(Path(TINY).read_text().replace("lr = 0.0025", "lr = 1e30"))
    config = SearchConfig(budget_ms=1000.0, timing_number=1, timing_repeat=2, threads=1)
    run = run_search(load_space(str(diverging)), config, "div", tmp_path, n_trials=2, progress=False)
    study, out = run.study, run.path
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.FAIL] * 2
    assert {t.user_attrs["failure"] for t in study.trials} <= {"diverged", "chance"}
    assert all(t.user_attrs["error"].startswith("training:") and "accuracy" not in t.user_attrs for t in study.trials)
    assert pd.read_csv(out / "pareto.csv").empty


def test_published_estimator_search_trains_nothing(tmp_path):
    placement = tmp_path / "placement.toml"
    placement.write_text(Path(TINY).read_text().replace("lab_kernel = [3, 5]", "lab_kernel = [3]"))
    config = SearchConfig(budget_ms=1000.0, timing_number=1, timing_repeat=2, threads=1, accuracy="published")
    run = run_search(load_space(str(placement)), config, "pub", tmp_path, n_trials=3, progress=False)
    study, out = run.study, run.path
    df = pd.read_csv(out / "trials.csv")
    if "stopped_by" in df:  # a trial refused on a busy machine (another test running) is run again, not counted
        assert (df[df.state == "FAIL"].stopped_by == "disturbed").all()
        df = df[df.state == "COMPLETE"]
    assert set(df.state) == {"COMPLETE"} and len(df) == 3 and (df.estimator == "published").all()
    assert (df.fidelity_epochs == 0).all()
    # predicted ImageNet top-1: 53.2 % all-sign .. 59.1 % all-LAB for Bi-Real-18
    assert ((df.accuracy > 0.53) & (df.accuracy < 0.60)).all()
    assert study.user_attrs["labnas"]["accuracy"] == "published"


@pytest.mark.parametrize(
    "args,message",
    [
        (["--budget-ms", "0"], "must be a number > 0"),
        (["--budget-ms", "20", "--data-dir", "/nonexistent/fmnist"], "--data-dir /nonexistent/fmnist is not used"),
        (["--budget-ms", "20", "--accuracy", "magic"], "invalid choice: 'magic'"),
        (["--budget-ms", "20", "--space", "nope"], "unknown search space 'nope'"),
        (["--budget-ms", "20", "--target", "riscv"], "unknown target 'riscv'"),
        (["--budget-ms", "20", "--storage", "postgresql+psycopg2://u:p@127.0.0.1:1/db"], "cannot open storage"),
    ],
)
def test_search_bad_input_is_one_line_and_writes_nothing(tmp_path, args, message):
    r = cli("search", "--space", TINY, "--results", str(tmp_path / "res"), *args)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr
    assert not (tmp_path / "res").exists() or not any((tmp_path / "res").rglob("*.csv"))


def test_malformed_space_and_missing_dataset(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[space\nfamily = 1")
    with pytest.raises(SpaceError, match="bad.toml: malformed TOML"):
        load_space(str(bad))
    bad.write_text(Path(TINY).read_text().replace('binarizer = ["sign", "lab"]', 'binarizer = ["sign", "tanh"]'))
    with pytest.raises(SpaceError, match=r"\[choices\].binarizer"):
        load_space(str(bad))
    fm = tmp_path / "fm.toml"
    fm.write_text(Path(TINY).read_text().replace('dataset = "digits"', 'dataset = "fashion-mnist"'))
    r = cli("search", "--budget-ms", "20", "--space", str(fm), "--data-dir", str(tmp_path / "missing"), "--results", str(tmp_path / "res"))
    assert r.returncode == 2 and "does not exist" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "res").exists()


def _complete_trials(db: Path) -> int:
    """COMPLETE trials in a study.db, read without writing (opening it as an Optuna storage would create its schema)."""
    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as con:
            return con.execute("SELECT COUNT(*) FROM trials WHERE state = 'COMPLETE'").fetchone()[0]
    except sqlite3.Error:  # not created yet, or mid-write
        return 0


def _open_fresh_sqlite(barrier, url: str, study_dir: str, results) -> None:
    barrier.wait()
    try:
        open_storage(url, Path(study_dir))
        results.put("ok")
    except Exception as err:  # noqa: BLE001 - reported to the parent
        results.put(str(err))


def test_processes_opening_one_fresh_sqlite_together_all_succeed(tmp_path):
    # Optuna writes its schema version row on first open; processes starting together race on it (seen in CI).
    ctx = mp.get_context("fork")
    for rep in range(5):
        url = f"sqlite:///{tmp_path / f'race{rep}.db'}"
        barrier, results = ctx.Barrier(4), ctx.Queue()
        procs = [ctx.Process(target=_open_fresh_sqlite, args=(barrier, url, str(tmp_path), results)) for _ in range(4)]
        for p in procs:
            p.start()
        outcomes = [results.get(timeout=120) for _ in procs]
        for p in procs:
            p.join()
        assert outcomes == ["ok"] * 4, outcomes


@pytest.mark.slow
def test_kill_minus_nine_then_resume(tmp_path):
    args = ["search", "--budget-ms", "1000", "--space", TINY, "--results", str(tmp_path), "--study", "k9", "--trials", "6",
            "--threads", "1", "--no-progress"]
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    log = tmp_path / "first_run.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "labnas.cli", *args], env=env, stdout=out, stderr=subprocess.STDOUT)
    db = tmp_path / "k9" / "study.db"
    deadline = time.time() + 900
    while time.time() < deadline and proc.poll() is None and _complete_trials(db) < 2:
        time.sleep(1)
    exited = proc.poll()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert exited is None, f"the search ended (exit {exited}) before it could be killed: {log.read_text()[-2000:]}"
    complete = load(tmp_path / "k9", "k9").get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    done_before = [(t.number, t.values) for t in complete]
    assert len(done_before) >= 2, log.read_text()[-2000:]
    r = cli(*args)
    assert r.returncode == 0, r.stderr
    after = {t.number: t for t in load(tmp_path / "k9", "k9").trials}
    for number, values in done_before:
        assert after[number].values == values
    finished = [t for t in after.values() if t.state.is_finished()]
    assert len(finished) >= 6


@pytest.mark.slow
def test_two_workers_on_a_journal_file(tmp_path):
    journal = tmp_path / "study.log"
    r = cli("search", "--budget-ms", "1000", "--space", TINY, "--results", str(tmp_path), "--study", "j2", "--trials", "4",
            "--workers", "2", "--threads", "1", "--storage", str(journal), "--no-progress")
    assert r.returncode == 0, r.stderr
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    study = optuna.load_study(study_name="j2", storage=JournalStorage(JournalFileBackend(str(journal))))
    numbers = [t.number for t in study.trials]
    assert sorted(numbers) == list(range(len(numbers))) and len(numbers) == 4
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert len(pd.read_csv(tmp_path / "j2" / "trials.csv")) == 4


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("LABNAS_TEST_POSTGRES"), reason="needs LABNAS_TEST_POSTGRES (.ci/run starts PostgreSQL)")
def test_two_workers_on_postgresql(tmp_path):
    url = os.environ["LABNAS_TEST_POSTGRES"]
    name = f"pg-{os.getpid()}-{int(time.time())}"
    r = cli("search", "--budget-ms", "1000", "--space", TINY, "--results", str(tmp_path), "--study", name, "--trials", "4",
            "--workers", "2", "--threads", "1", "--storage", url, "--no-progress")
    assert r.returncode == 0, r.stderr
    study = optuna.load_study(study_name=name, storage=url)
    assert len(study.trials) == 4 and len({t.number for t in study.trials}) == 4
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)


def test_multi_objective_nsga2_records_accuracy_latency_and_ops(tmp_path):
    space = load_space(TINY)
    config = SearchConfig(budget_ms=1000.0, objectives="accuracy,latency,ops", timing_number=1, timing_repeat=2, threads=1,
                          sampler="nsga2", population=4)
    run = run_search(space, config, "mo", tmp_path, n_trials=3, progress=False)
    study, out = run.study, run.path
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE", "MINIMIZE"]
    assert isinstance(study.sampler, optuna.samplers.NSGAIISampler)
    for t in study.trials:
        acc, lat, ops = t.values
        assert acc == t.user_attrs["accuracy"] and lat == t.user_attrs["latency_ms"] and ops == t.user_attrs["ops"]
    assert len(pd.read_csv(out / "pareto.csv")) >= 1


def test_cli_summary_lists_each_failure_reason_once(tmp_path):
    text = Path(TINY).read_text().replace('family = "bireal18"', 'family = "xnornet_alexnet"').replace("[3, 8, 8]", "[3, 100, 100]")
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace("layers = [0, 15]", "layers = [0, 1]"))
    r = cli("search", "--budget-ms", "20", "--space", str(bad), "--results", str(tmp_path / "res"), "--trials", "2", "--no-progress")
    assert r.returncode == 0, r.stderr
    out = " ".join(r.stdout.split())  # rich wraps long lines
    assert "2 failed" in out and "trials 0, 1 failed: latency: RuntimeError" in out and out.count("failed: latency:") == 1
    assert "no candidate finished: every trial failed" in out and "best_spec.json" not in out and "next: labnas" not in out
    assert "Traceback" not in r.stderr


def test_the_trial_record_is_the_one_list_of_columns_and_the_readme_documents_each():
    from labnas.search.record import CSV_COLUMNS, TrialRecord, column_meanings, store

    study = optuna.create_study()
    trial = study.ask()
    store(trial, accuracy=0.5, n_lab=3)
    with pytest.raises(KeyError, match="not trial-record fields: \\['acuracy'\\]"):
        store(trial, acuracy=0.5)  # a typo is an error, not a silent new column
    record = TrialRecord.from_attrs({**trial.user_attrs, "from_an_older_version": 1})
    assert record.accuracy == 0.5 and record.n_lab == 3 and record.latency_ms is None
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("### The columns of `trials.csv`"):readme.index("## Python API")]
    assert [c for c in CSV_COLUMNS if f"`{c}`" not in section] == []
    assert set(column_meanings()) == set(CSV_COLUMNS)


def test_timing_waits_for_training_workers_and_training_waits_for_timing(tmp_path, monkeypatch):
    """The host lock that keeps a worker's timing off the cores other workers train on."""
    import threading

    from labnas.timing import host_lock

    monkeypatch.setattr(host_lock, "LOCK_PATH", tmp_path / "host.lock")
    ctx = mp.get_context("fork")
    holding, release = ctx.Event(), ctx.Event()

    def trainer():
        with host_lock.shared_training():
            holding.set()
            release.wait(30)

    proc = ctx.Process(target=trainer)
    proc.start()
    assert holding.wait(30)
    with host_lock.shared_training():  # trainers share the machine
        pass
    got = threading.Event()

    def timer():
        with host_lock.exclusive_timing():
            got.set()

    thread = threading.Thread(target=timer)
    thread.start()
    assert not got.wait(1.0)  # the timing waits while a worker trains
    release.set()
    proc.join(30)
    assert got.wait(30)  # and runs once it is done
    thread.join()


def test_a_compile_that_times_a_kernel_strategy_converts_its_own_shared_hold(tmp_path, monkeypatch):
    """A compile holds the host lock shared and may time a kernel strategy (exclusive) inside: the process's hold
    is converted in place and back, where a second open of the lock file would wait for the first forever."""
    import fcntl
    import threading

    from labnas.timing import host_lock

    monkeypatch.setattr(host_lock, "LOCK_PATH", tmp_path / "host.lock")
    modes = []

    def compile_with_a_strategy_timing():
        with host_lock.shared_training():
            modes.append(host_lock._held["mode"])
            with host_lock.exclusive_timing():
                modes.append(host_lock._held["mode"])
            modes.append(host_lock._held["mode"])
        modes.append(host_lock._held["fh"])

    thread = threading.Thread(target=compile_with_a_strategy_timing, daemon=True)
    thread.start()
    thread.join(20)
    assert not thread.is_alive()
    assert modes == [fcntl.LOCK_SH, fcntl.LOCK_EX, fcntl.LOCK_SH, None]


def test_pruning_records_the_fidelity_reached_and_never_trains_over_budget(tmp_path):
    from labnas.search import Objective
    from labnas.search.study import make_estimator

    three = tmp_path / "three_epochs.toml"
    three.write_text(Path(TINY).read_text().replace("epochs = 1", "epochs = 3"))
    space = load_space(str(three))
    # a pruner that stops every run at its first report: accuracy never reaches 1.1 (the study's own; the config
    # only has to name one, so that the objective reports each epoch)
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=1.1))
    config = SearchConfig(budget_ms=1000.0, timing_number=1, timing_repeat=2, threads=1, pruner="median")
    study.optimize(Objective(space, make_estimator(space, config, None), config), n_trials=1)
    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert trial.user_attrs["fidelity_epochs"] == 1.0 and "accuracy" not in trial.user_attrs
    assert list(trial.intermediate_values) == [1] and 0 < trial.intermediate_values[1] <= 1
    over = SearchConfig(budget_ms=0.0001, timing_number=1, timing_repeat=2, threads=1, pruner="median")
    study.optimize(Objective(space, make_estimator(space, over, None), over), n_trials=1)
    trial = study.trials[1]
    assert trial.state == optuna.trial.TrialState.COMPLETE and trial.user_attrs["trained"] is False
    assert "fidelity_epochs" not in trial.user_attrs and trial.intermediate_values == {}


def test_pruner_needs_a_single_objective(capsys):
    from labnas.cli import main

    assert main(["search", "--budget-ms", "20", "--space", TINY, "--pruner", "hyperband", "--objectives", "accuracy,latency"]) == 2
    assert "needs --objectives accuracy" in capsys.readouterr().err


def test_the_progress_bars_best_is_the_trial_best_spec_names():
    """Most accurate feasible trial; equal accuracy: the faster; equal both: the earlier (results.best_key)."""
    from labnas.search.results import best_key
    from labnas.search.study import _Bar

    study = optuna.create_study(directions=["maximize", "minimize"])
    attrs = [dict(accuracy=0.5, latency_ms=5.0, feasible=True), dict(accuracy=0.5, latency_ms=4.0, feasible=True),
             dict(accuracy=0.7, latency_ms=30.0, feasible=False), dict(accuracy=0.5, latency_ms=4.0, feasible=True)]
    bar = _Bar(4, 0, plain=True)
    for a in attrs:
        trial = optuna.trial.create_trial(values=[a["accuracy"], a["latency_ms"]], user_attrs=a)
        study.add_trial(trial)
        bar.finished(study, study.trials[-1])
    assert bar.best[0] == 1  # not 0 (slower), not 2 (over budget), not 3 (a later tie)
    feasible = [(best_key(a["accuracy"], a["latency_ms"], n), n) for n, a in enumerate(attrs) if a["feasible"]]
    assert min(feasible)[1] == bar.best[0]


def test_a_machine_too_busy_to_time_on_stops_the_search_without_eating_trials(tmp_path, capsys):
    """Trials refused as disturbed are not counted; three in a row stop the search with advice about threads; the
    next run times their candidates; a thread count of another scale is refused once the study holds timings."""
    from labnas.search.study import MAX_DISTURBED_IN_A_ROW, SearchError

    space = load_space(TINY)
    space.lab_kernels = [3]  # 4 candidates, each with a published accuracy
    config = SearchConfig(budget_ms=1000.0, timing_number=1, timing_repeat=2, threads=1, accuracy="published", sampler="tpe",
                          startup_trials=10)
    run = run_search(space, config, "busy", tmp_path, n_trials=1, progress=False)
    study = run.study
    calibration = dict(study.user_attrs["reference_calibration"])
    # the study's scale says the reference runs 200x faster than it does: every timing reads as a very busy machine
    study.set_user_attr("reference_calibration", {**calibration, "ms": calibration["ms"] / 200})
    capsys.readouterr()
    run = run_search(space, config, "busy", tmp_path, n_trials=3, progress=False)
    err = capsys.readouterr().err
    trials = run.study.trials
    disturbed = [t for t in trials if t.user_attrs.get("stopped_by") == "disturbed"]
    repeats = [t for t in trials if "duplicate_of" in t.user_attrs]  # of trial 0: they time nothing
    assert len(disturbed) == MAX_DISTURBED_IN_A_ROW and len(trials) == 1 + MAX_DISTURBED_IN_A_ROW + len(repeats)
    assert "could not be timed because the machine was too busy" in err and "--threads 1" in err
    summary = run.results.summary()
    assert summary.stopped == {"disturbed": MAX_DISTURBED_IN_A_ROW} and summary.failed == MAX_DISTURBED_IN_A_ROW
    assert "do not count" in str(summary)
    # the machine is quiet again (the true scale back): the disturbed candidates are timed, the study ends with 3
    run.study.set_user_attr("reference_calibration", calibration)
    run = run_search(space, config, "busy", tmp_path, n_trials=3, progress=False)
    counted = [t for t in run.study.trials if t.state == optuna.trial.TrialState.COMPLETE and "duplicate_of" not in t.user_attrs]
    assert len(counted) == 3
    assert {t.user_attrs["spec_key"] for t in disturbed} <= {t.user_attrs["spec_key"] for t in counted}
    assert all(t.user_attrs["accuracy_basis"].startswith(("published", "interpolated")) for t in counted)
    assert all("ImageNet stage ablation" in t.user_attrs["accuracy_validated"] for t in counted)  # LAB 3x3 only: covered
    # another thread count would mix latency scales: refused, naming the flag
    with pytest.raises(SearchError, match="timed 3 candidate\\(s\\) with 1 TVM threads; 2 would put latencies"):
        run_search(space, SearchConfig(**{**config.__dict__, "threads": 2}), "busy", tmp_path, n_trials=4, progress=False)


def test_a_study_with_no_timed_candidate_takes_a_new_thread_count(tmp_path, capsys):
    import optuna

    from labnas.search.study import _check_threads

    study = optuna.create_study()
    _check_threads(study, "s", None)
    study.set_user_attr("reference_calibration", {"key": "k", "ms": 8.02})
    _check_threads(study, "s", 1)  # nothing timed yet: taken, said, and the old count's calibration dropped
    assert study.user_attrs["timing_threads"] == 1 and study.user_attrs["reference_calibration"] is None
    assert "now times with 1 TVM threads (was all cores)" in capsys.readouterr().err
