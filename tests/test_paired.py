"""Drift-corrected timing: exact on a synthetic machine whose speed changes by known factors; disturbed
measurements are re-timed, then refused; calibrations are cached per machine, target and threads."""

from __future__ import annotations

import json

import numpy as np
import pytest

from labnas.timing.calibration import board_calibration_key, calibrate, calibration_key, load_or_calibrate, lower_cached
from labnas.timing.paired import DISTURBED_FACTOR, TimingDisturbed, disturbance, time_paired


class SyntheticMachine:
    """A machine whose speed factor follows a schedule, one value per timing call: a workload of ``base`` ms
    takes ``base * factor`` ms."""

    def __init__(self, factors):
        self.factors, self.calls = list(factors), 0

    def timer(self, base_ms: float):
        def call() -> float:
            factor = self.factors[min(self.calls, len(self.factors) - 1)]
            self.calls += 1
            return base_ms * factor

        return call


def test_the_correction_is_exact_when_the_machine_slows_uniformly():
    # candidate and reference of a round see the same factor; factors move 1.0 .. 1.4 between rounds
    factors = [f for f in (1.0, 1.0, 1.3, 1.3, 1.1, 1.1, 1.4, 1.4, 1.2, 1.2)]
    machine = SyntheticMachine(factors)
    result = time_paired(machine.timer(6.0), machine.timer(0.5), calibrated_ms=0.5, rounds=5, sleep=lambda s: None)
    assert result.corrected_ms == pytest.approx(6.0, rel=1e-12)  # 6 / 0.5 x 0.5
    assert result.ratio == pytest.approx(12.0, rel=1e-12)
    assert result.raw_ms == pytest.approx(6.0 * 1.2)  # the raw median carries the drift
    assert result.attempts == 1 and len(result.candidate_runs_ms) == 5


def test_the_correction_scales_by_the_calibration_not_by_this_measurement():
    machine = SyntheticMachine([1.25] * 10)  # uniformly 25 % slower than when calibrated
    result = time_paired(machine.timer(4.0), machine.timer(0.8), calibrated_ms=0.8, rounds=5, sleep=lambda s: None)
    assert result.raw_ms == pytest.approx(5.0) and result.reference_ms == pytest.approx(1.0)
    assert result.corrected_ms == pytest.approx(4.0)


def test_a_disturbed_measurement_is_retimed_after_a_back_off():
    # first attempt: the reference runs 3x its calibration (another process took the cores); then quiet
    machine = SyntheticMachine([3.0] * 10 + [1.0] * 10)
    slept = []
    result = time_paired(machine.timer(2.0), machine.timer(1.0), calibrated_ms=1.0, rounds=5, sleep=slept.append)
    assert result.attempts == 2 and slept == [1.0]
    assert result.corrected_ms == pytest.approx(2.0) and result.raw_ms == pytest.approx(2.0)


def test_a_machine_that_stays_busy_is_refused_with_the_numbers():
    machine = SyntheticMachine([5.0])
    slept = []
    with pytest.raises(TimingDisturbed, match=r"ran at 5.000 ms, 5.0x its calibrated 1.000 ms in all 3 attempts"):
        time_paired(machine.timer(2.0), machine.timer(1.0), calibrated_ms=1.0, rounds=4, sleep=slept.append)
    assert slept == [1.0, 4.0]
    # each attempt stopped after 2 of its 4 rounds: the reference was already 5x its calibration (> 3x)
    assert machine.calls == 3 * 2 * 2


def test_cpus_placed_apart_allow_a_slower_reference_and_are_recorded():
    """On a VM whose host moves the vCPUs apart, the reference runs ~1.6x its (near-placement) calibration with
    nothing else running: with the probe saying so, that is timed and recorded, not refused; the same slowdown
    with the CPUs where they usually are is still a disturbance."""
    from labnas.timing.core_latency import Placement

    apart, near = Placement(390.0, 98.0), Placement(231.0, 98.0)
    assert apart.apart and not near.apart
    machine = SyntheticMachine([1.6])
    result = time_paired(machine.timer(2.0), machine.timer(1.0), calibrated_ms=1.0, rounds=5, sleep=lambda s: None,
                         placement_probe=lambda: apart)
    assert result.attempts == 1 and result.corrected_ms == pytest.approx(2.0) and result.raw_ms == pytest.approx(3.2)
    assert result.core_round_trip_ns == 390.0 and result.cpus_apart is True
    with pytest.raises(TimingDisturbed, match="1.6x its calibrated"):
        time_paired(machine.timer(2.0), machine.timer(1.0), calibrated_ms=1.0, rounds=5, sleep=lambda s: None,
                    placement_probe=lambda: near)
    with pytest.raises(TimingDisturbed, match="3.5x its calibrated 1.000 ms with the CPUs placed apart"):
        time_paired(SyntheticMachine([3.5]).timer(2.0), SyntheticMachine([3.5]).timer(1.0), calibrated_ms=1.0, rounds=5,
                    sleep=lambda s: None, placement_probe=lambda: apart)
    quiet = time_paired(machine.timer(2.0), machine.timer(1.0), calibrated_ms=1.6, rounds=5, sleep=lambda s: None)
    assert quiet.core_round_trip_ns is None and quiet.cpus_apart is None  # no probe: nothing claimed


def test_placement_now_remembers_the_lowest_round_trip_of_this_machine(tmp_path, monkeypatch):
    from labnas.timing.core_latency import placement_now

    monkeypatch.setenv("LABNAS_CACHE", str(tmp_path))
    seen = [[400.0], [100.0], [380.0], [None]]
    probe = lambda: seen.pop(0)[0]  # noqa: E731
    first = placement_now(probe)
    assert (first.round_trip_ns, first.lowest_ns, first.apart) == (400.0, 400.0, False)  # nothing better known yet
    assert not placement_now(probe).apart
    again = placement_now(probe)
    assert (again.lowest_ns, again.apart) == (100.0, True)
    assert json.loads((tmp_path / "core_round_trip.json").read_text()) and placement_now(probe) is None


class FakeLoad:
    """CPU snapshots of a machine on a fake clock: one second passes between two calls, during which other
    processes keep ``others[i]`` cores busy (the last value holds on), ``steal`` of it stolen by the hypervisor."""

    def __init__(self, others, steal: float = 0.0):
        self.others, self.intervals, self.machine, self.wall = list(others), 0, 0.0, 0.0
        self.steal, self.stolen = steal, 0.0

    def __call__(self):
        from labnas.timing.load import CpuSnapshot

        snapshot = CpuSnapshot(self.machine, 0.0, self.wall, self.stolen)
        self.machine += self.others[min(self.intervals, len(self.others) - 1)]
        self.stolen += self.steal
        self.wall += 1.0
        self.intervals += 1
        return snapshot


def test_a_slow_spell_of_the_host_is_timed_and_recorded_but_contention_is_refused():
    """On a VM the host can run 1.5-1.8x slower for minutes with nothing else running: candidate and reference slow
    down alike, which the paired correction repairs. Other load in sight keeps the limit."""
    from labnas.timing.paired import SLOW_SPELL_LIMIT, slow_spell

    slow = SyntheticMachine([1.8])  # every call 1.8x slower than calibrated
    result = time_paired(slow.timer(2.0), slow.timer(1.0), 1.0, rounds=5, sleep=lambda s: None, threads=1,
                         cpu_probe=FakeLoad([0.05]), cores=2, probe_window_s=0)
    assert result.host_slowdown == pytest.approx(1.8) and result.corrected_ms == pytest.approx(2.0) and result.attempts == 1
    # the time stolen by the hypervisor is the host's slowness, not contention inside the machine
    stolen = time_paired(slow.timer(2.0), slow.timer(1.0), 1.0, rounds=5, sleep=lambda s: None, threads=1,
                         cpu_probe=FakeLoad([0.6], steal=0.5), cores=2, probe_window_s=0)
    assert stolen.host_slowdown == pytest.approx(1.8)
    # another process running: a slowdown past the limit is contention, refused as before
    with pytest.raises(TimingDisturbed, match="1.8x its calibrated"):
        time_paired(slow.timer(2.0), slow.timer(1.0), 1.0, rounds=5, sleep=lambda s: None, threads=1,
                    cpu_probe=FakeLoad([1.0]), cores=2, probe_window_s=0)
    # no load reading (a board): a slow spell cannot be told from contention
    with pytest.raises(TimingDisturbed):
        time_paired(slow.timer(2.0), slow.timer(1.0), 1.0, rounds=5, sleep=lambda s: None)
    assert slow_spell([2.6] * 5, 1.0, 0.0) is None and SLOW_SPELL_LIMIT == 2.5  # beyond the limit: refused
    assert slow_spell([1.0, 1.0, 1.0, 3.0, 0.5], 0.5, 0.0) is None  # unsteady rounds are no slow spell
    fine = time_paired(SyntheticMachine([1.0]).timer(2.0), SyntheticMachine([1.0]).timer(1.0), 1.0, rounds=3, threads=1,
                       cpu_probe=FakeLoad([0.0]), cores=2, probe_window_s=0)
    assert fine.host_slowdown is None  # a normal timing is not a slow spell


def test_a_calibration_on_a_busy_machine_is_retried_then_refused_and_never_cached(tmp_path, monkeypatch):
    from labnas.timing.calibration import CALIBRATION_BACKOFF_S

    monkeypatch.setenv("LABNAS_CACHE", str(tmp_path))
    key = calibration_key("host", 2)
    slept = []
    with pytest.raises(TimingDisturbed, match=r"other processes kept 1.00 of 2 cores busy .* nothing was cached.*threads 1"):
        load_or_calibrate(lambda: 8.02, key, threads=2, cpu_probe=FakeLoad([1.0]), cores=2, sleep=slept.append)
    assert slept == list(CALIBRATION_BACKOFF_S) and not (tmp_path / "reference_calibration.json").exists()
    # the competitor leaves during the pause: the second attempt is kept
    assert load_or_calibrate(lambda: 4.2, key, threads=2, cpu_probe=FakeLoad([1.0, 1.0, 0.0]), cores=2,
                             sleep=lambda s: None) == (pytest.approx(4.2), "measured")
    # one thread on two cores: one other busy core leaves this one free
    one = calibration_key("host", 1)
    assert load_or_calibrate(lambda: 4.2, one, threads=1, cpu_probe=FakeLoad([1.0]), cores=2)[1] == "measured"
    # series that range widely saw the machine change speed
    import itertools

    speeds = itertools.cycle([1.0] * 5 + [1.5] * 20)
    with pytest.raises(TimingDisturbed, match="series ranged from 1.000 to 1.500 ms"):
        load_or_calibrate(lambda: next(speeds), calibration_key("host", 3), threads=3, cpu_probe=FakeLoad([0.0]), cores=4,
                          sleep=lambda s: None, recalibrate=True)


def test_a_timing_that_other_processes_oversubscribed_is_retimed_then_refused():
    """The reference can stall at the same barriers as the candidate and hide oversubscription; the CPU time other
    processes used during the rounds does not."""
    steady = SyntheticMachine([1.0])
    # two TVM threads on two cores, another process spinning one core throughout: refused with the reason
    with pytest.raises(TimingDisturbed, match=r"other processes kept 1.00 of 2 cores busy while 2 TVM thread\(s\) timed"):
        time_paired(steady.timer(2.0), steady.timer(1.0), 1.0, rounds=3, sleep=lambda s: None, threads=2,
                    cpu_probe=FakeLoad([1.0]), cores=2, probe_window_s=0)
    assert steady.calls == 0  # seen before any timing: nothing was timed under the competitor
    # the competitor leaves after the first attempt: re-timed and accepted
    slept = []
    result = time_paired(steady.timer(2.0), steady.timer(1.0), 1.0, rounds=3, sleep=slept.append, threads=2,
                         cpu_probe=FakeLoad([1.0, 0.05]), cores=2, probe_window_s=0)
    assert result.attempts == 2 and slept == [1.0] and result.corrected_ms == pytest.approx(2.0)
    # one TVM thread leaves a core free: the same competitor does not oversubscribe it
    result = time_paired(steady.timer(2.0), steady.timer(1.0), 1.0, rounds=3, sleep=lambda s: None, threads=1,
                         cpu_probe=FakeLoad([1.0]), cores=2, probe_window_s=0)
    assert result.attempts == 1
    # a competitor that arrives once the timing has started is seen over the rounds' window
    arrives = SyntheticMachine([1.0])
    with pytest.raises(TimingDisturbed, match="oversubscribed"):
        time_paired(arrives.timer(2.0), arrives.timer(1.0), 1.0, rounds=3, sleep=lambda s: None, threads=2,
                    cpu_probe=FakeLoad([0.0, 0.0, 1.0, 0.0] * 3), cores=2, probe_window_s=0)
    assert arrives.calls == 3 * 6  # each of the 3 attempts timed its rounds (the 3rd interval of its 4 probes)


def test_the_load_probe_reads_this_machine():
    from labnas.timing.load import cpu_snapshot, others_busy_cores, oversubscription

    before = cpu_snapshot()
    assert before is not None and before.machine_busy_s >= before.own_busy_s > 0
    assert others_busy_cores(before, before) is None  # too short a window to judge
    assert oversubscription(None, 2, 2) is None and oversubscription(0.3, 2, 2) is None
    assert "oversubscribed" in oversubscription(0.5, 2, 2) and oversubscription(1.2, 1, 2) is None
    assert oversubscription(1.0, 1, 1) is None  # one thread sharing its core: slowed uniformly, corrected


def test_disturbance_reasons():
    assert disturbance([1.0, 1.02, 0.98, 1.01, 1.0], 1.0) is None
    assert "1.6x its calibrated" in disturbance([1.6] * 5, 1.0)
    assert DISTURBED_FACTOR == 1.5 and disturbance([1.45] * 5, 1.0) is None
    assert "spread" in disturbance([1.0, 1.0, 1.0, 1.4, 0.5], 1.0)


def test_calibration_takes_the_least_disturbed_median_and_is_cached_per_key(tmp_path, monkeypatch):
    monkeypatch.setenv("LABNAS_CACHE", str(tmp_path))
    machine = SyntheticMachine([2.0] * 5 + [1.0] * 5 + [1.5] * 15)
    assert calibrate(machine.timer(0.3), series=5, rounds=5) == pytest.approx(0.3)
    calls = []

    def timed() -> float:
        calls.append(1)
        return 0.42

    two, one = calibration_key("host", 2), calibration_key("host", 1)
    value, how = load_or_calibrate(timed, two)
    assert (value, how) == (pytest.approx(0.42), "measured") and len(calls) == 25
    assert load_or_calibrate(timed, two) == (pytest.approx(0.42), "cached") and len(calls) == 25
    assert load_or_calibrate(timed, one)[1] == "measured"  # another thread count is another calibration
    assert load_or_calibrate(timed, two, recalibrate=True)[1] == "measured"
    board = board_calibration_key("rpc 10.0.0.7:9090", "arm", None)
    assert load_or_calibrate(timed, board)[1] == "measured"  # a board is calibrated apart from this machine
    table = json.loads((tmp_path / "reference_calibration.json").read_text())
    assert set(table) == {two, one, board}
    assert board.startswith("board rpc 10.0.0.7:9090 | arm | board threads")


def test_a_calibration_taken_on_a_slower_machine_is_lowered_in_the_cache_not_in_the_study(tmp_path, monkeypatch):
    """A neighbour outside a VM can slow a core for minutes: a calibration taken then is too slow. A clearly faster
    reference in later paired rounds lowers the cached value (the next study's scale); noise does not; a study's
    own summary says its scale reads high."""
    from labnas.results import SearchSummary

    monkeypatch.setenv("LABNAS_CACHE", str(tmp_path))
    key = calibration_key("host", 2)
    assert load_or_calibrate(lambda: 2.08, key) == (pytest.approx(2.08), "measured")  # calibrated in an episode
    assert not lower_cached(key, 2.0)  # within 5 %: noise
    assert lower_cached(key, 1.27)
    assert load_or_calibrate(lambda: 9.9, key) == (pytest.approx(1.27), "cached")
    assert not lower_cached(key, 1.5)  # never raised
    assert not lower_cached(calibration_key("host", 1), 0.5)  # nothing cached: calibrating is not its job
    assert json.loads((tmp_path / "reference_calibration.json").read_text()) == {key: 1.27}

    def summary(reference_median: float) -> SearchSummary:
        return SearchSummary(trials=4, complete=4, feasible=4, failed=0, pruned=0, failures=(), latency_range_ms=(3.0, 4.0),
                             latency_predicted=False, reference_ms=(1.2, 1.4), reference_median_ms=reference_median,
                             reference_calibrated_ms=2.08)

    note = summary(1.27).calibration_note()
    assert "0.61x its calibrated 2.080 ms" in note and "about 1.64x high" in note and "--recalibrate" in note
    assert summary(1.9).calibration_note() is None  # ordinary drift
    assert SearchSummary(trials=0, complete=0, feasible=0, failed=0, pruned=0, failures=(), latency_range_ms=None,
                         latency_predicted=False, reference_ms=None).calibration_note() is None


def test_a_search_keeps_the_reference_workload_its_study_names():
    """New studies time against the space's all-sign network; a stored calibration keeps its own workload (one
    stored without a name is the conv pair), and one naming another space's network is refused."""
    from labnas.search import load_space
    from labnas.search.objective import reference_workload
    from labnas.timing import CONV_PAIR

    space = load_space("bireal18_placement")
    fresh = reference_workload(space, None)
    assert fresh.name == "baseline bireal18 all-sign 3x224x224 width 1 1000 classes imagenet stem"
    assert fresh.shape == (1, 3, 224, 224)
    model = fresh.build()
    from labnas.nn.binarizers import LAB

    assert not any(isinstance(m, LAB) for m in model.modules())
    assert reference_workload(space, {"key": "k", "ms": 1.0}) is CONV_PAIR
    assert reference_workload(space, {"key": "k", "ms": 1.0, "workload": fresh.name}).name == fresh.name
    other = reference_workload(load_space("labbnn"), None)
    with pytest.raises(ValueError, match="not this space's"):
        reference_workload(space, {"key": "k", "ms": 1.0, "workload": other.name})


def test_the_core_round_trip_probe_measures_two_cpus_or_says_it_cannot(tmp_path, monkeypatch):
    """The probe compiles and runs: a cache line's round trip between two CPUs is tens to thousands of ns on any
    real machine; one CPU is refused (two spinning threads would only take turns); no compiler -> None."""
    import os
    import shutil

    from labnas.timing import core_latency

    monkeypatch.setenv("LABNAS_CACHE", str(tmp_path))
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) >= 2 and (shutil.which("cc") or shutil.which("gcc")):  # .ci/run installs gcc
        ns = core_latency.core_round_trip_ns(rounds=20_000)
        assert ns is not None and 10 < ns < 20_000
        assert any(p.name.startswith("core_latency_") and not p.suffix for p in tmp_path.iterdir())  # built once, cached
    with pytest.raises(ValueError, match="two different CPUs"):
        core_latency.core_round_trip_ns((cpus[0], cpus[0]))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setenv("LABNAS_CACHE", str(tmp_path / "fresh"))
    assert core_latency.core_round_trip_ns((0, 1)) is None


def test_a_search_timing_records_the_cpu_placement_it_was_taken_in():
    """``time_compiled`` probes the CPUs' placement inside the timing lock on several threads (a trial stores it as
    ``core_round_trip_ns``) and skips the probe on one thread, where the placement cannot matter."""
    import os
    import shutil

    from torch import nn

    from labnas.search.objective import SearchConfig, time_compiled
    from labnas.tvm import TARGETS, compile_model

    compiled = compile_model(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1)).eval(), (1, 3, 16, 16), TARGETS["host"], threads=1)
    one = time_compiled(compiled, SearchConfig(budget_ms=10, timing_number=1, timing_repeat=3, threads=1))
    assert one.core_round_trip_ns is None and one.median_ms > 0
    if len(os.sched_getaffinity(0)) >= 2 and (shutil.which("cc") or shutil.which("gcc")):
        two = time_compiled(compiled, SearchConfig(budget_ms=10, timing_number=1, timing_repeat=3, threads=2))
        assert two.core_round_trip_ns is not None and 10 < two.core_round_trip_ns < 20_000


def test_expected_verdict_flips_follow_the_distance_to_the_budget():
    """bench_verdicts' yardstick: a candidate at the budget flips half the time; far ones never; one sigma below
    the budget: p = 0.1587 over, 2 p (1 - p) = 0.267."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_verdicts.py"
    spec = importlib.util.spec_from_file_location("bench_verdicts", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sigma = 0.02
    assert module.expected_flips(np.array([1.0]), 1.0, sigma) == pytest.approx(0.5)
    assert module.expected_flips(np.array([0.5, 2.0]), 1.0, sigma) == pytest.approx(0.0, abs=1e-9)
    assert module.expected_flips(np.array([np.exp(-sigma)]), 1.0, sigma) == pytest.approx(2 * 0.158655 * 0.841345, abs=1e-4)
    assert module.expected_flips(np.array([1.0]), 1.0, 0.0) == 0.0


def test_a_fresh_calibration_also_notes_the_cpus_placement(tmp_path, monkeypatch):
    """The lowest round trip seen is never newer than the calibration it is compared with (see _note_placement)."""
    import os
    import shutil

    from labnas.timing.calibration import load_or_calibrate

    monkeypatch.setenv("LABNAS_CACHE", str(tmp_path))
    ms, how = load_or_calibrate(lambda: 1.0, "k")
    assert (ms, how) == (1.0, "measured")
    if len(os.sched_getaffinity(0)) >= 2 and (shutil.which("cc") or shutil.which("gcc")):
        (lowest,) = json.loads((tmp_path / "core_round_trip.json").read_text()).values()
        assert 10 < lowest < 20_000


def test_a_board_calibration_leaves_the_local_cpus_placement_alone(tmp_path, monkeypatch):
    """A calibration over RPC times the board's CPUs: it must not probe (or record) this machine's placement."""
    from labnas.timing import calibration

    calls = []
    monkeypatch.setenv("LABNAS_CACHE", str(tmp_path))
    monkeypatch.setattr(calibration, "_note_placement", lambda: calls.append("probe"))
    assert calibration.load_or_calibrate(lambda: 2.0, "board k", local=False) == (2.0, "measured")
    assert calibration.lower_cached("board k", 1.0, local=False) is True
    assert calls == []
    assert calibration.load_or_calibrate(lambda: 3.0, "local k") == (3.0, "measured")
    assert calibration.lower_cached("local k", 1.0) is True
    assert calls == ["probe", "probe"]


def test_a_refused_pass_costs_that_pass_not_the_run(monkeypatch):
    """measure_in_passes keeps what it timed when one timing is refused as disturbed; a model never timed is tried
    again after the back-off, and only then is the refusal raised."""
    import importlib

    measure_mod = importlib.import_module("labnas.timing.measure")  # the module (labnas.timing.measure is also a function)
    calls = []

    def fake_measure(model, seed=0, **_):
        calls.append((model, seed))
        if model == "flaky" and seed == 0 or model == "dead":
            raise TimingDisturbed("the reference workload ran at 2 ms, 2x its calibrated 1 ms")
        return measure_mod.LatencyResult(1.0 + seed, 1.0, 1.0, [1.0], 1, "host", {})

    monkeypatch.setattr(measure_mod, "measure", fake_measure)
    monkeypatch.setattr(measure_mod, "DISTURBED_BACKOFF_S", (0.0, 0.0))
    results = measure_mod.measure_in_passes(["ok", "flaky"], 2)
    assert [len(r) for r in results] == [2, 1] and results[1][0].median_ms == 2.0
    with pytest.raises(TimingDisturbed, match="2x its calibrated"):
        measure_mod.measure_in_passes(["ok", "dead"], 2)
    assert calls.count(("dead", 2)) == 2  # both back-off retries were tried


def test_relative_speeds_cancel_the_drift_between_rounds_and_narrow_with_more_rounds():
    """Three networks 0 %, 1 % and 3 % apart, timed in rounds whose host speed drifts by up to 40 % and with 2 %
    noise per timing: the ratios to each round's median recover the 1 % steps, and the bootstrap band of the
    median shrinks with more rounds (the single rounds' spread does not)."""
    from labnas.timing import relative_speeds

    rng = np.random.default_rng(1)
    true = {"sign": 1.00, "one lab": 1.01, "three lab": 1.03}

    def rounds(n):
        drift = 1 + 0.4 * rng.random(n)
        return {k: list(4.5 * v * drift * (1 + 0.02 * rng.standard_normal(n))) for k, v in true.items()}

    few, many = relative_speeds(rounds(8)), relative_speeds(rounds(120))
    assert many["one lab"][0] == pytest.approx(1.0, abs=0.004)  # the middle one is the round median's reference
    assert many["three lab"][0] / many["sign"][0] == pytest.approx(1.03, abs=0.006)
    for name, (ratio, low, high) in many.items():
        assert low <= ratio <= high
        assert high - low < few[name][2] - few[name][1]
    assert many["sign"][2] < many["three lab"][1]  # 3 % apart: ordered beyond the band
    with pytest.raises(ValueError, match="two or more contenders"):
        relative_speeds({"alone": [1.0, 1.1]})
