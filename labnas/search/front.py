"""The predicted front of a whole space: every candidate's latency from the block table, every accuracy in closed
form, the exact Pareto front of the predictions, then only that front compiled and timed.

A sampler that proposes one candidate at a time sees a few of a space's 2^16 placements and, where LAB's cost per
layer is below the spread of one timing, lets noise decide which. Here the latency of every candidate is predicted
from the space's block latency table (:mod:`labnas.latency`: additive per block, fitted to whole networks) and its
accuracy from an estimator with a closed form (the published-results model costs microseconds): the predicted
front is exact for the predictions, the same every run, and only its members are measured end to end.

A block's entry depends only on the choices of the layers inside it, so a candidate's predicted latency is
``scale x (sum over blocks of the entry for that block's choices) + overhead``, computed for all candidates at
once from per-block cost vectors.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass

import numpy as np

from ..models import LayerSpec, create_model
from ..space import SearchSpace

__all__ = ["PredictedSpace", "predict_space", "pareto_mask", "pareto_mask_within_noise", "front_ties", "thin_within_noise", "noise_range", "hypervolume", "MAX_EXHAUSTIVE",
           "NOISE_FLOOR"]

#: The smallest relative latency difference taken as an order (run-to-run spread of one candidate's latency on a shared
#: VM: 2.3 % in benchmarks/bench_verdicts.py); a timing's own p10..p90 range counts when it is wider.
NOISE_FLOOR = 0.03

#: Largest space enumerated exhaustively (2^20 candidates: about a second of numpy per million).
MAX_EXHAUSTIVE = 1 << 20


@dataclass
class PredictedSpace:
    """Every candidate of a space with its predicted latency (ms) and accuracy: ``choices[n, j]`` is the option index
    of searched layer ``space.layers[j]`` (:meth:`SearchSpace.layer_options`) in candidate ``n``."""

    space: SearchSpace
    choices: np.ndarray
    latency_ms: np.ndarray
    accuracy: np.ndarray
    seconds: float

    def layers(self, n: int) -> list[LayerSpec]:
        """The full layer list of candidate ``n``."""
        layers = self.space.default_layers()
        for j, i in enumerate(self.space.layers):
            layers[i] = self.space.layer_options(i)[int(self.choices[n, j])]
        return layers

    def front(self) -> np.ndarray:
        """Indices of the predicted Pareto front (accuracy up, latency down), by increasing latency."""
        idx = np.flatnonzero(pareto_mask(self.accuracy, self.latency_ms))
        return idx[np.argsort(self.latency_ms[idx], kind="stable")]

    def front_beyond_noise(self, floor: float = NOISE_FLOOR) -> np.ndarray:
        """The predicted front thinned to members whose latencies differ beyond noise (:func:`thin_within_noise`),
        by increasing latency: the candidates worth timing."""
        front = self.front()
        return front[thin_within_noise(self.accuracy[front], self.latency_ms[front], floor)]


def pareto_mask(accuracy: np.ndarray, latency: np.ndarray) -> np.ndarray:
    """True where no other point has higher-or-equal accuracy at lower-or-equal latency (and one of them strictly).
    Of points equal in both, the first is kept."""
    order = np.lexsort((-accuracy, latency))  # by latency, then accuracy descending
    keep = np.zeros(len(accuracy), bool)
    best = -np.inf
    for n in order:
        if accuracy[n] > best:
            keep[n] = True
            best = accuracy[n]
    return keep


def thin_within_noise(accuracy: np.ndarray, latency: np.ndarray, floor: float = NOISE_FLOOR) -> np.ndarray:
    """Of a Pareto front (accuracy and latency rising together), the fewest members such that every member is
    matched by a kept one at least as accurate and at most ``floor`` slower (relative): the front up to noise.

    Greedy from the most accurate end, which is optimal along a one-dimensional front: keep the most accurate member
    left, drop every member within ``floor`` of its latency (they are as fast within noise and less accurate), repeat.
    Where LAB's cost per layer is below a timing's spread, dozens of predicted front members differ only by noise;
    timing them all orders nothing, so only these are timed. Returns a boolean mask over the given members."""
    keep = np.zeros(len(accuracy), bool)
    order = np.lexsort((latency, -accuracy))  # most accurate first; of equal accuracy the fastest
    bound = np.inf  # members at or above this latency are covered by a kept one
    for n in order:
        if latency[n] < bound:
            keep[n] = True
            bound = latency[n] / (1 + floor)
    return keep


def noise_range(latency: np.ndarray, low: np.ndarray | None = None, high: np.ndarray | None = None,
                floor: float = NOISE_FLOOR) -> tuple[np.ndarray, np.ndarray]:
    """Each latency as the range its order is known to: its timing's ``low..high`` (p10..p90), widened to at least
    ``latency x (1 -+ floor)``."""
    low = latency if low is None else np.minimum(low, latency)
    high = latency if high is None else np.maximum(high, latency)
    return np.minimum(low, latency * (1 - floor)), np.maximum(high, latency * (1 + floor))


def pareto_mask_within_noise(accuracy: np.ndarray, latency: np.ndarray, low: np.ndarray | None = None,
                             high: np.ndarray | None = None, floor: float = NOISE_FLOOR) -> np.ndarray:
    """The Pareto front (accuracy up, latency down) up to timing noise: members ordered beyond noise.

    Each latency is a range: its timing's ``low..high`` (p10..p90) widened to at least ``latency x (1 -+ floor)``.
    Greedy from the most accurate point (of equal accuracy the faster first): a point is kept when its range ends
    below the start of every kept point's range, i.e. it is faster beyond noise than each more accurate point kept;
    otherwise a more accurate kept point is as fast within noise, and wins. Only kept points drop others, so a
    chain of points each within noise of the next (LAB layers ~1 % apart) does not collapse into its most accurate
    end: the kept points are spaced by about the noise along the whole front (``floor=0`` with no ranges:
    :func:`pareto_mask`'s front)."""
    lo, hi = noise_range(latency, low, high, floor)
    keep = np.zeros(len(accuracy), bool)
    bound = np.inf  # the lowest range start among the kept points
    for n in np.lexsort((latency, -accuracy)):
        if hi[n] < bound:
            keep[n] = True
            bound = min(bound, lo[n])
    return keep


def front_ties(latency: np.ndarray, low: np.ndarray | None = None, high: np.ndarray | None = None,
               floor: float = NOISE_FLOOR) -> int:
    """How many neighbouring pairs of a front (``latency`` of its members, any order) have overlapping noise ranges
    (:func:`noise_range`): pairs whose order the timing does not tell."""
    order = np.argsort(latency, kind="stable")
    lo, hi = (r[order] for r in noise_range(latency, low, high, floor))
    return int(np.sum(hi[:-1] >= lo[1:]))


def hypervolume(accuracy: np.ndarray, latency: np.ndarray, ref_accuracy: float, ref_latency: float) -> float:
    """Area dominated by the points (accuracy up, latency down) and bounded by the reference point."""
    mask = pareto_mask(accuracy, latency) & (accuracy > ref_accuracy) & (latency < ref_latency)
    idx = np.flatnonzero(mask)
    idx = idx[np.argsort(latency[idx])]
    area, prev_acc = 0.0, ref_accuracy
    for n in idx:  # latency ascending, accuracy ascending along a front
        area += (ref_latency - latency[n]) * (accuracy[n] - prev_acc)
        prev_acc = accuracy[n]
    return float(area)


def _block_costs(space: SearchSpace, table) -> tuple[float, list[tuple[list[int], np.ndarray]]]:
    """The blocks the searched layers sit in, with the table's entry for every combination of their options.

    Returns ``(fixed, blocks)``: the summed entries of blocks no searched layer touches, and per touched block the
    positions ``j`` (into ``space.layers``) of its layers and a cost array indexed by their option indices."""
    from ..latency import block_units

    shape = (1, *space.deploy_input)
    base_layers = space.default_layers()
    base = block_units(create_model(space.deploy_spec(base_layers)).eval(), shape)
    owner: dict[int, set[int]] = {}
    for j, i in enumerate(space.layers):  # which blocks each searched layer's options change
        for option in space.layer_options(i):
            layers = list(base_layers)
            layers[i] = option
            units = block_units(create_model(space.deploy_spec(layers)).eval(), shape)
            for b, (u, v) in enumerate(zip(base, units)):
                if u.key != v.key:
                    owner.setdefault(b, set()).add(j)
    blocks, fixed = [], 0.0
    for b, unit in enumerate(base):
        if b not in owner:
            fixed += table.block_sum([unit])
    for b, members in sorted(owner.items()):
        members = sorted(members)
        sizes = [len(space.layer_options(space.layers[j])) for j in members]
        costs = np.zeros(sizes)
        for combo in itertools.product(*(range(s) for s in sizes)):
            layers = list(base_layers)
            for j, o in zip(members, combo):
                layers[space.layers[j]] = space.layer_options(space.layers[j])[o]
            units = block_units(create_model(space.deploy_spec(layers)).eval(), shape)
            costs[combo] = table.block_sum([units[b]])
        blocks.append((members, _lab_never_cheaper(space, members, costs)))
    return fixed, blocks


def _lab_never_cheaper(space: SearchSpace, members: list[int], costs: np.ndarray) -> np.ndarray:
    """A block's cost array with every LAB option at least as costly as the sign option of the same conv kernel.

    LAB adds a depthwise convolution in front of the binary conv and replaces nothing but the sign, so a block cannot
    get faster by it; a table where it does (LAB's ~0.04 ms a layer on a fast x86 host is inside one block timing's
    noise) would put spurious LAB placements ahead of all-sign on the predicted front. Raising each LAB entry to
    its sign twin, axis by axis, keeps every monotonicity already made."""
    costs = costs.copy()
    for axis, j in enumerate(members):
        options = space.layer_options(space.layers[j])
        sign_of = {o.kernel: k for k, o in enumerate(options) if o.binarizer == "sign"}
        for k, option in enumerate(options):
            twin = sign_of.get(option.kernel)
            if option.binarizer == "lab" and twin is not None:
                lab_slice = [slice(None)] * costs.ndim
                sign_slice = list(lab_slice)
                lab_slice[axis], sign_slice[axis] = k, twin
                costs[tuple(lab_slice)] = np.maximum(costs[tuple(lab_slice)], costs[tuple(sign_slice)])
    return costs


def _lab_mask_only(space: SearchSpace, base: list[LayerSpec], options: list[list[LayerSpec]]) -> bool:
    """Whether every candidate differs from the all-sign network only by sign vs LAB 3x3 on its searched layers."""
    return all(base[i].binarizer == "sign" for i in space.layers) and all(
        {(o.binarizer, o.lab_kernel if o.binarizer == "lab" else 3, o.kernel) for o in opts} <= {("sign", 3, base[i].kernel), ("lab", 3, base[i].kernel)}
        for i, opts in zip(space.layers, options))


def predict_space(space: SearchSpace, table, estimator) -> PredictedSpace:
    """Every candidate of ``space`` with its predicted latency (``table``, a :class:`labnas.latency.LatencyTable`) and
    accuracy (``estimator.estimate``, which should cost microseconds: the published-results model)."""
    start = time.perf_counter()
    sizes = [len(space.layer_options(i)) for i in space.layers]
    total = int(np.prod(sizes, dtype=np.int64))
    if total > MAX_EXHAUSTIVE:
        raise ValueError(f"space {space.name} holds {total} candidates, more than {MAX_EXHAUSTIVE} to enumerate")
    choices = np.stack(np.unravel_index(np.arange(total), sizes), axis=1).astype(np.int16) if sizes else np.zeros((1, 0), np.int16)
    fixed, blocks = _block_costs(space, table)
    block_sum = np.full(len(choices), fixed)
    for members, costs in blocks:
        block_sum += costs[tuple(choices[:, j] for j in members)]
    latency = float(table.meta.get("scale", 1.0)) * block_sum + float(table.meta["overhead_ms"])
    base, options = space.default_layers(), [space.layer_options(i) for i in space.layers]
    if _lab_mask_only(space, base, options) and hasattr(estimator, "top1_of_lab_masks"):  # the closed form, vectorised
        lab = np.zeros((len(choices), len(base)), bool)
        for j, i in enumerate(space.layers):
            lab[:, i] = np.array([o.binarizer == "lab" for o in options[j]])[choices[:, j]]
        accuracy = estimator.top1_of_lab_masks(lab) / 100.0
        return PredictedSpace(space, choices, latency, accuracy, time.perf_counter() - start)
    accuracy = np.empty(len(choices))
    for n, row in enumerate(choices.tolist()):
        layers = list(base)
        for j, i in enumerate(space.layers):
            layers[i] = options[j][row[j]]
        accuracy[n] = estimator.estimate(layers).accuracy
    predicted = PredictedSpace(space, choices, latency, accuracy, 0.0)
    predicted.seconds = time.perf_counter() - start
    return predicted
