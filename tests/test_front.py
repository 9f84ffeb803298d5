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
    shape = (1, *space.deploy_input)

    def block_costs(layers) -> np.ndarray:
        return np.array([table.block_sum([u]) for u in block_units(create_model(space.deploy_spec(layers)).eval(), shape)])

    def never_cheaper_for_lab(layers) -> float:
        """Brute force: each block at the dearest of the placement's variants with some of its LAB layers set to sign
        (a block cannot get faster by LAB; the hash table's entries are random, so it often says otherwise)."""
        labs = [i for i in space.layers if layers[i].binarizer == "lab"]
        sign = {i: next(o for o in space.layer_options(i) if o.binarizer == "sign") for i in labs}
        dearest = block_costs(layers)
        for r in range(1, len(labs) + 1):
            for subset in itertools.combinations(labs, r):
                dearest = np.maximum(dearest, block_costs([sign[i] if i in subset else l for i, l in enumerate(layers)]))
        return 1.1 * float(dearest.sum()) + 0.05

    seen, raw_cheaper = set(), 0
    for n in range(len(predicted.accuracy)):
        layers = predicted.layers(n)
        seen.add(tuple(l.binarizer for l in layers))
        assert predicted.latency_ms[n] == pytest.approx(never_cheaper_for_lab(layers))
        raw_cheaper += 1.1 * block_costs(layers).sum() + 0.05 < predicted.latency_ms[n] - 1e-9
        assert predicted.accuracy[n] == pytest.approx(estimator.estimate(layers).accuracy)
    assert len(seen) == 8  # every placement once
    assert raw_cheaper > 0  # the raw table made some LAB placement cheaper: the rule was exercised
    all_sign = next(n for n in range(8) if all(l.binarizer == "sign" for l in predicted.layers(n)))
    assert predicted.latency_ms[all_sign] == predicted.latency_ms.min()
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
    # all-sign is the fastest prediction (LAB is never cheaper) and not the most accurate: two or more measured, and
    # the measured networks are timed again side by side at the end, their own timings kept
    assert len(trials) >= 2
    assert set(trials.latency_source) == {"measured side by side"} and trials.latency_single_ms.notna().all()
    assert (trials.latency_p10_ms <= trials.latency_ms).all() and (trials.latency_ms <= trials.latency_p90_ms).all()


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
    # a chain of 17 points, each 1 % slower and more accurate than the last (LAB layer by LAB layer): no point is
    # faster beyond noise than its neighbour, yet the chain does not collapse into its most accurate end; the kept
    # points are ordered beyond noise (ranges apart) and every dropped one is matched within noise by a kept one
    acc, lat = np.linspace(0.53, 0.59, 17), 4.57 * 1.01 ** np.arange(17)
    keep = pareto_mask_within_noise(acc, lat)
    assert keep.tolist() == [i in (2, 9, 16) for i in range(17)]
    for n in np.flatnonzero(~keep):
        assert any(acc[k] >= acc[n] and lat[k] <= lat[n] * 1.03 / 0.97 for k in np.flatnonzero(keep))


def test_front_ties_count_neighbours_whose_ranges_overlap():
    from labnas.search.front import front_ties

    lat = np.array([5.0, 4.0, 4.1, 6.0])  # sorted: 4.0, 4.1 (within 3 %), 5.0, 6.0
    assert front_ties(lat) == 1
    assert front_ties(lat, floor=0.0) == 0
    assert front_ties(lat, lat - 0.6, lat + 0.6, floor=0.0) == 3  # wide ranges: every neighbour a tie


def test_random_distinct_candidates_stop_at_the_space_size():
    import random

    space = load_space(str(TINY))  # 3 options per searched layer: 9 architectures
    drawn = list(space.random_distinct(random.Random(0), 50))
    assert len(drawn) == space.size() == 9
    assert len({repr([(l.binarizer, l.lab_kernel, l.kernel) for l in layers]) for layers in drawn}) == 9


def test_side_by_side_timings_replace_a_front_searchs_own_in_the_trials_and_its_quality():
    """The measured networks of a front search, timed again side by side (study attr ``side_by_side``), are what
    trials.csv reports and the front is made of; each trial's own timing stays in ``latency_single_ms``. Its own
    timings (noisy, minutes apart) put 4 LAB layers before 1; side by side orders them by LAB count."""
    import optuna

    from labnas.search.results import front_quality, trials_frame

    study = optuna.create_study(directions=["maximize", "minimize"])
    own = {0: 4.90, 1: 4.60, 2: 5.20, 3: 5.40}  # trial -> its own timing, ms
    n_lab = {0: 1, 1: 4, 2: 9, 3: 16}
    for n in own:
        study.add_trial(optuna.trial.create_trial(values=[0.53 + 0.004 * n_lab[n], own[n]], user_attrs={
            "accuracy": 0.53 + 0.004 * n_lab[n], "latency_ms": own[n], "latency_p10_ms": own[n] * 0.9,
            "latency_p90_ms": own[n] * 1.1, "latency_source": "measured", "n_lab": n_lab[n], "feasible": True}))
    side = {0: [4.60, 4.58, 4.63], 1: [4.75, 4.72, 4.77], 2: [5.00, 4.97, 5.03], 3: [5.35, 5.31, 5.38]}
    study.set_user_attr("side_by_side", {"ms": {str(n): v for n, v in side.items()}, "runs": [{"members": 4, "rounds": 15}]})
    df = trials_frame(study)
    assert df.latency_ms.tolist() == [v[0] for v in side.values()]
    assert df.latency_single_ms.tolist() == list(own.values())
    assert df.latency_p90_ms.tolist() == [v[2] for v in side.values()]
    assert set(df.latency_source) == {"measured side by side"}
    quality = front_quality(df, {"reference_point": [0.5, 6.0]})
    assert quality["front_trials"] == [0, 1, 2, 3]  # every one on the front, in LAB order
    assert quality["measured_front_beyond_noise"] == 3  # 1 and 4 LAB layers are 3 % apart: within noise
    assert quality["front_ties_within_noise"] == 2  # ranges widened to +-3 %: 4.60 / 4.75 / 5.00 overlap in turn
    study.set_user_attr("side_by_side", None)
    assert trials_frame(study).latency_ms.tolist() == list(own.values())  # without it: the trials' own timings
