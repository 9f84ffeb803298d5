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
import itertools
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--space", default="bireal18_placement")
    p.add_argument("--budget-ms", type=float, default=20.0)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--tpe-trials", type=int, default=14)
    p.add_argument("--threads", type=int)
    p.add_argument("--out", default="results/benchmarks/bench_search.csv")
    args = p.parse_args(argv)
    space = load_space(args.space)
    facts = machine_facts(args.threads or os.cpu_count())
    print(f"{facts['cpu']} ({facts['isa']}), threads {args.threads or 'all'}", file=sys.stderr, flush=True)
    runs, all_trials = [], []
    with tempfile.TemporaryDirectory(prefix="labnas-bench-search-") as tmp:
        for label, sampler, seed in [*((f"front seed {s}", "front", s) for s in args.seeds), ("tpe seed 0", "tpe", 0)]:
            config = SearchConfig(budget_ms=args.budget_ms, objectives=space.objectives, target=TARGETS["host"],
                                  threads=args.threads, seed=seed, sampler=sampler)
            start = time.perf_counter()
            trials = None if sampler == "front" else args.tpe_trials  # front: the whole predicted front
            run = run_search(space, config, f"run-{sampler}-{seed}", Path(tmp), n_trials=trials, progress=False)
            wall = time.perf_counter() - start
            trials = run.results.trials
            all_trials.append(trials.assign(run=label))
            front = measured_front(trials)
            runs.append({"run": label, "sampler": sampler, "seed": seed, "wall_s": round(wall, 1), "trials": trials,
                         "front_keys": {key_of(spec) for spec in front.spec},
                         "distinct": int(((trials.state == "COMPLETE") & trials.duplicate_of.isna()).sum())
                         if "duplicate_of" in trials else int((trials.state == "COMPLETE").sum())})
            print(f"{label}: {runs[-1]['distinct']} distinct candidates, front {len(front)}, {wall:.0f} s", file=sys.stderr, flush=True)
        estimator = make_estimator(space, SearchConfig(budget_ms=args.budget_ms), None)
        table, _ = front_table(space, SearchConfig(budget_ms=args.budget_ms, target=TARGETS["host"], threads=args.threads))
        predicted = predict_space(space, table, estimator)
    # the exhaustive front, each point at its measured latency (median over the runs that timed it)
    measured: dict[str, list[float]] = {}
    for r in runs:
        done = r["trials"][r["trials"].state == "COMPLETE"]
        for spec, latency in zip(done.spec, done.latency_ms):
            measured.setdefault(key_of(spec), []).append(float(latency))
    exhaustive = predicted.front()
    keys = [spec_key(predicted.layers(int(n))) for n in exhaustive]
    timed = [(predicted.accuracy[n], float(np.median(measured[k]))) for n, k in zip(exhaustive, keys) if k in measured]
    ref_acc, ref_lat = float(predicted.accuracy.min()), float(predicted.latency_ms.max())
    ex_acc, ex_lat = np.array([a for a, _ in timed]), np.array([l for _, l in timed])
    hv_exhaustive = hypervolume(ex_acc, ex_lat, ref_acc, ref_lat)
    rows = []
    fronts = [r for r in runs if r["sampler"] == "front"]
    for r in runs:
        f = measured_front(r["trials"])
        hv = hypervolume(f.accuracy.to_numpy(float), f.latency_ms.to_numpy(float), ref_acc, ref_lat)
        overlaps = [len(r["front_keys"] & o["front_keys"]) / max(len(r["front_keys"]), len(o["front_keys"]), 1)
                    for o in fronts if o is not r]
        rows.append({"run": r["run"], "sampler": r["sampler"], "seed": r["seed"], "distinct_candidates": r["distinct"],
                     "wall_s": r["wall_s"], "front_size": len(f), "hypervolume": round(hv, 5),
                     "hypervolume_vs_exhaustive": round(hv / hv_exhaustive, 4) if hv_exhaustive else float("nan"),
                     "front_overlap_with_front_runs": round(float(np.mean(overlaps)), 3) if overlaps else float("nan"),
                     "exhaustive_front": len(exhaustive), "exhaustive_front_timed": len(timed), "space_size": len(predicted.accuracy),
                     "front_placements": " ".join(sorted(r["front_keys"])),
                     "cpu": facts["cpu"], "isa": facts["isa"], "threads": args.threads or os.cpu_count(),
                     "date": time.strftime("%Y-%m-%d")})
    df = pd.DataFrame(rows)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out, index=False)
    pd.concat(all_trials).to_csv(out.with_name(out.stem + "_trials.csv"), index=False)  # every run's trials, for re-analysis
    pairs = [len(a["front_keys"] & b["front_keys"]) / max(len(a["front_keys"]), len(b["front_keys"]), 1)
             for a, b in itertools.combinations(fronts, 2)]
    print(df.drop(columns=["front_placements", "cpu", "isa"]).to_string(index=False))
    print(f"front runs: pairwise front overlap {', '.join(f'{x:.2f}' for x in pairs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
