"""The accuracy-estimator contract shared by the search, ``labnas train`` and the fidelity harness.

An estimator turns the per-layer choices of one family into an accuracy estimate. The search calls
``estimate`` once per feasible trial; ``benchmarks/proxy_fidelity.py`` calls the very same method on the
stage-ablation configurations, so what the harness measures is what the search uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

from .._errors import LabnasError
from ..models import LayerSpec

__all__ = ["AccuracyEstimate", "AccuracyEstimator", "EstimatorError", "ProgressFn"]

#: Called as ``progress(phase, done, total)`` while an estimate is made (phase: "train", "supernet", ...).
ProgressFn = Callable[[str, int, int], None]


class EstimatorError(LabnasError, ValueError):
    """An estimator that cannot be built or cannot score a network; the message names the fix."""


@dataclass
class AccuracyEstimate:
    """One network's estimated accuracy.

    Attributes:
        accuracy: the estimate, a fraction in [0, 1] (mean over ``per_seed`` for trained estimators).
        per_seed: the individual runs' accuracies (one per seed), empty for table-based estimators.
        estimator: the estimator's name (``trained``, ``supernet``, ``published``).
        fidelity: epochs of training behind the value (0 for a table-based estimate).
        seconds: wall time spent on this estimate.
        detail: estimator-specific facts worth keeping on the trial record.
    """

    accuracy: float
    per_seed: list[float] = field(default_factory=list)
    estimator: str = ""
    fidelity: float = 0.0
    seconds: float = 0.0
    detail: dict = field(default_factory=dict)


class AccuracyEstimator(Protocol):
    """What every estimator offers."""

    #: registry name
    name: str

    def describe(self) -> str:
        """One line saying what the accuracy column means (estimator, dataset, fidelity)."""

    def estimate(self, layers: list[LayerSpec], seed: int = 0, progress: ProgressFn | None = None) -> AccuracyEstimate:
        """Estimate the accuracy of the family's network with these per-layer choices.

        Raises ``labnas.train.TrainingFailed`` when a trained estimate diverged or stayed at chance, and
        :class:`EstimatorError` when the choices are outside what the estimator covers.
        """
