"""Kernel strategies chosen by measurement on the target, cached per CPU.

A binary conv's xnor kernel has two good implementations, and which one is faster depends on the CPU
*and* on the layer: the carry-save tree (:mod:`labnas.tvm.carry_save`, 7 popcounts instead of 36 for a
3x3 conv over 256 channels) wins where a vector popcount is a 7-instruction nibble table (AVX2), the
plain reduction where it is one instruction (AVX-512 VPOPCNTDQ, NEON ``cnt``), but not on every layer
(on an AVX-512 EPYC the tree stayed faster on Bi-Real-18's 64-channel 56x56 layers and lost 2x on its
256-channel ones). So the choice is made per xnor kernel shape, the first time that shape is compiled
for a target this machine can run: both variants are compiled, checked to give the same sums, and
timed interleaved (a few hundred milliseconds per shape); the winner is cached in
``~/.cache/labnas/kernel_strategies.json`` under the CPU model, its ISA flags, the TVM target and the
kernels' code, so later compiles (every trial of a search) reuse it.

A preset can pin the choice (``carry_save_popcount=True/False``). A target this machine cannot run
(an ARM board, AVX-512 code on an AVX2 host) takes the default of its ISA: carry-save unless the
target has a one-instruction vector popcount.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["choose_fastest", "PopcountChooser", "XnorShape", "STRATEGY_CACHE", "Decision"]

STRATEGY_CACHE = Path(os.environ.get("LABNAS_CACHE", Path.home() / ".cache" / "labnas")) / "kernel_strategies.json"
CARRY_SAVE, NATIVE = "carry-save", "native"


def choose_fastest(candidates: Mapping[str, Callable[[], float]], rounds: int = 5) -> tuple[str, dict[str, float]]:
    """The candidate with the lowest median time, each ``candidates[name]()`` returning one timing (s).

    Rounds are interleaved (every candidate once per round, the order rotated) so a drift of the
    machine's speed hits all of them alike. Returns the winner and every candidate's median (s).
    """
    if not candidates:
        raise ValueError("choose_fastest needs at least one candidate")
    names = list(candidates)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            times[name].append(float(candidates[name]()))
    medians = {n: float(np.median(t)) for n, t in times.items()}
    return min(names, key=lambda n: medians[n]), medians


@dataclass(frozen=True)
class XnorShape:
    """One xnor kernel: packed input ``int64[N, Hp, Cw, Wp]``, weights ``int64[k, k, Cw, Cout]``, stride."""

    packed: tuple[int, int, int, int]
    weights: tuple[int, int, int, int]
    stride: int

    @property
    def key(self) -> str:
        n, h, words, w = self.packed
        k, _, _, cout = self.weights
        return f"xnor n{n} h{h} x{w} words{words} k{k} out{cout} s{self.stride}"

    @property
    def taps(self) -> int:
        k, _, words, _ = self.weights
        return 64 * words * k * k


@dataclass
class Decision:
    shape: str
    strategy: str
    #: measured (now), cached (measured before on this CPU), pinned (the preset's), default (not runnable here)
    source: str
    ratio: float | None = None  # carry-save time / native time, when measured


def _code_hash() -> str:
    here = Path(__file__).resolve().parent
    digest = hashlib.sha1()
    for name in ("kernels.py", "carry_save.py", "strategy.py"):
        digest.update((here / name).read_bytes())
    return digest.hexdigest()[:12]


@dataclass
class PopcountChooser:
    """Answers "carry-save tree or plain popcount?" per xnor kernel shape for one target.

    ``target``: a :class:`~labnas.tvm.targets.TargetPreset`. ``decisions`` lists every answer given, with
    where it came from, so a profile can print the strategy each layer used.
    """

    target: object
    cache_path: Path = STRATEGY_CACHE
    decisions: list[Decision] = field(default_factory=list)

    def carry_save(self, shape: XnorShape) -> bool:
        from .kernels import CARRY_SAVE_MAX_TERMS

        k, _, words, _ = shape.weights
        if k * k * words > CARRY_SAVE_MAX_TERMS:
            return False  # the tree does not apply: both variants are the same loop
        pinned = self.target.carry_save_popcount
        if pinned is not None:
            return self._answer(shape, CARRY_SAVE if pinned else NATIVE, "pinned")
        if not self.target.runs_here:
            return self._answer(shape, NATIVE if self.target.native_popcount else CARRY_SAVE, "default")
        cache = self._read_cache()
        entry = cache.get(self._cpu_key(), {}).get(shape.key)
        if entry:
            return self._answer(shape, entry["strategy"], "cached", entry.get("ratio"))
        strategy, ratio = self._measure(shape)
        cache = self._read_cache()  # another process may have written meanwhile
        cache.setdefault(self._cpu_key(), {})[shape.key] = {"strategy": strategy, "ratio": round(ratio, 3)}
        self._write_cache(cache)
        return self._answer(shape, strategy, "measured", ratio)

    def _answer(self, shape: XnorShape, strategy: str, source: str, ratio: float | None = None) -> bool:
        self.decisions.append(Decision(shape.key, strategy, source, ratio))
        return strategy == CARRY_SAVE

    def _cpu_key(self) -> str:
        from .cpu import cpu_model, isa_summary

        return f"{cpu_model()} | {' '.join(isa_summary())} | {self.target.tvm_target()} | code {_code_hash()}"

    def _read_cache(self) -> dict:
        try:
            return json.loads(self.cache_path.read_text())
        except (OSError, ValueError):
            return {}

    def _write_cache(self, cache: dict) -> None:
        try:
            self.cache_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.cache_path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps(cache, indent=1, sort_keys=True))
            tmp.replace(self.cache_path)
        except OSError:
            pass  # a read-only home: measure again next time, never fail a compile over the cache

    def _measure(self, shape: XnorShape) -> tuple[str, float]:
        """Compile both variants of ``shape``'s kernel, check they agree, time them interleaved."""
        import tvm

        rng = np.random.default_rng(0)
        dev = tvm.cpu()
        a = tvm.runtime.tensor(rng.integers(-(2**62), 2**62, shape.packed, dtype=np.int64), dev)
        w = tvm.runtime.tensor(rng.integers(-(2**62), 2**62, shape.weights, dtype=np.int64), dev)
        n, hp, _, wp = shape.packed
        k, _, _, cout = shape.weights
        out_shape = (n, cout, (hp - k) // shape.stride + 1, (wp - k) // shape.stride + 1)
        runs, outputs = {}, {}
        for strategy in (CARRY_SAVE, NATIVE):
            func = xnor_kernel(shape, strategy == CARRY_SAVE, self.target.vector_lanes)
            lib = tvm.compile(tvm.IRModule({"main": func}), target=self.target.tvm_target())
            out = tvm.runtime.tensor(np.zeros(out_shape, np.float32), dev)
            lib.mod["main"](a, w, out)
            outputs[strategy] = out.numpy()
            runs[strategy] = _timer(lib, dev, (a, w, out))
        if not np.array_equal(outputs[CARRY_SAVE], outputs[NATIVE]):
            raise RuntimeError(f"the carry-save and native xnor kernels disagree on {shape.key}: a kernel bug, please report it")
        winner, medians = choose_fastest(runs)
        return winner, medians[CARRY_SAVE] / medians[NATIVE]


def _timer(lib, dev, args) -> Callable[[], float]:
    """One timing of the kernel: as many calls as fit in ~20 ms, seconds per call."""
    evaluator = lib.mod.time_evaluator("main", dev, number=1, repeat=1)
    calls = max(1, int(0.02 / max(evaluator(*args).mean, 1e-6)))
    timed = lib.mod.time_evaluator("main", dev, number=calls, repeat=1)

    def run() -> float:
        start = time.perf_counter()
        result = timed(*args).mean
        return result if result > 0 else (time.perf_counter() - start) / calls

    return run


def xnor_kernel(shape: XnorShape, carry_save: bool, vector: int):
    """The scheduled xnor PrimFunc ``(packed, weights) -> float32 NCHW dot`` for ``shape``."""
    from tvm import te

    from .kernels import schedule_kernel, xnor_compute

    a = te.placeholder(shape.packed, "int64", name="a")
    w = te.placeholder(shape.weights, "int64", name="w")
    out = xnor_compute(a, w, shape.stride, shape.taps, carry_save)
    return schedule_kernel(te.create_prim_func([a, w, out]), "labnas_xnor", vector)
