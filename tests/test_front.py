"""The front search: every candidate predicted from the block table, the exact predicted front, only it measured."""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from labnas.accuracy import build_estimator
from labnas.latency import block_units
from labnas.models import create_model
from labnas.search import SearchConfig, load_space, run_search
from labnas.search.front import hypervolume, pareto_mask, predict_space
from labnas.search.study import front_possible, front_table

TINY = Path(__file__).parent / "data" / "tiny_space.toml"


def _published_tiny(tmp_path: Path, layers: str = "[0, 15]") -> Path:
    """The tiny test space with sign / LAB 3x3 only and the published estimator (a closed form)."""
    text = TINY.read_text().replace("lab_kernel = [3, 5]", "lab_kernel = [3]").replace('name = "tiny"', 'name = "tinypub"')
    text = text.replace("layers = [0, 15]", f"layers = {layers}") + 'estimator = "published"\n'
    path = tmp_path / "tinypub.toml"
    path.write_text(text)
    return path


class HashTable:
    """A stand-in block table: each block's entry a fixed pseudo-random number of its key (no timing)."""

    meta = {"scale": 1.1, "overhead_ms": 0.05}

    def block_sum(self, units) -> float:
        return sum(int(hashlib.sha1(u.key.encode()).hexdigest()[:6], 16) / 16**6 for u in units)


def test_exhaustive_prediction_equals_brute_force(tmp_path):
    space = load_space(str(_published_tiny(tmp_path, "[0, 5, 15]")))
    estimator = build_estimator(space.family, space.proxy, choices=space.layer_choices())
    table = HashTable()
    predicted = predict_space(space, table, estimator)
    assert len(predicted.accuracy) == space.size() == 8
    seen = set()
    for n in range(len(predicted.accuracy)):
        layers = predicted.layers(n)
        seen.add(tuple(l.binarizer for l in layers))
        units = block_units(create_model(space.deploy_spec(layers)).eval(), (1, *space.deploy_input))
        assert predicted.latency_ms[n] == pytest.approx(1.1 * table.block_sum(units) + 0.05)
        assert predicted.accuracy[n] == pytest.approx(estimator.estimate(layers).accuracy)
    assert len(seen) == 8  # every placement once
    front = predicted.front()
    brute = [n for n in range(8) if not any(
        predicted.accuracy[m] >= predicted.accuracy[n] and predicted.latency_ms[m] <= predicted.latency_ms[n]
        and (predicted.accuracy[m] > predicted.accuracy[n] or predicted.latency_ms[m] < predicted.latency_ms[n]) for m in range(8))]
    assert sorted(front.tolist()) == sorted(brute)
    assert list(predicted.latency_ms[front]) == sorted(predicted.latency_ms[front])


def test_pareto_mask_and_hypervolume_by_hand():
    acc = np.array([0.5, 0.6, 0.55, 0.7, 0.6])
    lat = np.array([1.0, 2.0, 2.5, 3.0, 2.0])
    assert pareto_mask(acc, lat).tolist() == [True, True, False, True, False]  # the second (0.6, 2.0) twin is dropped
    # reference (0.4, 4.0): strips (4-1)x(0.5-0.4) + (4-2)x(0.6-0.5) + (4-3)x(0.7-0.6)
    assert hypervolume(acc, lat, 0.4, 4.0) == pytest.approx(0.3 + 0.2 + 0.1)
    for a, l in itertools.product(acc, lat):  # a point never lowers the hypervolume
        assert hypervolume(np.append(acc, a), np.append(lat, l), 0.4, 4.0) >= 0.6 - 1e-12


def test_front_strategy_applies_only_where_it_can(tmp_path):
    pub = load_space(str(_published_tiny(tmp_path)))
    assert front_possible(pub, "measure", "published") == ""
    assert "closed form" in front_possible(pub, "measure", "trained")
    assert "latency simulate" in front_possible(pub, "simulate", "published")
    assert "more than" in front_possible(load_space("bireal18"), "measure", "published")


@pytest.mark.slow
def test_the_table_is_built_once_then_reused_and_only_the_front_is_measured(tmp_path, monkeypatch):
    monkeypatch.setenv("LABNAS_CACHE", str(tmp_path / "cache"))
    space = load_space(str(_published_tiny(tmp_path)))
    config = SearchConfig(budget_ms=1000.0, objectives="accuracy,latency", threads=1, sampler="front", timing_number=1, timing_repeat=3)
    table, path = front_table(space, config, progress=False)
    assert path.is_file() and path.is_relative_to(tmp_path / "cache")
    built = path.stat().st_mtime_ns
    again, _ = front_table(space, config, progress=False)
    assert path.stat().st_mtime_ns == built and again.entries == table.entries  # loaded, not rebuilt
    run = run_search(space, config, "fr", tmp_path / "res", n_trials=14, progress=False)
    assert path.stat().st_mtime_ns == built
    settings = json.loads((run.path / "study.json").read_text())
    plan = settings["front_search"]
    trials = pd.read_csv(run.path / "trials.csv")
    assert plan["space_size"] == 4 and 1 <= plan["predicted_front_beyond_noise"] <= plan["predicted_front"] <= 4
    assert len(trials) == plan["predicted_front"]  # the predicted front, measured; nothing else
    assert trials.latency_predicted_ms.notna().all()
    assert plan["measured_front"] >= 1 and plan["measured_hypervolume"] >= 0


def test_thinning_a_front_keeps_the_fewest_members_that_cover_it_within_noise():
    from labnas.search.front import thin_within_noise

    acc = np.array([0.50, 0.51, 0.52, 0.60, 0.61])
    lat = np.array([5.0, 5.05, 5.1, 6.0, 6.1])
    # 0.61 @ 6.1 covers 0.60 @ 6.0 (1.7 % faster); 0.52 @ 5.1 covers the two below it (within 2 %)
    keep = thin_within_noise(acc, lat, 0.03)
    assert keep.tolist() == [False, False, True, False, True]
    for n in np.flatnonzero(~keep):  # every dropped member has a kept one at least as accurate, at most 3 % slower
        assert any(acc[k] >= acc[n] and lat[k] <= 1.03 * lat[n] for k in np.flatnonzero(keep))
    assert thin_within_noise(acc, lat, 0.0).all()  # no noise: the whole front


def test_a_spread_order_covers_the_front_evenly_at_every_prefix():
    from labnas.search.study import spread_order

    members = np.arange(100, 141)  # 41 members
    order = spread_order(members)
    assert sorted(order.tolist()) == members.tolist()  # each once
    assert order[:3].tolist() == [100, 140, 120]  # both ends, then the middle
    gaps = np.diff(np.sort(order[:9]))
    assert gaps.max() <= 2 * gaps.min() + 1  # the first 9 are spread, not bunched at one end
    assert spread_order(np.array([7])).tolist() == [7] and spread_order(np.array([], int)).tolist() == []


def test_a_measurement_limit_prefers_the_front_beyond_noise_then_spreads_over_the_rest():
    from labnas.search.study import _spread

    full = np.array([10, 11, 12, 13, 14, 15, 16])
    preferred = np.array([11, 14, 16])
    assert _spread(preferred, full, 2).tolist() == [11, 16]  # fewer: spread over the preferred, ends kept
    assert _spread(preferred, full, 3).tolist() == [11, 14, 16]
    five = _spread(preferred, full, 5)
    assert len(five) == 5 and set(preferred) <= set(five.tolist()) and five.tolist() == sorted(five.tolist(), key=full.tolist().index)
    assert _spread(preferred, full, 99).tolist() == full.tolist()


def test_a_front_within_noise_keeps_ties_and_drops_what_the_timing_can_tell():
    from labnas.search.front import pareto_mask_within_noise

    acc = np.array([0.50, 0.55, 0.60, 0.58])
    lat = np.array([5.0, 5.1, 5.05, 6.0])
    # 0.50 @ 5.0 and 0.55 @ 5.1 are within 3 % of 0.60 @ 5.05: the most accurate wins them; 0.58 @ 6.0 is slower
    # beyond noise and less accurate: dropped too
    assert pareto_mask_within_noise(acc, lat).tolist() == [False, False, True, False]
    # a point faster beyond noise stays, though less accurate
    assert pareto_mask_within_noise(np.array([0.5, 0.6]), np.array([4.0, 5.0])).tolist() == [True, True]
    # wide timing ranges make two points a tie in latency: the more accurate wins
    assert pareto_mask_within_noise(np.array([0.5, 0.6]), np.array([4.0, 5.0]), np.array([3.5, 3.9]),
                                    np.array([4.5, 5.5])).tolist() == [False, True]


def test_random_distinct_candidates_stop_at_the_space_size():
    import random

    space = load_space(str(TINY))  # 3 options per searched layer: 9 architectures
    drawn = list(space.random_distinct(random.Random(0), 50))
    assert len(drawn) == space.size() == 9
    assert len({repr([(l.binarizer, l.lab_kernel, l.kernel) for l in layers]) for layers in drawn}) == 9
