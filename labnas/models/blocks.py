"""Building blocks shared by the BNN families (stems, residual blocks, ReActNet's learnable shifts)."""

from __future__ import annotations

import torch
from torch import nn

from ..nn import BinaryConv2d

__all__ = [
    "LearnableBias",
    "RPReLU",
    "BiRealBlock",
    "QuickNetResidual",
    "QuickNetTransition",
    "QuickStem",
    "SmallStem",
    "ReActBlock",
    "Classifier",
]


class LearnableBias(nn.Module):
    """Adds a learnable per-channel shift (ReActNet's ``move`` layers)."""

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bias


class RPReLU(nn.Module):
    """ReActNet's RPReLU: shift -> per-channel PReLU (slope 0.25) -> shift."""

    def __init__(self, channels: int):
        super().__init__()
        self.move_in = LearnableBias(channels)
        self.prelu = nn.PReLU(channels, init=0.25)
        self.move_out = LearnableBias(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.move_out(self.prelu(self.move_in(x)))


def _bn(channels: int, keras_momentum: float = 0.99, eps: float = 1e-3) -> nn.BatchNorm2d:
    """BatchNorm with Keras' momentum convention translated (torch momentum = 1 - Keras momentum)."""
    return nn.BatchNorm2d(channels, momentum=1.0 - keras_momentum, eps=eps)


class BiRealBlock(nn.Module):
    """Bi-Real Net's block: ``act(BN(binconv(q(x))) + shortcut(x))``.

    The shortcut is the identity, or for a stride-2 / widening conv AvgPool 2x2 -> 1x1 fp conv -> BN.
    ``act`` is none (Bi-Real Net) or a per-channel PReLU (LAB-BNN) with slope 0.25 at init. LAB-BNN's Keras code
    starts the slope at 0 (a ReLU): then every input of the next block's sign is >= 0 and binarizes to +1
    everywhere, so an all-sign LAB-BNN carries no information through its binary convs until the slopes have
    learned (a 4-epoch proxy stays at 27-33 % on digits, or about 70 % with Adam 1e-2). 0.25, PyTorch's and
    ReActNet's default, gives the sign both signs from the first step; the deployed network is the same.
    """

    def __init__(self, conv: BinaryConv2d, prelu: bool = False):
        super().__init__()
        self.conv = conv
        self.bn = _bn(conv.out_channels, 0.8)
        if conv.stride != 1 or conv.in_channels != conv.out_channels:
            self.shortcut = nn.Sequential(
                nn.AvgPool2d(conv.stride, conv.stride, ceil_mode=True, count_include_pad=False)
                if conv.stride > 1
                else nn.Identity(),
                nn.Conv2d(conv.in_channels, conv.out_channels, 1, bias=False),
                _bn(conv.out_channels, 0.8),
            )
        else:
            self.shortcut = nn.Identity()
        self.act = nn.PReLU(conv.out_channels, init=0.25) if prelu else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)) + self.shortcut(x))


class QuickNetResidual(nn.Module):
    """QuickNet's residual block: ``x + BN(ReLU(binconv(q(x))))`` (binary conv padded with +1)."""

    def __init__(self, conv: BinaryConv2d):
        super().__init__()
        self.conv = conv
        self.relu = nn.ReLU()
        self.bn = _bn(conv.out_channels, 0.9, 1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bn(self.relu(self.conv(x)))


def _blurpool_kernel(channels: int) -> torch.Tensor:
    k = torch.tensor([1.0, 2.0, 1.0])
    k2 = torch.outer(k, k) / 16.0
    return k2.expand(channels, 1, 3, 3).clone()


class QuickNetTransition(nn.Module):
    """QuickNet's full-precision transition: ReLU -> MaxPool(2, 1) -> fixed blur-pool 3x3/2 -> 1x1 conv -> BN."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 2):
        super().__init__()
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(stride, 1)
        self.blur = nn.Conv2d(in_channels, in_channels, 3, stride, padding=1, groups=in_channels, bias=False)
        self.blur.weight.data.copy_(_blurpool_kernel(in_channels))
        self.blur.weight.requires_grad_(False)
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn = _bn(out_channels, 0.9, 1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(self.blur(self.pool(self.relu(x)))))


class QuickStem(nn.Sequential):
    """QuickNet's / LAB-BNN's stem for 224 inputs (stride 4): conv3x3/2 (C/4) -> BN -> ReLU -> dw3x3/2 -> BN ->
    conv1x1 (C) -> BN."""

    def __init__(self, in_channels: int, out_channels: int):
        mid = max(8, out_channels // 4)
        super().__init__(
            nn.Conv2d(in_channels, mid, 3, 2, padding=1, bias=False),
            _bn(mid, 0.9, 1e-5),
            nn.ReLU(),
            nn.Conv2d(mid, mid, 3, 2, padding=1, groups=mid, bias=False),
            nn.BatchNorm2d(mid, momentum=0.1, eps=1e-5, affine=False),
            nn.Conv2d(mid, out_channels, 1, bias=False),
            _bn(out_channels, 0.9, 1e-5),
        )


class SmallStem(nn.Sequential):
    """A stride-1 3x3 stem for small inputs (8x8 digits, 28x28 Fashion-MNIST, 32x32 CIFAR)."""

    def __init__(self, in_channels: int, out_channels: int, relu: bool = True):
        layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, 3, 1, padding=1, bias=False), _bn(out_channels)]
        if relu:
            layers.append(nn.ReLU())
        super().__init__(*layers)


class ReActBlock(nn.Module):
    """ReActNet's MobileNetV1 block: a binary 3x3 conv, then a binary 1x1 conv, each with BN, a real shortcut
    and RPReLU.

    Widening blocks double the channels with two 1x1 convs on the same binarized input whose outputs are
    concatenated; that is exactly one 1x1 conv with twice the outputs and a per-channel BN, which is how it
    is built here (same parameters, same BOPs, one binarizer).
    """

    def __init__(self, conv3: BinaryConv2d, conv1: BinaryConv2d):
        super().__init__()
        cin, cout = conv3.in_channels, conv1.out_channels
        if cout not in (cin, 2 * cin):
            raise ValueError(f"ReActBlock widens by 1x or 2x, got {cin} -> {cout}")
        self.conv3 = conv3
        self.bn3 = _bn(cin, 0.9, 1e-5)
        self.pool = nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False) if conv3.stride == 2 else nn.Identity()
        self.act3 = RPReLU(cin)
        self.conv1 = conv1
        self.bn1 = _bn(cout, 0.9, 1e-5)
        self.widen = cout == 2 * cin
        self.act1 = RPReLU(cout)
        # Zero-init residual (Goyal et al. 2017; torchvision's zero_init_residual): each branch starts at 0, so
        # the block starts as RPReLU(shortcut). Without it, 26 residual additions grow the stream ~3x before the
        # classifier and a short training run (the search's proxy) barely leaves chance (about 20 % on digits).
        nn.init.zeros_(self.bn3.weight)
        nn.init.zeros_(self.bn1.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act3(self.bn3(self.conv3(x)) + self.pool(x))
        shortcut = torch.cat([y, y], dim=1) if self.widen else y
        return self.act1(self.bn1(self.conv1(y)) + shortcut)


class Classifier(nn.Sequential):
    """Global average pool -> flatten -> full-precision linear layer."""

    def __init__(self, channels: int, num_classes: int, relu: bool = False):
        layers: list[nn.Module] = [nn.ReLU()] if relu else []
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes)]
        super().__init__(*layers)
