"""Compiling many networks at once, one per core, for a target this machine runs.

Compiling one network (torch.export, the Relax pipeline, LLVM) takes seconds on one core, and a search or a latency
table compiles tens of them before it times any: with two free cores two worker processes halve that wait (on a VM
whose two vCPUs give one core's throughput, as measured on the 2-vCPU Xeon this was written on, the gain is ~10 %).
Each worker compiles with :func:`labnas.tvm.compile_model` under the caller's locks (a search: the machine's host
lock shared while compiling and exclusive while a kernel strategy is timed, so strategy timings are never disturbed
by the other worker), writes the network as a shared library, and the parent loads it: the loaded library runs the
same machine code as the in-memory build (measured: the same output, timings within noise).

Only for targets this machine executes (``host`` and its variants): a cross-compiled library cannot be loaded here.
Callers fall back to :func:`compile_model` for the rest, and so does a one-core machine.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from torch import nn

from .._errors import LabnasError
from .lowering import CompiledModel
from .targets import TargetPreset

__all__ = ["CompileFailed", "CompileOutcome", "compile_many", "can_compile_in_parallel"]


@dataclass
class CompileOutcome:
    """One job's result: the compiled network (``None`` when it failed), the error message of a failure, and the
    compile's own seconds (in its worker)."""

    compiled: CompiledModel | None
    error: str | None
    seconds: float


def can_compile_in_parallel(target: TargetPreset, workers: int | None = None) -> bool:
    """Whether :func:`compile_many` would use worker processes: a target that runs here and more than one core."""
    from tvm.support.cc import get_cc

    local = not target.is_remote_only and not target.cross_compiler
    return local and _worker_count(workers, 2) > 1 and get_cc() is not None  # the library is linked by a C compiler


def _worker_count(workers: int | None, jobs: int) -> int:
    return max(1, min(workers or os.cpu_count() or 1, jobs))


def compile_many(
    jobs: list[tuple[nn.Module, tuple[int, ...]]],
    target: TargetPreset,
    threads: int | None = None,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
    keep_going: bool = False,
    workdir: str | Path | None = None,
    compile_lock: Callable | None = None,
    timing_lock: Callable | None = None,
) -> list[CompileOutcome]:
    """Compile every ``(model, input_shape)`` of ``jobs`` for ``target`` (``threads``: the TVM worker count the
    networks will run with, which kernel strategies are chosen for), in job order.

    ``workers``: processes (default: one per CPU); one, or a target this machine cannot run, compiles here one after
    another. ``progress(done)`` is called after each job. ``keep_going``: a job that fails is returned with its error
    (a search's trial fails on its own); otherwise the first failure is raised (:class:`CompileFailed` with the
    worker's message; compiled here: the error itself). ``workdir``: where the libraries are written and kept
    (default: a temporary folder removed when done; a loaded library stays valid after its file goes).
    ``compile_lock`` / ``timing_lock``: context-manager factories held around each compile and while a kernel
    strategy is timed (a search passes the host lock's shared and exclusive holds,
    :mod:`labnas.timing.host_lock`); module-level functions, since workers receive them pickled.
    """
    if not jobs:
        return []
    if not can_compile_in_parallel(target, workers) or _worker_count(workers, len(jobs)) == 1:
        return _compile_here(jobs, target, threads, progress, keep_going, compile_lock, timing_lock)
    folder = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="labnas-compile-"))
    folder.mkdir(parents=True, exist_ok=True)
    outcomes: list[CompileOutcome | None] = [None] * len(jobs)
    try:
        locks = (compile_lock, timing_lock)
        for done, (i, result) in enumerate(_run_workers(jobs, target, threads, folder, _worker_count(workers, len(jobs)), locks), 1):
            path, strategies, frozen, seconds, error = result
            if error is not None and not keep_going:
                raise CompileFailed(error)
            outcomes[i] = CompileOutcome(_load(path, target, jobs[i][1], frozen, strategies) if error is None else None, error, seconds)
            if progress:
                progress(done)
    finally:
        if not workdir:
            shutil.rmtree(folder, ignore_errors=True)
    return outcomes  # type: ignore[return-value]


class CompileFailed(LabnasError, RuntimeError):
    """A network a compile worker could not compile; the message is the worker's error."""


#: What a worker prints, with the job's number, when that job's result file is written.
DONE_MARK = "labnas-compiled"


def _run_workers(jobs, target, threads, folder: Path, count: int, locks: tuple):
    """Yield ``(job index, (path, strategies, frozen, seconds, error))`` as worker processes finish jobs.

    Workers are ``python -m labnas.tvm._compile_worker`` processes (not multiprocessing: its spawn start re-runs the
    caller's main script, which a user's script without a ``__main__`` guard does not survive). Each reads job
    numbers on stdin, unpickles ``folder/jobN.pkl``, writes ``folder/jobN.out.pkl`` and prints :data:`DONE_MARK` N."""
    import pickle
    import selectors
    import subprocess
    import sys

    for i, (model, shape) in enumerate(jobs):
        with open(folder / f"job{i}.pkl", "wb") as fh:
            pickle.dump({"model": model, "shape": tuple(shape), "target": target, "threads": threads,
                         "path": str(folder / f"net{i}.so"), "compile_lock": locks[0], "timing_lock": locks[1]}, fh)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    waiting = list(range(len(jobs)))
    selector = selectors.DefaultSelector()
    workers = []
    log = open(folder / "workers.log", "w")
    try:
        for _ in range(count):
            proc = subprocess.Popen([sys.executable, "-m", "labnas.tvm._compile_worker", str(folder)], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=log, text=True, bufsize=1, env=env)
            workers.append(proc)
            selector.register(proc.stdout, selectors.EVENT_READ, proc)
        busy = {}
        for proc in workers:
            if waiting:
                busy[proc.pid] = waiting.pop(0)
                proc.stdin.write(f"{busy[proc.pid]}\n")
        while busy:
            for key, _ in selector.select():
                proc = key.data
                line = proc.stdout.readline()
                if not line:  # the worker died: its job fails, the others go on without it
                    selector.unregister(proc.stdout)
                    job = busy.pop(proc.pid, None)
                    if job is not None:
                        code = proc.wait()
                        yield job, (None, [], None, 0.0, f"the compile worker died (exit code {code}); see {folder / 'workers.log'}")
                    continue
                if not line.startswith(DONE_MARK):
                    continue
                job = int(line.split()[1])
                with open(folder / f"job{job}.out.pkl", "rb") as fh:
                    result = pickle.load(fh)
                del busy[proc.pid]
                if waiting:
                    busy[proc.pid] = waiting.pop(0)
                    proc.stdin.write(f"{busy[proc.pid]}\n")
                yield job, result
    finally:
        for proc in workers:
            try:
                proc.stdin.close()
            except OSError:
                pass
        for proc in workers:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()


def _compile_here(jobs, target, threads, progress, keep_going, compile_lock, timing_lock) -> list[CompileOutcome]:
    import contextlib

    from .lowering import compile_model

    outcomes = []
    for done, (model, shape) in enumerate(jobs, 1):
        start = time.perf_counter()
        try:
            with (compile_lock or contextlib.nullcontext)():
                compiled = compile_model(model, tuple(shape), target, timing_lock=timing_lock, threads=threads)
            outcomes.append(CompileOutcome(compiled, None, time.perf_counter() - start))
        except Exception as err:  # noqa: BLE001 - returned with keep_going, else raised
            if not keep_going:
                raise
            outcomes.append(CompileOutcome(None, f"{type(err).__name__}: {err}", time.perf_counter() - start))
        if progress:
            progress(done)
    return outcomes


def _load(path: str, target: TargetPreset, shape, frozen, strategies) -> CompiledModel:
    import tvm

    return CompiledModel(tvm.runtime.load_module(path), target, tuple(shape), frozen, strategies, None)
