"""A compile worker of :mod:`labnas.tvm.compile_pool`: ``python -m labnas.tvm._compile_worker FOLDER``.

Reads job numbers N on stdin; for each, unpickles ``FOLDER/jobN.pkl`` (model, shape, target, threads, path),
compiles it under the locks the job names (a search: the machine's host lock, shared while compiling and exclusive
while a kernel strategy is timed),
writes the shared library to ``path`` and ``(path, strategies, frozen, seconds, error)`` to ``FOLDER/jobN.out.pkl``,
then prints ``labnas-compiled N``. An error is sent back as its one-line text; the worker goes on with the next job.
"""

from __future__ import annotations

import pickle
import sys
import time
from pathlib import Path


def compile_job(model, shape, target, threads, path: str, compile_lock=None, timing_lock=None):
    """``(path, strategies, frozen, seconds, error)`` of one job; ``error`` is ``None`` or the failure's text."""
    import contextlib

    from labnas.tvm.lowering import compile_model

    start = time.perf_counter()
    try:
        with (compile_lock or contextlib.nullcontext)():
            compiled = compile_model(model, shape, target, timing_lock=timing_lock, threads=threads)
            compiled.export(path)
    except Exception as err:  # noqa: BLE001 - sent to the parent, which decides
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        return None, [], None, time.perf_counter() - start, f"{type(err).__name__}: {first}"
    return path, compiled.strategies, compiled.frozen, time.perf_counter() - start, None


def main(folder: str) -> None:
    import torch

    from labnas.tvm.compile_pool import DONE_MARK

    torch.set_num_threads(1)  # the other cores belong to the other workers
    for line in sys.stdin:
        job = int(line)
        with open(Path(folder) / f"job{job}.pkl", "rb") as fh:
            spec = pickle.load(fh)
        result = compile_job(spec["model"], spec["shape"], spec["target"], spec["threads"], spec["path"], spec["compile_lock"],
                             spec["timing_lock"])
        with open(Path(folder) / f"job{job}.out.pkl", "wb") as fh:
            pickle.dump(result, fh)
        print(f"{DONE_MARK} {job}", flush=True)


if __name__ == "__main__":
    try:
        main(sys.argv[1])
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group; the parent reports it
        sys.exit(130)
