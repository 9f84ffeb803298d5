"""Timing one compiled kernel or small network for the kernel-strategy chooser: as many calls as fit in ~20 ms.

Its own module because both :mod:`labnas.tvm.strategy` (the chooser) and :mod:`labnas.tvm.lab_context` (LAB maps
timed in context) time with it, and the chooser imports the context network.
"""

from __future__ import annotations

import time
from typing import Callable

__all__ = ["call_timer"]


def call_timer(module, dev, args) -> Callable[[], float]:
    """One timing of ``module``'s ``main`` (a compiled kernel's ``lib.mod`` or a Relax VM: anything with
    ``time_evaluator``): as many calls as fit in ~20 ms, seconds per call."""
    evaluator = module.time_evaluator("main", dev, number=1, repeat=1)
    calls = max(1, int(0.02 / max(evaluator(*args).mean, 1e-6)))
    timed = module.time_evaluator("main", dev, number=calls, repeat=1)

    def run() -> float:
        start = time.perf_counter()
        result = timed(*args).mean
        return result if result > 0 else (time.perf_counter() - start) / calls

    return run
