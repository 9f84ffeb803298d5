"""The search: spaces, the per-trial objective, Optuna studies and their result files."""

from .objective import OBJECTIVES, Objective, SearchConfig, sample_layers, spec_key
from .results import pareto_front, trials_frame, write_results
from ..space import SearchSpace, SpaceError, load_space, space_paths
from .study import SearchError, SearchRun, create_or_load_study, open_storage, run_search

__all__ = [
    "SearchRun",
    "OBJECTIVES",
    "Objective",
    "SearchConfig",
    "SearchError",
    "SearchSpace",
    "SpaceError",
    "create_or_load_study",
    "load_space",
    "open_storage",
    "pareto_front",
    "run_search",
    "sample_layers",
    "space_paths",
    "spec_key",
    "trials_frame",
    "write_results",
]
