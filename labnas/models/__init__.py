"""BNN families built from a serialisable architecture spec."""

from .families import FAMILIES, Family, Slot, create_model, default_spec, get_family, scale_channels
from .spec import STEMS, ArchSpec, LayerSpec, SpecError

__all__ = [
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
