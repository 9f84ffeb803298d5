"""Side-by-side timing of labnas (TVM), PyTorch and onnxruntime on the same input, in one process.

This machine's speed drifts by up to 1.5x over minutes (see :mod:`labnas.timing.reference`), so a
benchmark never compares numbers taken minutes apart: every contender is a zero-argument callable,
and :func:`round_robin` times them in turn, round after round, and keeps each round's median. All
contenders are timed the same way (``perf_counter`` around ``number`` calls from Python), so the
per-call overhead of each runtime's Python binding is included for every one of them alike.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["machine_facts", "round_robin", "paired_ratio", "relative_speeds", "torch_runner", "onnxruntime_runner", "tvm_runner", "OnnxRuntimeMissing"]


class OnnxRuntimeMissing(RuntimeError):
    """onnxruntime (or onnx) is not installed; the message says how to install it."""


def machine_facts(threads: int) -> dict[str, Any]:
    """What a benchmark row needs to be read later: CPU model and ISA, the host kernels' vector width and
    popcount strategy, cores, threads, library versions, and the round trip of a cache line between two of
    the CPUs when the row was measured (``core_round_trip_ns``; on a VM it tells which placement of the
    vCPUs a multi-threaded figure comes from, :mod:`labnas.timing.core_latency`)."""
    import tvm

    from ..tvm.cpu import cpu_model, isa_summary
    from ..tvm.targets import TARGETS
    from .core_latency import core_round_trip_ns

    facts = {
        "cpu": cpu_model(), "isa": " ".join(isa_summary()), "host_kernels": TARGETS["host"].describe_isa(),
        "cores": os.cpu_count(), "threads": threads, "torch": torch.__version__, "tvm": tvm.__version__,
        "core_round_trip_ns": core_round_trip_ns() if threads > 1 else None,
    }
    try:
        import onnxruntime

        facts["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    return facts


def _timed(fn: Callable[[], Any], number: int, repeat: int) -> float:
    """Median over ``repeat`` timings of the mean time of ``number`` calls, in ms."""
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        runs.append((time.perf_counter() - start) / number)
    return 1e3 * float(np.median(runs))


def round_robin(
    contenders: dict[str, Callable[[], Any]], rounds: int = 5, repeat: int = 10, number: int = 5, progress: str = "",
    before_round: Callable[[], Any] | None = None,
) -> dict[str, list[float]]:
    """Time every contender once per round, in turn; returns each one's per-round medians (ms).

    Each contender is called a few times first (one-time allocations, oneDNN primitive creation).
    Round ``r`` starts at contender ``r mod n`` (the order rotates), so no contender is always the one
    timed right after another runtime's worker threads went idle, or always the first of a round.
    ``before_round``, if given, is called at the start of every round (e.g. to record the vCPUs' placement
    with :func:`labnas.timing.core_latency.core_round_trip_ns`); it is not timed.
    """
    for fn in contenders.values():
        for _ in range(3):
            fn()
    names = list(contenders)
    out: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        if before_round is not None:
            before_round()
        start = r % len(names)
        for name in names[start:] + names[:start]:
            out[name].append(_timed(contenders[name], number, repeat))
        if progress:
            print(f"{progress}: round {r + 1}/{rounds}", file=sys.stderr, flush=True)
    return out


def paired_ratio(rounds: dict[str, list[float]], numerator: str, denominator: str) -> float:
    """Median over rounds of ``numerator / denominator`` timed in the same round.

    Why not the ratio of the two medians: this host's speed moves by up to 2x within minutes, and a
    ratio of medians mixes rounds taken in different phases (four runs of the LAB overhead that way
    gave 13-27 %). Two contenders of one round ran seconds apart, so their ratio cancels the drift.
    """
    pairs = np.asarray(rounds[numerator], dtype=float) / np.asarray(rounds[denominator], dtype=float)
    return float(np.median(pairs))


def relative_speeds(rounds: dict, resamples: int = 400, seed: int = 0) -> dict:
    """Each contender's time relative to the others, from :func:`round_robin`'s per-round timings (ms).

    Every timing is divided by its round's median over all contenders, which cancels whatever the host's speed did
    between rounds (the rounds are seconds apart, the drift of a shared VM minutes long); a contender's relative
    time is the median of its ratios over the rounds. The band is the 10th..90th percentile of that median when the
    rounds are resampled with replacement (``resamples`` times, fixed ``seed``): how far the rounds' own noise moves
    it, which shrinks with more rounds, unlike the spread of single rounds. Returns ``{name: (ratio, p10, p90)}``;
    a ratio of 1.02 is 2 % slower than the typical contender. Needs two or more contenders and one or more rounds.
    """
    names = list(rounds)
    table = np.array([rounds[n] for n in names], dtype=float)  # contenders x rounds
    if table.ndim != 2 or table.shape[0] < 2 or table.shape[1] < 1:
        raise ValueError(f"relative speeds need two or more contenders timed in one or more rounds, got {table.shape}")
    ratios = table / np.median(table, axis=0)
    picks = np.random.default_rng(seed).integers(0, ratios.shape[1], (resamples, ratios.shape[1]))
    medians = np.median(ratios[:, picks], axis=2)  # contenders x resamples
    low, high = np.percentile(medians, 10, axis=1), np.percentile(medians, 90, axis=1)
    middle = np.median(ratios, axis=1)
    return {n: (float(middle[i]), float(min(low[i], middle[i])), float(max(high[i], middle[i]))) for i, n in enumerate(names)}


def torch_runner(module: nn.Module, x: np.ndarray, threads: int) -> tuple[Callable[[], Any], np.ndarray]:
    """Eager PyTorch fp32 (oneDNN convolutions) under ``no_grad``; returns (call, output)."""
    torch.set_num_threads(threads)
    module = module.eval()
    xt = torch.from_numpy(x)

    @torch.no_grad()
    def call():
        return module(xt)

    return call, call().numpy()


def onnxruntime_runner(module: nn.Module, x: np.ndarray, threads: int, path: str) -> tuple[Callable[[], Any], np.ndarray]:
    """onnxruntime fp32 (CPU execution provider, all graph optimisations) on ``module`` exported to ``path``."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise OnnxRuntimeMissing("onnxruntime is not installed; run 'pip install -c constraints.txt -e \".[bench]\"'") from None
    import warnings

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (torch.from_numpy(x),), path, input_names=["x"], output_names=["y"], dynamo=False)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    feed = {"x": x}

    def call():
        return session.run(None, feed)

    return call, call()[0]


def tvm_runner(compiled, x: np.ndarray, threads: int) -> tuple[Callable[[], Any], np.ndarray]:
    """A labnas-compiled model on this machine's TVM runtime (:class:`~labnas.timing.VmRunner`); returns
    (call, output)."""
    from .runner import VmRunner

    return VmRunner.local(compiled.executable, threads).caller(x)
