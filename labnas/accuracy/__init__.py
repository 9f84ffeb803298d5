"""Accuracy estimation: the estimators a search can use and the harness's rank-fidelity statistics.

``build_estimator`` is the one place an estimator is made from a family and a space's ``[proxy]``
settings; the search, ``labnas train`` and ``benchmarks/proxy_fidelity.py`` all go through it.
"""

from __future__ import annotations

from .estimator import AccuracyEstimate, AccuracyEstimator, EstimatorError, ProgressFn
from .fidelity import (
    STAGE_ABLATION_TOP1,
    RankFidelity,
    ReferenceTableError,
    bootstrap_interval,
    kendall_tau,
    load_reference_csv,
    rank_fidelity,
    spearman_rho,
    stage_layers,
    config_layers,
    kernel_config_code,
    kernel_config_layers,
)
from .registry import DEFAULT_ESTIMATOR, ESTIMATORS, estimator_entry, register_estimator
from .settings import ProxySettings
from .validation import VALIDATIONS, Validation, validation_of
from . import published, supernet, trained

_REGISTERING = (trained, supernet, published)  # importing each registers its estimator

#: the registered estimators' names
ESTIMATOR_NAMES = tuple(ESTIMATORS)

# used by the benchmarks (measurement tools reach these through the package entry point)
from .supernet import LayerChoices

__all__ = [
    "LayerChoices",
    "AccuracyEstimate",
    "AccuracyEstimator",
    "ESTIMATOR_NAMES",
    "ESTIMATORS",
    "DEFAULT_ESTIMATOR",
    "register_estimator",
    "EstimatorError",
    "VALIDATIONS",
    "Validation",
    "validation_of",
    "ProgressFn",
    "ProxySettings",
    "RankFidelity",
    "ReferenceTableError",
    "STAGE_ABLATION_TOP1",
    "bootstrap_interval",
    "build_estimator",
    "kendall_tau",
    "load_reference_csv",
    "rank_fidelity",
    "spearman_rho",
    "stage_layers",
    "config_layers",
    "kernel_config_code",
    "kernel_config_layers",
]


def build_estimator(
    family: str,
    settings: ProxySettings,
    *,
    choices=None,
    data_dir: str | None = None,
    device: str = "cpu",
    cache_dir: str | None = None,
    data=None,
) -> AccuracyEstimator:
    """The estimator ``settings.estimator`` for ``family``.

    Arguments:
        family: a name from ``labnas.models.FAMILIES``.
        settings: the space's ``[proxy]`` settings.
        choices: the space's per-layer choices (a ``labnas.accuracy.supernet.LayerChoices``); the supernet
            trains exactly these.
        data_dir: dataset directory for datasets that need one.
        device: where trained estimators train.
        cache_dir: where trained supernets are cached (default ``~/.cache/labnas/supernets``).
        data: an already loaded ``labnas.data.Dataset`` (skips loading; must match ``settings``).

    Raises :class:`EstimatorError` (unknown estimator, family not covered, a ``data_dir`` the dataset or
    estimator would ignore) or ``labnas.data.DatasetError`` (missing dataset).
    """
    entry = estimator_entry(settings.estimator)
    if data_dir and (not entry.needs_data or settings.dataset == "digits"):
        takes = f"the {entry.name} estimator trains nothing" if not entry.needs_data else "digits ships with scikit-learn"
        raise EstimatorError(f"{{opt:data_dir}} {data_dir} is not used: {takes}; drop {{opt:data_dir}} or use a space whose "
                             "[proxy] dataset reads a folder (fashion-mnist, cifar10, imagefolder)")
    if data is None and entry.needs_data:
        from ..data import load_dataset

        data = load_dataset(settings.dataset, data_dir, seed=0, resolution=settings.resolution)
    return entry.build(family, settings, data, choices, device, cache_dir)
