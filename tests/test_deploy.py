"""From a search result to a model on the board: spec sources, labnas train (resume), export, the runner."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from labnas.cli import main as labnas_main
from labnas.deploy import SpecSourceError, load_spec_source
from labnas.deploy.training import TrainError, TrainSettings, train_spec
from labnas.models import ArchSpec, default_spec
from labnas.run import main as run_main

ROOT = Path(__file__).resolve().parents[1]
TINY = str(Path(__file__).parent / "data" / "tiny_space.toml")


def _small_spec(binarizer: str = "lab") -> ArchSpec:
    return default_spec("bireal18", binarizer, width_mult=0.25, in_channels=1, num_classes=10, stem="small")


def _fake_study(folder: Path) -> Path:
    """A results folder as the search writes it: trial 0 complete, 1 over budget, 2 failed."""
    spec = _small_spec().to_json()
    folder.mkdir(parents=True)
    pd.DataFrame([
        {"trial": 0, "state": "COMPLETE", "accuracy": 0.9, "latency_ms": 1.0, "ops": 1.0, "n_lab": 16, "feasible": True, "duplicate_of": None, "error": None, "spec": spec},
        {"trial": 1, "state": "COMPLETE", "accuracy": None, "latency_ms": 30.0, "ops": 1.0, "n_lab": 16, "feasible": False, "duplicate_of": None, "error": None, "spec": spec},
        {"trial": 2, "state": "FAIL", "accuracy": None, "latency_ms": None, "ops": None, "n_lab": 16, "feasible": None, "duplicate_of": None, "error": "training: diverged", "spec": spec},
    ]).to_csv(folder / "trials.csv", index=False)
    (folder / "best_spec.json").write_text(json.dumps({"trial": 0, "accuracy": 0.9, "spec": json.loads(spec)}))
    return folder


def test_spec_sources_every_form(tmp_path):
    study = _fake_study(tmp_path / "study")
    best = load_spec_source(study)
    assert best.trial == 0 and best.spec == _small_spec()
    assert load_spec_source(study, 0).meta["accuracy"] == 0.9
    wrapped = load_spec_source(study / "best_spec.json")  # the search's wrapped spec
    assert wrapped.spec == _small_spec() and wrapped.meta["accuracy"] == 0.9
    plain = tmp_path / "spec.json"
    _small_spec().save(plain)
    assert load_spec_source(plain).spec == _small_spec()
    committed = load_spec_source(ROOT / "results" / "examples" / "bireal18_placement-host-20ms" / "best_spec.json")
    assert committed.spec.family == "bireal18" and committed.trial is not None
    for args, message in (
        ((study, 9), "has no trial 9; its trials are 0..2"),
        ((study, 1), "over its latency budget"),
        ((study, 2), "is FAIL: training: diverged"),
        ((plain, 0), "^trial 0 needs a study results folder"),  # the parameter's name; the CLI says --trial
        ((tmp_path / "nope.json",), "does not exist"),
        ((tmp_path,), "not a study results folder"),
    ):
        with pytest.raises(SpecSourceError, match=message):
            load_spec_source(*args)


def test_profile_and_ops_take_best_spec_and_study_folders(tmp_path, capsys):
    study = _fake_study(tmp_path / "study")
    assert labnas_main(["ops", "--spec", str(study / "best_spec.json"), "--input", "1x8x8", "--json"]) == 0
    counted = json.loads(capsys.readouterr().out)
    assert counted["bops"] > 0
    assert labnas_main(["ops", "--spec", str(study), "--trial", "0", "--input", "1x8x8", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["bops"] == counted["bops"]
    assert labnas_main(["ops", "--spec", str(study), "--trial", "5", "--input", "1x8x8"]) == 2
    assert "has no trial 5" in capsys.readouterr().err


@pytest.mark.slow
def test_search_train_export_run_round_trip(tmp_path, capsys):
    from labnas.search import SearchConfig, load_space, run_search

    config = SearchConfig(budget_ms=1000.0, timing_number=1, timing_repeat=2, threads=1)
    study = run_search(load_space(TINY), config, "rt", tmp_path, n_trials=2, progress=False).path
    run_dir, export_dir = tmp_path / "train", tmp_path / "export"
    assert labnas_main(["train", str(study), "--trial", "0", "--epochs", "1", "--out", str(run_dir), "--no-progress"]) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs"] == 1 and 0.2 < metrics["accuracy"] <= 1.0 and metrics["origin"]["trial"] == 0
    assert labnas_main(["export", str(run_dir / "model.pt"), "--target", "host", "--out", str(export_dir), "--onnx"]) == 0
    meta = json.loads((export_dir / "model.json").read_text())
    assert meta["trained"] and meta["input"]["shape"] == [1, 1, 8, 8] and meta["output"]["classes"] == 10
    # the runner's output equals PyTorch's on the same input
    from labnas.deploy.export import _load_model
    from labnas.run import run

    x = np.random.default_rng(5).standard_normal((1, 1, 8, 8)).astype(np.float32)
    torch_out = _load_model(load_spec_source(run_dir / "model.pt"))(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(run(export_dir / "model.so", x), torch_out, rtol=1e-4, atol=1e-4)
    ort = pytest.importorskip("onnxruntime")  # the float graph for other runtimes gives the same logits
    session = ort.InferenceSession(str(export_dir / "model.onnx"))
    np.testing.assert_allclose(session.run(None, {session.get_inputs()[0].name: x})[0], torch_out, rtol=1e-4, atol=1e-4)
    capsys.readouterr()
    assert run_main([str(export_dir / "model.so"), "--check"]) == 0
    assert "check OK" in capsys.readouterr().out
    np.save(tmp_path / "x.npy", x[0])
    assert run_main([str(export_dir / "model.so"), "--input", str(tmp_path / "x.npy"), "--top", "1"]) == 0
    assert f"top classes: {int(torch_out.argmax())} " in capsys.readouterr().out


def _train_cmd(out: Path, spec: Path, epochs: int) -> list[str]:
    return [sys.executable, "-m", "labnas.cli", "train", str(spec), "--epochs", str(epochs), "--out", str(out),
            "--batch-size", "32", "--no-progress"]


@pytest.mark.slow
def test_resume_after_kill_minus_nine_gives_the_uninterrupted_weights(tmp_path):
    spec = tmp_path / "spec.json"
    _small_spec().save(spec)
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(_train_cmd(tmp_path / "killed", spec, 12), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    last = tmp_path / "killed" / "last.pt"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if last.exists() and torch.load(last, weights_only=False)["epoch"] >= 2:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (tmp_path / "killed" / "model.pt").exists()
    r = subprocess.run(_train_cmd(tmp_path / "killed", spec, 12) + ["--resume"], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(_train_cmd(tmp_path / "whole", spec, 12), env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    resumed = torch.load(tmp_path / "killed" / "model.pt", weights_only=False)["model"]
    whole = torch.load(tmp_path / "whole" / "model.pt", weights_only=False)["model"]
    assert resumed.keys() == whole.keys()
    for name in whole:
        torch.testing.assert_close(resumed[name], whole[name], rtol=0, atol=0, msg=name)


def test_train_refuses_another_runs_folder_and_a_foreign_checkpoint(tmp_path):
    settings = TrainSettings(epochs=1, batch_size=64)
    train_spec(_small_spec("sign"), settings, tmp_path / "done")
    assert (tmp_path / "done" / "model.pt").exists() and not (tmp_path / "done" / "last.pt").exists()  # no 100 MB leftover
    with pytest.raises(TrainError, match="already holds a finished run"):
        train_spec(_small_spec("sign"), settings, tmp_path / "done")
    train_spec(_small_spec("sign"), settings, tmp_path / "run", keep_last=True)
    with pytest.raises(TrainError, match="already holds a run"):
        train_spec(_small_spec("sign"), settings, tmp_path / "run")
    with pytest.raises(TrainError, match="another spec or recipe"):
        train_spec(_small_spec("lab"), settings, tmp_path / "run", resume=True)
    with pytest.raises(TrainError, match="nothing to resume"):
        train_spec(_small_spec("lab"), settings, tmp_path / "empty", resume=True)


def test_imagefolder_is_streamed_and_trains(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls, level in (("dark", 40), ("light", 210)):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(10):
            pixels = np.clip(rng.normal(level, 20, (20, 24, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / "imgs" / cls / f"{i}.png")
    settings = TrainSettings(dataset="imagefolder", data_dir=str(tmp_path / "imgs"), epochs=3, batch_size=4,
                             resolution=16, workers=0, lr=5e-3)
    metrics = train_spec(default_spec("bireal18", "sign", width_mult=0.25, num_classes=2, stem="small"), settings, tmp_path / "run")
    assert metrics["input"] == [3, 16, 16] and "2 classes" in metrics["dataset"] and "16 train / 4 test" in metrics["dataset"]
    assert metrics["accuracy"] == 1.0  # dark vs light is trivially separable


@pytest.mark.parametrize("args,message", [
    (["train", "STUDY", "--trial", "7"], "has no trial 7"),
    (["train", "STUDY", "--trial", "1"], "over its latency budget"),
    (["train", "STUDY", "--dataset", "imagefolder", "--data-dir", "EMPTY"], "must hold at least two class sub-folders"),
    (["train", "STUDY", "--dataset", "mnist"], "unknown dataset 'mnist'"),
    (["train", "STUDY", "--device", "cuda"], "no CUDA device"),
    (["export", "STUDY", "--target", "riscv"], "unknown target 'riscv'"),
    (["export", "STUDY", "--trial", "2"], "is FAIL"),
])
def test_deploy_bad_input_is_one_line_and_writes_nothing(tmp_path, args, message, capsys):
    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    study = _fake_study(tmp_path / "study")
    (tmp_path / "empty").mkdir()
    argv = [a.replace("STUDY", str(study)).replace("EMPTY", str(tmp_path / "empty")) for a in args]
    assert labnas_main([*argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def _have(tool: str) -> bool:
    return shutil.which(tool) is not None


@pytest.mark.slow
@pytest.mark.skipif(not all(_have(t) for t in ("debootstrap", "qemu-aarch64-static", "aarch64-linux-gnu-gcc")),
                    reason="needs debootstrap, qemu-user-static, gcc-aarch64-linux-gnu (.ci/run installs them)")
def test_aarch64_export_runs_on_the_emulated_board(tmp_path):
    from labnas.tvm.arm_emulator import DEFAULT_ROOT, build_root, server_command

    from test_tvm import _free_port, _wait_port

    run_dir = tmp_path / "train"
    train_spec(_small_spec("lab"), TrainSettings(epochs=1), run_dir)
    assert labnas_main(["export", str(run_dir / "model.pt"), "--target", "arm", "--out", str(tmp_path / "arm")]) == 0
    root = build_root(DEFAULT_ROOT)
    port = _free_port()
    cmd, env = server_command(root, port)
    board = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_port(port, timeout=180)
        r = subprocess.run([sys.executable, "-m", "labnas.run", str(tmp_path / "arm" / "model.so"), "--check",
                            "--rpc", f"127.0.0.1:{port}"], capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "check OK" in r.stdout
    finally:
        os.killpg(board.pid, signal.SIGKILL)
        board.wait()


def test_export_refuses_a_checkpoint_whose_weights_do_not_fit_its_spec(tmp_path, capsys):
    train_spec(_small_spec("sign"), TrainSettings(epochs=1), tmp_path / "run")
    ckpt = torch.load(tmp_path / "run" / "model.pt", weights_only=False)
    ckpt["spec"]["layers"][0]["binarizer"] = "lab"  # a LAB layer the weights have no parameters for
    torch.save(ckpt, tmp_path / "other.pt")
    assert labnas_main(["export", str(tmp_path / "other.pt"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "its weights do not fit its spec" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_onnx_without_its_packages_is_refused_before_compiling(tmp_path, monkeypatch):
    import importlib.util

    from labnas.deploy.export import ExportError, export_model
    from labnas.tvm import TARGETS

    spec = tmp_path / "spec.json"
    _small_spec().save(spec)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxscript" else real(name, *a))
    with pytest.raises(ExportError, match=r"needs onnxscript: pip install -e '\.\[onnx\]'"):
        export_model(load_spec_source(str(spec)), TARGETS["host"], tmp_path / "out", onnx=True)
    assert not (tmp_path / "out").exists()  # refused before anything was compiled or written


def _fake_export(folder: Path, arch: str = "x86_64", **scaling) -> Path:
    """model.so (a placeholder: these checks refuse before loading it) and the model.json an export writes."""
    folder.mkdir(parents=True)
    (folder / "model.so").write_bytes(b"\x7fELF placeholder")
    meta = {"target": {"name": "rpi4" if arch == "aarch64" else "host", "arch": arch},
            "input": {"shape": [1, 1, 8, 8], "pixel_mean": 0.0, "pixel_std": 1.0, **scaling},
            "check": {"input": "check_input.npy", "output": [0.0], "top1": 0}}
    (folder / "model.json").write_text(json.dumps(meta))
    return folder / "model.so"


def test_the_runner_refuses_with_one_line_what_it_cannot_run(tmp_path, capsys):
    library = _fake_export(tmp_path / "arm", arch="aarch64")
    assert run_main([str(library), "--check"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is an aarch64 build (target rpi4)" in err and "--rpc" in err
    assert run_main([str(library.with_suffix(".json"))]) == 2  # the JSON instead of the library
    assert "give the model.so" in capsys.readouterr().err
    here = _fake_export(tmp_path / "host")
    (tmp_path / "notes.txt").write_text("not an image")
    assert run_main([str(here), "--input", str(tmp_path / "notes.txt")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "neither a .npy array nor an image" in err


def test_an_8_bit_image_is_brought_to_the_training_data_pixel_range(tmp_path):
    """scikit-learn's digits count 0..16: a 0..255 PNG of a digit is scaled to that before the normalisation."""
    from PIL import Image

    from labnas.run import _input

    library = _fake_export(tmp_path / "digits", pixel_mean=4.0, pixel_std=6.0, pixel_max=16.0)
    img = np.zeros((8, 8), np.uint8)
    img[2:6, 3:5] = 255
    Image.fromarray(img).save(tmp_path / "digit.png")
    meta = json.loads(library.with_suffix(".json").read_text())
    x = _input(meta, str(tmp_path / "digit.png"), library)
    assert x.shape == (1, 1, 8, 8)
    assert np.isclose(x.max(), (16.0 - 4.0) / 6.0) and np.isclose(x.min(), -4.0 / 6.0)
    from labnas.data import load_digits
    assert load_digits().pixel_max == 16.0


def test_export_refuses_a_mid_training_checkpoint_and_a_shape_other_than_the_trained_one(tmp_path, capsys):
    train_spec(_small_spec("sign"), TrainSettings(epochs=1), tmp_path / "run", keep_last=True)
    with pytest.raises(SpecSourceError, match="per-epoch checkpoint, not its result"):
        load_spec_source(tmp_path / "run" / "last.pt")
    ckpt = torch.load(tmp_path / "run" / "model.pt", weights_only=False)
    trained = "x".join(map(str, ckpt["input"]))
    assert labnas_main(["export", str(tmp_path / "run" / "model.pt"), "--input", "1x32x32", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"trained at input {trained}, not 1x32x32" in err and len(err.strip().splitlines()) == 1
    del ckpt["pixel_mean"]
    torch.save(ckpt, tmp_path / "old.pt")
    with pytest.raises(SpecSourceError, match="does not record the input shape and pixel scaling"):
        load_spec_source(tmp_path / "old.pt")
