"""TVM lowering of labnas BNNs (bitpacked xnor-popcount binary convs) for a target CPU: compile only.

Running and timing what this package compiles is :mod:`labnas.timing`'s job."""

from .compile_pool import compile_many
from .lowering import CompiledModel, LoweringError, check_numerics, compile_model, import_model
from .packed import PackedBinaryConv2d, freeze
from .policy import PARTITIONS, LabPolicy, PolicyError, SchedulePolicy, XnorPolicy
from .targets import TARGETS, TargetError, TargetPreset, resolve_target

# used by the benchmarks (measurement tools reach these through the package entry point)
from .strategy import LabShape, lab_candidates, parse_lab_strategy, strategy_counts
from .lab_context import LabContext
from .cpu import cpu_model, isa_summary
from .registry import schedule_kernel

__all__ = [
    "LabContext",
    "LabShape",
    "lab_candidates",
    "parse_lab_strategy",
    "strategy_counts",
    "cpu_model",
    "isa_summary",
    "schedule_kernel",
    "TARGETS",
    "CompiledModel",
    "LabPolicy",
    "PARTITIONS",
    "PolicyError",
    "SchedulePolicy",
    "LoweringError",
    "PackedBinaryConv2d",
    "TargetError",
    "TargetPreset",
    "XnorPolicy",
    "check_numerics",
    "compile_many",
    "compile_model",
    "freeze",
    "import_model",
    "resolve_target",
]
