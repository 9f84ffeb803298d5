"""Kernel strategies chosen on the CPU at hand: the chooser, the per-layer popcount choice and its cache,
targets this CPU cannot run (compiled, not executed), and no default-scheduled kernel in the five families."""

from __future__ import annotations

import dataclasses
import json
import time

import numpy as np
import pytest
import torch
from torch import nn

from labnas.models import FAMILIES, create_model, default_spec
from labnas.nn import LAB, BinaryConv2d
from labnas.tvm import TARGETS, compile_model
from labnas.tvm.cpu import cpu_flags
from labnas.tvm.strategy import (
    CARRY_SAVE,
    MEASURE_MIN_WORK,
    NATIVE,
    LabShape,
    PopcountChooser,
    XnorShape,
    candidates,
    choose_fastest,
    lab_candidates,
    parse_lab_strategy,
    parse_strategy,
)

from test_tvm import numpy_xnor_popcount  # noqa: E402 - tests/ is on sys.path (rootdir conftest)

HOST = TARGETS["host"]


def _fake_kernel(cost_s: float):
    """A "kernel" whose run takes ``cost_s``; returns its measured time, as a real timer would."""

    def run() -> float:
        start = time.perf_counter()
        time.sleep(cost_s)
        return time.perf_counter() - start

    return run


def test_the_chooser_picks_the_faster_of_two_kernels_with_known_costs():
    winner, medians = choose_fastest({"slow": _fake_kernel(0.006), "fast": _fake_kernel(0.002)}, rounds=3)
    assert winner == "fast"
    assert medians["fast"] < medians["slow"] and medians["slow"] >= 0.006
    winner, _ = choose_fastest({"a": _fake_kernel(0.001), "b": _fake_kernel(0.004)}, rounds=3)
    assert winner == "a"  # the order of the candidates does not decide
    with pytest.raises(ValueError):
        choose_fastest({})


SHAPE = XnorShape(packed=(1, 16, 4, 16), weights=(3, 3, 4, 64), stride=1)  # 451k words: worth measuring
TINY = XnorShape(packed=(1, 9, 2, 9), weights=(3, 3, 2, 32), stride=1)  # 28k words: not


def test_a_kernel_too_small_to_repay_a_measurement_takes_the_rule(tmp_path):
    assert TINY.work < MEASURE_MIN_WORK <= SHAPE.work
    chooser = PopcountChooser(HOST, cache_path=tmp_path / "s.json")
    chooser.carry_save(TINY)
    tiny_lab = LabShape(8, 8, 8, 3, 2, 1, 0, True, True)
    chooser.choose_lab(tiny_lab)
    assert [d.source for d in chooser.decisions] == ["small", "small"] and not (tmp_path / "s.json").exists()
    assert chooser.decisions[0].strategy == (NATIVE if HOST.native_popcount else CARRY_SAVE)


def test_a_pinned_preset_is_never_measured(tmp_path):
    chooser = PopcountChooser(dataclasses.replace(HOST, carry_save_popcount=True), cache_path=tmp_path / "s.json")
    assert chooser.carry_save(SHAPE) is True
    assert chooser.decisions[0].source == "pinned" and not (tmp_path / "s.json").exists()


def test_a_target_this_cpu_cannot_run_takes_its_isa_default(tmp_path):
    for name, native in (("arm", True), ("x86-avx512", True), ("x86", False)):
        target = TARGETS[name]
        chooser = PopcountChooser(target, cache_path=tmp_path / "s.json")
        answer = chooser.carry_save(SHAPE)
        if target.runs_here:
            assert chooser.decisions[0].source == "measured"
        else:
            assert chooser.decisions[0].source == "default" and answer is (not native)


def test_the_choice_is_measured_once_per_cpu_and_shape_then_cached(tmp_path):
    cache = tmp_path / "strategies.json"
    first = PopcountChooser(HOST, cache_path=cache)
    answer = first.carry_save(SHAPE)
    decision = first.decisions[0]
    assert decision.source == "measured" and decision.strategy in candidates(SHAPE, tree=True)
    assert decision.speedup >= 1 and answer == (decision.strategy == CARRY_SAVE)
    second = PopcountChooser(HOST, cache_path=cache)
    assert second.carry_save(SHAPE) == answer and second.decisions[0].source == "cached"
    # the entry belongs to this CPU, ISA, target and kernel code: another CPU's entry is not used
    stored = json.loads(cache.read_text())
    (key,) = stored
    assert "AMD" in key or "Intel" in key or key.split(" | ")[0]
    cache.write_text(json.dumps({key.replace(" | ", " | other-cpu ", 1): stored[key]}))
    third = PopcountChooser(HOST, cache_path=cache)
    third.carry_save(SHAPE)
    assert third.decisions[0].source == "measured"


def test_candidates_are_timed_under_the_callers_lock(tmp_path):
    """A search passes its host lock, so no worker trains while a kernel strategy is timed."""
    import contextlib

    held = []

    @contextlib.contextmanager
    def lock():
        held.append("in")
        yield
        held.append("out")

    chooser = PopcountChooser(HOST, cache_path=tmp_path / "s.json", timing_lock=lock)
    chooser.carry_save(SHAPE)
    chooser.choose_lab(LAB_SHAPE)
    assert held == ["in", "out", "in", "out"]  # one timing session per measured shape
    chooser.carry_save(SHAPE)  # cached: nothing timed
    assert len(held) == 4


def test_candidates_are_timed_with_the_threads_the_network_runs_with(tmp_path, monkeypatch):
    """TVM's default pool on a 2-CPU VM is one worker: strategies measured there ranked kernels for one thread
    while networks ran on two. The chooser times with its ``threads`` (default: every CPU), puts the count in
    its cache key, and leaves the process's own setting as it was."""
    import contextlib
    import os

    seen = []

    @contextlib.contextmanager
    def lock():
        seen.append(os.environ.get("TVM_NUM_THREADS"))
        yield

    monkeypatch.setenv("TVM_NUM_THREADS", "3")
    cache = tmp_path / "s.json"
    one = PopcountChooser(HOST, cache_path=cache, timing_lock=lock, threads=1)
    one.carry_save(SHAPE)
    assert seen == ["1"] and os.environ["TVM_NUM_THREADS"] == "3"
    assert "| threads 1 |" in one._cpu_key
    two = PopcountChooser(HOST, cache_path=cache, timing_lock=lock, threads=2)
    two.carry_save(SHAPE)  # another thread count: measured again, not read from the one-thread entry
    assert seen == ["1", "2"] and two.decisions[0].source == "measured" and len(json.loads(cache.read_text())) == 2
    monkeypatch.delenv("TVM_NUM_THREADS")
    assert PopcountChooser(HOST, cache_path=cache).run_threads == (os.cpu_count() or 1)


def test_strategies_measured_under_one_map_split_are_not_reused_under_the_other(tmp_path, monkeypatch):
    """LAB tiles are ranked with the float kernels around them splitting maps one way (rows or channels); the
    answers for one split are cached apart from the other's."""
    from labnas.tvm import PolicyError, SchedulePolicy

    cache = tmp_path / "s.json"
    rows = PopcountChooser(HOST, cache_path=cache, policy=SchedulePolicy(partition="rows"))
    rows.carry_save(SHAPE)
    channels = PopcountChooser(HOST, cache_path=cache, policy=SchedulePolicy(partition="channels"))
    channels.carry_save(SHAPE)
    assert rows._cpu_key.endswith("| split rows") and channels._cpu_key.endswith("| split channels")
    assert channels.decisions[0].source == "measured" and len(json.loads(cache.read_text())) == 2
    with pytest.raises(PolicyError, match="unknown map partition 'columns'; choose one of rows, channels"):
        SchedulePolicy(partition="columns")


def test_a_layer_too_long_for_the_tree_never_gets_it(tmp_path):
    long = XnorShape((1, 9, 16, 9), (3, 3, 16, 32), 1)  # 144 words > 100
    assert CARRY_SAVE not in candidates(long, tree=False)
    assert candidates(long, tree=False) == ["native", "native px7"]  # 7 output pixels: only the whole row divides it
    pinned = PopcountChooser(dataclasses.replace(HOST, carry_save_popcount=True), cache_path=tmp_path / "s.json")
    assert pinned.carry_save(long) is False and pinned.decisions[0].strategy == NATIVE


def test_candidates_and_their_names():
    shape = XnorShape((1, 58, 1, 58), (3, 3, 1, 64), 1)  # 56 output pixels a row
    assert candidates(shape, tree=True) == [
        "carry-save", "native", "native px2", "native px4", "native px7", "native px8", "native px14", "native px28"
    ]
    assert [parse_strategy(s) for s in ("carry-save", "native", "native px7")] == [(True, None), (False, None), (False, 7)]
    with pytest.raises(ValueError, match="unknown xnor strategy"):
        parse_strategy("native pxx")


@pytest.mark.parametrize("strategy", ["carry-save", "native", "native px2", "native px4"])
def test_every_xnor_strategy_this_cpu_runs_is_bit_exact(strategy):
    """Each candidate compiled into a real network layer (a zero-padded stride-2 conv with a partial word)."""
    from labnas.tvm import SchedulePolicy, XnorPolicy

    rng = np.random.default_rng(3)
    conv = BinaryConv2d(96, 32, 3, 2, binarizer="ste_sign", pad_value=0)
    conv.weight.data = torch.from_numpy(rng.standard_normal(conv.weight.shape).astype(np.float32))
    x = rng.standard_normal((1, 96, 16, 16)).astype(np.float32)
    compiled = compile_model(nn.Sequential(conv).eval(), x.shape, HOST, policy=SchedulePolicy(xnor=XnorPolicy(every=strategy)))
    assert [(d.strategy, d.source) for d in compiled.strategies] == [(strategy, "pinned")]
    assert ("labnas_xnor_t" in compiled.executable.as_text()) == ("px" in strategy)
    ref = numpy_xnor_popcount(x, conv.weight.detach().numpy(), 2, 1, 0)
    assert np.array_equal(compiled.run_local(x), ref.astype(np.float32))


@pytest.mark.parametrize("name", ["x86", "x86-avx512"])
def test_x86_presets_compile_everywhere_and_run_where_the_cpu_can(name):
    target = TARGETS[name]
    model = create_model(default_spec("bireal18", "lab", stem="small", num_classes=10, width_mult=0.25)).eval()
    x = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)
    compiled = compile_model(model, x.shape, target)  # compiling never needs the ISA
    assert compiled.strategies
    for d in compiled.strategies:  # the xnor kernels' and the LAB maps' choices all name a real strategy
        assert (parse_strategy if d.shape.startswith("xnor") else parse_lab_strategy)(d.strategy)
    if not target.runs_here:
        missing = sorted(set(target.requires) - cpu_flags())
        pytest.skip(f"{name}: compiled, not executed: this CPU lacks {', '.join(missing)}")
    np.testing.assert_allclose(compiled.run_local(x), compiled.reference(x), rtol=1e-4, atol=1e-4)


def test_the_host_preset_reads_the_cpu():
    flags = cpu_flags()
    assert HOST.float_lanes == (16 if "avx512f" in flags else 8)
    assert HOST.native_popcount == ("avx512_vpopcntdq" in flags or "asimd" in flags)
    assert HOST.carry_save_popcount is None and HOST.runs_here
    assert TARGETS["x86-avx512"].float_lanes == 16 and TARGETS["x86-avx512"].native_popcount


LAB_SHAPE = LabShape(channels=72, height=16, width=16, kernel=3, sources=2, padding=1, pad_bit=0, strict=True, can_fuse=True)


def test_lab_candidates_and_their_names():
    near = ["near 16x1x8", "near 16x1x16", "near 16x2x8", "near 16x2x16"]
    fused = ["fused 4x8x1x2", "fused 16x16x2x1", "fused 1x16x1x2", "fused 2x8x1x2"]
    rows = ["fused-near 4x16x1x2", "fused-near 2x16x1x2"]  # whole rows of a map at most 32 wide, 2 row chunks
    assert lab_candidates(LAB_SHAPE, 8, l2=1 << 20) == [*fused, "two 16x1", "two 16x2", *(t.replace("fused", "fused-near") for t in fused),
                                                        *rows, *near]
    # fused-near only where a (word, row chunk)'s padded input maps fit in the L2 cache: a 56-wide map in 2 chunks
    # (445 KB) is a candidate with 1 MiB, not with 256 KiB
    wide = dataclasses.replace(LAB_SHAPE, height=56, width=56)
    assert not any(t.startswith("fused-near") for t in lab_candidates(wide, 8, l2=256 * 1024))
    assert "fused-near 4x8x1x2" in lab_candidates(wide, 8, l2=1 << 20)
    small = dataclasses.replace(LAB_SHAPE, height=7, width=7)  # 4 channels of a whole 7x7 map, 2 rows in 2 chunks
    assert {"fused-near 7x7x4x1", "fused-near 2x7x1x2"} <= set(lab_candidates(small, 8, l2=1 << 20))
    assert lab_candidates(dataclasses.replace(LAB_SHAPE, can_fuse=False), 8) == ["two 8x4", "two 16x1", "two 16x2", *near]
    assert lab_candidates(dataclasses.replace(LAB_SHAPE, height=28, width=28), 8)[0] == "two 28x1"  # the AVX2 rule
    # near tiles: 8-float chunks of a 28-wide row (the last one partial), whole 7-wide rows and 7x7 maps
    assert [t for t in lab_candidates(dataclasses.replace(LAB_SHAPE, height=28, width=28), 8) if t.startswith("near")] == [
        "near 28x1x8", "near 28x2x8"]
    assert [t for t in lab_candidates(dataclasses.replace(LAB_SHAPE, height=7, width=7), 8) if t.startswith("near")] == [
        "near 7x1x7", "near 7x7x7"]
    # official pairing over an odd channel count: a pair's two input maps are no compact region, no near tile
    assert not any(t.startswith("near") for t in lab_candidates(dataclasses.replace(LAB_SHAPE, channels=71), 8))
    assert parse_lab_strategy("fused 14x14x2x1") == (True, (14, 14, 2, 1))
    assert parse_lab_strategy("two 28x2") == (False, (28, 2)) and parse_lab_strategy("fused") == (True, None)
    assert parse_lab_strategy("near 56x1x8") == (False, (56, 1, 8))
    assert parse_lab_strategy("fused-near 7x7x2x1") == (True, (7, 7, 2, 1, 1))
    for wrong in ("fused 2xa", "near", "near 56x1", "two 28x2x1", "wide 4x4", "fused-near", "fused-near 7x7x2x1x1"):
        with pytest.raises(ValueError, match="unknown LAB strategy"):
            parse_lab_strategy(wrong)


def test_every_lab_strategy_gives_the_same_packed_words_then_the_choice_is_cached(tmp_path):
    """The measurement itself compares every candidate's packed words (two channels' words, a partial
    second word, zero padding) and raises on a difference; the winner is cached for this CPU."""
    cache = tmp_path / "s.json"
    chooser = PopcountChooser(HOST, cache_path=cache)
    fused, tile = chooser.choose_lab(LAB_SHAPE)
    decision = chooser.decisions[-1]
    assert decision.source == "measured" and decision.strategy in lab_candidates(LAB_SHAPE, HOST.vector_lanes)
    assert (fused, tile) == parse_lab_strategy(decision.strategy) and decision.speedup >= 1
    assert chooser.choose_lab(LAB_SHAPE) == (fused, tile) and len(chooser.decisions) == 1  # asked twice, one record
    again = PopcountChooser(HOST, cache_path=cache)
    assert again.choose_lab(LAB_SHAPE) == (fused, tile) and again.decisions[0].source == "cached"
    board = PopcountChooser(TARGETS["arm"], cache_path=cache)
    assert board.choose_lab(LAB_SHAPE) == (True, None) and board.decisions[0].source == "default"  # the AVX2-tuned rule


@pytest.mark.parametrize("strategy", ["fused 16x16x2x1", "fused 2x8x1x2", "two 16x2", "two 16x1", "near 16x2x8", "near 16x1x16",
                                      "fused-near 16x16x2x1", "fused-near 4x16x1x2", "fused-near 2x16x1x2", "fused-near 16x16x4x1"])
def test_a_lab_network_matches_torch_with_every_lab_strategy(strategy):
    from labnas.tvm import LabPolicy, SchedulePolicy

    model = create_model(default_spec("labbnn", "lab", stem="small", num_classes=10, width_mult=0.25)).eval()
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    compiled = compile_model(model, x.shape, HOST, policy=SchedulePolicy(lab=LabPolicy(every=strategy)))
    assert {d.strategy for d in compiled.strategies if d.shape.startswith("lab")} == {strategy}
    text = compiled.executable.as_text()
    assert ("labnas_lab_pack_t" in text) == strategy.startswith("fused") and ("labnas_lab_t" in text) == (not strategy.startswith("fused"))
    np.testing.assert_allclose(compiled.run_local(x), compiled.reference(x), rtol=1e-4, atol=1e-4)


#: Kernels allowed to run without a shape-aware schedule, with the measured reason. Empty: none.
ALLOWED_UNSCHEDULED: dict[tuple[str, str], str] = {}


def _scheduled_functions(family: str, binarizer: str):
    """Every kernel of ``family`` at 224 after labnas' schedules: ``{name: rules}`` (no LLVM build)."""
    import tvm
    from tvm.relax.backend.cpu_generic import pipeline as cpu

    from labnas.tvm.lowering import import_model
    from labnas.tvm.registry import schedule_registered
    from labnas.tvm.schedule_float import schedule_float_ops

    target = TARGETS["x86-avx512"]
    mod, _ = import_model(create_model(default_spec(family, binarizer)).eval(), (1, 3, 224, 224), carry_save=False)
    mod = schedule_registered(mod, target.vector_lanes, target.float_lanes)
    tvm_target = target.tvm_target()
    with tvm_target:
        mod = tvm.transform.Sequential(cpu.library_dispatch_passes(tvm_target) + cpu.legalize_passes(tvm_target))(mod)
        mod = schedule_float_ops(mod, target.float_lanes)
    return {gv.name_hint: str(f.attrs["labnas_rules"]) for gv, f in mod.functions.items() if isinstance(f, tvm.tirx.PrimFunc)}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_no_kernel_of_a_family_runs_tvms_default_schedule(family):
    """Every kernel of every family at 224 (sign and LAB) is hand-scheduled or gets a shape rule; a block
    the rules could not schedule (``default``) or only parallelised (``parallel-only``) fails the test
    unless it is on :data:`ALLOWED_UNSCHEDULED` with a measured reason. Max pooling is labnas' own kernel."""
    for binarizer in ("sign", "lab"):
        functions = _scheduled_functions(family, binarizer)
        assert not any(name.startswith("max_pool2d") for name in functions), "max pooling must use labnas_maxpool"
        bad = {
            name: rules for name, rules in functions.items()
            if any(r in rules for r in ("default", "parallel-only")) and (family, name) not in ALLOWED_UNSCHEDULED
        }
        assert not bad, f"{family} {binarizer}: kernels without a schedule: {bad}"


def test_hand_kernels_are_bound_to_their_schedules_by_registration_not_by_name():
    """The importer tags each hand kernel with its kind and measured tile; the scheduler reads the tag, so a
    function's name (a profile label) plays no part, and a kernel nobody registered is refused."""
    import tvm

    from labnas.tvm.lowering import import_model
    from labnas.tvm.registry import HAND_KERNELS, emit_kernel, registered_kernel, schedule_registered

    model = nn.Sequential(BinaryConv2d(64, 64, 3, binarizer=LAB(64, 3), pad_value=1)).eval()
    mod, _ = import_model(model, (1, 64, 16, 16), carry_save=lambda shape: (False, 4), lab_pack_vector=None)
    tagged = {gv.name_hint: registered_kernel(f) for gv, f in mod.functions.items() if isinstance(f, tvm.tirx.PrimFunc)}
    kinds = {v for v in tagged.values() if v is not None}
    assert kinds == {("labnas_lab", None), ("labnas_pack", None), ("labnas_xnor", (4,))}
    assert tagged["labnas_xnor_t4_tile"] == ("labnas_xnor", (4,))  # the name only labels the kernel
    scheduled = schedule_registered(mod, 8, 8)
    rules = {gv.name_hint: str(f.attrs["labnas_rules"]) for gv, f in scheduled.functions.items()
             if isinstance(f, tvm.tirx.PrimFunc) and registered_kernel(f)}
    assert set(rules.values()) == {"hand"} and len(rules) == 3
    assert set(HAND_KERNELS) >= {"labnas_pack", "labnas_xnor", "labnas_lab", "labnas_lab_pack", "labnas_maxpool"}
    with pytest.raises(KeyError, match="no hand kernel 'labnas_conv'"):
        emit_kernel(None, "labnas_conv", None)


def test_a_lab_policy_pins_or_restricts_strategies_through_the_compile_argument(tmp_path):
    from labnas.tvm import LabPolicy, SchedulePolicy
    from labnas.tvm.strategy import LabShape

    for shape in (LAB_SHAPE, dataclasses.replace(LAB_SHAPE, strict=False, can_fuse=False, sources=1)):
        assert LabShape.from_key(shape.key) == shape  # the key a Decision records names its shape
    with pytest.raises(ValueError, match="not a LAB shape key"):
        LabShape.from_key("xnor 3x3")
    chooser = PopcountChooser(HOST, cache_path=tmp_path / "s.json", policy=SchedulePolicy(lab=LabPolicy(pins={LAB_SHAPE.key: "near 16x2x8"})))
    assert chooser.choose_lab(LAB_SHAPE) == parse_lab_strategy("near 16x2x8")
    assert (chooser.decisions[0].strategy, chooser.decisions[0].source) == ("near 16x2x8", "pinned")
    assert not (tmp_path / "s.json").exists()  # a pin measures nothing and caches nothing
    whole_map = LabPolicy(kinds=("fused", "two"))
    kept = [c for c in lab_candidates(LAB_SHAPE, 8) if whole_map.allows(c)]
    assert kept == [c for c in lab_candidates(LAB_SHAPE, 8) if c.split()[0] in ("fused", "two")] and kept
    assert whole_map.cache_key(LAB_SHAPE.key) == f"{LAB_SHAPE.key} | kinds fused/two" and LabPolicy().cache_key(LAB_SHAPE.key) == LAB_SHAPE.key
