"""BNN families built from a serialisable architecture spec."""

from .families import FAMILIES, Family, Slot, create_model, default_spec, get_family, scale_channels
from .spec import STEMS, ArchSpec, LayerSpec, SpecError

# used by the benchmarks (measurement tools reach these through the package entry point)
from .resnet_fp32 import resnet18_fp32

__all__ = [
    "resnet18_fp32",
    "FAMILIES",
    "STEMS",
    "ArchSpec",
    "Family",
    "LayerSpec",
    "Slot",
    "SpecError",
    "create_model",
    "default_spec",
    "get_family",
    "scale_channels",
]
