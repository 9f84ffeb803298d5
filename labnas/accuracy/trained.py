"""The trained proxy: every candidate is built at the proxy width and trained from scratch, per seed."""

from __future__ import annotations

import time

import numpy as np

from ..data import Dataset
from ..models import ArchSpec, LayerSpec
from ..train import TrainConfig, evaluate, train_proxy
from .estimator import AccuracyEstimate, ProgressFn
from .settings import ProxySettings
from .registry import register_estimator

__all__ = ["TrainedProxy"]


class TrainedProxy:
    """Accuracy = mean test accuracy of ``settings.seeds`` independent trainings of the proxy network.

    Seeds of one estimate are ``seed, seed + 1, ...``; the proxy network is the family with the
    candidate's per-layer choices at ``settings.width_mult``, the small stem and the dataset's classes.
    """

    name = "trained"

    def __init__(self, family: str, settings: ProxySettings, data: Dataset, device: str = "cpu", lab_pairing: str = "official"):
        self.family, self.settings, self.data, self.device = family, settings, data, device
        self.lab_pairing = lab_pairing

    def describe(self) -> str:
        s = self.settings
        h = self.data.shape[1]
        return (f"trained proxy: {self.data.name} {h}x{h}, width x{s.width_mult:g}, {s.epochs} epochs "
                f"(Adam {s.lr:g}, {s.schedule}), mean of {s.seeds} seed(s)")

    def proxy_spec(self, layers: list[LayerSpec]) -> ArchSpec:
        return ArchSpec(self.family, list(layers), width_mult=self.settings.width_mult, in_channels=self.data.shape[0],
                        num_classes=self.data.num_classes, stem="small", lab_pairing=self.lab_pairing)

    def train_config(self, seed: int) -> TrainConfig:
        return self.settings.train_config(seed, self.device)

    def _scored(self, intermediate):
        """An ``on_epoch(model, epoch)`` hook reporting the test accuracy on up to 1,000 images to ``intermediate``."""
        def on_epoch(model, epoch: int) -> None:
            intermediate(epoch, evaluate(model, self.data.x_test[:1000], self.data.y_test[:1000], self.device))

        return on_epoch

    def estimate(self, layers: list[LayerSpec], seed: int = 0, progress: ProgressFn | None = None,
                 intermediate=None) -> AccuracyEstimate:
        """See :class:`~labnas.accuracy.AccuracyEstimator`. ``intermediate(epoch, accuracy)`` is called after
        every epoch of the first seed with the test accuracy on up to 1,000 images (for multi-fidelity
        pruning, which stops the run by raising from it)."""
        start = time.perf_counter()
        spec = self.proxy_spec(layers)
        runs = []
        total = self.settings.seeds * self.settings.epochs
        for k in range(self.settings.seeds):
            done = k * self.settings.epochs
            report = (lambda epoch, loss, d=done: progress("train", d + epoch, total)) if progress else None
            on_epoch = self._scored(intermediate) if intermediate is not None and k == 0 else None
            runs.append(train_proxy(spec, self.data, self.train_config(seed + k), report, on_epoch).accuracy)
        return AccuracyEstimate(float(np.mean(runs)), runs, self.name, float(self.settings.epochs),
                                time.perf_counter() - start, {"seeds": [seed + k for k in range(len(runs))],
                                                                "basis": self.describe()})


@register_estimator("trained", "each candidate trained on the proxy dataset", "proxy accuracy (short training on the proxy dataset)")
def _build_trained(family, settings, data, choices, device, cache_dir) -> TrainedProxy:
    return TrainedProxy(family, settings, data, device)
