"""Latency measured on the target: locally with ``time_evaluator``, or on a board over TVM RPC.

Every measurement checks the compiled model's output against PyTorch first (a mismatch is an error,
never a number), warms up, then takes ``repeat`` timings of ``number`` runs each and reports the
median and the 10th / 90th percentiles.
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .lowering import CompiledModel, check_numerics

__all__ = ["LatencyResult", "RemoteSpec", "RemoteError", "START_BOARD_HINT", "measure", "verify", "kernel_profile", "connect", "set_threads", "local_device_info"]


#: How to bring a board online; every "no board" message ends with it.
START_BOARD_HINT = "on the board run 'pip install apache-tvm' and 'python -m tvm.exec.rpc_server --host 0.0.0.0 --port 9090'"


class RemoteError(RuntimeError):
    """The board cannot be reached or dropped the session; the message says how to start one."""


@dataclass
class LatencyResult:
    median_ms: float
    p10_ms: float
    p90_ms: float
    runs_ms: list[float]
    threads: int
    target: str
    device: dict[str, Any]
    emulated: bool = False
    max_abs_error: float = 0.0
    #: ``[(kernel, ms per call summed over calls, calls, binary?)]`` from one instrumented run.
    kernels: list[tuple[str, float, int, bool]] = field(default_factory=list)
    #: Timing series taken (more than 1 when the first ones were disturbed; see UNSTABLE_SPREAD).
    attempts: int = 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RemoteSpec:
    """Where the board is: ``rpc=(host, port)`` or ``tracker=(host, port)`` with ``key``."""

    rpc: tuple[str, int] | None = None
    tracker: tuple[str, int] | None = None
    key: str | None = None
    timeout_s: int = 60

    def describe(self) -> str:
        if self.rpc:
            return f"rpc {self.rpc[0]}:{self.rpc[1]}"
        return f"tracker {self.tracker[0]}:{self.tracker[1]} key {self.key}"


def set_threads(threads: int) -> None:
    """Fix TVM's worker-thread count (and pin none), before the first parallel kernel runs."""
    import tvm

    os.environ["TVM_NUM_THREADS"] = str(threads)
    tvm.get_global_func("runtime.config_threadpool")(0, threads)


def local_device_info() -> dict[str, Any]:
    """This machine: CPU model, the ISA features in :data:`labnas.tvm.cpu.ISA_FLAGS` it has, cores, OS."""
    from .cpu import cpu_model, isa_summary

    return {
        "cpu": cpu_model(),
        "isa": isa_summary(),
        "machine": platform.machine(),
        "cores": os.cpu_count(),
        "os_bits": 64 if platform.architecture()[0] == "64bit" else 32,
        "system": f"{platform.system()} {platform.release()}",
    }


def connect(remote: RemoteSpec):
    """Open an RPC session; an unreachable board raises :class:`RemoteError` in at most the timeout."""
    from tvm import rpc

    try:
        if remote.rpc:
            return rpc.connect(remote.rpc[0], remote.rpc[1], session_timeout=remote.timeout_s)
        tracker = rpc.connect_tracker(remote.tracker[0], remote.tracker[1])
        return tracker.request(remote.key, session_timeout=remote.timeout_s, max_retry=2)
    except Exception as err:  # noqa: BLE001 - tvm raises TVMError / RuntimeError / OSError
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise RemoteError(f"cannot reach the board at {remote.describe()} ({first[:120]}); {START_BOARD_HINT}") from None


def _remote_device_info(session, target) -> dict[str, Any]:
    """What the board tells over RPC (its TVM thread count), plus what the target implies."""
    info: dict[str, Any] = {"remote": True, "machine": target.arch, "os_bits": 64 if target.arch in ("aarch64", "x86_64") else 32}
    if target.config and target.config.get("mcpu"):
        info["cpu"] = target.config["mcpu"]
    try:
        info["device_exists"] = bool(session.cpu().exist)
        info["threads"] = int(session.get_function("runtime.NumThreads")())
    except Exception:  # noqa: BLE001 - an older RPC server may lack the function
        pass
    return info


def kernel_profile(vm, args, runs: int = 1) -> list[tuple[str, float, int, bool]]:
    """Per-kernel wall time via the VM's instrument hook (TVM 0.27 has no VM profiler).

    Each kernel's time is its per-run total (summed over its calls in one run), median over ``runs``
    runs. The hook itself adds a few microseconds per call.
    """
    totals: dict[str, list[float]] = defaultdict(lambda: [0.0] * runs)
    calls: dict[str, int] = defaultdict(int)
    started: dict[str, float] = {}
    current = [0]

    def instrument(func, symbol, before_run, ret_value, *rest):
        if before_run:
            started[symbol] = time.perf_counter()
        else:
            totals[symbol][current[0]] += time.perf_counter() - started.pop(symbol, time.perf_counter())
            if current[0] == 0:
                calls[symbol] += 1
        return 0

    from .kernels import SCHEDULES  # the hand-scheduled binary kernels

    vm.set_instrument(instrument)  # call measure()'s timing first: the hook stays on this VM
    for current[0] in range(runs):
        vm["main"](*args)
    return sorted(
        ((name, 1e3 * float(np.median(t)), calls[name], any(kind in name for kind in SCHEDULES)) for name, t in totals.items()),
        key=lambda row: -row[1],
    )


#: A timing series whose p90 - p10 exceeds this fraction of its median was disturbed (another process took
#: the cores); it is timed again, up to UNSTABLE_RETRIES times, and the steadiest series is kept.
UNSTABLE_SPREAD = 0.5
UNSTABLE_RETRIES = 2

#: Inputs tried by the numerics check before a mismatch is an error.
NUMERICS_ATTEMPTS = 3


def _checked_input(vm, dev, compiled: CompiledModel, seed: int):
    """Run the compiled model on random inputs until one matches PyTorch; return it and its max error.

    An untrained BNN is chaotic: one activation within rounding of its threshold that flips early
    can avalanche through later binarizers (seen on about 1 in 10 random 224 networks, input-specific).
    A wrong kernel fails on every input, so :data:`NUMERICS_ATTEMPTS` inputs are tried.
    """
    import tvm

    from .lowering import LoweringError

    last: LoweringError | None = None
    for attempt in range(NUMERICS_ATTEMPTS):
        x = np.random.default_rng(seed + attempt).standard_normal(compiled.input_shape).astype("float32")
        xi = tvm.runtime.tensor(x, dev)
        try:
            return xi, check_numerics(vm["main"](xi).numpy(), compiled.reference(x), "compiled model")
        except LoweringError as err:
            last = err
    raise LoweringError(f"{last} on all {NUMERICS_ATTEMPTS} test inputs")


def verify(compiled: CompiledModel, seed: int = 0) -> float:
    """Check a locally runnable compiled model against PyTorch as :func:`measure` does (up to
    :data:`NUMERICS_ATTEMPTS` random inputs); return the max abs error or raise LoweringError."""
    import tvm
    from tvm import relax

    dev = tvm.cpu()
    return _checked_input(relax.VirtualMachine(compiled.executable, dev), dev, compiled, seed)[1]


def _stats(runs_s: list[float]) -> tuple[float, float, float, list[float]]:
    ms = [1e3 * r for r in runs_s]
    return float(np.median(ms)), float(np.percentile(ms, 10)), float(np.percentile(ms, 90)), ms


def measure(
    compiled: CompiledModel,
    remote: RemoteSpec | None = None,
    number: int = 5,
    repeat: int = 7,
    threads: int | None = None,
    profile_kernels: bool = False,
    emulated: bool = False,
    seed: int = 0,
) -> LatencyResult:
    """Check numerics against PyTorch, then time the compiled model (batch as compiled).

    Arguments:
        compiled: from :func:`labnas.tvm.compile_model`.
        remote: a board over RPC; ``None`` runs on this machine (x86 targets only).
        number, repeat: ``repeat`` timings, each the mean of ``number`` runs, after one warm-up run.
        threads: TVM worker threads (local runs; a board uses its own setting). Default: all cores.
        profile_kernels: also time each kernel once (the per-kernel table of ``labnas profile``).
        emulated: label the numbers as coming from an emulator (not the board's performance).
    """
    import tvm
    from tvm import relax

    if remote is None:
        if compiled.target.is_remote_only:
            raise RemoteError(
                f"target {compiled.target.name} ({compiled.target.arch}) cannot run on this {platform.machine()} machine "
                f"and no board is connected; pass --rpc HOST:PORT or --tracker HOST:PORT --key KEY ({START_BOARD_HINT})"
            )
        threads = threads or os.cpu_count() or 1
        set_threads(threads)
        dev = tvm.cpu()
        vm = relax.VirtualMachine(compiled.executable, dev)
        device = local_device_info()
    else:
        session = connect(remote)
        with tempfile.TemporaryDirectory() as tmp:
            path = compiled.export(os.path.join(tmp, "labnas_model.so"))
            try:
                session.upload(path)
                lib = session.load_module("labnas_model.so")
            except Exception as err:  # noqa: BLE001
                raise RemoteError(f"the board at {remote.describe()} could not load the model: {str(err).splitlines()[0][:160]}") from None
        dev = session.cpu()
        vm = relax.VirtualMachine(lib, dev)
        device = _remote_device_info(session, compiled.target)
        threads = threads or int(device.get("threads", 0))  # the board's own default
    xi, err = _checked_input(vm, dev, compiled, seed)
    timer = vm.time_evaluator("main", dev, number=number, repeat=repeat)
    series = []
    for _ in range(1 + UNSTABLE_RETRIES):
        series.append(_stats(list(timer(xi).results)))
        median, p10, p90, _ = series[-1]
        if p90 - p10 <= UNSTABLE_SPREAD * median:
            break
    median, p10, p90, runs = min(series, key=lambda st: (st[2] - st[1]) / st[0])
    kernels = kernel_profile(vm, [xi]) if (profile_kernels and remote is None) else []
    return LatencyResult(median, p10, p90, runs, int(threads), compiled.target.name, device, emulated, err, kernels, len(series))
