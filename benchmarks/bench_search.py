"""Is the main command's front the true one, the same every run? The front search against TPE, on this machine.

Runs the default search (``labnas search --budget-ms 20``: the ``bireal18_placement`` space, published estimator,
sampler ``front``) ``--seeds`` times into temporary folders (the block table is built by the first run and reused,
as a user's second run would), and the same search with TPE as it was before (``--sampler tpe``, 14 trials). For
each run: distinct candidates timed, wall time, the measured front's placements, and its hypervolume against the
exhaustive front, i.e. the predicted front of all 65,536 placements, each point at its measured latency (the median
over the runs that timed it) and its accuracy. Between the front runs: the share of placements their fronts have in
common. One row per run in ``results/benchmarks/bench_search.csv``.

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
from labnas.search import SearchConfig, load_space, run_search  # noqa: E402
from labnas.search.objective import spec_key  # noqa: E402
from labnas.search.front import hypervolume, pareto_mask_within_noise, predict_space  # noqa: E402
from labnas.search.study import front_table, make_estimator  # noqa: E402
from labnas.timing.compare import machine_facts  # noqa: E402
from labnas.tvm import TARGETS  # noqa: E402


def key_of(spec_json: str) -> str:
    """The placement of a trial's spec (:func:`labnas.search.objective.spec_key` of its layers)."""
    return spec_key(ArchSpec.from_json(spec_json).layers)


def measured_front(trials: pd.DataFrame) -> pd.DataFrame:
    """The run's front on (accuracy, measured latency), latencies ordered only beyond their noise (the front search's
    own rule, :func:`labnas.search.front.pareto_mask_within_noise`)."""
    done = trials[(trials.state == "COMPLETE") & trials.accuracy.notna()]
    if "duplicate_of" in done:
        done = done[done.duplicate_of.isna()]
    return done[pareto_mask_within_noise(done.accuracy.to_numpy(float), done.latency_ms.to_numpy(float),
                                         done.latency_p10_ms.to_numpy(float), done.latency_p90_ms.to_numpy(float))]


def analyse(all_trials: pd.DataFrame, walls: dict[str, float], space, table, estimator, facts: dict, threads) -> pd.DataFrame:
    """One row per run from every run's trials (``all_trials`` with a ``run`` column)."""
    predicted = predict_space(space, table, estimator)
    done = all_trials[all_trials.state == "COMPLETE"]
    measured: dict[str, list[float]] = {}
    for spec, latency in zip(done.spec, done.latency_ms):
        measured.setdefault(key_of(spec), []).append(float(latency))
    # the exhaustive front: the predicted front of the whole space, each point at its measured latency (median over runs)
    exhaustive = predicted.front()
    keys = [spec_key(predicted.layers(int(n))) for n in exhaustive]
    timed = [(predicted.accuracy[n], float(np.median(measured[k]))) for n, k in zip(exhaustive, keys) if k in measured]
    ref_acc, ref_lat = float(predicted.accuracy.min()), float(predicted.latency_ms.max())
    hv_exhaustive = hypervolume(np.array([a for a, _ in timed]), np.array([l for _, l in timed]), ref_acc, ref_lat)
    fronts = {run: {key_of(spec) for spec in measured_front(part).spec} for run, part in all_trials.groupby("run", sort=False)}
    rows = []
    for run, part in all_trials.groupby("run", sort=False):
        ok = part[(part.state == "COMPLETE") & part.accuracy.notna()]
        distinct = ok[ok.duplicate_of.isna()] if "duplicate_of" in ok else ok
        hv = hypervolume(distinct.accuracy.to_numpy(float), distinct.latency_ms.to_numpy(float), ref_acc, ref_lat)
        others = [o for o in fronts if o != run and o.startswith("front")]
        overlaps = [len(fronts[run] & fronts[o]) / max(len(fronts[run]), len(fronts[o]), 1) for o in others]
        rows.append({"run": run, "sampler": run.split()[0], "distinct_candidates": len(distinct), "wall_s": walls.get(run),
                     "exhaustive_front_members_timed": len(set(map(key_of, distinct.spec)) & set(keys)),
                     "hypervolume": round(hv, 5), "hypervolume_vs_exhaustive": round(hv / hv_exhaustive, 4) if hv_exhaustive else float("nan"),
                     "front_within_noise": len(fronts[run]), "front_overlap_with_front_runs": round(float(np.mean(overlaps)), 3) if overlaps else float("nan"),
                     "exhaustive_front": len(exhaustive), "space_size": len(predicted.accuracy),
                     "front_placements": " ".join(sorted(fronts[run])),
                     "cpu": facts["cpu"], "isa": facts["isa"], "threads": threads, "date": time.strftime("%Y-%m-%d")})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--space", default="bireal18_placement")
    p.add_argument("--budget-ms", type=float, default=20.0)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--tpe-trials", type=int, default=14)
    p.add_argument("--threads", type=int)
    p.add_argument("--out", default="results/benchmarks/bench_search.csv")
    p.add_argument("--reanalyse", action="store_true", help="recompute the rows from the saved trials (no search)")
    args = p.parse_args(argv)
    space = load_space(args.space)
    out = Path(args.out)
    trials_path = out.with_name(out.stem + "_trials.csv")
    facts = machine_facts(args.threads or os.cpu_count())
    print(f"{facts['cpu']} ({facts['isa']}), threads {args.threads or 'all'}", file=sys.stderr, flush=True)
    if args.reanalyse:
        all_trials = pd.read_csv(trials_path)
        walls = dict(zip(*pd.read_csv(out)[["run", "wall_s"]].T.values))
    else:
        parts, walls = [], {}
        with tempfile.TemporaryDirectory(prefix="labnas-bench-search-") as tmp:
            for label, sampler, seed in [*((f"front seed {s}", "front", s) for s in args.seeds), ("tpe seed 0", "tpe", 0)]:
                config = SearchConfig(budget_ms=args.budget_ms, objectives=space.objectives, target=TARGETS["host"],
                                      threads=args.threads, seed=seed, sampler=sampler)
                start = time.perf_counter()
                trials = None if sampler == "front" else args.tpe_trials  # front: the whole predicted front
                run = run_search(space, config, f"run-{sampler}-{seed}", Path(tmp), n_trials=trials, progress=False)
                walls[label] = round(time.perf_counter() - start, 1)
                parts.append(run.results.trials.assign(run=label))
                print(f"{label}: {walls[label]:.0f} s", file=sys.stderr, flush=True)
        all_trials = pd.concat(parts)
        out.parent.mkdir(parents=True, exist_ok=True)
        all_trials.to_csv(trials_path, index=False)
    config = SearchConfig(budget_ms=args.budget_ms, target=TARGETS["host"], threads=args.threads)
    table, _ = front_table(space, config)
    df = analyse(all_trials, walls, space, table, make_estimator(space, config, None), facts, args.threads or os.cpu_count())
    df.to_csv(out, index=False)
    print(df.drop(columns=["front_placements", "cpu", "isa"]).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
