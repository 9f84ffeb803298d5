"""Accuracy estimators registered by name, the way :mod:`labnas.nn.binarizers` registers binarizers (after larq's
quantizers): one place says which estimators exist, what each means, and how to build it. The CLI's
``--accuracy`` choices and help, ``labnas list``, the plots' axis labels and :func:`labnas.accuracy.build_estimator`
all read :data:`ESTIMATORS`.

Each estimator's module registers its builder (``@register_estimator(...)`` beside the class); importing
:mod:`labnas.accuracy` imports them all. A builder takes ``(family, settings, data, choices, device, cache_dir)``
(``data``: a loaded :class:`labnas.data.Dataset`, or None for an estimator with ``needs_data=False``) and returns an
:class:`~labnas.accuracy.estimator.AccuracyEstimator`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .estimator import AccuracyEstimator, EstimatorError

__all__ = ["EstimatorEntry", "ESTIMATORS", "DEFAULT_ESTIMATOR", "register_estimator", "estimator_entry"]


@dataclass(frozen=True)
class EstimatorEntry:
    """One registered estimator: its ``name``, a one-line ``summary`` (``--help``, ``labnas list``), the ``axis``
    label of its accuracy in plots, whether it trains on a dataset (``needs_data``), and its ``build`` function."""

    name: str
    summary: str
    axis: str
    needs_data: bool
    build: Callable[..., AccuracyEstimator]


#: name -> entry, in the order they were registered
ESTIMATORS: dict[str, EstimatorEntry] = {}
#: The estimator of a space whose ``[proxy]`` names none, and of studies written before the name was recorded.
DEFAULT_ESTIMATOR = "trained"


def register_estimator(name: str, summary: str, axis: str, needs_data: bool = True):
    """Decorator: register ``build`` under ``name`` (a second registration of a name is an error)."""

    def register(build: Callable[..., AccuracyEstimator]) -> Callable[..., AccuracyEstimator]:
        if name in ESTIMATORS:
            raise ValueError(f"accuracy estimator {name!r} is registered twice")
        ESTIMATORS[name] = EstimatorEntry(name, summary, axis, needs_data, build)
        return build

    return register


def estimator_entry(name: str) -> EstimatorEntry:
    """The registered estimator ``name``; :class:`EstimatorError` naming the choices otherwise."""
    if name not in ESTIMATORS:
        raise EstimatorError(f"unknown accuracy estimator {name!r}; choose one of {', '.join(ESTIMATORS)}")
    return ESTIMATORS[name]
