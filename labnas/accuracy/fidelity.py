"""Rank fidelity of an accuracy estimator: how well its scores order networks whose reference accuracy
(ImageNet top-1, or any table a user supplies) is known.

The reference shipped with labnas is the LAB authors' stage ablation (Bi-Real-18 on ImageNet, LAB 3x3 in
every binary layer of the marked stages, sign elsewhere), read from their plotting script
``LAB/visualization/show_scatterplot.py``.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._errors import LabnasError
from ..models import LayerSpec

__all__ = [
    "STAGE_ABLATION_TOP1",
    "ReferenceTableError",
    "stage_layers",
    "kernel_config_layers",
    "config_layers",
    "kernel_config_code",
    "kendall_tau",
    "spearman_rho",
    "bootstrap_interval",
    "RankFidelity",
    "mean_pairwise_difference",
    "rank_fidelity",
    "load_reference_csv",
]

#: ImageNet top-1 (%) of Bi-Real-18 with LAB (3x3, official pairing) in the marked stages; bit i = stage i+1.
STAGE_ABLATION_TOP1: dict[str, float] = {
    "1111": 59.1, "0111": 58.7, "1011": 58.4, "1110": 58.4, "1101": 58.1, "0110": 58.0, "0101": 57.9, "0011": 57.8,
    "1010": 57.8, "0010": 56.7, "1001": 56.7, "1100": 56.4, "0001": 55.9, "0100": 55.7, "1000": 54.9, "0000": 53.2,
}


class ReferenceTableError(LabnasError, ValueError):
    """A reference table that cannot be used; the message names the file, the row and the fix."""


def stage_layers(code: str, blocks_per_stage: int = 4, lab_kernel: int = 3) -> list[LayerSpec]:
    """The 16 binary layers of a Bi-Real-18 body for a stage code such as ``"0110"``: LAB (``lab_kernel``)
    in every layer of a stage marked 1, the family's sign elsewhere; 3x3 binary convs throughout."""
    if not code or any(c not in "01" for c in code):
        raise ValueError(f"stage code must be a string of 0/1, got {code!r}")
    return [
        LayerSpec(binarizer="lab" if bit == "1" else "sign", lab_kernel=lab_kernel, kernel=3)
        for bit in code
        for _ in range(blocks_per_stage)
    ]


_KERNEL_CODE = re.compile(r"^lab([0-7]+)-conv([1-7]+)$")


def kernel_config_code(lab_kernels: tuple[int, ...], conv_kernels: tuple[int, ...]) -> str:
    """The name of a stage-level kernel configuration: ``lab`` + one digit per stage (the LAB kernel, 0 for the
    family's sign) + ``-conv`` + one digit per stage (the binary conv kernel), e.g. ``lab3377-conv5353``."""
    return "lab" + "".join(map(str, lab_kernels)) + "-conv" + "".join(map(str, conv_kernels))


def kernel_config_layers(code: str, blocks_per_stage: int = 4) -> list[LayerSpec]:
    """The binary layers of a Bi-Real-18 body for a kernel configuration such as ``"lab3377-conv5353"``
    (see :func:`kernel_config_code`): every layer of stage s takes LAB with the s-th LAB digit as its kernel
    (sign for 0) and a binary conv with the s-th conv digit as its kernel."""
    match = _KERNEL_CODE.match(code)
    if not match or len(match[1]) != len(match[2]) or any(int(k) % 2 == 0 and k != "0" for k in match[1] + match[2]):
        raise ValueError(f"kernel configuration must look like lab3377-conv5353 (odd kernels, 0 = sign, one digit per "
                         f"stage), got {code!r}")
    return [
        LayerSpec(binarizer="lab" if lab != "0" else "sign", lab_kernel=int(lab) if lab != "0" else 3, kernel=int(conv))
        for lab, conv in zip(match[1], match[2])
        for _ in range(blocks_per_stage)
    ]


def config_layers(code: str) -> list[LayerSpec]:
    """The layers of a reference configuration, a stage code (``"0110"``, :func:`stage_layers`) or a kernel
    configuration (``"lab3377-conv5353"``, :func:`kernel_config_layers`)."""
    return kernel_config_layers(code) if code.startswith("lab") else stage_layers(code)


def kendall_tau(x, y) -> float:
    """Kendall's tau-b between two equally long sequences (ties counted as in scipy's default)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) != len(y) or len(x) < 2:
        raise ValueError("kendall_tau needs two sequences of the same length >= 2")
    dx = np.sign(x[:, None] - x[None, :])
    dy = np.sign(y[:, None] - y[None, :])
    iu = np.triu_indices(len(x), 1)
    dx, dy = dx[iu], dy[iu]
    concordant_minus_discordant = float((dx * dy).sum())
    n_x, n_y = float(np.count_nonzero(dx)), float(np.count_nonzero(dy))
    if n_x == 0 or n_y == 0:
        return float("nan")
    return concordant_minus_discordant / math.sqrt(n_x * n_y)


def _ranks(v: np.ndarray) -> np.ndarray:
    order = np.argsort(v, kind="mergesort")
    ranks = np.empty(len(v), float)
    ranks[order] = np.arange(len(v), dtype=float)
    for value in np.unique(v):  # average ranks over ties
        tied = v == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def spearman_rho(x, y) -> float:
    """Spearman's rank correlation (Pearson on average ranks)."""
    rx, ry = _ranks(np.asarray(x, float)), _ranks(np.asarray(y, float))
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def bootstrap_interval(x, y, stat=kendall_tau, n: int = 2000, level: float = 0.90, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``stat(x, y)`` over resampled configurations (pairs drawn with
    replacement; resamples with fewer than 3 distinct configurations are skipped)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n):
        idx = rng.integers(0, len(x), len(x))
        if len(np.unique(idx)) < 3:
            continue
        v = stat(x[idx], y[idx])
        if v == v:
            values.append(v)
    if not values:
        return float("nan"), float("nan")
    lo, hi = np.quantile(values, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


@dataclass
class RankFidelity:
    """How an estimator's mean scores rank the reference configurations.

    Attributes:
        n: configurations scored.
        tau, tau_lo, tau_hi: Kendall tau-b and its bootstrap 90 % interval.
        rho: Spearman rho.
        gain: score(best reference config) - score(worst reference config), in the estimator's unit
            (for the stage ablation: 1111 minus 0000, accuracy points).
        noise: seed noise, how far apart two trainings of one configuration land: the mean over configurations
            of the mean absolute difference between any two of its seeds (with two seeds, ``|seed0 - seed1|``),
            same unit; nan with one seed. Unlike the range (max - min), it does not grow with the number of
            seeds, so settings run with different seed counts compare fairly.
        seeds: seeds per configuration (the smallest count).
    """

    n: int
    tau: float
    tau_lo: float
    tau_hi: float
    rho: float
    gain: float
    noise: float
    seeds: int

    @property
    def gain_over_noise(self) -> float:
        """The gain in units of the seed noise of one training."""
        return self.gain / self.noise if self.noise and self.noise == self.noise else float("nan")

    @property
    def noise_of_mean(self) -> float:
        """The expected gap between two averages of ``seeds`` trainings each: ``noise / sqrt(seeds)`` (independent
        seeds); what separates two configurations when the estimator is that average."""
        return self.noise / math.sqrt(self.seeds) if self.seeds > 1 else float("nan")


def mean_pairwise_difference(values) -> float:
    """Mean of ``|a - b|`` over all pairs of ``values`` (Gini's mean difference): the expected gap between two
    independent draws, estimated without bias from any number of them (2 or more)."""
    v = np.asarray(values, dtype=float)
    if v.size < 2:
        return float("nan")
    return float(np.abs(v[:, None] - v[None, :]).sum() / (v.size * (v.size - 1)))


def rank_fidelity(scores: dict[str, list[float]], reference: dict[str, float]) -> RankFidelity:
    """Compare per-configuration scores (a list of per-seed values each) with reference accuracies.

    Only configurations present in both are used; at least three are needed.
    """
    names = [k for k in reference if k in scores and scores[k]]
    if len(names) < 3:
        raise ValueError(f"need scores for at least 3 reference configurations, got {len(names)}")
    mean = np.array([float(np.mean(scores[k])) for k in names])
    ref = np.array([reference[k] for k in names])
    tau = kendall_tau(mean, ref)
    lo, hi = bootstrap_interval(mean, ref)
    best, worst = names[int(np.argmax(ref))], names[int(np.argmin(ref))]
    spreads = [mean_pairwise_difference(scores[k]) for k in names if len(scores[k]) > 1]
    return RankFidelity(
        n=len(names),
        tau=tau,
        tau_lo=lo,
        tau_hi=hi,
        rho=spearman_rho(mean, ref),
        gain=float(np.mean(scores[best]) - np.mean(scores[worst])),
        noise=float(np.mean(spreads)) if spreads else float("nan"),
        seeds=min(len(scores[k]) for k in names),
    )


def load_reference_csv(path: str | Path) -> dict[str, float]:
    """A user's reference table: a CSV with columns ``config`` and ``accuracy`` (one row per configuration)."""
    path = Path(path)
    try:
        with path.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as err:
        raise ReferenceTableError(f"cannot read reference table {path}: {err.strerror}") from None
    if not rows or not {"config", "accuracy"} <= set(rows[0]):
        raise ReferenceTableError(f"{path}: needs a header with columns 'config' and 'accuracy'")
    table: dict[str, float] = {}
    for i, row in enumerate(rows, start=2):
        try:
            table[row["config"].strip()] = float(row["accuracy"])
        except (TypeError, ValueError):
            raise ReferenceTableError(f"{path} line {i}: accuracy {row.get('accuracy')!r} is not a number") from None
    return table
