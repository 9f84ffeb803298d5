"""The accuracy settings of a search space (its ``[proxy]`` table), typed and validated."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..train import AdamRecipe, TrainConfig
from .estimator import EstimatorError
from .registry import DEFAULT_ESTIMATOR, ESTIMATORS

__all__ = ["ProxySettings"]


@dataclass(frozen=True)
class ProxySettings(AdamRecipe):
    """How a space's accuracy column is estimated: the estimator, its data and network, and the
    :class:`labnas.train.AdamRecipe` its runs train with (``epochs``, ``batch_size``, ``lr``, ``schedule``,
    ``warmup_epochs``, ``grad_clip``; the proxy's defaults are 4 epochs of batch 32).

    Attributes:
        estimator: ``trained`` (each candidate trained on the dataset), ``supernet`` (one weight-sharing
            supernet trained once, candidates scored with inherited weights after BatchNorm
            recalibration) or ``published`` (a model fitted to published ImageNet results; no training).
        dataset: a name from ``labnas.data.DATASETS``.
        resolution: images resampled to this square size (0: the dataset's own).
        width_mult: channel multiplier of the proxy network (the deployment network keeps its own).
        epochs: training epochs of a candidate (``trained``) or of the supernet (``supernet``).
        subset: training images used (0: all).
        seeds: independent runs averaged per candidate (``trained``) or supernets averaged (``supernet``).
        recalib_images: training images pushed through a sub-network to re-estimate BatchNorm statistics
            before it is scored (``supernet``).
        precise_bn_images: training images used to re-estimate BatchNorm statistics after a trained
            candidate's last epoch (``trained``; 0: keep the running averages).
    """

    epochs: int = 4
    batch_size: int = 32
    estimator: str = DEFAULT_ESTIMATOR
    dataset: str = "digits"
    resolution: int = 0
    width_mult: float = 0.25
    subset: int = 0
    seeds: int = 1
    recalib_images: int = 1024
    precise_bn_images: int = 2048

    def __post_init__(self) -> None:
        if self.estimator not in ESTIMATORS:
            raise EstimatorError(f"unknown accuracy estimator {self.estimator!r}; choose one of {', '.join(ESTIMATORS)}")
        problem = self.recipe_problem()
        if problem:
            raise EstimatorError(f"proxy: {problem}")
        if self.seeds < 1:
            raise EstimatorError(f"proxy seeds must be >= 1, got {self.seeds}")
        if not 0 < self.width_mult <= 4:
            raise EstimatorError(f"proxy width_mult must be in (0, 4], got {self.width_mult}")
        if self.resolution < 0 or self.subset < 0:
            raise EstimatorError("proxy resolution and subset must be >= 0")

    @classmethod
    def from_table(cls, table: dict, where: str = "[proxy]") -> "ProxySettings":
        """Settings from a TOML table; unknown keys and wrong types are errors naming the key."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(table) - set(fields))
        if unknown:
            raise EstimatorError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(fields)}")
        values = {}
        for key, value in table.items():
            default = getattr(cls, key)
            kind = type(default)
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, kind) or isinstance(value, bool):
                raise EstimatorError(f"{where}.{key}: expected {kind.__name__}, got {value!r}")
            values[key] = value
        return cls(**values)

    def train_config(self, seed: int, device: str = "cpu", precise_bn: bool = True):
        """The ``labnas.train.TrainConfig`` of one run of this recipe (``precise_bn=False``: keep running BN averages)."""
        return TrainConfig(**self.recipe_fields(), subset=self.subset or None, seed=seed, device=device,
                           precise_bn_images=self.precise_bn_images if precise_bn else 0)

    def replace(self, **changes) -> "ProxySettings":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
