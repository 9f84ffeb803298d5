"""Kernel strategies chosen by measurement on the target, cached per CPU.

A binary conv's xnor kernel has several good implementations, and which one is fastest depends on the
CPU *and* on the layer: the carry-save tree (:mod:`labnas.tvm.carry_save`, 7 popcounts instead of 36 for
a 3x3 conv over 256 channels) pays where a vector popcount is a 7-instruction nibble table (AVX2); where
it is one instruction (AVX-512 VPOPCNTDQ, NEON ``cnt``) the plain reduction wins, and then the register
tile decides: on an AVX-512 EPYC a tile of 4-7 output pixels x 8 channels ran 1.5-5.5x faster than one
pixel (each weight vector loaded once for several pixels). So the choice is made per xnor kernel shape,
the first time that shape is compiled for a target this machine can run: every candidate
(:func:`candidates`) is compiled, checked to give the same sums, and timed interleaved (about a second
per shape); the winner is cached in ``~/.cache/labnas/kernel_strategies.json`` under the CPU model, its
ISA flags, the TVM target and the kernels' code, so later compiles (every trial of a search) reuse it.

A preset can pin the popcount (``carry_save_popcount=True/False``: then the default tile). A target this
machine cannot run (an ARM board, AVX-512 code on an AVX2 host) takes the default of its ISA: carry-save
unless the target has a one-instruction vector popcount.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._cache import cache_dir, read_json, write_json_atomic
from .policy import SchedulePolicy
from .kernel_timing import call_timer
from .threadpool import threads_meanwhile

__all__ = [
    "choose_fastest", "PopcountChooser", "XnorShape", "LabShape", "STRATEGY_CACHE", "Decision", "candidates", "parse_strategy",
    "PIXEL_TILES", "lab_rule", "lab_candidates", "parse_lab_strategy", "MEASURE_MIN_WORK", "strategy_counts",
]

STRATEGY_CACHE = cache_dir() / "kernel_strategies.json"
CARRY_SAVE, NATIVE = "carry-save", "native"
#: Kernels with less work than this (64-bit words, or LAB multiply-adds) take the rule's choice unmeasured:
#: at a few microseconds a run, a better tile cannot repay the second its measurement costs.
MEASURE_MIN_WORK = 1 << 18
#: Interleaved rounds a LAB map's candidates are timed over, and how much faster (fraction) than the rule's choice a
#: candidate must be to replace it: LAB tiles within a percent of each other swapped places between measurements.
LAB_ROUNDS = 7
LAB_MARGIN = 0.02


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
    def output(self) -> tuple[int, int, int, int]:
        """The dot products' shape ``(N, Cout, Ho, Wo)``."""
        n, hp, _, wp = self.packed
        k, _, _, cout = self.weights
        return n, cout, (hp - k) // self.stride + 1, (wp - k) // self.stride + 1

    @property
    def work(self) -> int:
        """64-bit xor-popcounts of one run."""
        n, cout, ho, wo = self.output
        k, _, words, _ = self.weights
        return n * cout * ho * wo * k * k * words

    @property
    def taps(self) -> int:
        k, _, words, _ = self.weights
        return 64 * words * k * k


@dataclass(frozen=True)
class LabShape:
    """One LAB decision map in front of a binary conv: input ``float32[1, C, H, W]``, ``k x k`` kernel with
    ``sources`` input channels per output channel (2: official pairing, 1: per_channel), and the packing
    it feeds (``padding``, ``pad_bit``, ``strict`` compare); ``can_fuse``: it feeds exactly one binary conv."""

    channels: int
    height: int
    width: int
    kernel: int
    sources: int
    padding: int
    pad_bit: int
    strict: bool
    can_fuse: bool

    @property
    def work(self) -> int:
        """Multiply-adds of one run of the decision map."""
        return self.channels * self.height * self.width * self.kernel**2 * self.sources

    @property
    def key(self) -> str:
        return (f"lab c{self.channels} h{self.height} w{self.width} k{self.kernel} src{self.sources} "
                f"pad{self.padding}/{self.pad_bit}{'s' if self.strict else ''}{' fusable' if self.can_fuse else ''}")

    @classmethod
    def from_key(cls, key: str) -> "LabShape":
        """The shape a :attr:`key` (as a :class:`Decision` records it) names."""
        import re

        match = re.fullmatch(r"lab c(\d+) h(\d+) w(\d+) k(\d+) src(\d+) pad(\d+)/(\d+)(s?)( fusable)?", key)
        if match is None:
            raise ValueError(f"not a LAB shape key: {key!r}")
        *numbers, strict, fusable = match.groups()
        c, h, w, k, src, pad, bit = map(int, numbers)
        return cls(c, h, w, k, src, pad, bit, bool(strict), bool(fusable))


def lab_rule(shape: LabShape, vector: int) -> tuple[bool, None]:
    """The kernels' own rule (:func:`~labnas.tvm.kernels.lab_pack_tile`, tuned on AVX2): fused where it has
    a tile for the map, with the rule's tiles (``None``)."""
    from .kernels import lab_pack_tile

    return shape.can_fuse and lab_pack_tile(shape.height, shape.width, vector, shape.sources) is not None, None


@dataclass
class Decision:
    shape: str
    strategy: str
    #: measured (now), cached (measured before on this CPU), pinned (the preset's), default (not runnable
    #: here), small (too little work to be worth measuring: the rule's choice)
    source: str
    #: when measured: the default strategy's time / the winner's (>= 1)
    speedup: float | None = None


def strategy_counts(decisions: list[Decision], with_source: bool = False) -> str:
    """How many kernels took each strategy, e.g. ``"native px4 8, two 56x2 1"`` (``with_source``: ``"native
    px4 (measured) 8"``); ``"none"`` for a network without binary convs."""
    labels = [f"{d.strategy} ({d.source})" if with_source else d.strategy for d in decisions]
    return ", ".join(f"{label} {labels.count(label)}" for label in sorted(set(labels))) or "none"


@functools.lru_cache(maxsize=1)
def _code_hash() -> str:
    here = Path(__file__).resolve().parent
    digest = hashlib.sha1()
    for name in ("compute.py", "schedules.py", "carry_save.py", "strategy.py"):
        digest.update((here / name).read_bytes())
    return digest.hexdigest()[:12]


@dataclass
class PopcountChooser:
    """Answers "carry-save tree or plain popcount, and which register tile?" per xnor kernel shape for one target.

    Strategies: ``carry-save`` (:mod:`labnas.tvm.carry_save`, where the reduction is at most
    :data:`~labnas.tvm.kernels.CARRY_SAVE_MAX_TERMS` words), ``native`` (the plain popcount with
    :func:`~labnas.tvm.kernels.xnor_tile`'s tile) and ``native pxP`` (the plain popcount over a tile of P
    output pixels, P in :data:`PIXEL_TILES` dividing the output width). ``target``: a
    :class:`~labnas.tvm.targets.TargetPreset`. ``decisions`` lists every answer given, with where it came
    from, so a profile can print the strategy each layer used.
    """

    target: object
    cache_path: Path = STRATEGY_CACHE
    decisions: list[Decision] = field(default_factory=list)
    #: held while candidates are timed (a search passes its host lock, so no worker trains meanwhile)
    timing_lock: Callable = contextlib.nullcontext
    #: TVM worker threads the compiled network will run with (``None``: every CPU, as
    #: :meth:`labnas.timing.VmRunner.local` runs by default). Candidates are timed with that many, and the
    #: cache keeps choices per thread count: a kernel that scales to two threads and one that is bound by a
    #: pass over memory rank differently on one thread than on two.
    threads: int | None = None
    #: the compile's schedule policy: map partition, pinned and restricted LAB strategies
    #: (:class:`~labnas.tvm.policy.SchedulePolicy`; the default splits by rows and measures every LAB candidate)
    policy: SchedulePolicy = field(default_factory=SchedulePolicy)
    _lab_memo: dict = field(default_factory=dict, repr=False)

    def choose(self, shape: XnorShape) -> tuple[bool, int | None]:
        """``(carry_save, pixels)`` for ``shape``'s xnor kernel (``pixels=None``: the default tile)."""
        from .kernels import CARRY_SAVE_MAX_TERMS

        k, _, words, _ = shape.weights
        tree = k * k * words <= CARRY_SAVE_MAX_TERMS
        strategy = self.policy.xnor.pin_for(shape.key)
        if strategy is not None:
            return self._answer(shape, strategy, "pinned")
        pinned = self.target.carry_save_popcount
        if pinned is not None:
            return self._answer(shape, CARRY_SAVE if (pinned and tree) else NATIVE, "pinned")
        if not self.target.runs_here or shape.work < MEASURE_MIN_WORK:
            default = NATIVE if (self.target.native_popcount or not tree) else CARRY_SAVE
            return self._answer(shape, default, "default" if not self.target.runs_here else "small")
        strategy, source, speedup = self._cached_or_measured(shape.key, lambda: self._measure(shape, candidates(shape, tree)))
        return self._answer(shape, strategy, source, speedup)

    def carry_save(self, shape: XnorShape) -> bool:
        """Only the popcount half of :meth:`choose`."""
        return self.choose(shape)[0]

    def choose_lab(self, shape: LabShape) -> tuple[bool, tuple[int, ...] | None]:
        """``(fused, tile)`` for a LAB map: computed inside its conv's packing kernel or as its own kernel,
        with a measured register tile (``None``: the kernels' rule, where this machine cannot measure)."""
        if shape.key in self._lab_memo:  # asked by the LAB node and by its conv: one answer, one record
            return self._lab_memo[shape.key]
        vector, policy = self.target.vector_lanes, self.policy.lab
        if policy.pin_for(shape.key) is not None:
            strategy, source, speedup = policy.pin_for(shape.key), "pinned", None
        elif not self.target.runs_here or shape.work < MEASURE_MIN_WORK:
            source = "default" if not self.target.runs_here else "small"
            strategy, speedup = ("fused" if lab_rule(shape, vector)[0] else "two"), None
        else:
            strategy, source, speedup = self._cached_or_measured(
                policy.cache_key(shape.key),
                lambda: self._measure_lab(shape, [c for c in lab_candidates(shape, vector) if policy.allows(c)])
            )
        self.decisions.append(Decision(shape.key, strategy, source, speedup))
        self._lab_memo[shape.key] = parse_lab_strategy(strategy)
        return self._lab_memo[shape.key]

    def _measure_lab(self, shape: LabShape, strategies: list[str]) -> tuple[str, float]:
        """Compile every LAB candidate (fused kernel, or LAB kernel + packing kernel) in context, inside a small
        network whose first kernel writes the LAB's input split between the threads as the network's float kernels
        split it (:class:`~labnas.tvm.lab_context.LabContext`); check the packed words agree, time the networks
        interleaved; the winner and its speed-up over the rule's choice (the first).

        A candidate must beat the rule's choice by :data:`LAB_MARGIN` to replace it: two tiles within timing noise of
        each other would otherwise swap places from one measurement to the next."""
        from .lab_context import LabContext

        context = LabContext(shape, self.target, self.policy.by_rows)
        runs, reference = {}, None
        for strategy in strategies:
            vm = context.build(*parse_lab_strategy(strategy))
            out = context.packed(vm)
            if reference is None:
                reference = out
            elif not np.array_equal(out, reference):
                raise RuntimeError(f"LAB kernels {strategies[0]} and {strategy} disagree on {shape.key}: a kernel bug, please report it")
            runs[strategy] = context.timer(vm)
        winner, medians = choose_fastest(runs, rounds=LAB_ROUNDS)  # under the timing lock _cached_or_measured holds
        if medians[winner] * (1 + LAB_MARGIN) > medians[strategies[0]]:
            winner = strategies[0]
        return winner, medians[strategies[0]] / medians[winner]

    def _answer(self, shape: XnorShape, strategy: str, source: str, speedup: float | None = None) -> tuple[bool, int | None]:
        self.decisions.append(Decision(shape.key, strategy, source, speedup))
        return parse_strategy(strategy)

    def _cached_or_measured(self, key: str, measure: Callable[[], tuple[str, float]]) -> tuple[str, str, float | None]:
        """``(strategy, source, speedup)`` for a kernel key: this CPU's cached entry, else ``measure()``'s
        answer, written to the cache."""
        cached = self._cached(key)
        if cached:
            return cached
        # Held from the second look to the write: two processes compiling the same shape at once (a parallel
        # compile, two search workers) measure it once and then agree on its strategy.
        with threads_meanwhile(self.run_threads), self.timing_lock():
            cached = self._cached(key)
            if cached:
                return cached
            strategy, speedup = measure()
            cache = self._read_cache()  # another process may have written other keys meanwhile
            cache.setdefault(self._cpu_key, {})[key] = {"strategy": strategy, "speedup": round(speedup, 3)}
            self._write_cache(cache)
        return strategy, "measured", speedup

    def _cached(self, key: str) -> tuple[str, str, float | None] | None:
        """``(strategy, "cached", speedup)`` of this CPU's cache entry for ``key``, or None."""
        entry = self._read_cache().get(self._cpu_key, {}).get(key)
        return (entry["strategy"], "cached", entry.get("speedup")) if entry else None

    @functools.cached_property
    def _cpu_key(self) -> str:
        from .cpu import cpu_model, isa_summary

        return (f"{cpu_model()} | {' '.join(isa_summary())} | {self.target.tvm_target()} | threads {self.run_threads} "
                f"| code {_code_hash()} | {self.policy.cache_tag}")

    @property
    def run_threads(self) -> int:
        """The thread count candidates are timed with (:attr:`threads`, else every CPU)."""
        return int(self.threads or os.cpu_count() or 1)

    def _read_cache(self) -> dict:
        return read_json(self.cache_path)

    def _write_cache(self, cache: dict) -> None:
        write_json_atomic(self.cache_path, cache)  # a read-only home: measured again next time, never a failed compile

    def _measure(self, shape: XnorShape, strategies: list[str]) -> tuple[str, float]:
        """Compile every strategy for ``shape``, check they agree, time them interleaved; the winner and its
        speed-up over the default (``native``, or ``carry-save`` where that is the ISA's default)."""
        import tvm

        rng = np.random.default_rng(0)
        dev = tvm.cpu()
        a = tvm.runtime.tensor(rng.integers(-(2**62), 2**62, shape.packed, dtype=np.int64), dev)
        w = tvm.runtime.tensor(rng.integers(-(2**62), 2**62, shape.weights, dtype=np.int64), dev)
        runs, reference = {}, None
        for strategy in strategies:
            carry_save, pixels = parse_strategy(strategy)
            func = xnor_kernel(shape, carry_save, self.target.vector_lanes, pixels)
            lib = tvm.compile(tvm.IRModule({"main": func}), target=self.target.tvm_target())
            out = tvm.runtime.tensor(np.zeros(shape.output, np.float32), dev)
            lib.mod["main"](a, w, out)
            if reference is None:
                reference = out.numpy()
            elif not np.array_equal(out.numpy(), reference):
                raise RuntimeError(f"xnor kernels {strategies[0]} and {strategy} disagree on {shape.key}: a kernel bug, please report it")
            runs[strategy] = call_timer(lib.mod, dev, (a, w, out))
        winner, medians = choose_fastest(runs)  # under the timing lock _cached_or_measured holds
        default = CARRY_SAVE if (CARRY_SAVE in medians and not self.target.native_popcount) else NATIVE
        return winner, medians[default] / medians[winner]


#: Output pixels per register tile tried for the plain popcount (those dividing the output width). 14 and 28 are
#: whole or half ResNet rows: on the AVX-512 EPYC the daBNN layer's xnor kernel (256 -> 256 at 14x14) ran 28.3 us
#: with 14 pixels against 34.1 us with 7 (each weight vector loaded once for the whole row; 14 zmm accumulators).
PIXEL_TILES = (2, 4, 7, 8, 14, 28)


def candidates(shape: XnorShape, tree: bool) -> list[str]:
    """The strategies worth timing for ``shape``: the tree where it applies, the default tile, pixel tiles."""
    width = shape.output[3]
    return ([CARRY_SAVE] if tree else []) + [NATIVE] + [f"{NATIVE} px{p}" for p in PIXEL_TILES if width % p == 0]


def lab_candidates(shape: LabShape, vector: int, l2: int | None = None) -> list[str]:
    """LAB strategies worth timing: the rule's choice first (with its tile spelled out), then fused tiles
    (whole small maps x 2 channels, a row x 1 channel, 2 rows x 8 pixels), LAB-kernel tiles (a whole
    row x 1 or 2 rows), fused-near tiles (each word and row chunk padding the input maps it reads, where that
    region fits the L2 cache ``l2``, this machine's by default: the fused tiles, plus 4 or 2 whole rows of a map at
    most 32 wide in 2 row chunks, and 4 channels of a whole map of at most 64 pixels) and near tiles (a whole row x
    1 or 2 rows, or a whole map of at most 64 pixels, in chunks of 8 or 16 floats or the whole row; the input padded
    per channel pair, :func:`~labnas.tvm.schedules._schedule_lab`).

    The fused-near tiles of whole rows need not divide the map's rows (the last block is predicated; the packed words
    are checked against the rule's before any is timed). In context on an AVX-512 Xeon, 2 threads, LAB-BNN's maps:
    4 rows x 28 pixels in 2 chunks cost +25 us over the sign packing at 128 @ 28 against +60 us for the best earlier
    candidate, and 4 x 8 x 1 x 2 near +0 us at 64 @ 56 against +62 us (its padded chunk, 445 KB, was left out by a
    fixed 256 KB limit); docs/kernels.md. Rows shorter than one vector of 2 x ``vector`` floats also get tiles of a
    whole such vector computed past the map (4 or half the map's rows): 7 x 16 at 256 @ 14 cost 48 us in context
    against 55 us for the best earlier tile (AVX-512 Xeon, 2 threads, with the producer), LAB-BNN 2.7 % faster.
    Wider rows do not: 4 x 16 at 64 @ 56 (a 64-wide row, 14 % of it padding) tied 4 x 8 in context and was 5 %
    slower in the network."""
    from .cpu import l2_bytes
    from .kernels import lab_pack_tile, lab_tile

    h, w = shape.height, shape.width
    l2 = l2_bytes() if l2 is None else l2
    fused_rule = lab_pack_tile(h, w, vector, shape.sources) if shape.can_fuse else None
    pixels, rows = lab_tile(w, vector)
    two_rule = (pixels, next(r for r in (rows, 2, 1) if h % r == 0))
    first = f"fused {_spell(fused_rule)}" if fused_rule else f"two {_spell(two_rule)}"
    fused = [t for t in ((h, w, 2, 1), (1, w, 1, 2), (2, 8, 1, 2))
             if shape.can_fuse and h % t[0] == 0 and w % t[1] == 0 and (h // t[0]) % t[3] == 0 and t[0] * t[1] <= 256]
    tiles = [f"fused {_spell(t)}" for t in fused]
    tiles += [f"two {_spell(t)}" for t in ((w, 1), (w, 2)) if h % t[1] == 0 and w <= 64]
    if shape.sources == 1 or shape.channels % 2 == 0:  # the pair's input maps are one region to pad near
        # fused, each (word, row chunk) padding the maps its 64 channels read: where that region fits in L2
        padded_bytes = lambda t: 64 * (-(-h // t[3]) + shape.kernel - 1) * (w + shape.kernel - 1) * 4  # noqa: E731
        rows_of_map = [(r, w, 1, 2) for r in (4, 2) if shape.can_fuse and w <= 32 and 2 * r <= h]
        whole_map = [(h, w, 4, 1)] if shape.can_fuse and h * w <= 64 else []
        # rows shorter than one vector of 2 x ``vector`` floats (14 on AVX-512) computed to its width
        wide = 2 * vector
        past = [(r, wide, 1, 2) for r in dict.fromkeys((4, h // 2)) if shape.can_fuse and vector < w < wide
                and 2 <= r <= 8 and 2 * r <= h]
        tiles += [f"fused-near {_spell(t)}" for t in ([fused_rule] if fused_rule else []) + fused + rows_of_map + whole_map + past
                  if padded_bytes(t) <= l2]
        chunks = [c for c in (8, 16) if c < w and (w % c == 0 or c == 8)] + ([w] if w <= 16 else [])
        tiles += [f"near {_spell((w, near_rows, chunk))}" for near_rows in dict.fromkeys((1, 2, h if h * w <= 64 else 1))
                  for chunk in chunks if h % near_rows == 0 and w <= 64]
    return list(dict.fromkeys([first, *tiles]))


def _spell(tile: tuple[int, ...]) -> str:
    return "x".join(str(v) for v in tile)


def parse_lab_strategy(strategy: str) -> tuple[bool, tuple[int, ...] | None]:
    """``"fused 14x14x2x1"`` -> ``(True, (14, 14, 2, 1))``; ``"two 28x2"`` -> ``(False, (28, 2))``;
    ``"near 56x1x8"`` (the LAB kernel padding its input per channel pair, then the packing) -> ``(False,
    (56, 1, 8))``; ``"fused-near 7x7x2x1"`` (fused, each word padding its own input maps) -> ``(True,
    (7, 7, 2, 1, 1))``; a bare ``"fused"`` / ``"two"`` (a target measured nowhere) -> the rule's tile, ``None``."""
    kind, _, tile = strategy.partition(" ")
    sizes = tuple(int(v) for v in tile.split("x")) if tile and all(v.isdigit() for v in tile.split("x")) else None
    lengths = {"fused": 4, "fused-near": 4, "two": 2, "near": 3}
    if kind not in lengths or (tile and (sizes is None or len(sizes) != lengths[kind])) or (kind.endswith("near") and not tile):
        raise ValueError(f"unknown LAB strategy {strategy!r}")
    return kind.startswith("fused"), (*sizes, 1) if kind == "fused-near" else sizes


def parse_strategy(strategy: str) -> tuple[bool, int | None]:
    """``"carry-save"`` -> ``(True, None)``, ``"native"`` -> ``(False, None)``, ``"native px4"`` -> ``(False, 4)``."""
    if strategy == CARRY_SAVE:
        return True, None
    if strategy == NATIVE:
        return False, None
    if strategy.startswith(f"{NATIVE} px") and strategy[len(NATIVE) + 3:].isdigit():
        return False, int(strategy[len(NATIVE) + 3:])
    raise ValueError(f"unknown xnor strategy {strategy!r}")



def xnor_kernel(shape: XnorShape, carry_save: bool, vector: int, pixels: int | None = None):
    """The scheduled xnor PrimFunc ``(packed, weights) -> float32 NCHW dot`` for ``shape``."""
    from tvm import te

    from .kernels import xnor_compute
    from .registry import schedule_kernel

    a = te.placeholder(shape.packed, "int64", name="a")
    w = te.placeholder(shape.weights, "int64", name="w")
    out = xnor_compute(a, w, shape.stride, shape.taps, carry_save)
    return schedule_kernel(te.create_prim_func([a, w, out]), "labnas_xnor", vector, tile=(pixels,) if pixels else None)
