"""A network as compile units: the top-level children of a labnas model, each keyed by what it computes.

Every labnas family is an ``nn.Sequential`` of stem, blocks and classifier. A block is the unit a
latency table measures: compiled on its own, the fusion inside it (BatchNorm, residual add and PReLU
into the binary conv's epilogue, LAB's compare into its pack) is the fusion it gets inside the whole
network, and nothing fuses across block boundaries except at the tensor they pass on.

Two blocks with the same structure (``repr``: layer types, channels, kernels, strides, binarizer
and its LAB kernel) and the same input shape compute the same kernels, so they share one entry.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from torch import nn

from ..nn import LAB, BinaryConv2d

__all__ = ["BlockUnit", "block_units", "describe_block"]


@dataclass
class BlockUnit:
    key: str  #: stable id of (structure, input shape)
    index: int  #: position in the network
    module: nn.Module
    input_shape: tuple[int, ...]
    summary: str  #: human-readable: type, shape, binary convs and binarizers


def describe_block(module: nn.Module, input_shape: tuple[int, ...]) -> str:
    convs = [m for m in module.modules() if isinstance(m, BinaryConv2d)]
    parts = [type(module).__name__, "x".join(map(str, input_shape[1:]))]
    for conv in convs:
        b = conv.binarizer
        binarizer = f"lab{b.kernel_size}{'' if b.pairing == 'official' else '-' + b.pairing}" if isinstance(b, LAB) else type(b).__name__
        parts.append(f"{conv.in_channels}>{conv.out_channels} k{conv.kernel_size} s{conv.stride} {binarizer}")
    return " | ".join(parts)


def block_units(model: nn.Module, input_shape: tuple[int, ...]) -> list[BlockUnit]:
    """The compile units of ``model`` (an ``nn.Sequential``) at ``input_shape`` (with batch)."""
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"latency tables need a model built as nn.Sequential of blocks, got {type(model).__name__}")
    shapes: list[tuple[int, ...]] = []
    hooks = [child.register_forward_pre_hook(lambda mod, inp: shapes.append(tuple(inp[0].shape))) for child in model]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(*input_shape))
    finally:
        for hook in hooks:
            hook.remove()
    units = []
    for index, (child, shape) in enumerate(zip(model, shapes)):
        digest = hashlib.sha1(f"{shape}\n{child!r}".encode()).hexdigest()[:16]
        units.append(BlockUnit(digest, index, child, shape, describe_block(child, shape)))
    return units
