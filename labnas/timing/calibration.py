"""The reference workload's quiet-machine time per CPU, target and thread count: the scale of every
drift-corrected latency (:mod:`labnas.timing.paired`).

Calibrated once and cached in ``~/.cache/labnas/reference_calibration.json`` (``LABNAS_CACHE`` moves the
folder) under the CPU model, ISA, target, TVM threads, TVM and labnas versions; a search also stores the value
it used in its study, so a resumed search keeps its scale. ``recalibrate=True`` (``--recalibrate``) measures
again, for example after the first calibration ran on a busy machine.

A calibration taken while the machine was slower than usual (on a virtual machine, a neighbour outside it can
halve a core's speed for minutes, unseen in ``/proc/stat``) would scale every later figure too high. So the
cache keeps the lowest quiet time seen: when a paired measurement's reference runs clearly faster than the
cached calibration (:data:`FASTER_MARGIN`), the cache entry is lowered (:func:`lower_cached`). A study keeps the
value it stored, so its own figures stay comparable; its summary says when its calibration was too slow.

A calibration taken while other processes competed for the cores it ran on, or whose series ranged widely, is
taken again after a pause and finally refused (:func:`calibration_disturbance`): never cached, since every later
study on this machine would read high by the busy machine's slowdown.
"""

from __future__ import annotations

import time

import numpy as np

from .._cache import cache_dir, read_json, write_json_atomic

__all__ = ["calibrate", "calibration_series", "calibration_disturbance", "calibration_key", "board_calibration_key", "load_or_calibrate", "lower_cached",
           "CALIBRATION_PATH", "FASTER_MARGIN"]

CALIBRATION_PATH = "reference_calibration.json"

#: A reference median this fraction below the cached calibration lowers the cache entry (within it: noise).
FASTER_MARGIN = 0.05


def calibration_key(target_name: str, threads: int) -> str:
    """The key of this machine's calibration: CPU model, ISA, target, TVM threads, versions."""
    from ..tvm.cpu import cpu_model, isa_summary

    return f"{cpu_model()} | {' '.join(isa_summary())} | {target_name} | {threads} threads | {_versions()}"


def board_calibration_key(board: str, target_name: str, threads: int | None) -> str:
    """The key of a board's calibration: where it is reached (``RemoteSpec.describe()``: an RPC address, or a
    tracker and the board's key), the target it is compiled for (CPU and ISA), its threads (``None``: the
    board's own setting), versions."""
    return f"board {board} | {target_name} | {threads or 'board'} threads | {_versions()}"


def _versions() -> str:
    import tvm

    from .. import __version__

    return f"tvm {tvm.__version__} | labnas {__version__}"


def calibration_series(time_once, series: int = 5, rounds: int = 5) -> list[float]:
    """``series`` medians of ``rounds`` timings each (ms)."""
    return [float(np.median([time_once() for _ in range(rounds)])) for _ in range(series)]


def calibrate(time_once, series: int = 5, rounds: int = 5) -> float:
    """The reference's quiet time: the lowest of ``series`` medians of ``rounds`` timings (ms). A busy
    machine only slows a run down, so the lowest median is the least disturbed."""
    return float(min(calibration_series(time_once, series, rounds)))


#: Calibration series whose medians range wider than this factor (highest / lowest) saw the machine change speed
#: while it was calibrated: the lowest may itself be from a busy moment.
CALIBRATION_SPREAD = 1.3
#: Pauses (s) before a calibration disturbed by other load is taken again; then it is refused.
CALIBRATION_BACKOFF_S = (5.0, 15.0)


def calibration_disturbance(medians: list[float], others_in_vm: float | None, threads: int, cores: int) -> str | None:
    """Why a calibration must not be kept (None when it may): other processes of this machine kept more cores busy
    than the ``threads`` calibrated left free (``others_in_vm``, :func:`labnas.timing.load.others_in_vm_cores`), or
    its series ranged wider than :data:`CALIBRATION_SPREAD`. Every later latency is scaled by a calibration, so one
    taken on a busy machine would inflate studies run long after the load is gone."""
    from .load import more_than_free

    if others_in_vm is not None and more_than_free(others_in_vm, threads, cores):
        return (f"other processes kept {others_in_vm:.2f} of {cores} cores busy while the reference was calibrated on "
                f"{threads} thread(s)")
    if max(medians) > CALIBRATION_SPREAD * min(medians):
        return f"the calibration series ranged from {min(medians):.3f} to {max(medians):.3f} ms"
    return None


def _checked_calibration(time_once, threads: int, cpu_probe, cores: int, sleep) -> float:
    """:func:`calibrate` with the machine's load watched: taken again after each pause of
    :data:`CALIBRATION_BACKOFF_S` while disturbed (:func:`calibration_disturbance`), then refused."""
    from .load import others_in_vm_cores
    from .paired import TimingDisturbed

    reason = ""
    for attempt in range(len(CALIBRATION_BACKOFF_S) + 1):
        before = cpu_probe()
        medians = calibration_series(time_once)
        reason = calibration_disturbance(medians, others_in_vm_cores(before, cpu_probe()), threads, cores)
        if reason is None:
            return float(min(medians))
        if attempt < len(CALIBRATION_BACKOFF_S):
            sleep(CALIBRATION_BACKOFF_S[attempt])
    raise TimingDisturbed(f"cannot calibrate the reference workload: {reason}, in all {len(CALIBRATION_BACKOFF_S) + 1} attempts; "
                          "nothing was cached (a calibration from a busy machine would inflate every later study): wait until "
                          "the other work ends, or time with {opt:threads|--threads} 1")


def load_or_calibrate(time_once, key: str, recalibrate: bool = False, local: bool = True, threads: int | None = None,
                      cpu_probe=None, cores: int | None = None, sleep=time.sleep) -> tuple[float, str]:
    """``(calibrated ms, "cached" | "measured")`` under ``key`` (:func:`calibration_key`, :func:`board_calibration_key`).
    ``local``: the reference runs on this machine's CPUs, so a fresh calibration also notes their placement
    (a board's calibration over RPC says nothing about them). With ``threads`` and a ``cpu_probe`` (such as
    :func:`labnas.timing.load.cpu_snapshot`), a calibration taken while other load competed is retried, then
    refused with :class:`~labnas.timing.paired.TimingDisturbed` and never cached."""
    path = cache_dir() / CALIBRATION_PATH
    table = read_json(path)
    if not recalibrate and key in table:
        return float(table[key]), "cached"
    if cpu_probe is not None and threads:
        from .load import usable_cores

        measured = _checked_calibration(time_once, threads, cpu_probe, cores or usable_cores(), sleep)
    else:
        measured = calibrate(time_once)
    value = round(measured, 5)  # rounded as stored: a cached figure equals the fresh one
    if local:
        _note_placement()
    table = read_json(path)  # another process may have written meanwhile
    table[key] = value
    write_json_atomic(path, table)  # an unwritable cache costs a calibration next time, nothing else
    return value, "measured"


def lower_cached(key: str, observed_ms: float, margin: float = FASTER_MARGIN, local: bool = True) -> bool:
    """Lower the cached calibration under ``key`` to ``observed_ms`` (a reference median seen in paired rounds)
    when it is more than ``margin`` below it: the machine was slower when it was calibrated. Returns whether it
    was lowered. A key with no cached calibration is left alone (calibrating is :func:`load_or_calibrate`'s job).
    ``local`` as in :func:`load_or_calibrate`."""
    path = cache_dir() / CALIBRATION_PATH
    table = read_json(path)
    cached = table.get(key)
    if cached is None or not observed_ms > 0 or observed_ms >= (1 - margin) * float(cached):
        return False
    table[key] = round(float(observed_ms), 5)
    write_json_atomic(path, table)
    if local:
        _note_placement()
    return True


def _note_placement() -> None:
    """Probe the CPUs' placement as a calibration is taken or lowered, so the lowest round trip this machine has
    shown (the yardstick of ``cpus_apart``, :func:`labnas.timing.core_latency.placement_now`) is never from a
    later moment than the calibration it is compared with: a calibration taken with the CPUs near, then a first
    probe with them apart, would otherwise read as a busy machine."""
    from .core_latency import placement_now

    placement_now()
