"""The deployment form of a BNN: binary convs as one bitpacked operator, ready for TVM.

:func:`freeze` turns every :class:`~labnas.nn.BinaryConv2d` of a trained model into a
:class:`PackedBinaryConv2d` whose weights are sign bits packed 64 to a word once, here. Its forward
computes the binarizer's *decision* map (sign: x itself; LAB: :class:`FrozenLabDecision`, the difference of
the paired maps folded into S depthwise sources, custom operator ``labnas::lab_decision``; no soft
surrogate) and calls the custom operator ``labnas::xnor_conv2d``. The TVM
importer replaces that operator with bit-packing and xnor-popcount kernels; in PyTorch it runs an
independent float reference (unpack the bits, pad, ``conv2d``), which is what the compiled model is
checked against.

Layout of packed weights: ``int64[k, k, Cw, Cout]`` (output channels innermost: the xnor kernel
vectorises over them), ``Cw = ceil(Cin / 64)``; bit ``b`` of word ``w`` is input channel ``64 w + b``
(1 means +1); channels past Cin are 0 bits in weights and activations, so they never differ and
never count.

Padding: a binary conv padded with 0 (``pad_value=0``) cannot pad with a bit. The kernel pads with
0 bits (-1) and adds ``corr[o, y, x]``, the sum of ``w[o, c, ky, kx]`` over the taps of output (y, x)
that fall in the padding: exactly what those -1s subtracted. ``corr`` depends on the weights and the
input size only, so :func:`freeze` computes it once for the deployment shape. ``pad_value=+1/-1``
pads with 1/0 bits and needs no correction.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..nn import LAB, Binarizer, BinaryConv2d

__all__ = [
    "PackedBinaryConv2d", "FrozenLabDecision", "lab_decision", "lab_source", "freeze", "hwio", "pack_weight_bits",
    "padding_correction", "unpack_weight_bits", "WORD_BITS",
]

WORD_BITS = 64


def pack_weight_bits(weight: torch.Tensor) -> torch.Tensor:
    """Sign bits of ``weight[Cout, Cin, k, k]`` (1 where >= 0) packed to ``int64[Cout, k, k, Cw]``
    (see :func:`hwio` for the kernel's layout)."""
    cout, cin, kh, kw = weight.shape
    words = -(-cin // WORD_BITS)
    bits = (weight.detach().cpu().numpy() >= 0).transpose(0, 2, 3, 1)
    bits = np.concatenate([bits, np.zeros((cout, kh, kw, words * WORD_BITS - cin), bool)], axis=3)
    bits = bits.reshape(cout, kh, kw, words, WORD_BITS).astype(np.uint64)
    packed = (bits << np.arange(WORD_BITS, dtype=np.uint64)).sum(axis=-1, dtype=np.uint64)
    return torch.from_numpy(packed.view(np.int64).copy())


def hwio(packed: torch.Tensor) -> torch.Tensor:
    """``[Cout, k, k, Cw]`` -> ``[k, k, Cw, Cout]``."""
    return packed.permute(1, 2, 3, 0).contiguous()


def unpack_weight_bits(packed: torch.Tensor, in_channels: int) -> torch.Tensor:
    """The inverse of :func:`pack_weight_bits`: float ``{-1, +1}[Cout, Cin, k, k]``."""
    shifts = torch.arange(WORD_BITS, dtype=torch.int64)
    bits = (packed.unsqueeze(-1) >> shifts) & 1  # arithmetic shift is fine: only bit 0 is kept
    bits = bits.flatten(-2)[..., :in_channels]
    return (bits.permute(0, 3, 1, 2).to(torch.float32) * 2 - 1).contiguous()


@torch.library.custom_op("labnas::xnor_conv2d", mutates_args=())
def xnor_conv2d(
    decision: torch.Tensor,
    wbits: torch.Tensor,
    corr: torch.Tensor,
    in_channels: int,
    stride: int,
    padding: int,
    pad_value: int,
    strict: bool,
) -> torch.Tensor:
    """Binary conv of ``sign(decision)`` with packed weights: the integer dot products, as float32.

    ``wbits`` is ``int64[k, k, Cw, Cout]``; ``corr`` is the zero-padding correction the TVM kernel adds
    (unused here: this PyTorch reference pads with real zeros). The bit of an activation is
    ``decision > 0`` if ``strict`` else ``decision >= 0``.
    """
    bit = decision > 0 if strict else decision >= 0
    act = torch.where(bit, 1.0, -1.0).to(torch.float32)
    if padding:
        act = F.pad(act, [padding] * 4, value=float(pad_value))
    return F.conv2d(act, unpack_weight_bits(wbits.permute(3, 0, 1, 2), in_channels), stride=stride)


@xnor_conv2d.register_fake
def _xnor_conv2d_shape(decision, wbits, corr, in_channels, stride, padding, pad_value, strict):
    n, _, h, w = decision.shape
    k = wbits.shape[0]
    return decision.new_empty(n, wbits.shape[3], (h + 2 * padding - k) // stride + 1, (w + 2 * padding - k) // stride + 1)


def padding_correction(weight: torch.Tensor, in_hw: tuple[int, int], stride: int, padding: int) -> torch.Tensor:
    """``corr[o, y, x] = sum over padded taps of sum_c sign(w)[o, c, ky, kx]`` (exact: integer sums)."""
    h, w = in_hw
    mask = torch.ones(1, 1, h + 2 * padding, w + 2 * padding)
    mask[..., padding : padding + h, padding : padding + w] = 0
    wsum = torch.where(weight >= 0, 1.0, -1.0).sum(dim=1, keepdim=True)  # [Cout, 1, k, k]
    return F.conv2d(mask, wsum, stride=stride)[0].contiguous()


def lab_source(j, s, channels: int, sources: int):
    """Input channel read by source ``s`` of LAB decision channel ``j`` (tensors or TE expressions).

    One source (``per_channel``, folded): channel j. Two sources (``official``): the two compared
    depthwise maps j and C + j come from input channels ``j // 2`` (s = 0) and ``(C + j) // 2`` (s = 1).
    The torch reference and the TVM kernel (:func:`labnas.tvm.kernels.lab_decision_compute`) both use it.
    """
    return j if sources == 1 else (j + s * channels) // 2


@torch.library.custom_op("labnas::lab_decision", mutates_args=())
def lab_decision(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """LAB's decision map ``beta u1 - beta u0`` from frozen weights ``[S, C, k, k]`` (see FrozenLabDecision).

    A custom operator so that export keeps it whole: the TVM importer lowers it to one hand-scheduled
    kernel (:func:`labnas.tvm.kernels.lab_decision_compute`) instead of a grouped conv and slices.
    """
    sources, channels, k, _ = weight.shape
    out = bias.view(1, -1, 1, 1).expand(x.shape[0], -1, x.shape[2], x.shape[3]).clone()
    for s in range(sources):
        src = lab_source(torch.arange(channels), s, channels, sources)
        out = out + F.conv2d(x[:, src], weight[s].unsqueeze(1), padding=k // 2, groups=channels)
    return out


@lab_decision.register_fake
def _lab_decision_shape(x, weight, bias):
    return x.new_empty(x.shape[0], weight.shape[1], x.shape[2], x.shape[3])


class FrozenLabDecision(nn.Module):
    """LAB's decision map ``beta u1 - beta u0`` as ``S`` depthwise taps per output channel, with beta folded.

    ``per_channel`` pairing: maps 2c and 2c+1 both convolve channel c, so the difference is one
    depthwise conv C -> C (``S = 1``) with kernel ``beta (W[2c+1] - W[2c])``: half the multiply-adds of
    LAB's C -> 2C conv. ``official`` pairing: channel j compares map ``C + j`` (input channel
    ``(C + j) // 2``) against map ``j`` (input channel ``j // 2``), so ``S = 2`` sources with kernels
    ``-beta W[j]`` and ``beta W[C + j]`` (in :func:`lab_source`'s order). Bias
    ``beta (b[z1] - b[z0])`` either way. No 2C intermediate, no slices: the compiled model computes the
    map as one kernel (``labnas_lab``).
    """

    def __init__(self, lab: LAB):
        super().__init__()
        w, b = lab.dw.weight.detach()[:, 0] * lab.beta.detach(), lab.dw.bias.detach() * lab.beta.detach()
        c = lab.channels
        if lab.pairing == "per_channel":
            weight, bias = (w[1::2] - w[0::2]).unsqueeze(0), b[1::2] - b[0::2]
        else:
            weight, bias = torch.stack([-w[:c], w[c:]]), b[c:] - b[:c]  # sources j // 2, (C + j) // 2
        self.channels, self.kernel_size = c, lab.kernel_size
        self.register_buffer("weight", weight.contiguous())
        self.register_buffer("bias", bias.contiguous())

    @staticmethod
    def applies_to(binarizer: Binarizer) -> bool:
        return isinstance(binarizer, LAB)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.labnas.lab_decision(x, self.weight, self.bias)


class PackedBinaryConv2d(nn.Module):
    """Inference-only binary conv with packed weights; see the module docstring."""

    def __init__(self, conv: BinaryConv2d, in_hw: tuple[int, int]):
        super().__init__()
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.kernel_size, self.stride, self.padding = conv.kernel_size, conv.stride, conv.padding
        self.pad_value = int(conv.pad_value)
        self.binarizer: Binarizer = conv.binarizer
        self.decision = FrozenLabDecision(conv.binarizer) if FrozenLabDecision.applies_to(conv.binarizer) else conv.binarizer.decision
        weight = conv.weight.detach()
        self.register_buffer("wbits", hwio(pack_weight_bits(weight)))
        needs_corr = self.pad_value == 0 and self.padding > 0
        corr = padding_correction(weight, in_hw, self.stride, self.padding) if needs_corr else torch.zeros(0)
        self.register_buffer("corr", corr)
        if conv.weight_scale == "channel":
            self.register_buffer("scale", weight.abs().mean(dim=(1, 2, 3)).view(1, -1, 1, 1))
        else:
            self.scale = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self.decision(x)
        y = torch.ops.labnas.xnor_conv2d(
            d,
            self.wbits,
            self.corr,
            self.in_channels,
            self.stride,
            self.padding,
            self.pad_value,
            self.binarizer.strict,
        )
        return y * self.scale if self.scale is not None else y

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"


def _binary_input_sizes(model: nn.Module, input_shape: tuple[int, ...]) -> dict[int, tuple[int, int]]:
    sizes: dict[int, tuple[int, int]] = {}
    hooks = [
        m.register_forward_hook(lambda mod, inp, out: sizes.__setitem__(id(mod), tuple(inp[0].shape[2:])))
        for m in model.modules()
        if isinstance(m, BinaryConv2d)
    ]
    try:
        with torch.no_grad():
            model(torch.zeros(*input_shape))
    finally:
        for h in hooks:
            h.remove()
    return sizes


def freeze(model: nn.Module, input_shape: tuple[int, ...]) -> nn.Module:
    """A deep copy of ``model`` in eval mode with every BinaryConv2d replaced by a PackedBinaryConv2d
    for inputs of ``input_shape`` (N, C, H, W); the padding corrections depend on it. A float stem's
    ``conv -> BN -> max pool`` is folded (:func:`labnas.tvm.fold.fold_batchnorm_before_pool`)."""
    from .fold import fold_batchnorm_before_pool

    frozen = copy.deepcopy(model).eval()
    fold_batchnorm_before_pool(frozen)
    sizes = _binary_input_sizes(frozen, input_shape)
    for parent in list(frozen.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, BinaryConv2d):
                setattr(parent, name, PackedBinaryConv2d(child, sizes[id(child)]))
    for p in frozen.parameters():
        p.requires_grad_(False)
    return frozen
