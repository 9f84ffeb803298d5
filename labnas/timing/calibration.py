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
"""

from __future__ import annotations

import numpy as np

from .._cache import cache_dir, read_json, write_json_atomic

__all__ = ["calibrate", "calibration_key", "board_calibration_key", "load_or_calibrate", "lower_cached",
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


def calibrate(time_once, series: int = 5, rounds: int = 5) -> float:
    """The reference's quiet time: the lowest of ``series`` medians of ``rounds`` timings (ms). A busy
    machine only slows a run down, so the lowest median is the least disturbed."""
    return float(min(np.median([time_once() for _ in range(rounds)]) for _ in range(series)))


def load_or_calibrate(time_once, key: str, recalibrate: bool = False, local: bool = True) -> tuple[float, str]:
    """``(calibrated ms, "cached" | "measured")`` under ``key`` (:func:`calibration_key`, :func:`board_calibration_key`).
    ``local``: the reference runs on this machine's CPUs, so a fresh calibration also notes their placement
    (a board's calibration over RPC says nothing about them)."""
    path = cache_dir() / CALIBRATION_PATH
    table = read_json(path)
    if not recalibrate and key in table:
        return float(table[key]), "cached"
    value = round(calibrate(time_once), 5)  # rounded as stored: a cached figure equals the fresh one
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
