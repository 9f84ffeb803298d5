"""The five BNN families of the LAB paper, each built from an :class:`~labnas.models.spec.ArchSpec`.

A family is data: its binary-layer slots (channels, stride, allowed kernels), its own sign binarizer,
and a builder that walks the slots in order. ``default_spec`` fills the slots; ``create_model`` builds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from ..nn import BinaryConv2d, get_binarizer
from .blocks import (
    BiRealBlock,
    Classifier,
    QuickNetResidual,
    QuickNetTransition,
    QuickStem,
    ReActBlock,
    SmallStem,
    _bn,
)
from .spec import ArchSpec, LayerSpec, SpecError, register_family_lookup

__all__ = ["Slot", "Family", "FAMILIES", "get_family", "default_spec", "create_model", "scale_channels"]

SAME_KERNELS = (1, 3, 5, 7)


@dataclass(frozen=True)
class Slot:
    """One binary convolution position in a family (channels before the width multiplier)."""

    in_channels: int
    out_channels: int
    stride: int = 1
    kernel: int = 3
    kernels: tuple[int, ...] = SAME_KERNELS
    same_padding: bool = True


@dataclass(frozen=True)
class Family:
    name: str
    slots: tuple[Slot, ...]
    sign: str  # the family's own sign binarizer
    sign_kwargs: dict
    weight_scale: str
    pad_value: float
    build: Callable[[ArchSpec, "Family"], nn.Module]
    description: str


def scale_channels(channels: int, width_mult: float) -> int:
    """Channels times the width multiplier, rounded to a multiple of 8 (at least 8)."""
    return max(8, int(channels * width_mult + 4) // 8 * 8)


def _binconv(spec: ArchSpec, family: Family, index: int) -> BinaryConv2d:
    """The binary conv of slot ``index``, with the binarizer its LayerSpec asks for."""
    slot, layer = family.slots[index], spec.layers[index]
    cin, cout = scale_channels(slot.in_channels, spec.width_mult), scale_channels(slot.out_channels, spec.width_mult)
    name = family.sign if layer.binarizer == "sign" else layer.binarizer
    kwargs: dict = {}
    if name == "lab":
        kwargs = {"kernel_size": layer.lab_kernel, "pairing": spec.lab_pairing}
    elif name == family.sign:
        kwargs = dict(family.sign_kwargs)
    return BinaryConv2d(
        cin,
        cout,
        layer.kernel,
        slot.stride,
        padding=layer.kernel // 2 if slot.same_padding else 0,
        binarizer=get_binarizer(name, cin, **kwargs),
        weight_scale=family.weight_scale,
        pad_value=family.pad_value,
    )


# -- Bi-Real Net 18 and LAB-BNN ---------------------------------------------------------------------
def _resnet18_slots() -> tuple[Slot, ...]:
    slots, cin = [], 64
    for width in (64, 128, 256, 512):
        for i in range(4):
            slots.append(Slot(cin, width, 2 if (i == 0 and width != 64) else 1))
            cin = width
    return tuple(slots)


def _build_bireal(spec: ArchSpec, family: Family, prelu: bool = False) -> nn.Module:
    c0 = scale_channels(64, spec.width_mult)
    if spec.stem == "imagenet":
        if prelu:
            stem: nn.Module = QuickStem(spec.in_channels, c0)
        else:
            stem = nn.Sequential(
                nn.Conv2d(spec.in_channels, c0, 7, 2, padding=3, bias=False), _bn(c0), nn.MaxPool2d(3, 2, padding=1)
            )
    else:  # ends in BN as both 224 stems do: a ReLU here would make the first sign's inputs all >= 0
        stem = SmallStem(spec.in_channels, c0, relu=False)
    blocks = [BiRealBlock(_binconv(spec, family, i), prelu=prelu) for i in range(len(family.slots))]
    width = blocks[-1].conv.out_channels
    return nn.Sequential(stem, *blocks, Classifier(width, spec.num_classes))


def _build_labbnn(spec: ArchSpec, family: Family) -> nn.Module:
    return _build_bireal(spec, family, prelu=True)


# -- QuickNet ---------------------------------------------------------------------------------------
def _build_quicknet(spec: ArchSpec, family: Family) -> nn.Module:
    c0 = scale_channels(64, spec.width_mult)
    # QuickNet's stem ends in BN, not ReLU: after a ReLU every input of the first residual block's sign is >= 0,
    # so it binarizes to +1 everywhere and stage 1 carries no information (and its BN sees zero variance).
    stem = QuickStem(spec.in_channels, c0) if spec.stem == "imagenet" else SmallStem(spec.in_channels, c0, relu=False)
    layers: list[nn.Module] = [stem]
    width = c0
    for i, slot in enumerate(family.slots):
        out = scale_channels(slot.out_channels, spec.width_mult)
        if out != width:
            layers.append(QuickNetTransition(width, out, 2))
            width = out
        layers.append(QuickNetResidual(_binconv(spec, family, i)))
    layers.append(Classifier(width, spec.num_classes, relu=True))
    return nn.Sequential(*layers)


def _quicknet_slots() -> tuple[Slot, ...]:
    # Transitions are full precision: every binary conv keeps its width (stride 1).
    return tuple(Slot(w, w, 1) for w in (64, 128, 256, 512) for _ in range(4))


# -- ReActNet (MobileNetV1 body, ReActNet-A) ---------------------------------------------------------
REACT_WIDTHS = (32, 64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024)


def _reactnet_slots() -> tuple[Slot, ...]:
    slots = []
    for cin, cout in zip(REACT_WIDTHS[:-1], REACT_WIDTHS[1:]):
        stride = 2 if (cout != cin and cout != 64) else 1
        slots.append(Slot(cin, cin, stride))  # 3x3 binary conv keeps the width
        slots.append(Slot(cin, cout, 1, kernel=1, kernels=(1,)))  # 1x1 binary conv widens
    return tuple(slots)


def _build_reactnet(spec: ArchSpec, family: Family) -> nn.Module:
    c0 = scale_channels(REACT_WIDTHS[0], spec.width_mult)
    if spec.stem == "imagenet":
        stem: nn.Module = nn.Sequential(nn.Conv2d(spec.in_channels, c0, 3, 2, padding=1, bias=False), _bn(c0, 0.9, 1e-5))
    else:
        stem = SmallStem(spec.in_channels, c0, relu=False)
    blocks = [ReActBlock(_binconv(spec, family, i), _binconv(spec, family, i + 1)) for i in range(0, len(family.slots), 2)]
    width = blocks[-1].conv1.out_channels
    return nn.Sequential(stem, *blocks, Classifier(width, spec.num_classes))


# -- XNOR-Net (AlexNet, larq-zoo variant) --------------------------------------------------------------
def _xnornet_slots() -> tuple[Slot, ...]:
    return (
        Slot(96, 256, 1, kernel=5),
        Slot(256, 384),
        Slot(384, 384),
        Slot(384, 256),
        Slot(256, 4096, 1, kernel=6, kernels=(6,), same_padding=False),  # 6x6 'valid': the first fc layer
        Slot(4096, 4096, 1, kernel=1, kernels=(1,)),  # the second fc layer
    )


def _build_xnornet(spec: ArchSpec, family: Family) -> nn.Module:
    c = [scale_channels(s.in_channels, spec.width_mult) for s in family.slots]
    c_out = scale_channels(family.slots[-1].out_channels, spec.width_mult)
    small = spec.stem == "small"
    pool = lambda: nn.MaxPool2d(3, 2, padding=1 if small else 0)  # noqa: E731  padded on small inputs
    if small:
        stem: nn.Module = SmallStem(spec.in_channels, c[0])
    else:
        stem = nn.Sequential(
            nn.Conv2d(spec.in_channels, c[0], 11, 4, padding=5, bias=False), _bn(c[0], 0.9, 1e-5), nn.ReLU(), pool()
        )
    convs = [_binconv(spec, family, i) for i in range(6)]
    bn = lambda ch: _bn(ch, 0.9, 1e-5)  # noqa: E731  XNOR order: BN -> binarize -> binary conv
    layers: list[nn.Module] = [stem]
    layers += [bn(c[0]), convs[0], pool()]
    layers += [bn(c[1]), convs[1], bn(c[2]), convs[2], bn(c[3]), convs[3], pool()]
    if small:
        layers.append(nn.AdaptiveAvgPool2d(6))  # the 6x6 'valid' conv expects 6x6 features, as at 224
    layers += [bn(c[4]), convs[4], bn(c[5]), convs[5], bn(c_out)]
    layers.append(Classifier(c_out, spec.num_classes))
    return nn.Sequential(*layers)


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            "xnornet_alexnet",
            _xnornet_slots(),
            "ste_sign",
            {},
            "channel",
            0.0,
            _build_xnornet,
            "XNOR-Net AlexNet (larq-zoo): 11x11/4 fp stem, 6 binary convs (5x5, 3x3 x3, 6x6, 1x1), fp classifier",
        ),
        Family(
            "bireal18",
            _resnet18_slots(),
            "ste_sign",
            {"clip": 1.0},
            "channel",
            0.0,
            _build_bireal,
            "Bi-Real Net 18: 7x7/2 fp stem, 16 binary 3x3 convs each with a real shortcut",
        ),
        Family(
            "quicknet",
            _quicknet_slots(),
            "ste_sign",
            {"clip": 1.25},
            "none",
            1.0,
            _build_quicknet,
            "QuickNet (larq-zoo SOTA): 16 binary 3x3 residual convs (+1 padded), fp blur-pool transitions",
        ),
        Family(
            "reactnet_mbv1",
            _reactnet_slots(),
            "rsign",
            {},
            "channel",
            1.0,
            _build_reactnet,
            "ReActNet-A (MobileNetV1 body): 13 blocks of binary 3x3 + binary 1x1 convs, RSign, RPReLU",
        ),
        Family(
            "labbnn",
            _resnet18_slots(),
            "ste_sign",
            {"clip": 1.0},
            "channel",
            0.0,
            _build_labbnn,
            "LAB-BNN: Bi-Real-18 body with a QuickNet stem and PReLU after each block",
        ),
    )
}


def get_family(name: str) -> Family:
    """Look a family up by name; an unknown name raises :class:`SpecError` listing the known ones."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise SpecError(f"unknown family {name!r}; choose one of: {', '.join(FAMILIES)}") from None


register_family_lookup(get_family)


def default_spec(family: str, binarizer: str = "sign", **overrides) -> ArchSpec:
    """The family's standard network with every binary layer using ``binarizer``.

    Arguments:
        family: a name from :data:`FAMILIES`.
        binarizer: ``"sign"`` (the family's own sign), ``"lab"``, or any binarizer registry name.
        overrides: any :class:`ArchSpec` field (``width_mult``, ``num_classes``, ``stem``, ...), plus
            ``lab_kernel`` to set every layer's LAB kernel.
    """
    fam = get_family(family)
    lab_kernel = overrides.pop("lab_kernel", 3)
    layers = [LayerSpec(binarizer=binarizer, lab_kernel=lab_kernel, kernel=s.kernel) for s in fam.slots]
    spec = ArchSpec(family=family, layers=layers, **overrides)
    spec.validate()
    return spec


def create_model(spec: ArchSpec | dict) -> nn.Module:
    """Build the network a spec describes (a dict is parsed and validated first)."""
    if isinstance(spec, dict):
        spec = ArchSpec.from_dict(spec)
    else:
        spec.validate()
    family = get_family(spec.family)
    model = family.build(spec, family)
    model.spec = spec  # type: ignore[attr-defined]  # lets counting/compiling code find the spec again
    return model
