"""An accuracy estimate read off published ImageNet results, not trained: clearly labelled, never mixed
into a trained proxy.

Model (fitted to the LAB authors' stage ablation of Bi-Real-18 on ImageNet, 16 configurations):

    top1 = a + G * (1 - exp(-sum_s w_s * f_s))

where ``f_s`` is the fraction of stage s's binary layers that take LAB (3x3). The saturation expresses
what the ablation shows: LAB in one more stage helps less the more stages already have it (all four
stages give +5.9 points, the four single-stage gains add up to +10.4). Leave-one-configuration-out on the
16 configurations: Kendall tau 0.90, Spearman 0.97, mean absolute error 0.21 points
(``labnas.accuracy.published.leave_one_out``).

Coverage:
- ``bireal18``: fitted directly.
- ``labbnn`` (the same Bi-Real-18 body with a QuickNet stem and PReLU): the Bi-Real-18 fit transferred,
  offset to the published LAB-BNN all-LAB top-1 (62.4 %).
- ``quicknet``, ``xnornet_alexnet``, ``reactnet_mbv1``: only all-sign and all-LAB are published; the estimate
  interpolates between them along the Bi-Real-18 saturation curve with every layer weighted alike. No
  placement inside them is validated.
- Only ``sign`` vs ``lab`` with LAB's 3x3 kernel and each slot's standard binary-conv kernel: other
  choices raise :class:`~labnas.accuracy.EstimatorError` (the trial fails with that reason).
"""

from __future__ import annotations

import math
import time

import numpy as np

from ..models import LayerSpec
from ..models.families import get_family
from .estimator import AccuracyEstimate, EstimatorError, ProgressFn
from .fidelity import STAGE_ABLATION_TOP1, kendall_tau, spearman_rho
from .registry import register_estimator

__all__ = ["PublishedImageNet", "fit_stage_model", "leave_one_out", "FOUR_NETWORKS_TOP1"]

#: ImageNet top-1 (%) of the four BNNs with sign / LAB everywhere (LAB repository README).
FOUR_NETWORKS_TOP1 = {
    "xnornet_alexnet": (44.0, 46.5),
    "bireal18": (54.4, 59.1),
    "quicknet": (58.7, 62.5),
    "reactnet_mbv1": (62.4, 64.1),
}
#: LAB-BNN's all-LAB ImageNet top-1 (the zoo fork's docstring).
LABBNN_ALL_LAB_TOP1 = 62.4


def _stage_fractions(code: str) -> np.ndarray:
    return np.array([float(c) for c in code])


def _predict(params: np.ndarray, f: np.ndarray) -> np.ndarray:
    a, gain, *w = params
    return a + gain * (1.0 - np.exp(-(np.atleast_2d(f) @ np.asarray(w))))


def fit_stage_model(table: dict[str, float] = STAGE_ABLATION_TOP1) -> np.ndarray:
    """Least-squares fit of ``(a, G, w_1..w_4)`` to a stage table (code -> top-1 %); all parameters >= 0."""
    from scipy.optimize import least_squares

    codes = list(table)
    f = np.stack([_stage_fractions(c) for c in codes])
    y = np.array([table[c] for c in codes])
    start = [float(y.min()), float(y.max() - y.min()) * 1.2, 0.5, 0.5, 0.5, 0.5]
    fit = least_squares(lambda p: _predict(p, f) - y, start, bounds=([0] * 6, [100, 50, 10, 10, 10, 10]))
    return fit.x


def leave_one_out(table: dict[str, float] = STAGE_ABLATION_TOP1) -> dict[str, float]:
    """Each configuration predicted by the model fitted on the other ones: Kendall tau, Spearman rho, MAE."""
    codes = list(table)
    pred = []
    for code in codes:
        params = fit_stage_model({c: v for c, v in table.items() if c != code})
        pred.append(float(_predict(params, _stage_fractions(code))[0]))
    truth = [table[c] for c in codes]
    return {"kendall_tau": kendall_tau(pred, truth), "spearman_rho": spearman_rho(pred, truth),
            "mae_points": float(np.mean(np.abs(np.array(pred) - truth)))}


class PublishedImageNet:
    """Predicted ImageNet top-1 (as a fraction) from published results; see the module docstring."""

    name = "published"

    def __init__(self, family: str, table: dict[str, float] = STAGE_ABLATION_TOP1):
        self.fam = get_family(family)
        self.family = family
        if family not in ("bireal18", "labbnn", *FOUR_NETWORKS_TOP1):
            raise EstimatorError(f"no published LAB results cover family {family!r}; use the trained or supernet estimator")
        self.table = dict(table)
        self.params = fit_stage_model(self.table)
        self.coverage = "stage ablation" if family in ("bireal18", "labbnn") else "endpoints only (all-sign, all-LAB)"

    def without(self, code: str) -> "PublishedImageNet":
        """The same estimator fitted without stage configuration ``code`` (for leave-one-out scoring)."""
        return PublishedImageNet(self.family, {c: v for c, v in self.table.items() if c != code})

    def describe(self) -> str:
        return (f"published ImageNet results (not trained): {self.family}, {self.coverage}; "
                "sign vs LAB 3x3 per layer")

    def _check(self, layers: list[LayerSpec]) -> None:
        if len(layers) != len(self.fam.slots):
            raise EstimatorError(f"{self.family} has {len(self.fam.slots)} binary layers, the candidate {len(layers)}")
        for i, (layer, slot) in enumerate(zip(layers, self.fam.slots)):
            if layer.binarizer not in ("sign", "lab"):
                raise EstimatorError(f"layer {i}: binarizer {layer.binarizer!r} is not covered by published results (sign, lab)")
            if layer.binarizer == "lab" and layer.lab_kernel != 3:
                raise EstimatorError(f"layer {i}: LAB kernel {layer.lab_kernel} is not covered by published results (3 only)")
            if layer.kernel != slot.kernel:
                raise EstimatorError(f"layer {i}: binary-conv kernel {layer.kernel} is not covered by published results ({slot.kernel} only)")

    def top1(self, layers: list[LayerSpec]) -> float:
        """Predicted ImageNet top-1 in %."""
        self._check(layers)
        lab = np.array([layer.binarizer == "lab" for layer in layers], float)
        if self.family in ("bireal18", "labbnn"):
            f = lab.reshape(4, -1).mean(axis=1)  # fraction of LAB per stage
            value = float(_predict(self.params, f)[0])
            if self.family == "labbnn":
                value += LABBNN_ALL_LAB_TOP1 - float(_predict(self.params, np.ones(4))[0])
            return value
        sign_top1, lab_top1 = FOUR_NETWORKS_TOP1[self.family]
        total = float(np.sum(self.params[2:]))  # the stage weights w_1..w_4
        curve = (1.0 - math.exp(-total * lab.mean())) / (1.0 - math.exp(-total))
        return sign_top1 + (lab_top1 - sign_top1) * curve

    def top1_of_lab_masks(self, lab: np.ndarray) -> np.ndarray:
        """:meth:`top1` of many candidates at once (%): ``lab[n, i]`` is True where candidate n's layer i takes LAB 3x3
        (every other choice at the family's own). The same formula as :meth:`top1`, vectorised for whole spaces."""
        lab = np.asarray(lab, float)
        if self.family in ("bireal18", "labbnn"):
            value = _predict(self.params, lab.reshape(len(lab), 4, -1).mean(axis=2))  # rows: fraction of LAB per stage
            if self.family == "labbnn":
                value = value + LABBNN_ALL_LAB_TOP1 - float(_predict(self.params, np.ones(4))[0])
            return np.asarray(value, float)
        sign_top1, lab_top1 = FOUR_NETWORKS_TOP1[self.family]
        total = float(np.sum(self.params[2:]))
        curve = (1.0 - np.exp(-total * lab.mean(axis=1))) / (1.0 - math.exp(-total))
        return sign_top1 + (lab_top1 - sign_top1) * curve

    def basis(self, layers: list[LayerSpec]) -> tuple[str, bool]:
        """What the estimate of ``layers`` rests on, and whether it is interpolated outside the published
        configurations: for Bi-Real-18 the 16 stage configurations (each stage all sign or all LAB) are
        published; for LAB-BNN only all-LAB; for the other families all-sign and all-LAB."""
        lab = [layer.binarizer == "lab" for layer in layers]
        if self.family in ("bireal18", "labbnn"):
            per_stage = np.array(lab, float).reshape(4, -1).mean(axis=1)
            code = "".join(str(int(f)) for f in per_stage)
            whole_stages = bool(np.all((per_stage == 0) | (per_stage == 1)))
            if self.family == "bireal18" and whole_stages and code in self.table:
                return f"published: Bi-Real-18 stage configuration {code} (LAB stage ablation)", False
            if self.family == "labbnn" and all(lab):
                return "published: LAB-BNN all-LAB", False
            why = "a stage partly LAB" if not whole_stages else f"stage configuration {code} not published for {self.family}"
            return f"interpolated: {why}, from the Bi-Real-18 stage-ablation fit", True
        if all(lab) or not any(lab):
            return f"published: {self.family} all-{'LAB' if all(lab) else 'sign'}", False
        return f"interpolated: {sum(lab)} of {len(lab)} layers LAB, between the published all-sign and all-LAB", True

    def estimate(self, layers: list[LayerSpec], seed: int = 0, progress: ProgressFn | None = None) -> AccuracyEstimate:
        start = time.perf_counter()
        value = self.top1(layers) / 100.0
        basis, interpolated = self.basis(layers)
        return AccuracyEstimate(value, [], self.name, 0.0, time.perf_counter() - start,
                                {"coverage": self.coverage, "basis": basis, "interpolated": interpolated})


@register_estimator("published", "fitted to published ImageNet results (sign vs LAB 3x3 only, no training)",
                    "predicted ImageNet top-1 (published results, not trained)", needs_data=False)
def _build_published(family, settings, data, choices, device, cache_dir) -> PublishedImageNet:
    return PublishedImageNet(family)
