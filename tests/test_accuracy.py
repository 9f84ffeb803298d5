"""Accuracy estimators: rank statistics, the fidelity harness, the supernet, the published model, failures."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from labnas.accuracy import (
    STAGE_ABLATION_TOP1,
    EstimatorError,
    ProxySettings,
    build_estimator,
    kendall_tau,
    rank_fidelity,
    spearman_rho,
    stage_layers,
)
from labnas.accuracy.fidelity import mean_pairwise_difference
from labnas.accuracy.published import PublishedImageNet, leave_one_out
from labnas.accuracy.supernet import LayerChoices, Supernet, SupernetEstimator, load_supernet, save_supernet
from labnas.data import load_dataset
from labnas.models import LayerSpec
from labnas.train import TrainConfig, TrainingFailed, lr_factor, train_proxy

ROOT = Path(__file__).resolve().parents[1]


def test_kendall_tau_hand_checked_case():
    # pairs of (1,2,3,4) vs (1,3,2,4): 5 concordant, 1 discordant -> (5 - 1) / 6
    assert kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)
    assert kendall_tau([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # tau-b with a tie in x: n0 = 6, tied x pairs 1 -> concordant 4, discordant 1 -> 3 / sqrt(5 * 6)
    assert kendall_tau([1, 1, 2, 3], [1, 2, 3, 0]) == pytest.approx((2 - 3) / math.sqrt(5 * 6))


def test_rank_statistics_match_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 5, 16).astype(float), rng.normal(size=16)
    assert kendall_tau(x, y) == pytest.approx(stats.kendalltau(x, y).statistic)
    assert spearman_rho(x, y) == pytest.approx(stats.spearmanr(x, y).statistic)


def test_head_count_ranks_the_ablation_with_tau_086():
    names = list(STAGE_ABLATION_TOP1)
    fid = rank_fidelity({c: [float(c.count("1"))] for c in names}, STAGE_ABLATION_TOP1)
    assert fid.tau == pytest.approx(0.86, abs=0.01)
    assert fid.gain == 4.0 and math.isnan(fid.noise)


def test_rank_fidelity_gain_and_noise_from_seeds():
    ref = {"a": 1.0, "b": 2.0, "c": 3.0}
    fid = rank_fidelity({"a": [10.0, 12.0], "b": [20.0, 20.0], "c": [30.0, 34.0]}, ref)
    assert fid.tau == pytest.approx(1.0)
    assert fid.gain == pytest.approx(32.0 - 11.0)
    assert fid.noise == pytest.approx((2.0 + 0.0 + 4.0) / 3)


def test_seed_noise_is_the_mean_gap_between_two_seeds_not_the_range():
    # three seeds: pairs differ by 2, 6 and 4 -> 4 (the range, 6, would grow with every seed added)
    assert mean_pairwise_difference([10.0, 12.0, 16.0]) == pytest.approx(4.0)
    ref = {"a": 1.0, "b": 2.0, "c": 3.0}
    fid = rank_fidelity({"a": [10.0, 12.0, 16.0], "b": [20.0, 20.0, 23.0], "c": [30.0, 31.0, 32.0]}, ref)
    assert fid.noise == pytest.approx((4.0 + 2.0 + 4.0 / 3) / 3)
    assert fid.gain == pytest.approx(31.0 - 38.0 / 3)
    assert fid.gain_over_noise == pytest.approx(fid.gain / fid.noise)
    assert fid.noise_of_mean == pytest.approx(fid.noise / 3 ** 0.5)


def test_stage_layers_mark_whole_stages():
    layers = stage_layers("0101")
    assert [l.binarizer for l in layers] == ["sign"] * 4 + ["lab"] * 4 + ["sign"] * 4 + ["lab"] * 4
    assert all(l.kernel == 3 and l.lab_kernel == 3 for l in layers)


def _harness():
    spec = importlib.util.spec_from_file_location("proxy_fidelity", ROOT / "benchmarks" / "proxy_fidelity.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fidelity_harness_appends_rows_resumes_and_summarises(tmp_path, monkeypatch):
    h = _harness()
    monkeypatch.setattr(h, "RUNS", tmp_path / "runs.csv")
    monkeypatch.setattr(h, "SUMMARY", tmp_path / "summary.csv")
    configs = ["0000", "0110", "1111", "1000"]
    h.run_setting("published", ProxySettings(estimator="published"), [0, 1], configs, None)
    rows = h.read_runs(h.RUNS)
    assert [r["config"] for r in rows] == configs  # deterministic estimator: one seed only
    h.run_setting("published", ProxySettings(estimator="published"), [0], configs, None)
    assert len(h.read_runs(h.RUNS)) == 4  # finished rows are skipped
    table = h.summarise({c: STAGE_ABLATION_TOP1[c] for c in configs}, h.SUMMARY)
    # leave-one-out predictions order these four as ImageNet does
    assert table[0]["kendall_tau"] == pytest.approx(1.0)
    assert (tmp_path / "summary.csv").exists()


def test_seed_curve_averages_every_subset_of_complete_seeds(tmp_path, monkeypatch):
    h = _harness()
    monkeypatch.setattr(h, "RUNS", tmp_path / "runs.csv")
    scores = {0: {"a": 10.0, "b": 20.0, "c": 30.0},  # ranks as the reference: tau 1
              1: {"a": 12.0, "b": 11.0, "c": 35.0},  # one discordant pair of three: tau 1/3
              2: {"a": 99.0}}  # a seed cut short: left out
    for seed, by_config in scores.items():
        for config, acc in by_config.items():
            h.append_run({"setting": "s", "estimator": "trained", "config": config, "seed": seed, "accuracy": acc / 100,
                          "status": "ok", "fidelity": 2, "cpu_s": 1, "settings": "{}", "finished": ""}, h.RUNS)
    one, two = h.seed_curve("s", {"a": 1.0, "b": 2.0, "c": 3.0})
    assert (one["subsets"], one["tau_min"], one["tau_max"]) == (2, pytest.approx(1 / 3), pytest.approx(1.0))
    assert one["tau_mean"] == pytest.approx(2 / 3)
    assert (two["subsets"], two["tau_mean"]) == (1, pytest.approx(1.0))  # the mean of both ranks a < b < c


def _validated_space_fidelity(space_name: str, setting: str):
    """The rank fidelity of ``setting``'s committed rows, after checking that ``space_name``'s [proxy] is that setting
    averaged over 6 seeds and that the space makes the default placement space's choices (recomputed from the raw
    rows, the same way the benchmark's summary is)."""
    import csv

    from labnas.space import load_space

    h = _harness()
    space, default = load_space(space_name), load_space("bireal18_placement")
    assert space.proxy == ProxySettings(**h.SETTINGS[setting], seeds=6)
    assert (space.family, space.deploy_input, space.binarizers) == (default.family, default.deploy_input, default.binarizers)
    scores: dict[str, list[float]] = {}
    with (ROOT / "results" / "benchmarks" / "proxy_fidelity_runs.csv").open(newline="") as fh:
        for row in csv.DictReader(fh):
            if row["setting"] == setting and row["status"] == "ok":
                scores.setdefault(row["config"], []).append(100 * float(row["accuracy"]))
    return rank_fidelity(scores, STAGE_ABLATION_TOP1)


def test_the_trained_placement_space_uses_the_setting_the_study_validated():
    """search_spaces/bireal18_placement_trained.toml claims the ranking of the study's cosine setting averaged over
    6 seeds; the committed study must back the claim."""
    fid = _validated_space_fidelity("bireal18_placement_trained", "fmnist14-w12-full-e2-cos")
    assert fid.n == 16 and fid.seeds >= 6
    assert fid.tau >= 0.7 and fid.gain > 0 and fid.gain_over_noise >= 3


def test_the_supernet_placement_space_uses_the_setting_the_study_validated():
    """search_spaces/bireal18_placement_supernet.toml claims the ranking of the 8-epoch supernet setting averaged over
    6 supernets (tau >= 0.7, gain over 2x the noise between supernets)."""
    fid = _validated_space_fidelity("bireal18_placement_supernet", "supernet-fmnist14-w12-full-e8-cos")
    assert fid.n == 16 and fid.seeds >= 6
    assert fid.tau >= 0.7 and fid.gain > 2 * fid.noise


def test_published_estimator_leave_one_out_and_coverage():
    loo = leave_one_out()
    assert loo["kendall_tau"] > 0.86 and loo["mae_points"] < 0.5
    est = build_estimator("bireal18", ProxySettings(estimator="published"))
    assert est.estimate(stage_layers("1111")).accuracy > est.estimate(stage_layers("0000")).accuracy
    assert est.estimate(stage_layers("0000")).fidelity == 0.0
    layers = stage_layers("1111")
    layers[0] = LayerSpec("lab", lab_kernel=5)
    with pytest.raises(EstimatorError, match="LAB kernel 5"):
        est.estimate(layers)
    with pytest.raises(ValueError, match="unknown family"):
        PublishedImageNet("no_such_family")


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_supernet_samples_every_choice():
    choices = LayerChoices((("sign", "lab")), (3, 5, 7), ((1, 3),) * 16)
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(200):
        for i, layer in enumerate(choices.sample(rng)):
            seen.add((i, layer.binarizer, layer.lab_kernel if layer.binarizer == "lab" else 0, layer.kernel))
    expected = {(i, b, lk, k) for i in range(16) for k in (1, 3) for b, lk in [("sign", 0), ("lab", 3), ("lab", 5), ("lab", 7)]}
    assert seen == expected


def test_supernet_subnet_equals_standalone_network_with_inherited_weights(digits):
    choices = LayerChoices(("sign", "lab"), (3, 5), ((1, 3),) * 16)
    torch.manual_seed(0)
    net = Supernet("bireal18", choices, 0.25, 1, 10)
    rng = np.random.default_rng(0)
    opt = torch.optim.Adam(net.parameters(), 1e-2)  # a few steps so weights and BN stats are not at init
    x = torch.from_numpy(digits.x_train[:64])
    for _ in range(3):
        net.set_active(choices.sample(rng))
        loss = net(x).logsumexp(1).mean()
        opt.zero_grad(), loss.backward(), opt.step()
    net.eval()
    for _ in range(4):
        layers = choices.sample(rng)
        net.set_active(layers)
        sub = net.extract(layers).eval()
        assert sub.spec.layers == layers
        torch.testing.assert_close(net(x), sub(x), rtol=0, atol=0)


def test_supernet_cache_is_refused_for_another_space(tmp_path, digits):
    a = LayerChoices(("sign", "lab"), (3,), ((3,),) * 16)
    b = LayerChoices(("sign", "lab"), (3, 5), ((3,),) * 16)
    net_a = Supernet("bireal18", a, 0.25, 1, 10)
    save_supernet(net_a, tmp_path / "a.pt", "key")
    load_supernet(Supernet("bireal18", a, 0.25, 1, 10), tmp_path / "a.pt", "key")
    with pytest.raises(EstimatorError, match="another space"):
        load_supernet(Supernet("bireal18", b, 0.25, 1, 10), tmp_path / "a.pt", "key")


def test_supernet_estimator_trains_once_caches_and_scores(tmp_path, digits):
    choices = LayerChoices(("sign", "lab"), (3,), ((3,),) * 16)
    settings = ProxySettings(estimator="supernet", epochs=2, batch_size=64, lr=5e-3, recalib_images=256)
    est = SupernetEstimator("bireal18", settings, digits, choices, cache_dir=tmp_path)
    first = est.estimate(stage_layers("0110"), seed=0)
    assert first.estimator == "supernet" and first.fidelity == 2.0
    assert 0.3 < first.accuracy <= 1.0
    assert len(list(tmp_path.glob("*.pt"))) == 1
    again = SupernetEstimator("bireal18", settings, digits, choices, cache_dir=tmp_path)  # from the cache
    assert again.estimate(stage_layers("0110"), seed=0).accuracy == pytest.approx(first.accuracy, abs=0.02)
    with pytest.raises(EstimatorError, match="outside the supernet"):
        est.estimate(stage_layers("0110", lab_kernel=5), seed=0)


def test_a_supernet_training_stopped_after_an_epoch_resumes_to_the_same_weights(tmp_path, digits):
    """A supernet at 28x28 trains for CPU hours: stopped after its first epoch it keeps a partial checkpoint, and the
    next call finishes it to bit-identical weights (same sub-networks sampled, same batches) and removes the partial."""
    choices = LayerChoices(("sign", "lab"), (3,), ((3,),) * 16)
    settings = ProxySettings(estimator="supernet", epochs=2, batch_size=64, lr=5e-3, subset=300, recalib_images=128)

    class Stop(Exception):
        pass

    def stop_after_first(what, epoch, total):
        if epoch == 1:
            raise Stop

    straight = SupernetEstimator("bireal18", settings, digits, choices, cache_dir=tmp_path / "straight").supernet(0)
    stopped = SupernetEstimator("bireal18", settings, digits, choices, cache_dir=tmp_path / "stopped")
    with pytest.raises(Stop):
        stopped.supernet(0, stop_after_first)
    assert [p.name for p in (tmp_path / "stopped").iterdir()] == [stopped.cache_path(0).name + ".partial"]
    resumed = SupernetEstimator("bireal18", settings, digits, choices, cache_dir=tmp_path / "stopped").supernet(0)
    assert [p.name for p in (tmp_path / "stopped").iterdir()] == [stopped.cache_path(0).name]
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_lr_factor_warms_up_then_decays():
    assert lr_factor(0, 100, 10, "linear") == pytest.approx(0.1)
    assert lr_factor(9, 100, 10, "linear") == pytest.approx(1.0)
    assert lr_factor(10, 100, 10, "cosine") == pytest.approx(1.0)
    assert lr_factor(55, 100, 10, "cosine") == pytest.approx(0.5)
    assert lr_factor(100, 100, 0, "linear") == 0.0


def test_a_diverging_run_raises_training_failed(digits):
    from labnas.models import default_spec

    spec = default_spec("bireal18", "sign", width_mult=0.25, in_channels=1, num_classes=10, stem="small")
    with pytest.raises(TrainingFailed) as info:
        train_proxy(spec, digits, TrainConfig(epochs=1, batch_size=64, lr=1e30, subset=256))
    assert info.value.reason in ("diverged", "chance")


def test_unknown_estimator_is_one_clear_error():
    with pytest.raises(EstimatorError, match="unknown accuracy estimator 'magic'"):
        ProxySettings(estimator="magic")
    with pytest.raises(EstimatorError, match="unknown key"):
        ProxySettings.from_table({"epoch": 3})


def test_estimators_are_registered_by_name_and_the_cli_offers_exactly_those():
    import argparse

    from labnas.accuracy import ESTIMATORS, ProxySettings, build_estimator, register_estimator
    from labnas.accuracy.estimator import AccuracyEstimate
    from labnas.cli.search import add_search_parser

    assert set(ESTIMATORS) == {"trained", "supernet", "published"}
    parser = argparse.ArgumentParser()
    add_search_parser(parser.add_subparsers())
    accuracy = next(a for sub in parser._subparsers._group_actions for a in sub.choices["search"]._actions if a.dest == "accuracy")
    assert list(accuracy.choices) == list(ESTIMATORS)

    class Constant:
        name = "constant"

        def describe(self):
            return "always 0.5"

        def estimate(self, layers, seed=0, progress=None):
            return AccuracyEstimate(0.5, [], self.name)

    register_estimator("constant", "always one half", "a constant", needs_data=False)(lambda *args: Constant())
    try:
        with pytest.raises(ValueError, match="registered twice"):
            register_estimator("constant", "again", "again")(lambda *args: Constant())
        estimator = build_estimator("bireal18", ProxySettings(estimator="constant"))
        assert estimator.estimate([]).accuracy == 0.5
    finally:
        ESTIMATORS.pop("constant")


def test_kernel_configurations_name_their_layers_and_reject_malformed_codes():
    from labnas.accuracy import config_layers, kernel_config_code, kernel_config_layers

    layers = kernel_config_layers("lab3077-conv5353")
    assert len(layers) == 16
    assert [(l.binarizer, l.lab_kernel, l.kernel) for l in layers[::4]] == [("lab", 3, 5), ("sign", 3, 3), ("lab", 7, 5), ("lab", 7, 3)]
    assert kernel_config_code((3, 0, 7, 7), (5, 3, 5, 3)) == "lab3077-conv5353"
    assert config_layers("0110") == config_layers("lab0330-conv3333")  # a stage code is a kernel configuration too
    for bad in ("lab337-conv5353", "lab3477-conv5353", "lab3377-conv0353", "3377"):
        with pytest.raises(ValueError):
            config_layers(bad)


def _kernel_reference_module():
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "kernel_reference.py"
    spec = importlib.util.spec_from_file_location("labnas_benchmarks_kernel_reference", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_the_kernel_reference_design_estimates_every_main_effect_free_of_two_factor_interactions():
    """The 2^(6-2) design is of resolution IV: its 16 runs are distinct, every factor is balanced, and every main-effect
    column is orthogonal to every other main effect and to every two-factor interaction column."""
    import itertools

    ref = _kernel_reference_module()
    x = np.array(ref.design(), float)
    assert x.shape == (16, 6) and len(ref.CONFIGS) == 16 and len({tuple(r) for r in x}) == 16
    assert np.all(x.sum(0) == 0)
    for j in range(6):
        for a, b in itertools.combinations(range(6), 2):
            if j not in (a, b):
                assert x[:, j] @ (x[:, a] * x[:, b]) == 0, (j, a, b)
        for k in range(6):
            assert (x[:, j] @ x[:, k] == 0) == (j != k)


def test_kernel_reference_main_effects_and_their_seed_noise_come_out_of_the_rows(tmp_path):
    """Accuracies built from known effects plus a known seed offset: the analysis returns the effects, the noise the
    seeds put on them and which are resolvable (>= 3x the noise)."""
    ref = _kernel_reference_module()
    effects = np.array([0.8, 0.0, -0.4, 0.05, 1.2, 0.0])  # high minus low, in points
    rows = []
    for config, levels in ref.CONFIGS.items():
        for seed, offset in ((0, 0.1), (1, -0.1)):
            acc = 90 + float(np.array(levels) @ effects) / 2 + offset
            rows.append({"config": config, "seed": seed, "accuracy": f"{acc:.4f}", "status": "ok"})
    found = {e["factor"]: e for e in ref.main_effects(rows)}
    assert [round(found[f]["effect_pts"], 3) for f in ref.FACTORS] == list(effects)
    sigma = np.sqrt(0.02)  # two seeds 0.2 apart: variance 0.02
    assert all(abs(e["noise_pts"] - sigma * np.sqrt(1 / 16 + 1 / 16)) < 1e-6 for e in found.values())
    assert [found[f]["resolvable"] for f in ref.FACTORS] == [True, False, True, False, True, False]
    table = ref.summarise(rows, out=tmp_path / "t.csv")
    assert len(table) == 16 and all(r["seeds"] == 2 for r in table) and table[0]["accuracy"] >= table[-1]["accuracy"]


def test_the_validations_shipped_in_the_package_are_the_committed_fidelity_results():
    """labnas.accuracy.validation copies tau and its interval from results/benchmarks/proxy_fidelity.csv; each entry
    equals the CSV's row of its setting, with the settings and the number of runs averaged the study used."""
    import csv
    import json

    from labnas.accuracy import VALIDATIONS, ProxySettings

    rows = {r["setting"]: r for r in csv.DictReader((Path(__file__).resolve().parents[1] / "results" / "benchmarks" /
                                                     "proxy_fidelity.csv").open())}
    for v in VALIDATIONS:
        row = rows[v.setting]
        assert (v.tau, v.tau_lo, v.tau_hi, v.seeds) == (float(row["kendall_tau"]), float(row["tau_lo90"]),
                                                        float(row["tau_hi90"]), int(row["seeds"])), v.setting
        settings = ProxySettings(**{k: val for k, val in json.loads(row["settings"]).items()}).replace(seeds=v.seeds)
        assert v.matches(settings), v.setting


def test_a_trial_says_whether_its_choices_lie_inside_the_estimators_validation():
    from labnas.accuracy import ProxySettings, config_layers, validation_of

    published = ProxySettings(estimator="published")
    assert "Kendall tau +0.90" in validation_of(published, config_layers("0110"))
    assert validation_of(published, config_layers("lab3333-conv5333")).startswith("outside its validation")
    trained = ProxySettings(estimator="trained", dataset="fashion-mnist", resolution=14, width_mult=0.125, epochs=2,
                            batch_size=64, lr=2.5e-3, schedule="cosine", warmup_epochs=0.25, seeds=6)
    assert "fmnist14-w12-full-e2-cos" in validation_of(trained, config_layers("1111"))
    assert validation_of(trained.replace(seeds=2), config_layers("1111")).startswith("not validated")  # tau was for 6 runs
    assert validation_of(trained.replace(epochs=3), config_layers("1111")).startswith("not validated")
