"""The binary convolution: binarized weights times binarized activations."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .binarizers import Binarizer, get_binarizer, hard_sign

__all__ = ["BinaryConv2d", "binarize_weight", "WEIGHT_SCALES"]

WEIGHT_SCALES = ("none", "channel")


def binarize_weight(weight: torch.Tensor, scale: str = "none", clip: float = 1.0) -> torch.Tensor:
    r"""Binarized weights with a clipped straight-through estimator.

    Forward: :math:`w_b = \alpha \cdot \mathrm{sign}(W)` (sign(0) = +1), where :math:`\alpha = 1`
    (``scale="none"``) or the per-output-channel :math:`\mathrm{mean}|W|`, detached
    (``scale="channel"``: XNOR-Net's scale, Bi-Real Net's "magnitude-aware" sign).

    Backward: :math:`\partial w_b / \partial W = \alpha \cdot 1_{|W| \le \text{clip}}`.
    """
    soft = torch.clamp(weight, -clip, clip)
    wb = hard_sign(weight) + (soft - soft.detach())
    if scale == "channel":
        wb = wb * weight.abs().mean(dim=(1, 2, 3), keepdim=True).detach()
    return wb


class BinaryConv2d(nn.Module):
    r"""A 2-D convolution whose weights and input activations are both binary.

    :math:`y = \mathrm{conv}(\mathrm{pad}_v(q(x)), w_b)`, with :math:`q` the activation binarizer module
    (sign family or LAB) and :math:`w_b` from :func:`binarize_weight`.

    Padding: the *binarized* activations are padded with the constant ``pad_value``. 0 (the default,
    larq's ``pad_values=0`` and Bi-Real Net's zero padding) makes the border taps contribute nothing,
    which a bitpacked kernel cannot represent directly: the TVM lowering pads with -1 bits and adds
    back an exact per-border correction. ``pad_value=1`` (QuickNet, ReActNet) or -1 keeps every tap
    binary and needs no correction.

    Arguments:
        in_channels, out_channels, kernel_size, stride, padding: as in ``nn.Conv2d`` (square, no groups,
            no bias).
        binarizer: a :class:`Binarizer` module or a registry name (built with ``in_channels``).
        weight_scale: ``"none"`` or ``"channel"``.
        pad_value: 0, 1 or -1.
    """

    #: Present so that generic conv counters (thop's ``count_convNd``) can read a BinaryConv2d as a conv.
    groups = 1
    bias = None

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int | None = None,
        binarizer: Binarizer | str = "ste_sign",
        weight_scale: str = "none",
        pad_value: float = 0.0,
    ):
        super().__init__()
        if weight_scale not in WEIGHT_SCALES:
            raise ValueError(f"weight_scale must be one of {WEIGHT_SCALES}, got {weight_scale!r}")
        if pad_value not in (0, 1, -1):
            raise ValueError(f"pad_value must be 0, 1 or -1, got {pad_value!r}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = kernel_size // 2 if padding is None else padding
        self.weight_scale = weight_scale
        self.pad_value = float(pad_value)
        self.binarizer = get_binarizer(binarizer, in_channels) if isinstance(binarizer, str) else binarizer
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        nn.init.xavier_normal_(self.weight)  # larq's glorot_normal

    def binary_weight(self) -> torch.Tensor:
        return binarize_weight(self.weight, self.weight_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xb = self.binarizer(x)
        if self.padding:
            xb = F.pad(xb, [self.padding] * 4, value=self.pad_value)
        return F.conv2d(xb, self.binary_weight(), stride=self.stride)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, weight_scale={self.weight_scale!r}, pad_value={self.pad_value:g}"
        )
