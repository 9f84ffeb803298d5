"""A fixed reference workload timed next to every candidate, to expose drift in the host's speed.

Shared machines drift: on the 2-core CI machine the same compiled network measured 20-50 % apart in
runs 15 minutes apart, each series tight. A latency is only comparable with latencies taken while
the machine ran at the same speed, so the search times this fixed workload (a binary conv layer and a
float conv, compiled once per process) right after each candidate and stores it with the trial.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from ..nn import BinaryConv2d
from ..tvm.lowering import compile_model
from ..tvm.targets import TargetPreset
from .runner import VmRunner

__all__ = ["CalibratedReference", "ReferenceTimer", "reference_for"]


class ReferenceTimer:
    """Compiles the reference once for a local target; :meth:`time_ms` returns its median latency."""

    def __init__(self, target: TargetPreset, threads: int | None = None, seed: int = 0):
        model = nn.Sequential(
            nn.Conv2d(64, 64, 3, padding=1, bias=False),  # a float conv (stem / shortcut kind of work)
            BinaryConv2d(64, 64, 3, binarizer="ste_sign", pad_value=1),  # a bitpacked binary conv
        ).eval()
        shape = (1, 64, 28, 28)
        self.compiled = compile_model(model, shape, target)
        self.runner = VmRunner.local(self.compiled.executable, threads)
        self.x = self.runner.tensor(np.random.default_rng(seed).standard_normal(shape).astype("float32"))

    def time_ms(self, number: int = 10, repeat: int = 5) -> float:
        """Median of ``repeat`` timings of ``number`` runs each (ms per run)."""
        return self.runner.time_ms([self.x], number, repeat)

    def time_once(self, number: int = 10) -> float:
        """One timing: the mean of ``number`` runs (ms per run), for paired rounds."""
        return 1e3 * self.runner.time_runs([self.x], number, 1)[0]

    def calibrated_ms(self, target_name: str, recalibrate: bool = False) -> tuple[float, str]:
        """This machine's calibration for ``target_name`` at the runner's threads (see :mod:`labnas.timing.calibration`)."""
        from .calibration import load_or_calibrate

        return load_or_calibrate(self.time_once, target_name, self.runner.threads, recalibrate)


@dataclass(frozen=True)
class CalibratedReference:
    """The reference workload compiled for one target and thread count, with the quiet time (ms) that
    drift-corrected latencies are scaled by. ``how`` says where the calibration came from: ``"stored"``
    (a study's or a table's own), ``"cached"`` (this machine's cache) or ``"measured"`` (just now)."""

    timer: ReferenceTimer
    ms: float
    key: str
    how: str

    def record(self) -> dict[str, Any]:
        """What a study or a latency table stores, so that it keeps its scale when used again."""
        return {"key": self.key, "ms": round(self.ms, 5)}


def reference_for(target: TargetPreset, threads: int | None = None, remote=None, recalibrate: bool = False,
                  stored: dict | None = None) -> CalibratedReference | None:
    """The calibrated reference for paired timing on this machine, or ``None`` where timing is not local (a board
    over RPC times the plain median: the session has the board to itself).

    ``stored`` is a calibration recorded earlier (``{"key", "ms"}``, see :meth:`CalibratedReference.record`): it
    is used when it was made for the same CPU, ISA, target, thread count and versions, so that a resumed search
    or a table keeps the scale it began with; otherwise this machine's cached calibration is used, measured
    first if there is none or ``recalibrate`` is set.
    """
    if remote is not None or target.is_remote_only:
        return None
    from .calibration import calibration_key

    timer = ReferenceTimer(target, threads)
    key = calibration_key(target.name, timer.runner.threads)
    if stored and stored.get("key") == key and not recalibrate:
        return CalibratedReference(timer, float(stored["ms"]), key, "stored")
    ms, how = timer.calibrated_ms(target.name, recalibrate)
    return CalibratedReference(timer, ms, key, how)
