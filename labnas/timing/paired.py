"""Drift-corrected latency: a candidate timed in the same rounds as a fixed reference workload.

A shared machine's speed drifts (other processes, frequency, cache neighbours), and a plain median mixes
that drift into the figure. Timed in the same rounds, the candidate and the reference see the same machine,
so their ratio is stable where each median is not. The reported latency is

    corrected_ms = median over rounds of (candidate_ms / reference_ms) x calibrated_reference_ms

where the calibration is the reference's time on a quiet machine (:mod:`labnas.timing.calibration`). On a
quiet machine corrected and raw agree; on a busy one the raw median moves and the corrected one does not.

Correction repairs a machine that is uniformly slower. It cannot repair oversubscription: when another
process takes a core that TVM's thread pool uses, every barrier stalls, the slowdown is per kernel launch
rather than per unit of work, and the ratio moves too. So a measurement whose reference ran much slower than
its calibration, whose reference rounds spread widely, or during which other processes kept busy more cores
than the timing left free (:mod:`labnas.timing.load`), is **disturbed**: it is timed again after a back-off,
and if it stays disturbed it is refused (:class:`TimingDisturbed`), never recorded as a latency.

One slowdown is neither load nor drift: a VM's host can move its vCPUs onto cores that share no cache, and
every multi-threaded figure, the reference's included, then runs ~1.6x slower until it moves them back
(:mod:`labnas.timing.core_latency`). A probe of the CPUs' placement before the rounds tells the two apart: with
the CPUs apart the reference may run :data:`PLACEMENT_ALLOWANCE` x further above its calibration, and the result
says that it was taken so (``cpus_apart``), instead of every trial of that stretch being refused as "busy".
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .._errors import LabnasError
from .core_latency import Placement
from .load import CpuSnapshot, others_busy_cores, others_in_vm_cores, oversubscription

__all__ = ["PairedResult", "TimingDisturbed", "time_paired", "disturbance", "slow_spell", "SLOW_SPELL_LIMIT", "DISTURBED_FACTOR", "DISTURBED_SPREAD", "PLACEMENT_ALLOWANCE"]

#: A reference median more than this factor above its calibration means the machine is not the one calibrated.
DISTURBED_FACTOR = 1.5
#: Reference rounds whose (p90 - p10) / median exceeds this spread were disturbed during the measurement.
DISTURBED_SPREAD = 0.5
#: With the CPUs placed further apart than the machine's best placement (:class:`labnas.timing.core_latency.Placement`),
#: the reference may run this many times further above its calibration before it counts as disturbed: on the EPYC VM
#: the all-sign reference networks ran 1.55-1.75x their near-placement calibration with nothing else running, which
#: is a slower machine for multi-threaded code, not load (the ratio to the reference still holds to a few %).
PLACEMENT_ALLOWANCE = 2.0
#: With nothing else of this machine running (other processes kept at most :data:`QUIET_OTHERS_CORES` busy, time
#: stolen by the hypervisor left out), a reference up to this many times its calibration is the host itself running
#: slower (a neighbour outside the VM, a lower clock) for a while: a slow spell. That slows the candidate and the
#: reference alike, the case the paired correction is for, so it is timed as usual and recorded
#: (``host_slowdown``), not refused. Further above, or with other load in sight, the limits above apply.
SLOW_SPELL_LIMIT = 2.5
#: Cores other processes may keep busy while the machine still counts as quiet (daemons, tick rounding).
QUIET_OTHERS_CORES = 0.35
#: Seconds to wait before each re-timing of a disturbed measurement.
BACKOFF_S = (1.0, 4.0)


class TimingDisturbed(LabnasError, RuntimeError):
    """The machine stayed too busy to time on (see the module docstring); the message gives the numbers."""


@dataclass(frozen=True)
class PairedResult:
    """One paired measurement (ms). ``corrected_ms`` is what a latency column reports; ``raw_ms`` the
    candidate's own median; ``ratio`` the median of the per-round candidate / reference ratios."""

    corrected_ms: float
    raw_ms: float
    reference_ms: float
    calibrated_ms: float
    ratio: float
    candidate_runs_ms: tuple[float, ...]
    reference_runs_ms: tuple[float, ...]
    attempts: int
    #: the CPUs' placement during the rounds (:func:`labnas.timing.core_latency.placement_now`), when probed
    core_round_trip_ns: float | None = None
    cpus_apart: bool | None = None
    #: the reference's median over its calibration when the rounds were a slow spell of the host (:func:`slow_spell`)
    host_slowdown: float | None = None


def slow_spell(reference_runs_ms, calibrated_ms: float, others_in_vm: float | None, cpus_apart: bool = False) -> float | None:
    """The host's slowdown (reference median / calibration, > 1) when a reference slower than the disturbance limit
    was a slow spell of the host rather than contention: its rounds are steady (spread within
    :data:`DISTURBED_SPREAD`), it ran at most :data:`SLOW_SPELL_LIMIT` x its calibration (x the placement allowance
    with the CPUs apart), and nothing else on this machine was running (``others_in_vm``, from
    :func:`labnas.timing.load.others_in_vm_cores`, at most :data:`QUIET_OTHERS_CORES`). ``None`` when it was not
    (or the load could not be read: without it a slow spell cannot be told from contention)."""
    if others_in_vm is None or others_in_vm > QUIET_OTHERS_CORES:
        return None
    runs = np.asarray(reference_runs_ms, dtype=float)
    median = float(np.median(runs))
    if float(np.percentile(runs, 90) - np.percentile(runs, 10)) / median > DISTURBED_SPREAD:
        return None
    factor = median / calibrated_ms
    limit = SLOW_SPELL_LIMIT * (PLACEMENT_ALLOWANCE if cpus_apart else 1.0)
    return factor if 1.0 < factor <= limit else None


def disturbance(reference_runs_ms, calibrated_ms: float, cpus_apart: bool = False) -> str | None:
    """Why a measurement with these reference rounds is disturbed, or None when it is not. ``cpus_apart``: the
    CPUs were placed further apart than this machine's best placement, which allows the reference
    :data:`PLACEMENT_ALLOWANCE` x more slowdown."""
    runs = np.asarray(reference_runs_ms, dtype=float)
    median = float(np.median(runs))
    limit = DISTURBED_FACTOR * (PLACEMENT_ALLOWANCE if cpus_apart else 1.0)
    if median > limit * calibrated_ms:
        where = " with the CPUs placed apart" if cpus_apart else ""
        return f"the reference workload ran at {median:.3f} ms, {median / calibrated_ms:.1f}x its calibrated {calibrated_ms:.3f} ms{where}"
    spread = float(np.percentile(runs, 90) - np.percentile(runs, 10)) / median
    if spread > DISTURBED_SPREAD:
        return f"the reference workload's rounds spread {100 * spread:.0f} % around {median:.3f} ms"
    return None


#: An attempt whose first rounds already show the reference this far above its calibration is cut short: it will
#: be disturbed whatever the rest shows, and under oversubscription a round can take a hundred times its quiet time.
HOPELESS_FACTOR = 3.0


def _rounds(candidate: Callable[[], float], reference: Callable[[], float], rounds: int,
            calibrated_ms: float | None = None) -> tuple[list[float], list[float]]:
    cand, ref = [], []
    for r in range(rounds):  # the order alternates: neither is always the one timed after the other
        if r % 2:
            ref.append(reference())
            cand.append(candidate())
        else:
            cand.append(candidate())
            ref.append(reference())
        if calibrated_ms and r >= 1 and min(ref) > HOPELESS_FACTOR * calibrated_ms:
            break
    return cand, ref


def _load_before(cpu_probe, threads: int, cores: int | None, window_s: float) -> str | None:
    """Oversubscription seen while this process idles for ``window_s`` seconds, before any timing."""
    before = cpu_probe()
    if window_s > 0:
        time.sleep(window_s)
    return oversubscription(others_busy_cores(before, cpu_probe()), threads, cores)


def time_paired(
    candidate: Callable[[], float],
    reference: Callable[[], float],
    calibrated_ms: float,
    rounds: int = 5,
    retries: int = 2,
    backoff_s: tuple[float, ...] = BACKOFF_S,
    sleep: Callable[[float], None] = time.sleep,
    threads: int | None = None,
    cpu_probe: Callable[[], CpuSnapshot | None] | None = None,
    cores: int | None = None,
    probe_window_s: float = 0.2,
    placement_probe: Callable[[], Placement | None] | None = None,
) -> PairedResult:
    """Time ``candidate`` and ``reference`` (each a call returning one timing in ms) in ``rounds`` shared rounds.

    A disturbed measurement (:func:`disturbance`; with ``threads`` and a ``cpu_probe`` such as
    :func:`labnas.timing.load.cpu_snapshot`, also :func:`labnas.timing.load.oversubscription` over the rounds'
    window on ``cores`` cores) is re-timed after ``backoff_s[i]`` seconds, up to ``retries`` times; still
    disturbed, it raises :class:`TimingDisturbed`. With a probe, each attempt first watches the load for
    ``probe_window_s`` seconds while idle and backs off at once if the cores are already oversubscribed: timed
    under a spinning competitor, TVM's pool stalls at every barrier and one round can take minutes.
    With a ``placement_probe`` (:func:`labnas.timing.core_latency.placement_now`), each attempt first probes where
    the host has put the CPUs: placed apart (a VM's vCPUs on cores without a shared cache), the reference may run
    up to :data:`PLACEMENT_ALLOWANCE` x further above its calibration before the attempt counts as disturbed, and
    the result records the round trip and ``cpus_apart``.
    """
    if calibrated_ms <= 0:
        raise ValueError(f"calibrated reference time must be > 0 ms, got {calibrated_ms}")
    probing = bool(cpu_probe and threads)
    for attempt in range(retries + 1):
        reason = _load_before(cpu_probe, threads, cores, probe_window_s) if probing else None
        if reason is None:  # not visibly oversubscribed before it starts: time, and watch the load meanwhile
            placement = placement_probe() if placement_probe is not None else None
            apart = bool(placement and placement.apart)
            before = cpu_probe() if probing else None
            cand, ref = _rounds(candidate, reference, rounds, calibrated_ms * (PLACEMENT_ALLOWANCE if apart else 1.0))
            after = cpu_probe() if probing else None
            oversubscribed = oversubscription(others_busy_cores(before, after), threads, cores) if probing else None
            reason = disturbance(ref, calibrated_ms, apart) or oversubscribed
            slowdown = None
            if reason is not None and oversubscribed is None and cpu_probe is not None:
                slowdown = slow_spell(ref, calibrated_ms, others_in_vm_cores(before, after), apart)
                reason = None if slowdown is not None else reason
        if reason is None:
            ratio = float(np.median(np.asarray(cand) / np.asarray(ref)))
            return PairedResult(ratio * calibrated_ms, float(np.median(cand)), float(np.median(ref)), calibrated_ms, ratio,
                                tuple(cand), tuple(ref), attempt + 1,
                                placement.round_trip_ns if placement else None, apart if placement else None, slowdown)
        if attempt < retries:
            sleep(backoff_s[min(attempt, len(backoff_s) - 1)])
    raise TimingDisturbed(f"{reason} in all {retries + 1} attempts: the machine is busy; time when it is quiet, stop the other "
                          "work, or use fewer {opt:threads} than the cores left free")
