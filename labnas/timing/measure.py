"""Latency measured on the target: locally with ``time_evaluator``, or on a board over TVM RPC.

Every measurement checks the compiled model's output against PyTorch first (a mismatch is an error,
never a number), warms up, then takes ``repeat`` timings of ``number`` runs each and reports the
median and the 10th / 90th percentiles.
"""

from __future__ import annotations

import math
import platform
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..tvm.lowering import CompiledModel, LoweringError, check_numerics
from .reference import CalibratedReference
from .remote import START_BOARD_HINT, RemoteError, RemoteSpec
from .runner import VmRunner

__all__ = ["LatencyResult", "measure", "measure_in_passes", "verify", "kernel_profile"]


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
    #: Paired with the reference workload (:mod:`labnas.timing.paired`): ``median_ms`` is then the drift-corrected
    #: figure, ``raw_median_ms`` the candidate's own median, ``reference_ms`` the reference's median in the same
    #: rounds, ``reference_calibrated_ms`` its quiet time, ``paired_ratio`` the median per-round ratio.
    paired: bool = False
    raw_median_ms: float | None = None
    reference_ms: float | None = None
    reference_calibrated_ms: float | None = None
    paired_ratio: float | None = None
    #: Paired on this machine with several threads: the round trip of a cache line between two of its CPUs when the
    #: rounds began (ns; :mod:`labnas.timing.core_latency`), and whether that is further apart than the machine's
    #: best placement (a VM's vCPUs moved to cores without a shared cache). None over RPC, on one thread, unpaired,
    #: or without a C compiler.
    core_round_trip_ns: float | None = None
    cpus_apart: bool | None = None
    #: Paired on this machine during a slow spell of the host (nothing else running, the reference slower than its
    #: disturbance limit; :func:`labnas.timing.paired.slow_spell`): the reference's median over its calibration.
    host_slowdown: float | None = None
    #: Where the figure comes from: "measured" (timed on this machine or a board) or "simulated" (predicted from the
    #: compiled code on ``cpu_model``, :mod:`labnas.simulation`; then every percentile is the one figure).
    source: str = "measured"
    cpu_model: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def kernel_profile(runner: VmRunner, args, runs: int = 1) -> list[tuple[str, float, int, bool]]:
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

    from ..tvm.kernels import SCHEDULES  # the hand-scheduled binary kernels

    runner.vm.set_instrument(instrument)  # call measure()'s timing first: the hook stays on this VM
    for current[0] in range(runs):
        runner.run(*args)
    return sorted(
        ((name, 1e3 * float(np.median(t)), calls[name], any(kind in name for kind in SCHEDULES)) for name, t in totals.items()),
        key=lambda row: -row[1],
    )


#: A timing series whose p90 - p10 exceeds this fraction of its median was disturbed (another process took
#: the cores); it is timed again, up to UNSTABLE_RETRIES times, and the steadiest series is kept.
UNSTABLE_SPREAD = 0.5
UNSTABLE_RETRIES = 2

#: Paired timing: the reference is timed over at least this many ms per round, in at least this many rounds.
REFERENCE_MIN_MS = 2.0
PAIRED_MIN_ROUNDS = 5

#: Inputs tried by the numerics check before a mismatch is an error.
NUMERICS_ATTEMPTS = 3


def _checked_input(runner: VmRunner, compiled: CompiledModel, seed: int):
    """Run the compiled model on random inputs until one matches PyTorch; return it (on the device) and its
    max error.

    An untrained BNN is chaotic: one activation within rounding of its threshold that flips early
    can avalanche through later binarizers (seen on about 1 in 10 random 224 networks, input-specific).
    A wrong kernel fails on every input, so :data:`NUMERICS_ATTEMPTS` inputs are tried.
    """
    last: LoweringError | None = None
    for attempt in range(NUMERICS_ATTEMPTS):
        x = np.random.default_rng(seed + attempt).standard_normal(compiled.input_shape).astype("float32")
        xi = runner.tensor(x)
        try:
            return xi, check_numerics(runner.run(xi).numpy(), compiled.reference(x), "compiled model")
        except LoweringError as err:
            last = err
    raise LoweringError(f"{last} on all {NUMERICS_ATTEMPTS} test inputs")


def verify(compiled: CompiledModel, seed: int = 0) -> float:
    """Check a locally runnable compiled model against PyTorch as :func:`measure` does (up to
    :data:`NUMERICS_ATTEMPTS` random inputs); return the max abs error or raise LoweringError."""
    return _checked_input(VmRunner.local(compiled.executable), compiled, seed)[1]


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
    reference: CalibratedReference | None = None,
) -> LatencyResult:
    """Check numerics against PyTorch, then time the compiled model (batch as compiled).

    Arguments:
        compiled: from :func:`labnas.tvm.compile_model`.
        remote: a board over RPC; ``None`` runs on this machine (x86 targets only).
        number, repeat: ``repeat`` timings, each the mean of ``number`` runs, after one warm-up run.
        threads: TVM worker threads (local runs; a board uses its own setting). Default: all cores.
        profile_kernels: also time each kernel once (the per-kernel table of ``labnas profile``).
        emulated: label the numbers as coming from an emulator (not the board's performance).
        reference: the calibrated reference workload on this machine (:func:`labnas.timing.reference_for`): the
            model is timed in ``repeat`` rounds shared with it and ``median_ms`` is drift-corrected
            (:func:`labnas.timing.paired.time_paired`; a machine too busy to time on raises ``TimingDisturbed``).
            For a board, a reference made for that board (``reference_for(target, remote=...)``): it is uploaded
            into the candidate's session and timed in the same rounds there (the board's load is not read: the
            session has it to itself, and only the reference's own slowdown flags a disturbance).
    """
    if remote is None:
        if compiled.target.is_remote_only:
            raise RemoteError(
                f"target {compiled.target.name} ({compiled.target.arch}) cannot run on this {platform.machine()} machine "
                f"and no board is connected; pass {{opt:remote|--rpc HOST:PORT or --tracker HOST:PORT --key KEY}} ({START_BOARD_HINT})"
            )
        runner = VmRunner.local(compiled.executable, threads)
    else:
        runner = VmRunner.remote(compiled, remote, threads)
    xi, err = _checked_input(runner, compiled, seed)
    extra = {}
    if reference is not None:
        reference.timer.attach(runner)  # on a board: uploaded into this session
        try:
            median, p10, p90, runs, attempts, extra = _paired_series(runner, xi, number, repeat, reference,
                                                                     local=remote is None)
        finally:
            reference.timer.release()
    else:
        series = []
        for _ in range(1 + UNSTABLE_RETRIES):
            series.append(_stats(runner.time_runs([xi], number, repeat)))
            median, p10, p90, _ = series[-1]
            if p90 - p10 <= UNSTABLE_SPREAD * median:
                break
        median, p10, p90, runs = min(series, key=lambda st: (st[2] - st[1]) / st[0])
        attempts = len(series)
    kernels = kernel_profile(runner, [xi]) if (profile_kernels and remote is None) else []
    return LatencyResult(median, p10, p90, runs, runner.threads, compiled.target.name, runner.device, emulated, err, kernels,
                         attempts, **extra)


#: Pauses (s) before a model whose every pass was disturbed is timed again, one try per pause.
DISTURBED_BACKOFF_S = (10.0, 30.0)


def measure_in_passes(compiled: list[CompiledModel], passes: int, progress=None, **measure_kwargs) -> list[list[LatencyResult]]:
    """Time every compiled model once per pass, pass after pass: ``results[i]`` holds model i's results.

    A disturbance the paired correction misses lasts seconds on a shared host; back-to-back repeats of one model
    share it, passes over many models (minutes apart) rarely do, and a disturbance only slows a run down, so
    callers keep the lowest figure. A timing refused as disturbed (:class:`~labnas.timing.paired.TimingDisturbed`)
    costs that model that pass, not the run: what was timed is kept, and a model left with no timing at all is
    tried again after each pause of :data:`DISTURBED_BACKOFF_S` before the last refusal is raised. So ``results[i]``
    may hold fewer than ``passes`` results. ``measure_kwargs`` go to :func:`measure` (``seed`` is the pass number);
    ``progress(pass_index, model_index)`` is called after each timing.
    """
    import sys
    import time

    from .paired import TimingDisturbed

    results: list[list[LatencyResult]] = [[] for _ in compiled]
    refused: dict[int, TimingDisturbed] = {}
    for p in range(max(1, passes)):
        for i, model in enumerate(compiled):
            try:
                results[i].append(measure(model, seed=p, **measure_kwargs))
            except TimingDisturbed as err:
                refused[i] = err
                print(f"pass {p + 1}, model {i + 1}: timing refused ({str(err).split(':')[0]}); kept for the other passes",
                      file=sys.stderr, flush=True)
            if progress:
                progress(p, i)
    for pause in DISTURBED_BACKOFF_S:
        missing = [i for i, r in enumerate(results) if not r]
        if not missing:
            break
        print(f"{len(missing)} model(s) not timed in any pass: waiting {pause:g} s for the host to settle", file=sys.stderr, flush=True)
        time.sleep(pause)
        for i in missing:
            try:
                results[i].append(measure(compiled[i], seed=passes, **measure_kwargs))
            except TimingDisturbed as err:
                refused[i] = err
    missing = [i for i, r in enumerate(results) if not r]
    if missing:
        raise refused[missing[0]]
    return results


def _paired_series(runner: VmRunner, xi, number: int, repeat: int, reference: CalibratedReference, local: bool = True):
    """The model timed in rounds shared with ``reference`` (:func:`labnas.timing.paired.time_paired`):
    ``(corrected median, p10, p90 of the per-round corrected values, raw runs, attempts, paired fields)``.
    ``local``: this machine's load is read for oversubscription (not on a board)."""
    from .core_latency import placement_now
    from .load import cpu_snapshot
    from .paired import time_paired

    calibrated_ms = reference.ms
    window_ms = 1e3 * runner.time_runs([xi], number, 1)[0] * number  # warm-up, and the candidate's time per round
    # The reference is timed over as long a window as the candidate (at least REFERENCE_MIN_MS): under time
    # slicing both then see the same share of the core; a much shorter window lands in or between slices.
    ref_number = max(number, math.ceil(max(REFERENCE_MIN_MS, window_ms) / calibrated_ms))
    paired = time_paired(lambda: 1e3 * runner.time_runs([xi], number, 1)[0], lambda: reference.timer.time_once(ref_number),
                         calibrated_ms, rounds=max(repeat, PAIRED_MIN_ROUNDS), threads=runner.threads,
                         cpu_probe=cpu_snapshot if local else None,
                         placement_probe=placement_now if local and runner.threads > 1 else None)
    reference.observe(paired.reference_ms)  # a calibration taken on a slower machine is lowered in the cache
    corrected = np.asarray(paired.candidate_runs_ms) / np.asarray(paired.reference_runs_ms) * calibrated_ms
    fields = {"paired": True, "raw_median_ms": paired.raw_ms, "reference_ms": paired.reference_ms,
              "reference_calibrated_ms": calibrated_ms, "paired_ratio": paired.ratio,
              "core_round_trip_ns": paired.core_round_trip_ns, "cpus_apart": paired.cpus_apart,
              "host_slowdown": paired.host_slowdown}
    return (paired.corrected_ms, float(np.percentile(corrected, 10)), float(np.percentile(corrected, 90)),
            list(paired.candidate_runs_ms), paired.attempts, fields)
