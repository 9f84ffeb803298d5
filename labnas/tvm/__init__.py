"""TVM lowering of labnas BNNs (bitpacked xnor-popcount binary convs) and on-target latency."""

from .lowering import CompiledModel, LoweringError, check_numerics, compile_model, import_model
from .measure import LatencyResult, RemoteError, RemoteSpec, measure
from .packed import PackedBinaryConv2d, freeze
from .targets import TARGETS, TargetError, TargetPreset, resolve_target

__all__ = [
    "TARGETS",
    "CompiledModel",
    "LatencyResult",
    "LoweringError",
    "PackedBinaryConv2d",
    "RemoteError",
    "RemoteSpec",
    "TargetError",
    "TargetPreset",
    "check_numerics",
    "compile_model",
    "freeze",
    "import_model",
    "measure",
    "resolve_target",
]
