"""Run an exported labnas model: ``python -m labnas.run OUT/model.so [--input x.npy|image.png] [--check]``.

Needs only the TVM runtime and numpy (Pillow to read an image): this is what goes on the board. The model's
``model.json`` (written by ``labnas export`` beside the library) says the input shape and pixel scaling.
``--rpc HOST:PORT`` runs it on a board over TVM RPC instead of here. ``--check`` runs the export's fixed
input and compares the output with PyTorch's, recorded at export time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

import numpy as np
from ._errors import LabnasError

#: Largest relative L2 error between the runner's output and the exported PyTorch output (as at export).
CHECK_TOLERANCE = 2e-2


@contextlib.contextmanager
def quiet_native_stderr():
    """Silence C++ log lines written to fd 2 (TVM 0.27 logs one 'Scope Loaded/Saving' warning per kernel when a
    library is loaded or saved); Python exceptions still carry their messages."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class RunError(LabnasError, RuntimeError):
    """A model or input that cannot be run; one line, exit status 2."""


def _meta(library: Path) -> dict:
    path = library.with_suffix(".json")
    if library.suffix != ".so":
        raise RunError(f"{library} is not a model library: give the model.so that 'labnas export' wrote (its model.json is "
                       "read from beside it)")
    if not library.exists():
        raise RunError(f"{library} does not exist; export one with 'labnas export ... --out DIR'")
    if not path.exists():
        raise RunError(f"{path} is missing: the runner needs the model.json that 'labnas export' writes beside the library")
    return json.loads(path.read_text())


def _input(meta: dict, source: str | None, library: Path) -> np.ndarray:
    shape = tuple(meta["input"]["shape"])
    if source is None:
        return np.load(library.parent / meta["check"]["input"])
    path = Path(source)
    if not path.exists():
        raise RunError(f"input {path} does not exist")
    if path.suffix == ".npy":
        x = np.load(path).astype(np.float32)
        if x.shape == shape[1:]:
            x = x[None]
        if x.shape != shape:
            raise RunError(f"{path} has shape {x.shape}; the model takes {shape} (or {shape[1:]})")
        return x
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = img.convert("RGB" if shape[1] == 3 else "L").resize((shape[3], shape[2]))
            raw = np.asarray(img, np.float32).reshape(shape[2], shape[3], shape[1]).transpose(2, 0, 1)
    except (UnidentifiedImageError, OSError) as err:
        raise RunError(f"{path} is neither a .npy array nor an image Pillow can read ({type(err).__name__})") from None
    scaling = meta["input"]
    # an 8-bit image's 0..255 in the training data's own pixel units (digits count 0..16), then its normalisation
    raw = raw * (float(scaling.get("pixel_max", 255.0)) / 255.0)
    return ((raw - scaling["pixel_mean"]) / scaling["pixel_std"])[None].astype(np.float32)


def _runs_here_or_says_where(meta: dict, library: Path, rpc) -> None:
    """A library built for another CPU architecture cannot be loaded here: say where it runs instead of failing inside
    TVM's loader."""
    import platform

    arch = (meta.get("target") or {}).get("arch")
    if rpc is None and arch and arch != platform.machine():
        name = (meta.get("target") or {}).get("name", arch)
        raise RunError(f"{library} is an {arch} build (target {name}), this machine is {platform.machine()}: run it on the board "
                       "with --rpc HOST:PORT (python -m tvm.exec.rpc_server there), or start the emulated board here "
                       "(python -m labnas.tvm.arm_emulator serve --port 9090) and pass --rpc 127.0.0.1:9090")


def run(library: str | Path, x: np.ndarray, rpc: tuple[str, int] | None = None) -> np.ndarray:
    """The model's output on ``x`` (shape as in model.json), here or on the board at ``rpc``."""
    import tvm
    from tvm import relax

    library = Path(library)
    if rpc is None:
        with quiet_native_stderr():
            module = tvm.runtime.load_module(str(library))
        vm = relax.VirtualMachine(module, tvm.cpu())
        return vm["main"](tvm.runtime.tensor(x)).numpy()
    from tvm import rpc as tvm_rpc

    try:
        session = tvm_rpc.connect(rpc[0], rpc[1], session_timeout=60)
    except Exception as err:  # noqa: BLE001
        raise RunError(f"cannot reach the board at {rpc[0]}:{rpc[1]} ({str(err).strip().splitlines()[0][:100] if str(err).strip() else type(err).__name__})") from None
    session.upload(str(library))
    dev = session.cpu()
    vm = relax.VirtualMachine(session.load_module(library.name), dev)
    return vm["main"](tvm.runtime.tensor(x, dev)).numpy()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m labnas.run", description=__doc__.split("\n\n")[0])
    p.add_argument("library", help="model.so written by 'labnas export'")
    p.add_argument("--input", help="a .npy array (C,H,W or 1,C,H,W, already scaled) or an image file; default: the check input")
    p.add_argument("--check", action="store_true", help="compare the output on the check input with the export's PyTorch output")
    p.add_argument("--rpc", help="HOST:PORT of a board running 'python -m tvm.exec.rpc_server'")
    p.add_argument("--top", type=int, default=5, help="classes to print (default 5)")
    args = p.parse_args(argv)
    try:
        library = Path(args.library)
        meta = _meta(library)
        rpc = None
        if args.rpc:
            host, _, port = args.rpc.rpartition(":")
            if not host or not port.isdigit():
                raise RunError(f"--rpc must be HOST:PORT, got {args.rpc!r}")
            rpc = (host, int(port))
        _runs_here_or_says_where(meta, library, rpc)
        x = _input(meta, None if args.check else args.input, library)
        out = run(library, x, rpc)
    except RunError as err:
        print(f"labnas.run: error: {err}", file=sys.stderr)
        return 2
    logits = out.reshape(-1)
    top = np.argsort(-logits)[: args.top]
    print("top classes: " + ", ".join(f"{int(c)} ({logits[c]:.3f})" for c in top))
    if args.check:
        ref = np.asarray(meta["check"]["output"], np.float32)
        rel = float(np.linalg.norm(logits - ref) / max(np.linalg.norm(ref), 1e-12))
        ok = rel <= CHECK_TOLERANCE and int(logits.argmax()) == meta["check"]["top1"]
        print(f"check {'OK' if ok else 'FAILED'}: relative L2 error {rel:.2e} against PyTorch, top-1 {int(logits.argmax())} "
              f"(exported {meta['check']['top1']})")
        return 0 if ok else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
