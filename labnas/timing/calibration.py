"""The reference workload's quiet-machine time per CPU, target and thread count: the scale of every
drift-corrected latency (:mod:`labnas.timing.paired`).

Calibrated once and cached in ``~/.cache/labnas/reference_calibration.json`` (``LABNAS_CACHE`` moves the
folder) under the CPU model, ISA, target, TVM threads, TVM and labnas versions; a search also stores the value
it used in its study, so a resumed search keeps its scale. ``recalibrate=True`` (``--recalibrate``) measures
again, for example after the first calibration ran on a busy machine.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

__all__ = ["calibrate", "calibration_key", "load_or_calibrate", "CALIBRATION_PATH"]


def _cache_dir() -> Path:
    return Path(os.environ.get("LABNAS_CACHE", Path.home() / ".cache" / "labnas"))


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
    path = _cache_dir() / CALIBRATION_PATH
    key = calibration_key(target_name, threads)
    try:
        table = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, json.JSONDecodeError):
        table = {}
    if not recalibrate and key in table:
        return float(table[key]), "cached"
    value = calibrate(time_once)
    table[key] = round(value, 5)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(table, indent=1, sort_keys=True))
        tmp.replace(path)
    except OSError:
        pass  # an unwritable cache costs a calibration next time, nothing else
    return value, "measured"
