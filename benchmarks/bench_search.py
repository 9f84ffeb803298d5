"""Is the main command's front the true one, the same every run? The front search against TPE, on this machine.

Runs the main command (``labnas search --budget-ms 20``: the ``bireal18_placement`` space, published estimator,
sampler ``front``) ``--seeds`` times, each as a first run on a fresh machine would (a new, empty labnas cache: the
kernel strategies, the reference calibration and the block table are all made by that run, inside its wall time);
then, reusing the last run's table, the exhaustive reference (every member of the predicted front timed:
``--trials`` = the front's size) and the search with TPE as it was before (``--sampler tpe``, 14 trials). Each run
is the CLI in its own process, as a user runs it. For each run: distinct candidates timed, wall time, the measured
front (the Pareto front of its trials on its own latencies, which a front search times side by side at its end),
its size and how many of its points are apart beyond noise, and its hypervolume against the exhaustive front (the
predicted front of all 65,536 placements, each point at its common latency, and its accuracy). Between the front
runs: the share of front placements they have in common, and ``front_overlap_within_noise``: the share of each
front's points the other front matches at least as accurate and at most 3 % slower (on the common latencies), both
ways, i.e. the same front where ties within noise may differ. One row per run in
``results/benchmarks/bench_search.csv``, every trial in ``bench_search_trials.csv``.

Common latencies: the runs happen minutes apart, and this host's speed drifts by several percent between them, more
than LAB's cost per layer; a hypervolume ratio of one run's timings against another's measures that drift, not the
placements found. So after the runs every placement any run timed is compiled again and timed side by side in
``--retime-rounds`` paired rounds (each round times every placement once, in a rotated order; each timing is divided
by its round's median over all placements, which cancels the drift between rounds); every run's hypervolume is
computed on these common latencies (``bench_search_common.csv``). ``hypervolume_vs_exhaustive_p10/_p90``: the
ratio's band when the common rounds are resampled (bootstrap), i.e. how much of it is the common timing's own noise.
The run's own timings give ``own_timings_hypervolume_vs_exhaustive``, for comparison.

    python benchmarks/bench_search.py
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from labnas.models import ArchSpec  # noqa: E402
from labnas.search import SearchConfig, load_space  # noqa: E402
from labnas.search import spec_key  # noqa: E402
from labnas.search import NOISE_FLOOR, hypervolume, pareto_mask, pareto_mask_within_noise, predict_space  # noqa: E402
from labnas.search import front_table, make_estimator  # noqa: E402
from labnas.timing import machine_facts  # noqa: E402
from labnas.tvm import TARGETS  # noqa: E402


def key_of(spec_json: str) -> str:
    """The placement of a trial's spec (:func:`labnas.search.objective.spec_key` of its layers)."""
    return spec_key(ArchSpec.from_json(spec_json).layers)


def measured_front(trials: pd.DataFrame) -> pd.DataFrame:
    """The run's answer: the Pareto front of its distinct complete trials on (accuracy, its own latency_ms), which a
    front search times side by side at its end (:mod:`labnas.search.side_by_side`)."""
    done = trials[(trials.state == "COMPLETE") & trials.accuracy.notna()]
    if "duplicate_of" in done:
        done = done[done.duplicate_of.isna()]
    return done[pareto_mask(done.accuracy.to_numpy(float), done.latency_ms.to_numpy(float))]


def coverage_within_noise(accuracy: np.ndarray, latency: np.ndarray, ref_accuracy: np.ndarray, ref_latency: np.ndarray,
                          floor: float = NOISE_FLOOR) -> float:
    """The share of the reference points (the exhaustive front) that some point of the run matches within noise: at
    least as accurate and at most ``floor`` slower (an epsilon-dominance test with the timing's noise as epsilon)."""
    hits = [bool(np.any((accuracy >= a - 1e-12) & (latency <= (1 + floor) * l))) for a, l in zip(ref_accuracy, ref_latency)]
    return float(np.mean(hits)) if hits else float("nan")


def timed_specs(all_trials: pd.DataFrame) -> dict[str, str]:
    """Every placement some run timed: key (:func:`key_of`) -> its deploy spec JSON."""
    done = all_trials[(all_trials.state == "COMPLETE") & all_trials.spec.notna()]
    return {key_of(spec): spec for spec in done.spec}


def common_timings(specs: dict[str, str], space, threads: int | None, rounds: int) -> pd.DataFrame:
    """Every placement of ``specs`` (key -> deploy spec JSON) compiled for this host (kernel strategies from the
    current labnas cache) and timed side by side: ``rounds`` rounds, each timing every placement once in a rotated
    order (:func:`labnas.timing.round_robin`); a timing divided by its round's median over all placements, the
    median of those ratios over the rounds times the median round's scale. Returns one row per placement: key,
    ``common_ms``, its p10/p90 over the rounds and every round's drift-corrected timing ``round<r>_ms`` (ms; for
    :func:`ratio_band`)."""
    from labnas.models import create_model
    from labnas.timing import round_robin, tvm_runner
    from labnas.tvm import compile_many

    keys = sorted(specs)
    shape = (1, *space.deploy_input)
    print(f"common timing: compiling {len(keys)} placements", file=sys.stderr, flush=True)
    outcomes = compile_many([(create_model(ArchSpec.from_json(specs[k])).eval(), shape) for k in keys], TARGETS["host"],
                            threads=threads)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    calls = {k: tvm_runner(o.compiled, x, threads or os.cpu_count())[0] for k, o in zip(keys, outcomes)}
    timed = round_robin(calls, rounds=rounds, repeat=5, number=2, progress="common timing")
    table = np.array([timed[k] for k in keys])  # placements x rounds, ms
    per_round = np.median(table, axis=0)
    ratios = table / per_round
    scale = float(np.median(per_round))
    rounds_ms = {f"round{r}_ms": np.round(scale * ratios[:, r], 4) for r in range(ratios.shape[1])}
    return pd.DataFrame({"key": keys, "common_ms": np.round(scale * np.median(ratios, axis=1), 4),
                         "common_p10_ms": np.round(scale * np.percentile(ratios, 10, axis=1), 4),
                         "common_p90_ms": np.round(scale * np.percentile(ratios, 90, axis=1), 4), **rounds_ms})


def ratio_band(keys_of_run: dict[str, list[str]], accuracy: dict[str, float], common: pd.DataFrame, ref_acc: float,
               exhaustive: list[str], resamples: int = 400) -> dict[str, tuple[float, float]]:
    """How far the common timing's own noise moves each run's hypervolume ratio: the rounds resampled with
    replacement (``resamples`` times, fixed seed), every placement's latency the median of its resampled rounds,
    each run's ratio against the exhaustive front recomputed; returns the p10 and p90 of each run's ratio."""
    cols = [c for c in common.columns if c.startswith("round") and c.endswith("_ms")]
    table = common[cols].to_numpy(float)
    index = {k: i for i, k in enumerate(common.key)}
    rng = np.random.default_rng(0)
    ratios: dict[str, list[float]] = {run: [] for run in keys_of_run}
    for _ in range(resamples):
        lat = np.median(table[:, rng.integers(0, len(cols), len(cols))], axis=1)
        ref_lat = 1.1 * float(lat.max())
        def hv(keys):
            return hypervolume(np.array([accuracy[k] for k in keys]), np.array([lat[index[k]] for k in keys]), ref_acc, ref_lat)
        whole = hv(exhaustive)
        for run, keys in keys_of_run.items():
            ratios[run].append(hv(keys) / whole)
    return {run: (float(np.percentile(r, 10)), float(np.percentile(r, 90))) for run, r in ratios.items()}


def analyse(all_trials: pd.DataFrame, common: pd.DataFrame, walls: dict[str, float], facts: dict, threads) -> pd.DataFrame:
    """One row per run from every run's trials (``all_trials`` with a ``run`` column) and the common latencies of
    their placements (:func:`common_timings`). The exhaustive front is the run labelled "exhaustive front" (every
    member of a predicted front timed); the hypervolume's reference point is the least accurate candidate timed and
    1.1 x the slowest common latency, the same for every run."""
    done = all_trials[(all_trials.state == "COMPLETE") & all_trials.accuracy.notna()]
    if "duplicate_of" in done:
        done = done[done.duplicate_of.isna()]
    latency = dict(zip(common.key, common.common_ms.astype(float)))
    accuracy = {key_of(spec): float(a) for spec, a in zip(done.spec, done.accuracy)}
    keys = sorted({key_of(spec) for spec in done[done.run == "exhaustive front"].spec})
    ref_acc, ref_lat = float(done.accuracy.min()), 1.1 * max(latency.values())
    own_ref_lat = 1.1 * float(done.latency_ms.max())
    ex_acc, ex_lat = np.array([accuracy[k] for k in keys]), np.array([latency[k] for k in keys])
    hv_exhaustive = hypervolume(ex_acc, ex_lat, ref_acc, ref_lat)
    own = done[done.run == "exhaustive front"]
    own_hv_exhaustive = hypervolume(own.accuracy.to_numpy(float), own.latency_ms.to_numpy(float), ref_acc, own_ref_lat)
    fronts = {run: {key_of(spec) for spec in measured_front(part).spec} for run, part in all_trials.groupby("run", sort=False)}
    def cover(keys: set[str], by: set[str]) -> float:
        """The share of ``keys``' points that a point of ``by`` matches within noise on the common latencies."""
        ks, bs = sorted(keys), sorted(by)
        return coverage_within_noise(np.array([accuracy[k] for k in bs]), np.array([latency[k] for k in bs]),
                                     np.array([accuracy[k] for k in ks]), np.array([latency[k] for k in ks]))

    band = ratio_band({run: [key_of(spec) for spec in part.spec] for run, part in done.groupby("run", sort=False)},
                      accuracy, common, ref_acc, keys)
    rows = []
    for run, part in done.groupby("run", sort=False):
        at_common = np.array([latency[key_of(spec)] for spec in part.spec])
        hv = hypervolume(part.accuracy.to_numpy(float), at_common, ref_acc, ref_lat)
        own_hv = hypervolume(part.accuracy.to_numpy(float), part.latency_ms.to_numpy(float), ref_acc, own_ref_lat)
        covered = coverage_within_noise(part.accuracy.to_numpy(float), at_common, ex_acc, ex_lat)
        others = [o for o in fronts if o != run and o.startswith("front seed")]
        overlaps = [len(fronts[run] & fronts[o]) / max(len(fronts[run]), len(fronts[o]), 1) for o in others]
        # the fronts' agreement where ties within noise may differ: each front's points matched by the other's (at
        # least as accurate, at most NOISE_FLOOR slower on the common latencies), both ways, averaged
        within = [0.5 * (cover(fronts[run], fronts[o]) + cover(fronts[o], fronts[run])) for o in others]
        own_lat = part.latency_ms.to_numpy(float)
        beyond = pareto_mask_within_noise(part.accuracy.to_numpy(float), own_lat, part.latency_p10_ms.to_numpy(float),
                                          part.latency_p90_ms.to_numpy(float))
        rows.append({"run": run, "sampler": "tpe" if run.startswith("tpe") else "front", "distinct_candidates": len(part),
                     "wall_s": walls.get(run), "exhaustive_front_members_timed": len(set(map(key_of, part.spec)) & set(keys)),
                     "hypervolume": round(hv, 5), "hypervolume_vs_exhaustive": round(hv / hv_exhaustive, 4) if hv_exhaustive else float("nan"),
                     "hypervolume_vs_exhaustive_p10": round(band[run][0], 4),
                     "hypervolume_vs_exhaustive_p90": round(band[run][1], 4),
                     "exhaustive_front_covered_within_noise": round(covered, 3),
                     "own_timings_hypervolume_vs_exhaustive": round(own_hv / own_hv_exhaustive, 4) if own_hv_exhaustive else float("nan"),
                     "front": len(fronts[run]), "front_beyond_noise": int(beyond.sum()),
                     "front_side_by_side": bool((part.latency_source == "measured side by side").all()) if "latency_source" in part else False,
                     "front_overlap_with_front_runs": round(float(np.mean(overlaps)), 3) if overlaps else float("nan"),
                     "front_overlap_within_noise": round(float(np.mean(within)), 3) if within else float("nan"),
                     "exhaustive_front": len(keys), "front_placements": " ".join(sorted(fronts[run])),
                     "cpu": facts["cpu"], "isa": facts["isa"], "threads": threads, "date": time.strftime("%Y-%m-%d")})
    return pd.DataFrame(rows)


def cli_search(label: str, extra: list[str], cache: Path, root: Path, args, walls: dict[str, float]) -> pd.DataFrame:
    """``labnas search`` in its own process with labnas' cache at ``cache``; its trials, labelled ``label``; its wall
    time (process start to exit) in ``walls``."""
    import subprocess

    from labnas.results import load_results

    study = label.replace(" ", "-")
    command = [sys.executable, "-c", "import sys; from labnas.cli import main; sys.exit(main())", "search",
               "--budget-ms", f"{args.budget_ms:g}", "--space", args.space, "--study", study, "--results", str(root), *extra]
    if args.threads:
        command += ["--threads", str(args.threads)]
    start = time.perf_counter()
    done = subprocess.run(command, env={**os.environ, "LABNAS_CACHE": str(cache)}, capture_output=True, text=True)
    walls[label] = round(time.perf_counter() - start, 1)
    if done.returncode != 0:
        raise SystemExit(f"{label}: labnas search failed:\n{done.stderr[-2000:]}")
    print(f"{label}: {walls[label]:.0f} s", file=sys.stderr, flush=True)
    return load_results(root / study).trials.assign(run=label)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--space", default="bireal18_placement")
    p.add_argument("--budget-ms", type=float, default=20.0)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--tpe-trials", type=int, default=14)
    p.add_argument("--threads", type=int)
    p.add_argument("--out", default="results/benchmarks/bench_search.csv")
    p.add_argument("--retime-rounds", type=int, default=40, help="paired rounds of the common timing")
    p.add_argument("--reanalyse", action="store_true", help="recompute the rows from the saved trials (no search)")
    p.add_argument("--retime", action="store_true", help="with --reanalyse: time the saved trials' placements again")
    args = p.parse_args(argv)
    space = load_space(args.space)
    out = Path(args.out)
    trials_path = out.with_name(out.stem + "_trials.csv")
    common_path = out.with_name(out.stem + "_common.csv")
    facts = machine_facts(args.threads or os.cpu_count())
    print(f"{facts['cpu']} ({facts['isa']}), threads {args.threads or 'all'}", file=sys.stderr, flush=True)
    if args.reanalyse:
        all_trials = pd.read_csv(trials_path)
        walls = dict(zip(*pd.read_csv(out)[["run", "wall_s"]].T.values))
        common = common_timings(timed_specs(all_trials), space, args.threads, args.retime_rounds) if args.retime else pd.read_csv(common_path)
    else:
        parts, walls = [], {}
        with tempfile.TemporaryDirectory(prefix="labnas-bench-search-") as tmp:
            runs = [(f"front seed {s}", ["--seed", str(s)], Path(tmp) / f"cache{s}") for s in args.seeds]
            last_cache = runs[-1][2]
            for label, extra, cache in runs:
                parts.append(cli_search(label, extra, cache, Path(tmp), args, walls))
            os.environ["LABNAS_CACHE"] = str(last_cache)  # the exhaustive front of the table the last run built
            config = SearchConfig(budget_ms=args.budget_ms, target=TARGETS["host"], threads=args.threads)
            table, _ = front_table(space, config)
            table_size = len(predict_space(space, table, make_estimator(space, config, None)).front())
            parts.append(cli_search("exhaustive front", ["--trials", str(table_size)], last_cache, Path(tmp), args, walls))
            parts.append(cli_search("tpe seed 0", ["--sampler", "tpe", "--trials", str(args.tpe_trials)], last_cache, Path(tmp), args, walls))
            all_trials = pd.concat(parts)
            common = common_timings(timed_specs(all_trials), space, args.threads, args.retime_rounds)
        out.parent.mkdir(parents=True, exist_ok=True)
        all_trials.to_csv(trials_path, index=False)
    common.to_csv(common_path, index=False)
    df = analyse(all_trials, common, walls, facts, args.threads or os.cpu_count())
    df.to_csv(out, index=False)
    print(df.drop(columns=["front_placements", "cpu", "isa"]).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
