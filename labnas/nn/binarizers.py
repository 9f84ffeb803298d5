"""Activation binarizers: the sign family and the Learnable Activation Binarizer (LAB).

Every binarizer maps a real feature map to {-1, +1} in the forward pass and defines a pseudo-gradient
for the backward pass. The pseudo-gradient is written with the "hard + (soft - soft.detach())" trick:
the forward value is exactly the hard value (the bracket is exactly 0.0), the gradient is the soft
surrogate's. This keeps every binarizer an ordinary torch graph, so ``torch.export``, fvcore and thop
see plain ops (no ``autograd.Function`` that tracers cannot look into).

For deployment each binarizer also exposes :meth:`Binarizer.decision`: a real tensor ``d`` whose
sign carries the bit (``d > 0`` when :attr:`Binarizer.strict`, else ``d >= 0``). The TVM lowering
packs bits straight from ``d``, so the soft surrogate never reaches the compiled graph.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "Binarizer",
    "centre_crop",
    "SteSign",
    "ApproxSign",
    "RSign",
    "LAB",
    "Niblack",
    "Sauvola",
    "BINARIZERS",
    "get_binarizer",
    "hard_sign",
]


def centre_crop(weight: torch.Tensor, k: int) -> torch.Tensor:
    """The centre ``k`` x ``k`` taps of a conv weight ``[..., K, K]`` (``K - k`` even): a smaller kernel that
    shares its weights with the larger one (LAB's cropped forward, the supernet's conv and LAB kernels)."""
    lo = (weight.shape[-1] - k) // 2
    return weight[..., lo : lo + k, lo : lo + k]


def hard_sign(x: torch.Tensor) -> torch.Tensor:
    """+1 where ``x >= 0``, else -1 (``torch.sign`` would give 0 at 0, which is not a binary value)."""
    return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)


class Binarizer(nn.Module):
    """Base class: a module mapping real activations to {-1, +1}.

    Subclasses implement :meth:`forward` (training and reference) and :meth:`decision` (deployment).
    """

    #: Registry name, set by :func:`_register`.
    name: str = ""
    #: ``True`` when the bit is ``decision(x) > 0``; ``False`` when it is ``decision(x) >= 0``.
    strict: bool = False

    def decision(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def bits(self, x: torch.Tensor) -> torch.Tensor:
        """The forward value recomputed from :meth:`decision` (used to check the two agree)."""
        d = self.decision(x)
        return torch.where(d > 0 if self.strict else d >= 0, 1.0, -1.0).to(x.dtype)


BINARIZERS: dict[str, type[Binarizer]] = {}


def _register(name: str):
    def wrap(cls: type[Binarizer]) -> type[Binarizer]:
        cls.name = name
        BINARIZERS[name] = cls
        return cls

    return wrap


@_register("ste_sign")
class SteSign(Binarizer):
    r"""Sign with a clipped straight-through estimator (BNN, Hubara et al. 2016; larq ``SteSign``).

    Forward:  :math:`q(x) = +1` if :math:`x \ge 0` else :math:`-1`.

    Backward: :math:`\partial q / \partial x = 1_{|x| \le \text{clip}}`.

    Arguments:
        clip: the clip value of the straight-through estimator (larq default 1.0; QuickNet uses 1.25).

    References:
        Hubara et al., "Binarized Neural Networks", NeurIPS 2016, arXiv 1602.02830.
    """

    def __init__(self, channels: int | None = None, clip: float = 1.0):
        super().__init__()
        self.clip = float(clip)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        soft = torch.clamp(x, -self.clip, self.clip)
        return hard_sign(x) + (soft - soft.detach())

    def decision(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def extra_repr(self) -> str:
        return f"clip={self.clip}"


def _approx_sign_surrogate(x: torch.Tensor) -> torch.Tensor:
    """Bi-Real Net's piecewise quadratic F(x): 2x + x^2 on [-1, 0), 2x - x^2 on [0, 1), sign outside."""
    return torch.where(x.abs() < 1, 2 * x - x * x.abs(), hard_sign(x).detach())


@_register("approx_sign")
class ApproxSign(Binarizer):
    r"""Sign with Bi-Real Net's piecewise-polynomial pseudo-gradient.

    Forward:  :math:`q(x) = +1` if :math:`x \ge 0` else :math:`-1`.

    Backward: :math:`\partial q / \partial x = 2 - 2|x|` on :math:`|x| \le 1`, else 0 (the derivative of
    :math:`F(x) = 2x + x^2` on :math:`[-1, 0)`, :math:`2x - x^2` on :math:`[0, 1)`, :math:`\pm 1` outside).

    References:
        Liu et al., "Bi-Real Net", ECCV 2018, arXiv 1808.00278.
    """

    def __init__(self, channels: int | None = None):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        soft = _approx_sign_surrogate(x)
        return hard_sign(x) + (soft - soft.detach())

    def decision(self, x: torch.Tensor) -> torch.Tensor:
        return x


@_register("rsign")
class RSign(Binarizer):
    r"""ReAct-Sign: a sign with a learnable per-channel threshold :math:`\alpha_c`.

    Forward:  :math:`q(x) = +1` if :math:`x - \alpha_c \ge 0` else :math:`-1`.

    Backward: ApproxSign's :math:`2 - 2|x - \alpha_c|` on :math:`|x - \alpha_c| \le 1`, else 0, with
    respect to both :math:`x` and (negated, summed) :math:`\alpha`.

    Arguments:
        channels: number of input channels C (one threshold each, initialised to 0).

    References:
        Liu et al., "ReActNet", ECCV 2020, arXiv 2003.03488.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shifted = x - self.alpha
        soft = _approx_sign_surrogate(shifted)
        return hard_sign(shifted) + (soft - soft.detach())

    def decision(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.alpha


@_register("lab")
class LAB(Binarizer):
    r"""Learnable Activation Binarizer (Falkena, Jamali-Rad, van Gemert; WACV 2023).

    A depthwise convolution (C -> 2C maps, bias, zero 'same' padding, stride 1) produces two candidate
    maps :math:`u_0, u_1` per output channel; with a learnable scalar :math:`\beta`, :math:`z = \beta u`.

    Forward:  :math:`q = +1` where :math:`z_1 > z_0`, else :math:`-1` (a tie gives -1, as TF's argmax
    picks index 0).

    Backward: through the soft-argmax surrogate
    :math:`s = 2\,\mathrm{softmax}(z)_1 - 1 = \tanh(\beta (u_1 - u_0) / 2)`, with no clipping; the
    gradient reaches x, the depthwise weights and bias, and :math:`\beta`.

    Pairing (which two of the 2C depthwise maps are compared; depthwise output channel ``2g + q`` is
    input channel g, filter q):

    - ``"official"`` reproduces the released code's ``reshape(N, H, W, 2, C)`` without a transpose,
      i.e. ``view(N, 2, C, H, W)`` in NCHW: output channel j compares depthwise map ``j`` against map
      ``C + j``, which come from *different* input channels (``j // 2`` and ``(C + j) // 2``).
    - ``"per_channel"`` compares the two maps of one input channel (``view(N, C, 2, H, W)``), as the
      paper's figure draws it.

    Parameters: :math:`2k^2C` depthwise weights + :math:`2C` biases + 1 :math:`\beta` =
    :math:`(2k^2 + 2)C + 1`.

    Arguments:
        channels: number of input (and output) channels C.
        kernel_size: odd depthwise kernel size, 1..7 (the paper uses 3).
        pairing: ``"official"`` or ``"per_channel"``.
        beta: initial value of :math:`\beta` (learnable).

    References:
        Falkena et al., "LAB: Learnable Activation Binarizer for Binary Neural Networks", WACV 2023,
        arXiv 2210.13858; code github.com/sfalkena/LAB (larq fork, ``larq/quantizers.py``).
    """

    strict = True
    PAIRINGS = ("official", "per_channel")

    def __init__(self, channels: int, kernel_size: int = 3, pairing: str = "official", beta: float = 1.0):
        super().__init__()
        if kernel_size not in (1, 3, 5, 7):
            raise ValueError(f"LAB kernel_size must be an odd number from 1 to 7, got {kernel_size!r}")
        if pairing not in self.PAIRINGS:
            raise ValueError(f"LAB pairing must be one of {self.PAIRINGS}, got {pairing!r}")
        self.channels = channels
        self.kernel_size = kernel_size
        self.pairing = pairing
        self.dw = nn.Conv2d(channels, 2 * channels, kernel_size, padding=kernel_size // 2, groups=channels, bias=True)
        # Keras glorot_uniform on a (k, k, C, 2) depthwise kernel: fan_in = C k^2, fan_out = 2 k^2.
        limit = math.sqrt(6.0 / ((channels + 2) * kernel_size * kernel_size))
        nn.init.uniform_(self.dw.weight, -limit, limit)
        nn.init.zeros_(self.dw.bias)
        self.beta = nn.Parameter(torch.tensor(float(beta)))

    def candidates(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The two compared maps ``(u0, u1)`` of shape (N, C, H, W), before the beta scale.

        Written as slices rather than ``view`` + index: ``view(N, 2, C, H, W)[:, q]`` is channel half q,
        ``view(N, C, 2, H, W)[:, :, q]`` is every other channel from q; slices lower to strided copies in
        TVM instead of gathers.
        """
        return self._pair(self.dw(x))

    def _pair(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.channels
        if self.pairing == "official":
            return u[:, :c], u[:, c:]
        return u[:, 0::2], u[:, 1::2]

    def cropped_forward(self, x: torch.Tensor, kernel_size: int) -> torch.Tensor:
        """The forward pass of a LAB whose depthwise kernel is the centre ``kernel_size`` x ``kernel_size``
        of this one's (and the same biases and beta): how a weight-sharing supernet runs a smaller LAB."""
        if kernel_size == self.kernel_size:
            return self.forward(x)
        if kernel_size > self.kernel_size or kernel_size % 2 == 0:
            raise ValueError(f"cannot crop a {self.kernel_size}x{self.kernel_size} LAB kernel to {kernel_size}")
        weight = centre_crop(self.dw.weight, kernel_size)
        u = F.conv2d(x, weight, self.dw.bias, padding=kernel_size // 2, groups=self.channels)
        return self._binarize(*self._pair(u))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._binarize(*self.candidates(x))

    def _binarize(self, u0: torch.Tensor, u1: torch.Tensor) -> torch.Tensor:
        z0, z1 = self.beta * u0, self.beta * u1
        hard = torch.where(z1 > z0, 1.0, -1.0).to(u0.dtype)
        soft = torch.tanh((z1 - z0) / 2)  # == 2 * softmax([z0, z1])[1] - 1
        return hard + (soft - soft.detach())

    def decision(self, x: torch.Tensor) -> torch.Tensor:
        u0, u1 = self.candidates(x)
        return self.beta * u1 - self.beta * u0

    def extra_repr(self) -> str:
        return f"channels={self.channels}, kernel_size={self.kernel_size}, pairing={self.pairing!r}"


class _LocalThreshold(Binarizer):
    """Shared machinery of the local-threshold baselines: 3x3 mean and deviation, then a clipped STE."""

    def __init__(self, channels: int | None = None, k: float = 0.0, window: int = 3, eps: float = 1e-9):
        super().__init__()
        self.k = float(k)
        self.window = window
        self.eps = eps

    def _local_stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pool = lambda t: F.avg_pool2d(t, self.window, 1, self.window // 2, count_include_pad=False)  # noqa: E731
        mean = pool(x)
        std = torch.sqrt(pool((x - mean) ** 2) + self.eps)
        return mean, std

    def threshold(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def decision(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.threshold(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self.decision(x)
        soft = torch.clamp(d, -1.0, 1.0)
        return hard_sign(d) + (soft - soft.detach())

    def extra_repr(self) -> str:
        return f"k={self.k}, window={self.window}"


@_register("niblack")
class Niblack(_LocalThreshold):
    r"""Niblack's local threshold (a baseline binarizer of the LAB paper's code).

    Forward:  :math:`q = \mathrm{sign}(x - t)` with :math:`t = m + k s` (k = -0.2), m the 3x3 local mean,
    :math:`s = \sqrt{\mathrm{mean}_{3\times3}((x - m)^2) + \epsilon}`.

    Backward: clipped STE on :math:`x - t`, :math:`1_{|x - t| \le 1}`.

    References:
        Niblack, "An Introduction to Digital Image Processing", 1986; sfalkena/larq ``Niblack``.
    """

    def __init__(self, channels: int | None = None, k: float = -0.2):
        super().__init__(channels, k=k)

    def threshold(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = self._local_stats(x)
        return mean + self.k * std


@_register("sauvola")
class Sauvola(_LocalThreshold):
    r"""Sauvola's local threshold (a baseline binarizer of the LAB paper's code).

    Forward:  :math:`q = \mathrm{sign}(x - t)` with :math:`t = m (1 + k (s / R - 1))` (k = 0.5), m and s as
    in :class:`Niblack`, and R the largest s over the whole tensor (so it depends on the batch).

    Backward: clipped STE on :math:`x - t`, :math:`1_{|x - t| \le 1}`.

    References:
        Sauvola and Pietikainen, "Adaptive document image binarization", Pattern Recognition 2000.
    """

    def __init__(self, channels: int | None = None, k: float = 0.5):
        super().__init__(channels, k=k)

    def threshold(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = self._local_stats(x)
        r = std.amax().detach()
        return mean * (1 + self.k * (std / r - 1))


def get_binarizer(name: str, channels: int, **kwargs) -> Binarizer:
    """Build a binarizer by registry name.

    Arguments:
        name: one of :data:`BINARIZERS` (``"sign"`` is accepted as an alias of ``"ste_sign"``).
        channels: input channels (used by RSign and LAB, ignored by the others).
        kwargs: passed to the class (e.g. ``kernel_size`` and ``pairing`` for LAB, ``clip`` for SteSign).

    Raises:
        ValueError: for an unknown name, listing the known ones.
    """
    key = "ste_sign" if name == "sign" else name
    if key not in BINARIZERS:
        raise ValueError(f"unknown binarizer {name!r}; choose one of: sign, {', '.join(sorted(BINARIZERS))}")
    return BINARIZERS[key](channels, **kwargs)
