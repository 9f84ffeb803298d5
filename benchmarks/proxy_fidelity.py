"""How well does an accuracy estimator rank LAB placements the way ImageNet does?

Scores the 16 configurations of the LAB authors' stage ablation (Bi-Real-18, LAB 3x3 with the official
pairing in every binary layer of the marked stages, sign elsewhere; ImageNet top-1 53.2 .. 59.1 %) with an
estimator built by ``labnas.accuracy.build_estimator`` (the search's own code path), several seeds, and
reports Kendall tau / Spearman rho against the ImageNet column (bootstrap 90 % interval over
configurations), the 1111-vs-0000 gain next to the seed noise (the mean absolute difference between two seeds of
one configuration, averaged over configurations), and CPU seconds per candidate.

Every (setting, configuration, seed) result is appended to ``results/benchmarks/proxy_fidelity_runs.csv`` as
it finishes; a re-run skips finished rows, so a study spread over several sittings loses nothing. The
summary (one row per setting) goes to ``results/benchmarks/proxy_fidelity.csv``.

    python benchmarks/proxy_fidelity.py                      # the default setting (what the search uses)
    python benchmarks/proxy_fidelity.py --setting fmnist14-w25-e3 --seeds 0 1
    python benchmarks/proxy_fidelity.py --study              # every setting of the study, in order
    python benchmarks/proxy_fidelity.py --summary            # recompute the summary from the rows only
    python benchmarks/proxy_fidelity.py --seed-curve fmnist14-w12-full-e2-cos   # tau against seeds averaged
    python benchmarks/proxy_fidelity.py --reference my.csv   # score against your own table (config,accuracy)
    python benchmarks/proxy_fidelity.py --setting supernet-fmnist28-w12-full-e8-cos \
        --reference results/benchmarks/kernel_reference.csv  # kernel choices, against the proxy-task reference

Run it with one torch thread and ``nice`` when other work shares the machine (it sets one thread itself).
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from labnas.accuracy import (  # noqa: E402
    STAGE_ABLATION_TOP1,
    ProxySettings,
    build_estimator,
    config_layers,
    load_reference_csv,
    rank_fidelity,
)
from labnas.results import append_row, read_rows  # noqa: E402
from labnas.train import TrainingFailed  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "results" / "benchmarks" / "proxy_fidelity_runs.csv"
SUMMARY = ROOT / "results" / "benchmarks" / "proxy_fidelity.csv"
FAMILY = "bireal18"
RUN_COLUMNS = ["setting", "estimator", "config", "seed", "accuracy", "status", "fidelity", "cpu_s", "settings", "finished"]

#: The study: each setting is ProxySettings fields. Ordered cheap and informative first.
SETTINGS: dict[str, dict] = {
    # the spaces' default trained proxy: digits 8x8, the shared recipe (Adam 4e-3, linear, BN recalibrated)
    "digits8-w25-e4": dict(dataset="digits", width_mult=0.25, epochs=4, batch_size=32, lr=4e-3),
    # one-shot: a weight-sharing supernet over {sign, LAB3} per layer, scored after BN recalibration
    "supernet-fmnist14-w25-e12": dict(estimator="supernet", dataset="fashion-mnist", resolution=14, width_mult=0.25,
                                      epochs=12, batch_size=64, lr=2.5e-3, subset=10000, warmup_epochs=0.5),
    # Fashion-MNIST pooled to 14x14, 10k images
    "fmnist14-w25-e3": dict(dataset="fashion-mnist", resolution=14, width_mult=0.25, epochs=3, batch_size=64,
                            lr=2.5e-3, subset=10000),
    # capacity-limited (the ImageNet regime for BNNs): narrow network, every image (tau +0.51 with seed 0)
    "fmnist14-w12-full-e2": dict(dataset="fashion-mnist", resolution=14, width_mult=0.125, epochs=2, batch_size=64,
                                 lr=2.5e-3, subset=0),
    # the capacity-limited regime, pushed further: longer, and narrower still
    "fmnist14-w12-full-e4": dict(dataset="fashion-mnist", resolution=14, width_mult=0.125, epochs=4, batch_size=64,
                                 lr=2.5e-3, subset=0),
    # the capacity-limited setting with QuickNet's schedule shape (warm-up, then cosine) instead of linear decay
    "fmnist14-w12-full-e2-cos": dict(dataset="fashion-mnist", resolution=14, width_mult=0.125, epochs=2,
                                     batch_size=64, lr=2.5e-3, subset=0, schedule="cosine", warmup_epochs=0.25),
    # half the cost per training: does one epoch keep the ranking when averaged over seeds?
    "fmnist14-w12-full-e1-cos": dict(dataset="fashion-mnist", resolution=14, width_mult=0.125, epochs=1,
                                     batch_size=64, lr=2.5e-3, subset=0, schedule="cosine", warmup_epochs=0.25),
    "fmnist14-w06-full-e2": dict(dataset="fashion-mnist", resolution=14, width_mult=0.0625, epochs=2, batch_size=64,
                                 lr=2.5e-3, subset=0),
    # full resolution: stage 4 at 4x4 instead of 2x2
    "fmnist28-w25-e3": dict(dataset="fashion-mnist", resolution=28, width_mult=0.25, epochs=3, batch_size=64,
                            lr=2.5e-3, subset=10000),
    # longer with warm-up and cosine (QuickNet's recipe)
    "fmnist14-w25-e8-cos": dict(dataset="fashion-mnist", resolution=14, width_mult=0.25, epochs=8, batch_size=64,
                                lr=2.5e-3, subset=10000, schedule="cosine", warmup_epochs=1.0),
    # one-shot in the capacity-limited regime that ranks when trained standalone: one supernet costs about as
    # much as 2-4 standalone trainings, then every candidate is scored in seconds
    "supernet-fmnist14-w12-full-e4-cos": dict(estimator="supernet", dataset="fashion-mnist", resolution=14,
                                              width_mult=0.125, epochs=4, batch_size=64, lr=2.5e-3, subset=0,
                                              schedule="cosine", warmup_epochs=0.25),
    "supernet-fmnist14-w12-full-e8-cos": dict(estimator="supernet", dataset="fashion-mnist", resolution=14,
                                              width_mult=0.125, epochs=8, batch_size=64, lr=2.5e-3, subset=0,
                                              schedule="cosine", warmup_epochs=0.25),
    "supernet-fmnist14-w12-full-e16-cos": dict(estimator="supernet", dataset="fashion-mnist", resolution=14,
                                               width_mult=0.125, epochs=16, batch_size=64, lr=2.5e-3, subset=0,
                                               schedule="cosine", warmup_epochs=0.25),
    # kernel choices at the reference's own resolution (28x28: stage 4 on 4x4 maps, where LAB 7 and conv 5 differ
    # from their centre taps): scored against results/benchmarks/kernel_reference.csv with --reference
    "supernet-fmnist28-w12-full-e8-cos": dict(estimator="supernet", dataset="fashion-mnist", resolution=28,
                                              width_mult=0.125, epochs=8, batch_size=64, lr=2.5e-3, subset=0,
                                              schedule="cosine", warmup_epochs=0.25),
    "fmnist28-w12-full-e2-cos": dict(dataset="fashion-mnist", resolution=28, width_mult=0.125, epochs=2,
                                     batch_size=64, lr=2.5e-3, subset=0, schedule="cosine", warmup_epochs=0.25),
    # published ImageNet results (scored leave-one-configuration-out)
    "published": dict(estimator="published"),
}
#: A supernet setting's own per-layer choices, so that one supernet (one cache entry) scores both references: the
#: kernel reference's LAB 3/7 and conv 3/5 include the stage ablation's sign / LAB 3x3 with conv 3. Settings not
#: listed hold what the configurations they score use (:func:`_choices`).
SETTING_CHOICES: dict[str, dict] = {
    "supernet-fmnist28-w12-full-e8-cos": dict(lab_kernels=[3, 7], kernels=[3, 5]),
}
#: Settings recorded before BatchNorm recalibration after training existed (rows kept, marked -runningbn).
RETIRED_SETTINGS = ("digits8-w25-e4-lr1e2-runningbn", "fmnist14-w25-e3-runningbn")
DEFAULT_SETTING = "published"


def read_runs(path: Path | None = None) -> list[dict]:
    return read_rows(path or RUNS)


def append_run(row: dict, path: Path | None = None) -> None:
    """Append one finished row (and the header on a new file), flushed to disk at once."""
    append_row(path or RUNS, RUN_COLUMNS, row)


def _choices(configs: list[str], setting: str | None = None):
    """The per-layer choices a supernet must hold to score ``configs``: the setting's own (:data:`SETTING_CHOICES`),
    else every binarizer, LAB kernel and conv kernel any of them uses (sign/LAB 3x3 for the stage ablation; LAB 3/7
    and conv 3/5 for the kernel reference)."""
    from labnas.accuracy import LayerChoices

    layers = [layer for c in configs for layer in config_layers(c)]
    used = dict(lab_kernels=sorted({l.lab_kernel for l in layers}), kernels=sorted({l.kernel for l in layers}))
    own = SETTING_CHOICES.get(setting or "")
    if own and not all(set(used[k]) <= set(own[k]) for k in used):
        raise SystemExit(f"setting {setting} holds LAB kernels {own['lab_kernels']} and conv kernels {own['kernels']}; "
                         f"the configurations use {used['lab_kernels']} and {used['kernels']}: score them with another setting")
    return LayerChoices.uniform(16, binarizers=["sign", "lab"], **(own or used))


def run_setting(name: str, settings: ProxySettings, seeds: list[int], configs: list[str], cache_dir: str | None) -> None:
    if settings.estimator == "published":
        seeds = seeds[:1]  # deterministic: one row per configuration
    done = {(r["config"], int(r["seed"])) for r in read_runs() if r["setting"] == name}
    todo = [(c, s) for s in seeds for c in configs if (c, s) not in done]
    if not todo:
        print(f"{name}: all {len(configs) * len(seeds)} rows already recorded")
        return
    estimator = build_estimator(FAMILY, settings, choices=_choices(configs, name), cache_dir=cache_dir)
    print(f"{name}: {estimator.describe()}; {len(todo)} rows to run", flush=True)
    for i, (config, seed) in enumerate(todo, start=1):
        cpu0, wall0 = time.process_time(), time.perf_counter()
        # a table-based estimator is scored leave-one-configuration-out: fitted without the row it predicts
        scorer = estimator.without(config) if settings.estimator == "published" else estimator
        try:
            est = scorer.estimate(config_layers(config), seed=seed)
            accuracy, status, fidelity = est.accuracy, "ok", est.fidelity
        except TrainingFailed as err:
            accuracy, status, fidelity = float("nan"), err.reason, float(settings.epochs)
        cpu = time.process_time() - cpu0
        append_run({
            "setting": name, "estimator": settings.estimator, "config": config, "seed": seed,
            "accuracy": f"{accuracy:.5f}", "status": status, "fidelity": fidelity, "cpu_s": f"{cpu:.1f}",
            "settings": json.dumps(settings.to_dict(), sort_keys=True), "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        })
        print(f"  [{i}/{len(todo)}] {config} seed {seed}: {100 * accuracy:.2f} % ({status}), "
              f"{cpu:.0f} CPU s, {time.perf_counter() - wall0:.0f} s wall", flush=True)


def summarise(reference: dict[str, float], out: Path | None = None) -> list[dict]:
    """One summary row per setting from the recorded runs (scores in accuracy points)."""
    rows = read_runs()
    table = []
    for name in dict.fromkeys(r["setting"] for r in rows):
        mine = [r for r in rows if r["setting"] == name and r["config"] in reference]  # rows of this reference only
        scores: dict[str, list[float]] = {}
        failed = 0
        for r in mine:
            if r["status"] != "ok":
                failed += 1
                continue
            scores.setdefault(r["config"], []).append(100 * float(r["accuracy"]))
        cpu = [float(r["cpu_s"]) for r in mine]
        try:
            fid = rank_fidelity(scores, reference)
        except ValueError:
            continue
        table.append({
            "setting": name, "estimator": mine[0]["estimator"], "configs": fid.n, "seeds": fid.seeds,
            "failed_runs": failed, "kendall_tau": round(fid.tau, 3), "tau_lo90": round(fid.tau_lo, 3),
            "tau_hi90": round(fid.tau_hi, 3), "spearman_rho": round(fid.rho, 3),
            "gain_1111_0000_pts": round(fid.gain, 2), "seed_noise_pts": round(fid.noise, 2),
            "gain_over_noise": round(fid.gain_over_noise, 2), "noise_of_mean_pts": round(fid.noise_of_mean, 2),
            "cpu_s_per_candidate": round(float(np.mean(cpu)), 1),
            "settings": mine[-1]["settings"],
        })
    out = out or SUMMARY
    if table:
        with out.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, list(table[0]))
            writer.writeheader()
            writer.writerows(table)
    return table


def seed_curve(name: str, reference: dict[str, float]) -> list[dict]:
    """How the ranking of a setting grows with the number of trainings averaged: for each k, Kendall tau of the mean
    of k seeds, over every k-subset of the seeds that scored all configurations (mean, lowest, highest)."""
    scores: dict[int, dict[str, float]] = {}
    for r in read_runs():
        if r["setting"] == name and r["status"] == "ok":
            scores.setdefault(int(r["seed"]), {})[r["config"]] = 100 * float(r["accuracy"])
    seeds = sorted(seed for seed, by_config in scores.items() if all(c in by_config for c in reference))
    configs = list(reference)  # only seeds that scored every configuration (a study cut short leaves a partial seed)
    curve = []
    for k in range(1, len(seeds) + 1):
        taus = [rank_fidelity({c: [scores[seed][c] for seed in subset] for c in configs}, reference).tau
                for subset in itertools.combinations(seeds, k)]
        curve.append({"seeds_averaged": k, "subsets": len(taus), "tau_mean": float(np.mean(taus)),
                      "tau_min": float(np.min(taus)), "tau_max": float(np.max(taus))})
    return curve


def markdown(table: list[dict]) -> str:
    """The summary rows as a Markdown table: setting, what it trains, tau [90 % interval], rho, gain, noise, cost."""
    lines = ["| setting | estimator: data, width, epochs, lr | configs x seeds | Kendall tau [90 % CI] | Spearman | gain 1111-0000 (pts) | seed noise (pts) | gain / noise | CPU s / candidate |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in table:
        s = json.loads(r["settings"])
        what = "fitted to published ImageNet results (leave-one-out)" if r["estimator"] == "published" else (
            f"{r['estimator']}: {s['dataset']}{'@' + str(s['resolution']) if s.get('resolution') else ''}, "
            f"x{s['width_mult']:g}, {s['epochs']} ep, {s['lr']:g} {s.get('schedule', 'linear')}"
            f"{', ' + str(s['subset']) + ' imgs' if s.get('subset') else ''}")
        noise = "-" if r["seed_noise_pts"] != r["seed_noise_pts"] else f"{r['seed_noise_pts']:.2f}"
        ratio = "-" if r["gain_over_noise"] != r["gain_over_noise"] else f"{r['gain_over_noise']:.1f}x"
        lines.append(f"| {r['setting']} | {what} | {r['configs']} x {r['seeds']} | {r['kendall_tau']:+.2f} [{r['tau_lo90']:+.2f}, {r['tau_hi90']:+.2f}] "
                     f"| {r['spearman_rho']:+.2f} | {r['gain_1111_0000_pts']:+.2f} | {noise} | {ratio} | {r['cpu_s_per_candidate']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--setting", default=DEFAULT_SETTING, choices=sorted(SETTINGS), help=f"default {DEFAULT_SETTING}")
    p.add_argument("--study", action="store_true", help="run every setting of the study in order")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--configs", nargs="+", help="configurations to score: stage codes (0110) or kernel configurations "
                                                "(lab3377-conv5353) (default: every configuration of the reference)")
    p.add_argument("--reference", help="CSV with columns config,accuracy (default: the ImageNet stage ablation)")
    p.add_argument("--summary", action="store_true", help="only recompute the summary from the recorded rows")
    p.add_argument("--cache-dir", help="supernet cache directory")
    p.add_argument("--markdown", action="store_true", help="print the summary as a Markdown table (for docs/accuracy.md)")
    p.add_argument("--seed-curve", metavar="SETTING", choices=sorted(SETTINGS),
                   help="print Kendall tau against the number of trainings averaged, from SETTING's recorded rows")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    reference = load_reference_csv(args.reference) if args.reference else STAGE_ABLATION_TOP1
    if args.seed_curve:
        print(f"| trainings averaged ({args.seed_curve}) | Kendall tau, mean over subsets of the seeds | lowest .. highest |")
        print("|---|---|---|")
        for row in seed_curve(args.seed_curve, reference):
            print(f"| {row['seeds_averaged']} ({row['subsets']} subsets) | {row['tau_mean']:+.2f} | {row['tau_min']:+.2f} .. {row['tau_max']:+.2f} |")
        return 0
    if not args.summary:
        names = list(SETTINGS) if args.study else [args.setting]
        for name in names:
            run_setting(name, ProxySettings(**SETTINGS[name]), args.seeds, args.configs or list(reference), args.cache_dir)
    # scores against another reference go to a summary of their own (the ImageNet one stays what docs/accuracy.md quotes)
    table = summarise(reference, SUMMARY.with_name(f"proxy_fidelity_vs_{Path(args.reference).stem}.csv") if args.reference else None)
    if args.markdown:
        print(markdown(table))
        return 0
    for row in table:
        print(f"{row['setting']:28s} tau {row['kendall_tau']:+.2f} [{row['tau_lo90']:+.2f}, {row['tau_hi90']:+.2f}] "
              f"rho {row['spearman_rho']:+.2f}  gain {row['gain_1111_0000_pts']:+.2f} pts  noise {row['seed_noise_pts']:.2f} ({row['gain_over_noise']:.1f}x)  "
              f"{row['cpu_s_per_candidate']:.0f} CPU s/candidate")
    return 0


if __name__ == "__main__":
    sys.exit(main())
