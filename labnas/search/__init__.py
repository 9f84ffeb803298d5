"""The search: spaces, the per-trial objective, Optuna studies and their result files."""

from .objective import OBJECTIVES, Objective, SearchConfig, sample_layers, spec_key
from .results import pareto_front, trials_frame, write_results
from ..space import SearchSpace, SpaceError, load_space, space_paths
from .study import SearchError, SearchRun, create_or_load_study, open_storage, run_search

# used by the benchmarks (measurement tools reach these through the package entry point)
from .front import NOISE_FLOOR, hypervolume, pareto_mask, pareto_mask_within_noise, predict_space
from .study import front_table, make_estimator
from .objective import layer_params

__all__ = [
    "NOISE_FLOOR",
    "hypervolume",
    "pareto_mask",
    "pareto_mask_within_noise",
    "predict_space",
    "front_table",
    "make_estimator",
    "layer_params",
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
