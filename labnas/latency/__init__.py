"""Latency predictor: block-level lookup tables measured on the target (FBNet / nn-Meter style).

``labnas profile --space SPACE --target T --lut`` builds a table; :func:`predict` uses it. See
:mod:`labnas.latency.table` for what a table holds and when it is refused.
"""

from __future__ import annotations

from pathlib import Path

from .blocks import BlockUnit, block_units
from .table import LUT_ROOT, LatencyTable, TableError, build_table, table_path

# used by the benchmarks (measurement tools reach these through the package entry point)
from .table import calibration_layers

__all__ = ["calibration_layers", "BlockUnit", "LatencyTable", "TableError", "block_units", "build_table", "load_table", "predict", "table_path", "LUT_ROOT"]


def load_table(space, target: str, root: Path | str = LUT_ROOT) -> LatencyTable:
    """The table of ``space`` (a name or :class:`~labnas.search.SearchSpace`) for ``target``, checked."""
    from ..space import load_space

    space = load_space(space) if isinstance(space, str) else space
    return LatencyTable.load(table_path(space.name, target, root), space, target)


def predict(spec, target: str, space, root: Path | str = LUT_ROOT) -> float:
    """Predicted latency in ms of the network ``spec`` (an ArchSpec at the space's deploy shape) on
    ``target``, from the latency table of ``space`` (sum of block entries plus the measured overhead)."""
    from ..space import load_space

    space = load_space(space) if isinstance(space, str) else space
    return load_table(space, target, root).predict(spec, (1, *space.deploy_input))
