"""``labnas export``: a trained (or freshly initialised) network compiled for a target, ready to run there.

Writes into the output folder:

- ``model.so``: the frozen, bitpacked network compiled by TVM for the target (cross-linked for ARM);
- ``model.json``: input (shape, layout, pixel scaling), output (classes), the spec, the target, and a check:
  a fixed input (``check_input.npy``) with PyTorch's output on it (the runner compares against it);
- ``model.onnx`` with ``onnx=True``: the float graph for other runtimes (binarizers as float ops).
"""

from __future__ import annotations

import importlib.util

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch

from .._errors import LabnasError
from ..models import create_model
from .spec_source import SpecSource

__all__ = ["export_model", "ExportError", "default_input"]

FORMAT = 1


class ExportError(LabnasError, ValueError):
    """An export that cannot be made; the message names the fix."""


def default_input(source: SpecSource) -> tuple[int, int, int]:
    """The input shape a checkpoint was trained at, else 224 (ImageNet stem) or 32 (small stem)."""
    if source.checkpoint and "input" in source.checkpoint:
        return tuple(source.checkpoint["input"])  # type: ignore[return-value]
    size = 224 if source.spec.stem == "imagenet" else 32
    return (source.spec.in_channels, size, size)


def _load_model(source: SpecSource) -> torch.nn.Module:
    model = create_model(source.spec)
    if source.checkpoint is not None:
        try:
            model.load_state_dict(source.checkpoint["model"])
        except RuntimeError as err:
            raise ExportError(f"{source.origin}: its weights do not fit its spec ({str(err).splitlines()[0][:120]})") from None
    return model.eval()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def export_model(source: SpecSource, target, out_dir: str | Path, input_shape: tuple[int, int, int] | None = None,
                 onnx: bool = False) -> dict:
    """Compile ``source`` for ``target`` (a ``labnas.tvm.TargetPreset``) into ``out_dir``; return model.json's dict.

    The compiled host model's output on the check input is compared with PyTorch's before anything is
    written (a mismatch is an error); a cross-compiled model is checked by the runner on the board.
    """
    from ..tvm import compile_model
    from ..tvm.lowering import check_numerics

    if onnx:
        missing = [name for name in ("onnx", "onnxscript") if importlib.util.find_spec(name) is None]
        if missing:  # before minutes of compiling, not after
            raise ExportError(f"--onnx needs {' and '.join(missing)}: pip install -e '.[onnx]' (or pip install onnx onnxscript), "
                              "or drop --onnx")
    trained = tuple(source.checkpoint["input"]) if source.checkpoint and "input" in source.checkpoint else None
    if trained and input_shape and tuple(input_shape) != trained:
        raise ExportError(f"the weights were trained at input {'x'.join(map(str, trained))}, not "
                          f"{'x'.join(map(str, input_shape))}; leave {{opt:input_shape|--input}} out to export at the trained shape")
    shape = tuple(input_shape or default_input(source))
    if shape[0] != source.spec.in_channels:
        raise ExportError(f"input {shape} has {shape[0]} channels, the spec takes {source.spec.in_channels}")
    target.check_compiler()
    model = _load_model(source)
    compiled = compile_model(model, (1, *shape), target)
    x = np.random.default_rng(0).standard_normal((1, *shape)).astype(np.float32)
    reference = compiled.reference(x)
    if not target.cross_compiler:
        check_numerics(compiled.run_local(x), reference, "exported model")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp_lib = out / ".model.so.tmp.so"
    from ..run import quiet_native_stderr

    with quiet_native_stderr():
        compiled.export(str(tmp_lib))
    os.replace(tmp_lib, out / "model.so")
    np.save(out / "check_input.npy", x)
    ckpt = source.checkpoint or {}
    meta = {
        "format": FORMAT,
        "library": "model.so",
        "library_sha256": _sha256(out / "model.so"),
        "target": {"name": target.name, "arch": target.arch, "tvm": str(target.tvm_target())},
        "input": {"shape": [1, *shape], "dtype": "float32", "layout": "NCHW",
                  "pixel_mean": ckpt.get("pixel_mean", 0.0), "pixel_std": ckpt.get("pixel_std", 1.0),
                  "pixel_max": ckpt.get("pixel_max", 255.0)},
        "output": {"shape": list(reference.shape), "classes": source.spec.num_classes},
        "spec": source.spec.to_dict(),
        "trained": source.checkpoint is not None,
        "source": {"origin": source.origin, "trial": source.trial, **({"metrics": source.meta} if source.meta else {})},
        "check": {"input": "check_input.npy", "output": reference.ravel().tolist(),
                  "top1": int(reference.argmax())},
    }
    if onnx:
        try:
            torch.onnx.export(model, (torch.from_numpy(x),), str(out / "model.onnx"), dynamo=True)
        except Exception as err:  # noqa: BLE001 - the exporter raises many types
            raise ExportError(f"ONNX export failed ({type(err).__name__}: {str(err).splitlines()[0][:120]}); "
                              "pip install onnx onnxscript, or drop --onnx") from None
        meta["onnx"] = "model.onnx"
        if (out / "model.onnx.data").exists():  # weights the exporter stores beside the graph; ship both files
            meta["onnx_data"] = "model.onnx.data"
    (out / "model.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta
