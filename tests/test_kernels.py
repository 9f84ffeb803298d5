"""Scheduled float kernels against PyTorch, the folded LAB decision, the popcount ceiling, the benchmark harness."""

import numpy as np
import pytest
import torch
from torch import nn

from labnas.nn import LAB, SteSign
from labnas.tvm import TARGETS, compile_model
from labnas.tvm.packed import FrozenLabDecision

HOST = TARGETS["host"]

FLOAT_CONVS = {  # name: (module, input shape); widths chosen to hit every tile fallback (8, 7, 4, 2, 1 pixels)
    "stem 7x7/2": (nn.Conv2d(3, 16, 7, 2, 3, bias=False), (1, 3, 32, 32)),
    "1x1/2 odd width": (nn.Conv2d(16, 24, 1, 2, bias=False), (1, 16, 18, 18)),
    "3x3 width 7": (nn.Conv2d(8, 12, 3, 1, 1, bias=True), (1, 8, 7, 7)),
    "3x3/2 width 5": (nn.Conv2d(8, 6, 3, 2, 1, bias=False), (1, 8, 10, 10)),
    "LAB group conv C->2C k3": (nn.Conv2d(8, 16, 3, 1, 1, groups=8), (1, 8, 12, 12)),
    "LAB group conv C->2C k7 odd height": (nn.Conv2d(6, 12, 7, 1, 3, groups=6), (1, 6, 9, 9)),
    "depthwise k5": (nn.Conv2d(8, 8, 5, 1, 2, groups=8), (1, 8, 8, 8)),
}


@pytest.mark.parametrize("name", list(FLOAT_CONVS))
def test_scheduled_float_conv_matches_torch(name):
    conv, shape = FLOAT_CONVS[name]
    torch.manual_seed(0)
    model = nn.Sequential(conv, nn.BatchNorm2d(conv.out_channels), nn.ReLU()).eval()
    nn.init.normal_(model[1].running_mean)
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    out = compile_model(model, shape, HOST).run_local(x)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("pairing", ["official", "per_channel"])
@pytest.mark.parametrize("kernel", [1, 3, 7])
def test_folded_lab_decision_equals_lab(kernel, pairing):
    torch.manual_seed(kernel)
    lab = LAB(10, kernel, pairing=pairing)
    nn.init.normal_(lab.dw.bias)
    lab.beta.data.fill_(0.7)
    x = torch.randn(2, 10, 9, 9)
    frozen = FrozenLabDecision(lab)
    with torch.no_grad():
        np.testing.assert_allclose(frozen(x).numpy(), lab.decision(x).numpy(), rtol=1e-5, atol=1e-5)
    assert tuple(frozen.weight.shape) == ((2 if pairing == "official" else 1), 10, kernel, kernel)
    assert FrozenLabDecision.applies_to(lab) and not FrozenLabDecision.applies_to(SteSign())


@pytest.mark.parametrize("terms", [1, 2, 3, 7, 54, 55, 109])
def test_carry_save_popcount_equals_the_sum_of_popcounts(terms):
    """Full-adder tree (one chain up to 54 words, two or three beyond) vs numpy, vectorised over 8 lanes;
    all-ones words make every carry fire."""
    import tvm
    from tvm import s_tir, te

    from labnas.tvm.carry_save import carry_save_popcount

    x = te.placeholder((terms, 8), "int64", name="x")
    out = te.compute((8,), lambda lane: carry_save_popcount([x[i, lane] for i in range(terms)]), name="out")
    sch = s_tir.Schedule(te.create_prim_func([x, out]))
    sch.vectorize(sch.get_loops(sch.get_sblock("out"))[0])
    lib = tvm.compile(tvm.IRModule({"main": sch.mod["main"]}), target=HOST.tvm_target())
    rng = np.random.default_rng(terms)
    words = rng.integers(-(2**63), 2**63 - 1, (terms, 8), dtype=np.int64, endpoint=True)
    words[:, 0] = -1  # all 64 bits set in every word of lane 0
    words[:, 1] = 0
    result = tvm.runtime.tensor(np.zeros(8, np.int64))
    lib["main"](tvm.runtime.tensor(words), result)
    expected = np.bitwise_count(words.view(np.uint64)).sum(axis=0).astype(np.int64)
    assert expected[0] == 64 * terms and expected[1] == 0
    assert np.array_equal(result.numpy(), expected)


def test_popcount_ceiling_counts_words_and_is_plausible():
    from labnas.tvm.popcount_limit import PopcountCeiling, xnor_words

    assert xnor_words(256, 256, 14, 3) == 14 * 14 * 256 * 9 * 4
    assert xnor_words(65, 8, 2, 1) == 2 * 2 * 8 * 2  # 65 channels take two words
    ceiling = PopcountCeiling(HOST, threads=1, tasks=16)
    rate = ceiling.words_per_second(repeat=3)
    assert 1e8 < rate < 1e12  # a CPU does between 0.1 and 1000 G xor-popcounts per second


def test_round_robin_and_runners_agree_on_outputs(tmp_path):
    pytest.importorskip("onnxruntime")
    from labnas.benchmarking import onnxruntime_runner, round_robin, torch_runner, tvm_runner

    model = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU()).eval()
    x = np.random.default_rng(0).standard_normal((1, 4, 10, 10)).astype(np.float32)
    calls = {}
    calls["torch"], ref = torch_runner(model, x, 1)
    calls["ort"], out_ort = onnxruntime_runner(model, x, 1, str(tmp_path / "m.onnx"))
    calls["tvm"], out_tvm = tvm_runner(compile_model(model, x.shape, HOST), x, 1)
    np.testing.assert_allclose(out_ort, ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out_tvm, ref, rtol=1e-4, atol=1e-4)
    times = round_robin(calls, rounds=2, repeat=2, number=1)
    assert set(times) == {"torch", "ort", "tvm"} and all(len(v) == 2 and min(v) > 0 for v in times.values())


def test_round_robin_rotates_the_order_each_round():
    from labnas.benchmarking import round_robin

    order: list[str] = []
    calls = {name: (lambda name=name: order.append(name)) for name in "abc"}
    times = round_robin(calls, rounds=4, repeat=1, number=1)
    timed = order[9:]  # after three warm-up calls each
    assert timed == list("abc" "bca" "cab" "abc")
    assert all(len(v) == 4 for v in times.values())


def test_paired_ratio_is_the_median_of_per_round_ratios():
    from labnas.benchmarking import paired_ratio

    # The machine slows down 2x after round 2; one LAB round caught a fast moment.
    rounds = {"sign": [5.0, 5.0, 10.0, 10.0, 10.0], "lab": [6.0, 6.0, 12.0, 12.0, 5.1]}
    assert paired_ratio(rounds, "lab", "sign") == pytest.approx(1.2)
    assert np.median(rounds["lab"]) / np.median(rounds["sign"]) == pytest.approx(0.6)  # what the old statistic said


def test_fp32_resnet18_is_torchvisions():
    from labnas.models.resnet_fp32 import resnet18_fp32

    model = resnet18_fp32()
    assert sum(p.numel() for p in model.parameters()) == 11_689_512
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 1000)


@pytest.mark.parametrize("pairing", ["official", "per_channel"])
def test_compiled_lab_binary_conv_matches_frozen_torch(pairing):
    from labnas.nn import BinaryConv2d
    from labnas.tvm import check_numerics

    torch.manual_seed(3)
    lab = LAB(16, 5, pairing=pairing)
    nn.init.normal_(lab.dw.weight)
    nn.init.normal_(lab.dw.bias, std=0.1)
    model = nn.Sequential(BinaryConv2d(16, 8, 3, binarizer=lab, pad_value=1)).eval()
    x = np.random.default_rng(2).standard_normal((1, 16, 11, 11)).astype(np.float32)
    compiled = compile_model(model, x.shape, HOST)
    out = compiled.run_local(x)
    assert check_numerics(out, compiled.reference(x)) < 1e-3
    with torch.no_grad():  # the frozen (folded) network computes what the training-time one does
        np.testing.assert_allclose(compiled.reference(x), model(torch.from_numpy(x)).numpy(), atol=1e-4)
