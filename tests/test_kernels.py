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
    "11x11/4 width the stride does not divide (AlexNet)": (nn.Conv2d(3, 8, 11, 4, 5, bias=False), (1, 3, 35, 35)),
    "16 channels x 16 pixels tile": (nn.Conv2d(4, 32, 3, 1, 1, bias=False), (1, 4, 16, 16)),
}

MAX_POOLS = {  # name: (module, input shape, uses labnas_maxpool)
    "3x3/2 pad 1 (ResNet stem)": (nn.MaxPool2d(3, 2, 1), (1, 4, 16, 16), True),
    "3x3/2 pad 1 odd size": (nn.MaxPool2d(3, 2, 1), (1, 3, 15, 13), True),
    "3x3/2 pad 1, rows in vectors of 4 (hand kernel)": (nn.MaxPool2d(3, 2, 1), (2, 3, 9, 24), True),
    "3x3/2 no pad (AlexNet)": (nn.MaxPool2d(3, 2), (1, 3, 13, 13), True),
    "2x2/1 (QuickNet transition)": (nn.MaxPool2d(2, 1), (1, 5, 9, 9), True),
    "2x2/2": (nn.MaxPool2d(2), (1, 2, 8, 8), True),
    "ceil mode: TVM's lowering": (nn.MaxPool2d(3, 2, ceil_mode=True), (1, 2, 10, 10), False),
}


@pytest.mark.parametrize("name", list(MAX_POOLS))
def test_max_pool_is_exact_without_a_padded_copy(name):
    """Padding taps read the nearest border pixel instead of -inf (max is idempotent): the result must be
    PyTorch's bit for bit, also where a whole border row or column is negative."""
    pool, shape, own_kernel = MAX_POOLS[name]
    model = nn.Sequential(pool).eval()
    x = np.random.default_rng(2).standard_normal(shape).astype(np.float32) - 3.0  # mostly negative
    compiled = compile_model(model, shape, HOST)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    assert np.array_equal(compiled.run_local(x), ref)
    assert ("labnas_maxpool" in compiled.executable.as_text()) == own_kernel


def test_stem_max_pool_is_written_by_hand_where_its_rows_fill_vectors():
    """The 3x3/2 pad-1 pool of a ResNet stem gets the hand-written kernel (deinterleaving shuffles, no gathers)
    where the output row is whole vectors of 8 or 4 pixels; other pools keep the scheduled two-pass kernel."""
    from labnas.tvm.pooling import strided_maxpool

    assert strided_maxpool((1, 64, 112, 112), (3, 3), (2, 2), (1, 1)) is not None
    assert "T.Shuffle" in strided_maxpool((2, 3, 9, 24), (3, 3), (2, 2), (1, 1)).script()
    assert strided_maxpool((1, 3, 15, 13), (3, 3), (2, 2), (1, 1)) is None  # 7 outputs: no vector divides them
    assert strided_maxpool((1, 3, 13, 13), (3, 3), (2, 2), (0, 0)) is None
    assert strided_maxpool((1, 3, 16, 16), (2, 2), (2, 2), (0, 0)) is None


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


def test_batchnorm_before_a_max_pool_is_folded_exactly():
    """conv -> BN -> max pool becomes conv (BN scale in its weights) -> max pool -> + offset, with the same outputs
    whatever the sign of the scales; a binary conv's BN and a BN not followed by a pool stay."""
    from labnas.nn import BinaryConv2d
    from labnas.tvm.fold import ChannelShift, fold_batchnorm_before_pool

    torch.manual_seed(0)
    stem = nn.Sequential(nn.Conv2d(3, 8, 7, 2, padding=3, bias=True), nn.BatchNorm2d(8), nn.MaxPool2d(3, 2, padding=1))
    binary = nn.Sequential(BinaryConv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.MaxPool2d(2))
    model = nn.Sequential(stem, binary, nn.BatchNorm2d(8)).eval()
    for bn in (stem[1], binary[1]):
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        nn.init.uniform_(bn.weight, -1.5, 1.5)  # negative scales too: the max pool then sees -y, still exact
        nn.init.uniform_(bn.bias, -1, 1)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = model(x)
        assert fold_batchnorm_before_pool(model) == 1
        after = model(x)
    assert [type(m).__name__ for m in stem] == ["Conv2d", "MaxPool2d", "ChannelShift"] and stem[0].bias is None
    assert isinstance(binary[1], nn.BatchNorm2d) and not any(isinstance(m, ChannelShift) for m in binary)
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)


FUSED_LAB_CASES = {  # (channels, height, width, sources, LAB kernel, conv padding, pad bit, strict)
    "rows of whole vectors, 2 chunks": (64, 16, 16, 2, 3, 1, 1, True),
    "partial word, per_channel, pad 2": (100, 6, 6, 1, 7, 2, 0, False),
    "whole map tile, 3 words, pad bit 1": (130, 6, 6, 2, 5, 1, 1, True),
    "no padding": (64, 8, 8, 2, 3, 0, 1, True),
    "7x7 map, pad bit 0": (64, 7, 7, 2, 3, 1, 0, True),
    # a measured tile of 16-pixel vectors on 12-wide rows: decisions computed to 16 columns, 4 of them unpacked;
    # the packing of the same rows runs in vectors of 4 words
    "rows computed past the map": (64, 8, 12, 2, 3, 1, 1, False, (4, 16, 1, 2)),
}


@pytest.mark.parametrize("name", list(FUSED_LAB_CASES))
def test_fused_lab_packing_equals_lab_then_pack(name):
    """labnas_lab_pack gives the packed words of labnas_lab followed by labnas_pack, bit for bit (same float
    sums, same compare), and both equal numpy's packing of the decision map: padding words, the masked
    channels of a partial last word and the compare at exactly 0 (every third channel has no weights)."""
    import tvm
    from tvm import te

    from labnas.tvm import kernels, registry

    c, h, w, sources, k, padding, pad_bit, strict, *tile = FUSED_LAB_CASES[name]
    tile = tile[0] if tile else None
    assert tile or kernels.lab_pack_tile(h, w, 8, sources) is not None
    x = te.placeholder((1, c, h, w), "float32", name="x")
    weight = te.placeholder((sources, c, k, k), "float32", name="w")
    bias = te.placeholder((c,), "float32", name="b")
    d = te.placeholder((1, c, h, w), "float32", name="d")
    funcs = {
        "lab": registry.schedule_kernel(te.create_prim_func([x, weight, bias, kernels.lab_decision_compute(x, weight, bias)]), "labnas_lab"),
        "pack": registry.schedule_kernel(te.create_prim_func([d, kernels.pack_compute(d, padding, pad_bit, strict)]), "labnas_pack"),
        "fused": registry.schedule_kernel(
            te.create_prim_func([x, weight, bias, kernels.lab_pack_compute(x, weight, bias, padding, pad_bit, strict,
                                                                            tile[1] if tile else 1)]),
            "labnas_lab_pack", tile=tile,
        ),
    }
    lib = {n: tvm.compile(tvm.IRModule({"main": f}), target=HOST.tvm_target()) for n, f in funcs.items()}
    rng = np.random.default_rng(c + k)
    arrays = [rng.standard_normal(s).astype(np.float32) for s in ((1, c, h, w), (sources, c, k, k), (c,))]
    arrays[1][:, ::3], arrays[2][::3] = 0.0, 0.0  # decisions exactly 0: strict says -1, non-strict +1
    inputs = [tvm.runtime.tensor(a) for a in arrays]
    words_shape = (1, h + 2 * padding, -(-c // 64), w + 2 * padding)
    decision = tvm.runtime.tensor(np.zeros((1, c, h, w), np.float32))
    two_kernels, fused = (tvm.runtime.tensor(np.zeros(words_shape, np.int64)) for _ in range(2))
    lib["lab"]["main"](*inputs, decision)
    lib["pack"]["main"](decision, two_kernels)
    lib["fused"]["main"](*inputs, fused)
    expected = _numpy_packed(decision.numpy(), padding, pad_bit, strict)
    assert 0 < np.bitwise_count(expected.view(np.uint64)).sum() < expected.size * min(c, 64)  # bits both ways
    assert np.array_equal(two_kernels.numpy(), expected)
    assert np.array_equal(fused.numpy(), expected)


def _numpy_packed(d: np.ndarray, padding: int, pad_bit: int, strict: bool) -> np.ndarray:
    """Channel ``ch`` of a decision map -> bit ``ch % 64`` of word ``ch // 64``, spatially padded with ``pad_bit``."""
    on = d > 0 if strict else d >= 0
    on = np.pad(on, ((0, 0), (0, 0), (padding, padding), (padding, padding)), constant_values=bool(pad_bit))
    n, c, hp, wp = on.shape
    out = np.zeros((n, hp, -(-c // 64), wp), np.uint64)
    for ch in range(c):
        out[:, :, ch // 64, :] |= on[:, ch].astype(np.uint64) << np.uint64(ch % 64)
    return out.view(np.int64)


@pytest.mark.parametrize("width", [56, 28, 12, 7])
def test_packing_carries_its_words_in_power_of_two_vectors(width):
    """The packing's words, carried across a word's 64 channels, are vectors of a power-of-two number of pixels
    (whole rows of 56 words were scalarised by LLVM: ~200 moves per channel, the kernel 6x slower); the row's
    chunks are unrolled so the words stay in registers."""
    import re

    from tvm import te

    from labnas.tvm import kernels, registry

    d = te.placeholder((1, 64, 6, width), "float32", name="d")
    func = registry.schedule_kernel(te.create_prim_func([d, kernels.pack_compute(d, 1, 0, False)]), "labnas_pack", 8)
    update = func.script().split('for b in range(64):')[1].split('T.sblock("packed")')[0]
    lanes = [int(v) for v in re.findall(r"T\.vectorized\((\d+)\)", update)]
    chunks = [int(v) for v in re.findall(r"T\.unroll\((\d+)\)", update)]
    expected = {56: 8, 28: 4, 12: 4, 7: 1}[width]
    assert lanes == [expected]
    assert chunks == [width // expected]


def test_lab_is_fused_into_the_packing_where_a_tile_fits():
    from labnas.tvm.kernels import lab_pack_tile

    assert lab_pack_tile(56, 56, 8) == (4, 8, 1, 2)  # 4 rows x 8 pixels x 1 channel, 2 chunks of rows
    assert lab_pack_tile(7, 7, 8) == (7, 7, 2, 1)  # the whole map x 2 channels
    assert lab_pack_tile(28, 28, 8) is None and lab_pack_tile(14, 14, 8) is None  # measured slower fused
    assert lab_pack_tile(2, 2, 8) is None and lab_pack_tile(56, 56, 0) is None
    assert lab_pack_tile(56, 56, 8, sources=1) is None  # per_channel: measured slower fused at 56
    assert lab_pack_tile(7, 7, 8, sources=1) == (7, 7, 2, 1)


def test_network_mixes_fused_and_separate_lab_kernels_and_matches_torch():
    from labnas.models import create_model, default_spec
    from labnas.tvm import import_model

    model = create_model(default_spec("labbnn", "lab", stem="small", num_classes=10, width_mult=0.25)).eval()
    shape = (1, 3, 28, 28)
    imported, _ = import_model(model, shape, carry_save=True, lab_pack_vector=8)
    names = [gv.name_hint for gv in imported.functions]
    assert any(n.startswith("labnas_lab_pack") for n in names)
    assert any(n.startswith("labnas_lab") and not n.startswith("labnas_lab_pack") for n in names)
    unfused, _ = import_model(model, shape, carry_save=True, lab_pack_vector=None)
    assert not any(gv.name_hint.startswith("labnas_lab_pack") for gv in unfused.functions)
    x = np.random.default_rng(3).standard_normal(shape).astype(np.float32)
    compiled = compile_model(model, shape, HOST)
    np.testing.assert_allclose(compiled.run_local(x), compiled.reference(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("pairing,fused", [("official", True), ("per_channel", False)])
def test_lowering_fuses_a_16_wide_lab_only_for_the_official_pairing(pairing, fused):
    from labnas.nn import BinaryConv2d
    from labnas.tvm import import_model

    model = nn.Sequential(BinaryConv2d(16, 8, 3, 1, binarizer=LAB(16, 3, pairing=pairing), pad_value=1)).eval()
    imported, _ = import_model(model, (1, 16, 16, 16), lab_pack_vector=8)
    assert any(gv.name_hint.startswith("labnas_lab_pack") for gv in imported.functions) == fused


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
    from labnas.timing.popcount_limit import PopcountCeiling, xnor_words

    assert xnor_words(256, 256, 14, 3) == 14 * 14 * 256 * 9 * 4
    assert xnor_words(65, 8, 2, 1) == 2 * 2 * 8 * 2  # 65 channels take two words
    ceiling = PopcountCeiling(HOST, threads=1, tasks=16)
    rate = ceiling.words_per_second(repeat=3)
    assert 1e8 < rate < 1e12  # a CPU does between 0.1 and 1000 G xor-popcounts per second


def test_round_robin_and_runners_agree_on_outputs(tmp_path):
    pytest.importorskip("onnxruntime")
    from labnas.timing.compare import onnxruntime_runner, round_robin, torch_runner, tvm_runner

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
    from labnas.timing.compare import round_robin

    order: list[str] = []
    calls = {name: (lambda name=name: order.append(name)) for name in "abc"}
    times = round_robin(calls, rounds=4, repeat=1, number=1)
    timed = order[9:]  # after three warm-up calls each
    assert timed == list("abc" "bca" "cab" "abc")
    assert all(len(v) == 4 for v in times.values())


def test_round_robin_calls_its_round_hook_before_each_round_untimed():
    from labnas.timing.compare import round_robin

    order: list[str] = []
    calls = {name: (lambda name=name: order.append(name)) for name in "ab"}
    round_robin(calls, rounds=3, repeat=1, number=1, before_round=lambda: order.append("|"))
    assert order[6:] == list("|ab" "|ba" "|ab")


def test_placement_labels_split_a_run_at_the_jump_between_placements():
    from labnas.timing.core_latency import placement_labels

    # the EPYC VM: ~100 ns near, ~400 ns apart, with the probe's scatter inside each
    assert placement_labels([98, 390, 231, None, 80, 416]) == ["near", "apart", "near", "unknown", "near", "apart"]
    assert placement_labels([350, 420, 560, 390]) == ["one"] * 4  # one placement: 1.6x scatter is not a move
    assert placement_labels([80, 150, 231]) == ["one"] * 3  # the near placement's own scatter (2.9x) is not a move
    assert placement_labels([None, None]) == ["unknown", "unknown"]
    assert placement_labels([50, 52]) == ["one", "one"]


def test_paired_ratio_is_the_median_of_per_round_ratios():
    from labnas.timing.compare import paired_ratio

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
