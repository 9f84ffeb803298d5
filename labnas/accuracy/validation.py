"""What an accuracy estimate was validated against: the rank-fidelity study behind an estimator's settings.

An estimator's number is only as good as the ranking check behind it (``benchmarks/proxy_fidelity.py``): a setting
scored against the LAB authors' ImageNet stage ablation, or against another reference table, with Kendall tau and
its bootstrap 90 % interval. :func:`validation_of` finds the study that matches a space's ``[proxy]`` settings and
says, per candidate, whether its choices lie inside what that study covered (the stage ablation covers sign vs LAB
3x3 with 3x3 binary convs only; a LAB 7x7 or a 5x5 conv is outside it). Each trial of a search records the answer
(``accuracy_validated``), so a front built on an unvalidated estimate says so.

The figures below are copied from ``results/benchmarks/proxy_fidelity.csv`` (the package cannot read ``results/``
when installed); ``tests/test_accuracy.py`` checks them against that file, so they cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..models import LayerSpec
from .settings import ProxySettings

__all__ = ["Validation", "VALIDATIONS", "validation_of", "STAGE_ABLATION", "NOT_VALIDATED"]

STAGE_ABLATION = "the LAB authors' ImageNet stage ablation (16 Bi-Real-18 placements of LAB 3x3, sign elsewhere)"
NOT_VALIDATED = "not validated: no rank-fidelity study of these settings (benchmarks/proxy_fidelity.py scores one)"

#: The settings fields that decide an estimate (two settings equal in these are the same estimator).
_DECIDING = ("estimator", "dataset", "resolution", "width_mult", "epochs", "batch_size", "lr", "schedule", "warmup_epochs",
             "subset", "seeds")


@dataclass(frozen=True)
class Validation:
    """One rank-fidelity result: ``setting`` of ``benchmarks/proxy_fidelity.py`` scored against ``reference`` with
    Kendall ``tau`` (90 % bootstrap interval ``tau_lo`` .. ``tau_hi``) as the mean of ``seeds`` runs; it covers
    candidates whose LAB kernels and binary-conv kernels are in ``lab_kernels`` / ``conv_kernels``."""

    setting: str
    reference: str
    tau: float
    tau_lo: float
    tau_hi: float
    seeds: int
    fields: tuple[tuple[str, object], ...]
    lab_kernels: tuple[int, ...] = (3,)
    conv_kernels: tuple[int, ...] = (3,)

    def matches(self, settings: ProxySettings) -> bool:
        """Whether ``settings`` are the study's (the published estimator has no settings beyond its name)."""
        estimator = dict(self.fields)["estimator"]
        if "published" in (estimator, settings.estimator):
            return settings.estimator == estimator
        return all(getattr(settings, k) == v for k, v in self.fields) and settings.seeds == self.seeds

    def covers(self, layers: list[LayerSpec]) -> bool:
        return all((l.binarizer != "lab" or l.lab_kernel in self.lab_kernels) and l.kernel in self.conv_kernels for l in layers)

    def text(self) -> str:
        return (f"{self.reference}: Kendall tau {self.tau:+.2f} [{self.tau_lo:+.2f}, {self.tau_hi:+.2f}] "
                f"(proxy_fidelity setting {self.setting})")


def _trained(**kw) -> tuple[tuple[str, object], ...]:
    full = {"estimator": "trained", "batch_size": 64, "lr": 2.5e-3, "schedule": "linear", "warmup_epochs": 0.0, "subset": 0,
            "resolution": 0, **kw}
    return tuple(sorted((k, v) for k, v in full.items() if k in _DECIDING and k != "seeds"))


#: The settings labnas ships with a rank-fidelity result (see ``docs/accuracy.md``).
VALIDATIONS: tuple[Validation, ...] = (
    Validation("published", STAGE_ABLATION + ", leave-one-out", 0.903, 0.77, 0.995, 1, (("estimator", "published"),)),
    Validation("digits8-w25-e4", STAGE_ABLATION, 0.294, -0.038, 0.618, 1,
               _trained(dataset="digits", width_mult=0.25, epochs=4, batch_size=32, lr=4e-3)),
    Validation("fmnist14-w12-full-e2-cos", STAGE_ABLATION, 0.763, 0.524, 0.925, 6,
               _trained(dataset="fashion-mnist", resolution=14, width_mult=0.125, epochs=2, schedule="cosine",
                        warmup_epochs=0.25)),
    Validation("supernet-fmnist14-w12-full-e8-cos", STAGE_ABLATION, 0.717, 0.54, 0.88, 6,
               _trained(estimator="supernet", dataset="fashion-mnist", resolution=14, width_mult=0.125, epochs=8,
                        schedule="cosine", warmup_epochs=0.25)),
)


def validation_of(settings: ProxySettings, layers: list[LayerSpec]) -> str:
    """What the estimate of ``layers`` under ``settings`` was validated against, as one line for a trial record:
    the matching study, with "outside it" when the candidate's kernel choices are beyond what it covered."""
    for v in VALIDATIONS:
        if v.matches(settings):
            if v.covers(layers):
                return v.text()
            return (f"outside its validation (LAB kernels {'/'.join(map(str, v.lab_kernels))}, binary-conv kernels "
                    f"{'/'.join(map(str, v.conv_kernels))} only): {v.text()}")
    return NOT_VALIDATED
