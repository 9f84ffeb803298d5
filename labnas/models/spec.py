"""The architecture spec: the one plain, serialisable description of a network that a search trial
samples and that training, counting, compiling and storing all read (nothing re-derives it)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .._errors import LabnasError
from ..nn import BINARIZERS

__all__ = ["LayerSpec", "ArchSpec", "SpecError", "STEMS", "register_family_lookup"]

STEMS = ("imagenet", "small")


#: Resolves a family name to its slot table (``labnas.models.families.get_family``). The families module
#: registers it when it is imported, so the spec (below the builders) never imports them.
_family_lookup: Callable[[str], Any] | None = None


def register_family_lookup(lookup: Callable[[str], Any]) -> None:
    """Let :meth:`ArchSpec.validate` check specs against the family table (called by ``labnas.models.families``)."""
    global _family_lookup
    _family_lookup = lookup


class SpecError(LabnasError, ValueError):
    """A spec that cannot describe a network; the message names the field and what it accepts."""


@dataclass
class LayerSpec:
    """One binary convolution and the binarizer in front of it.

    Attributes:
        binarizer: registry name of the activation binarizer (``ste_sign``, ``approx_sign``, ``rsign``,
            ``lab``, ``niblack``, ``sauvola``; ``sign`` means the family's own sign binarizer).
        lab_kernel: LAB's depthwise kernel size (1, 3, 5 or 7); ignored unless ``binarizer == "lab"``.
        kernel: the binary convolution's kernel size.
    """

    binarizer: str = "sign"
    lab_kernel: int = 3
    kernel: int = 3


@dataclass
class ArchSpec:
    """A whole network: the family, one :class:`LayerSpec` per binary convolution, global settings.

    Attributes:
        family: a name from ``labnas.models.FAMILIES``.
        layers: one entry per binary convolution, in forward order.
        width_mult: multiplies every channel count (rounded to a multiple of 8, at least 8).
        in_channels: image channels (3 for RGB, 1 for greyscale).
        num_classes: classifier outputs.
        stem: ``"imagenet"`` (the family's stride-4 stem for 224x224 inputs) or ``"small"`` (a stride-1
            3x3 stem for 8..64 pixel inputs).
        lab_pairing: LAB's channel pairing, ``"official"`` or ``"per_channel"`` (see ``labnas.nn.LAB``).
    """

    family: str
    layers: list[LayerSpec] = field(default_factory=list)
    width_mult: float = 1.0
    in_channels: int = 3
    num_classes: int = 1000
    stem: str = "imagenet"
    lab_pairing: str = "official"

    # -- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self, **kwargs) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArchSpec:
        """Build and validate a spec from a dict (unknown keys are errors, not silently dropped)."""
        if not isinstance(data, dict):
            raise SpecError(f"a spec must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SpecError(f"unknown spec key(s) {unknown}; allowed: {sorted(known)}")
        if "family" not in data:
            raise SpecError("spec has no 'family' key")
        layer_keys = {f.name for f in dataclasses.fields(LayerSpec)}
        layers = []
        for i, layer in enumerate(data.get("layers", [])):
            if not isinstance(layer, dict) or set(layer) - layer_keys:
                raise SpecError(f"layers[{i}] must be an object with keys from {sorted(layer_keys)}, got {layer!r}")
            layers.append(LayerSpec(**layer))
        spec = cls(**{**data, "layers": layers})
        spec.validate()
        return spec

    @classmethod
    def from_json(cls, text: str) -> ArchSpec:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise SpecError(f"spec is not valid JSON: {err}") from None
        return cls.from_dict(data)

    @classmethod
    def load(cls, path: str | Path) -> ArchSpec:
        """Read a spec JSON file; errors name the file."""
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as err:
            raise SpecError(f"cannot read spec file {path}: {err.strerror}") from None
        try:
            return cls.from_json(text)
        except SpecError as err:
            raise SpecError(f"{path}: {err}") from None

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json(indent=2) + "\n")

    # -- validation ----------------------------------------------------------------------------
    def validate(self) -> None:
        """Check the spec against its family's layout; raise :class:`SpecError` naming the bad field."""
        if _family_lookup is None:  # pragma: no cover - labnas.models' __init__ registers it
            raise SpecError("no family table registered; import labnas.models")
        family = _family_lookup(self.family)
        if self.stem not in STEMS:
            raise SpecError(f"stem must be one of {STEMS}, got {self.stem!r}")
        if self.lab_pairing not in ("official", "per_channel"):
            raise SpecError(f"lab_pairing must be 'official' or 'per_channel', got {self.lab_pairing!r}")
        if not (isinstance(self.width_mult, (int, float)) and 0 < self.width_mult <= 4):
            raise SpecError(f"width_mult must be a number in (0, 4], got {self.width_mult!r}")
        for name in ("in_channels", "num_classes"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise SpecError(f"{name} must be a positive integer, got {value!r}")
        slots = family.slots
        if len(self.layers) != len(slots):
            raise SpecError(f"family {self.family!r} has {len(slots)} binary layers, the spec lists {len(self.layers)}")
        for i, (layer, slot) in enumerate(zip(self.layers, slots)):
            if layer.binarizer != "sign" and layer.binarizer not in BINARIZERS:
                raise SpecError(
                    f"layers[{i}].binarizer {layer.binarizer!r} is unknown; choose sign, {', '.join(sorted(BINARIZERS))}"
                )
            if layer.lab_kernel not in (1, 3, 5, 7):
                raise SpecError(f"layers[{i}].lab_kernel must be 1, 3, 5 or 7, got {layer.lab_kernel!r}")
            if layer.kernel not in slot.kernels:
                raise SpecError(f"layers[{i}].kernel must be one of {slot.kernels} in {self.family}, got {layer.kernel!r}")

    @property
    def n_lab(self) -> int:
        return sum(layer.binarizer == "lab" for layer in self.layers)
