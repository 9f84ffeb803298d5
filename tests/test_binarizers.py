"""Binarizer forward values and pseudo-gradients against their closed forms."""

import math

import pytest
import torch

from labnas.nn import LAB, ApproxSign, BinaryConv2d, Niblack, RSign, Sauvola, SteSign, get_binarizer


def _grad(module, x):
    x = x.clone().requires_grad_(True)
    module(x).sum().backward()
    return x.grad


X = torch.tensor([-2.0, -1.25, -1.0, -0.5, -0.1, 0.0, 0.1, 0.5, 1.0, 1.25, 2.0])


def test_ste_sign_forward_and_clipped_gradient():
    out = SteSign(clip=1.0)(X)
    assert out.tolist() == [-1, -1, -1, -1, -1, 1, 1, 1, 1, 1, 1]
    assert _grad(SteSign(clip=1.0), X).tolist() == [0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 0]
    assert _grad(SteSign(clip=1.25), X).tolist() == [0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0]


def test_approx_sign_gradient_is_two_minus_two_abs_x():
    g = _grad(ApproxSign(), X)
    expected = [(2 - 2 * abs(v)) if abs(v) <= 1 else 0.0 for v in X.tolist()]
    assert torch.allclose(g, torch.tensor(expected), atol=1e-6)
    assert ApproxSign()(X).tolist() == SteSign()(X).tolist()


def test_rsign_threshold_moves_the_sign():
    m = RSign(2)
    m.alpha.data = torch.tensor([0.5, -0.5]).view(1, 2, 1, 1)
    x = torch.tensor([0.4, 0.6, -0.6, -0.4]).view(1, 1, 2, 2).repeat(1, 2, 1, 1)
    out = m(x)
    assert out[0, 0].flatten().tolist() == [-1, 1, -1, -1]
    assert out[0, 1].flatten().tolist() == [1, 1, -1, 1]


def _lab_with_weights(c, w, b, pairing, k=1, beta=1.0):
    lab = LAB(c, kernel_size=k, pairing=pairing, beta=beta)
    lab.dw.weight.data = torch.tensor(w, dtype=torch.float32).view(2 * c, 1, k, k)
    lab.dw.bias.data = torch.tensor(b, dtype=torch.float32)
    return lab


def test_lab_official_vs_per_channel_on_hand_computed_input():
    # C = 2, 1x1 kernels. Depthwise map 2g+q comes from input channel g:
    # maps = [w0*x0, w1*x0, w2*x1, w3*x1] with weights [1, 2, 3, -1] and no bias.
    x = torch.tensor([1.0, 1.0]).view(1, 2, 1, 1)
    w, b = [1.0, 2.0, 3.0, -1.0], [0.0, 0.0, 0.0, 0.0]
    # maps = [1, 2, 3, -1]
    # official: view(N, 2, C): channel j compares map j (z0) with map C+j (z1): (1 vs 3) -> +1, (2 vs -1) -> -1
    off = _lab_with_weights(2, w, b, "official")(x).flatten().tolist()
    # per_channel: channel g compares maps 2g (z0) and 2g+1 (z1): (1 vs 2) -> +1, (3 vs -1) -> -1
    per = _lab_with_weights(2, w, b, "per_channel")(x).flatten().tolist()
    assert off == [1.0, -1.0]
    assert per == [1.0, -1.0]
    # Change x1 only: official channel 0 depends on input channel 1 (cross pairing), per_channel's does not.
    x2 = torch.tensor([1.0, -1.0]).view(1, 2, 1, 1)  # maps = [1, 2, -3, 1]
    assert _lab_with_weights(2, w, b, "official")(x2).flatten().tolist() == [-1.0, -1.0]  # (1 vs -3), (2 vs 1)
    assert _lab_with_weights(2, w, b, "per_channel")(x2).flatten().tolist() == [1.0, 1.0]  # (1 vs 2), (-3 vs 1)


def test_lab_tie_gives_minus_one():
    lab = _lab_with_weights(1, [1.0, 1.0], [0.5, 0.5], "per_channel")
    assert lab(torch.tensor([[[[3.0]]]])).item() == -1.0


def test_lab_gradient_is_soft_argmax_without_clipping():
    # per_channel, C=1, 1x1: u0 = a*x + c0, u1 = b*x + c1; s = tanh(beta (u1 - u0) / 2)
    a, bw, c0, c1, beta = 0.5, 2.0, 0.1, -0.3, 1.7
    lab = _lab_with_weights(1, [a, bw], [c0, c1], "per_channel", beta=beta).double()  # float64: tanh tails
    a, bw = lab.dw.weight.flatten().tolist()  # the float32-rounded values the module holds
    c0, c1 = lab.dw.bias.tolist()
    beta = lab.beta.item()
    for xv in (-3.0, -0.2, 0.0, 0.4, 5.0):  # far outside [-1, 1] too: no clipping
        x = torch.tensor([[[[xv]]]], dtype=torch.float64, requires_grad=True)
        out = lab(x)
        out.sum().backward()
        d = beta * ((bw * xv + c1) - (a * xv + c0))
        expected = (1 - math.tanh(d / 2) ** 2) / 2 * beta * (bw - a)
        assert out.item() == (1.0 if d > 0 else -1.0)
        assert x.grad.item() == pytest.approx(expected, rel=1e-9)
        # the same value as 2 * softmax(z)[1] - 1 differentiated
        z = torch.tensor([beta * (a * xv + c0), beta * (bw * xv + c1)], dtype=torch.float64, requires_grad=True)
        (2 * torch.softmax(z, 0)[1] - 1).backward()
        assert z.grad[1].item() * beta * bw + z.grad[0].item() * beta * a == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("k", [1, 3, 5, 7])
def test_lab_parameter_count(k):
    c = 24
    lab = LAB(c, kernel_size=k)
    assert sum(p.numel() for p in lab.parameters()) == (2 * k * k + 2) * c + 1


def test_lab_rejects_bad_kernel_and_pairing():
    with pytest.raises(ValueError, match="odd number"):
        LAB(4, kernel_size=4)
    with pytest.raises(ValueError, match="pairing"):
        LAB(4, pairing="sideways")


@pytest.mark.parametrize("name", ["ste_sign", "approx_sign", "rsign", "lab", "niblack", "sauvola"])
def test_decision_reproduces_forward(name):
    torch.manual_seed(0)
    m = get_binarizer(name, 6)
    x = torch.randn(2, 6, 7, 7)
    out = m(x)
    assert set(out.unique().tolist()) <= {-1.0, 1.0}
    assert torch.equal(out, m.bits(x))


def test_local_thresholds_use_local_mean():
    x = torch.zeros(1, 1, 5, 5)
    x[0, 0, 2, 2] = 1.0  # a single bright pixel: above its local mean, its neighbours are below theirs
    for m in (Niblack(), Sauvola()):
        out = m(x)[0, 0]
        assert out[2, 2] == 1.0
        assert out[1, 2] == -1.0


def test_unknown_binarizer_names_the_choices():
    with pytest.raises(ValueError, match="unknown binarizer 'tanh'.*lab"):
        get_binarizer("tanh", 4)


def test_binary_conv_padding_value_and_weight_scale():
    conv = BinaryConv2d(2, 3, 3, binarizer="ste_sign", weight_scale="channel", pad_value=0)
    x = torch.randn(1, 2, 4, 4)
    xb = torch.where(x >= 0, 1.0, -1.0)
    w = conv.weight.detach()
    wb = torch.where(w >= 0, 1.0, -1.0) * w.abs().mean(dim=(1, 2, 3), keepdim=True)
    ref = torch.nn.functional.conv2d(xb, wb, padding=1)
    assert torch.allclose(conv(x), ref, atol=1e-6)
    conv_p1 = BinaryConv2d(2, 3, 3, pad_value=1)
    conv_p1.weight.data = w.clone()
    ref_p1 = torch.nn.functional.conv2d(torch.nn.functional.pad(xb, [1] * 4, value=1.0), torch.where(w >= 0, 1.0, -1.0))
    assert torch.allclose(conv_p1(x), ref_p1, atol=1e-6)


def test_binary_weight_gradient_is_clipped_ste():
    conv = BinaryConv2d(1, 1, 1, weight_scale="none")
    conv.weight.data = torch.tensor([[[[0.5]]]])
    conv(torch.ones(1, 1, 1, 1)).sum().backward()
    assert conv.weight.grad.item() == 1.0
    conv.weight.grad = None
    conv.weight.data = torch.tensor([[[[1.5]]]])
    conv(torch.ones(1, 1, 1, 1)).sum().backward()
    assert conv.weight.grad.item() == 0.0
