"""The reference workload's quiet-machine time per CPU, target and thread count: the scale of every
drift-corrected latency (:mod:`labnas.timing.paired`).

Calibrated once and cached in ``~/.cache/labnas/reference_calibration.json`` (``LABNAS_CACHE`` moves the
folder) under the CPU model, ISA, target, TVM threads, TVM and labnas versions; a search also stores the value
it used in its study, so a resumed search keeps its scale. ``recalibrate=True`` (``--recalibrate``) measures
again, for example after the first calibration ran on a busy machine.
"""

from __future__ import annotations

import numpy as np

from .._cache import cache_dir, read_json, write_json_atomic

__all__ = ["calibrate", "calibration_key", "load_or_calibrate", "CALIBRATION_PATH"]

CALIBRATION_PATH = "reference_calibration.json"


def calibration_key(target_name: str, threads: int) -> str:
    import tvm

    from .. import __version__
    from ..tvm.cpu import cpu_model, isa_summary

    return f"{cpu_model()} | {' '.join(isa_summary())} | {target_name} | {threads} threads | tvm {tvm.__version__} | labnas {__version__}"


def calibrate(time_once, series: int = 5, rounds: int = 5) -> float:
    """The reference's quiet time: the lowest of ``series`` medians of ``rounds`` timings (ms). A busy
    machine only slows a run down, so the lowest median is the least disturbed."""
    return float(min(np.median([time_once() for _ in range(rounds)]) for _ in range(series)))


def load_or_calibrate(time_once, target_name: str, threads: int, recalibrate: bool = False) -> tuple[float, str]:
    """``(calibrated ms, "cached" | "measured")`` for this machine, target and thread count."""
    path = cache_dir() / CALIBRATION_PATH
    key = calibration_key(target_name, threads)
    table = read_json(path)
    if not recalibrate and key in table:
        return float(table[key]), "cached"
    value = calibrate(time_once)
    table = read_json(path)  # another process may have written meanwhile
    table[key] = round(value, 5)
    write_json_atomic(path, table)  # an unwritable cache costs a calibration next time, nothing else
    return value, "measured"
