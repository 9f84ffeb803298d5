"""A fixed reference workload timed next to every candidate, to expose drift in the host's speed.

Shared machines drift: on the 2-core CI machine the same compiled network measured 20-50 % apart in
runs 15 minutes apart, each series tight. A latency is only comparable with latencies taken while
the machine ran at the same speed, so the search times this fixed workload (a binary conv layer and a
float conv, compiled once per process) right after each candidate and stores it with the trial.
"""

from __future__ import annotations

import numpy as np
from torch import nn

from ..nn import BinaryConv2d
from ..tvm.lowering import compile_model
from ..tvm.targets import TargetPreset
from .runner import VmRunner

__all__ = ["ReferenceTimer"]


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
