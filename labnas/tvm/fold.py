"""BatchNorm folded out of a float stem before export: ``conv -> BN -> max pool`` becomes ``conv' -> max pool -> + b``.

Why: Bi-Real-18's stem writes 64 x 112 x 112 floats, and the BatchNorm between its 7x7/2 conv and the 3x3/2 max
pool is a pass of its own over them (0.35-0.48 ms, 6-8 % of the all-sign network on an AVX-512 Xeon), which TVM
does not fuse into the hand-scheduled conv. Inference BN is ``a y + b`` per channel: ``a`` goes into the conv's
weights, and a per-channel constant commutes with a max pool, ``max(y + b) = max(y) + b`` (whatever the sign of
``a``, which is already in ``y``), so ``b`` is added after the pool, on a quarter of the pixels, where it fuses
with whatever reads the pool's output. Numerically ``conv(x; a w) = a conv(x; w)`` up to float rounding.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..nn import BinaryConv2d

__all__ = ["ChannelShift", "fold_batchnorm_before_pool"]


class ChannelShift(nn.Module):
    """``x + shift[c]`` over NCHW ``x``: the BatchNorm offset moved past a max pool."""

    def __init__(self, shift: torch.Tensor):
        super().__init__()
        self.register_buffer("shift", shift.detach().reshape(1, -1, 1, 1).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.shift


def _foldable(conv: nn.Module, bn: nn.Module, pool: nn.Module) -> bool:
    return (isinstance(conv, nn.Conv2d) and not isinstance(conv, BinaryConv2d) and isinstance(bn, nn.BatchNorm2d)
            and isinstance(pool, nn.MaxPool2d) and bn.track_running_stats and bn.running_var is not None
            and conv.out_channels == bn.num_features)


def fold_batchnorm_before_pool(model: nn.Module) -> int:
    """Rewrite every ``nn.Sequential`` run of float ``Conv2d, BatchNorm2d, MaxPool2d`` (in eval mode) in ``model``, in
    place, as ``Conv2d`` with the BN scale in its weights, the same ``MaxPool2d``, then :class:`ChannelShift`; returns
    how many were folded. The model must be in eval mode (running statistics are used)."""
    folded = 0
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        for i in range(len(seq) - 2):
            conv, bn, pool = seq[i], seq[i + 1], seq[i + 2]
            if not _foldable(conv, bn, pool):
                continue
            with torch.no_grad():
                scale = bn.weight / torch.sqrt(bn.running_var + bn.eps) if bn.affine else 1 / torch.sqrt(bn.running_var + bn.eps)
                offset = (bn.bias if bn.affine else 0) - scale * bn.running_mean
                if conv.bias is not None:
                    offset = offset + scale * conv.bias
                new_conv = copy.deepcopy(conv)
                new_conv.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
                new_conv.bias = None
            seq[i], seq[i + 1], seq[i + 2] = new_conv, pool, ChannelShift(offset)
            folded += 1
    return folded
