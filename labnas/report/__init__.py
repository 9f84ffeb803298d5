"""Pareto curves, per-layer choice maps and Markdown reports from a study's result files."""

from ..results import ResultsError, StudyResults, load_results
from .plots import X_AXES, front_2d, plot_choice_map, plot_pareto
from .report import write_report

__all__ = ["X_AXES", "ResultsError", "StudyResults", "front_2d", "load_results", "plot_choice_map", "plot_pareto", "write_report"]
