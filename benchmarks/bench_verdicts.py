"""Do budget verdicts and latencies hold from one search run to the next, and with two workers?

The same random candidates of a space (fixed seed) are run through the search itself (``run_search``: compile,
paired timing, the near-budget re-timing, the host lock) five times, each a fresh study with the candidates
enqueued:

1. ``wide``: one worker, a budget no candidate reaches, to learn every candidate's latency;
2. ``two-workers``: the same with ``--workers 2``; latencies and the trials' reference timings are compared
   with run 1 (two workers on one host must not time while the other compiles or trains);
3. ``one-worker-again``: run 1 repeated, for the host's own drift between runs (the scale of comparison 2);
4. ``verdict-a`` and 5. ``verdict-b``: one worker each, with the budget at the median latency of run 1, so
   about half the candidates sit on each side of it and many near it; the feasible / infeasible verdicts of the
   two runs are compared candidate by candidate.

The budget is taken from this machine's own run 1, never fixed in the script, since every CPU has its own
latencies. Rows (one per candidate and run) go to ``results/benchmarks/bench_verdicts.csv``; the summary is
printed. The studies live in a temporary folder.

    python benchmarks/bench_verdicts.py                      # bireal18_placement, 20 candidates
    python benchmarks/bench_verdicts.py --space bireal18 --accuracy supernet   # LAB 3/5/7 and conv kernels: spread out

The accuracy column plays no part in a verdict; ``--accuracy`` only has to cover the space's choices (``published``
knows sign vs LAB 3x3 placements; ``supernet`` trains one weight-sharing network once and scores in seconds).
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sys
import tempfile
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from labnas.search import SearchConfig, load_space, run_search  # noqa: E402
from labnas.search import layer_params, spec_key  # noqa: E402
from labnas.search import create_or_load_study, open_storage  # noqa: E402
from labnas.timing import placement_labels  # noqa: E402
from labnas.tvm import cpu_model, isa_summary  # noqa: E402


def candidate_params(space, count: int, seed: int) -> list[dict]:
    """``count`` distinct random candidates as Optuna parameters (what ``sample_layers`` would suggest)."""
    rng, seen, params = random.Random(f"verdicts-{seed}"), set(), []
    while len(params) < count:
        layers = space.random_layers(rng)
        key = spec_key(layers)
        if key in seen:
            continue
        seen.add(key)
        params.append(layer_params(space, layers))
    return params


def expected_flips(latencies_ms: np.ndarray, budget_ms: float, sigma: float) -> float:
    """Expected number of verdicts that differ between two runs when each latency is measured with a relative
    noise ``sigma`` (log-normal, independent between runs) around ``latencies_ms``: the sum over candidates of
    2 p (1 - p), p the chance one run puts the candidate over the budget. A candidate at the budget flips half
    the time whatever the method; the budget at the median of bunched candidates is the hardest case."""
    if sigma <= 0:
        return 0.0
    z = np.log(budget_ms / np.asarray(latencies_ms, dtype=float)) / sigma
    p = np.array([0.5 * math.erfc(v / math.sqrt(2)) for v in z])  # P(a measurement lands above the budget)
    return float(np.sum(2 * p * (1 - p)))


def run(space, params: list[dict], budget_ms: float, workers: int, label: str, root: Path, threads: int | None,
        accuracy: str = "published") -> pd.DataFrame:
    """One fresh study over the enqueued candidates; its trials (spec, latency, verdict, reference timing)."""
    # a supernet is trained by the first run and reused by the others (cached in the runs' temporary folder)
    config = SearchConfig(budget_ms=budget_ms, objectives="accuracy,latency", accuracy=accuracy, threads=threads,
                          cache_dir=str(root / "supernets"))
    # a journal file: workers pop enqueued trials from it one at a time (two processes on one SQLite file can both
    # take the same waiting trial)
    (root / label).mkdir(parents=True)
    storage_url = str(root / label / "journal.log")
    study = create_or_load_study(label, open_storage(storage_url, root / label), space, config)
    for p in params:
        study.enqueue_trial(p)
    result = run_search(space, config, label, root, storage_url=storage_url, n_trials=len(params), workers=workers, progress=False)
    df = result.results.trials
    df = df[df.state == "COMPLETE"].copy()
    df["run"] = label
    df["budget_ms"] = budget_ms
    if "core_round_trip_ns" not in df:  # one thread, or no C compiler: no placement probe
        df["core_round_trip_ns"] = np.nan
    return df[["run", "trial", "spec", "latency_ms", "latency_raw_ms", "reference_ms", "feasible", "budget_ms", "core_round_trip_ns"]]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--space", default="bireal18_placement")
    p.add_argument("--candidates", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="TVM threads (default: every core)")
    p.add_argument("--accuracy", default="published", choices=["published", "supernet", "trained"],
                   help="the estimator the trials use (it must cover the space's choices; it decides no verdict)")
    p.add_argument("--out", help="CSV of the rows (default results/benchmarks/bench_verdicts[_SPACE].csv)")
    args = p.parse_args(argv)
    args.out = args.out or f"results/benchmarks/bench_verdicts{'' if args.space == 'bireal18_placement' else '_' + args.space}.csv"
    space = load_space(args.space)
    params = candidate_params(space, args.candidates, args.seed)
    print(f"{cpu_model()} ({' '.join(isa_summary())}); {args.space}, {len(params)} candidates", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        wide = run(space, params, 1e6, 1, "wide", root, args.threads, args.accuracy)
        if len(wide) < len(params):
            print(f"run 1 timed {len(wide)} of {len(params)} candidates (the others failed: see above); the comparisons need "
                  "them all: run it on a quiet machine", file=sys.stderr)
            return 1
        budget = float(np.median(wide.latency_ms))
        print(f"run 1: latencies {wide.latency_ms.min():.3f} .. {wide.latency_ms.max():.3f} ms; budget for the verdict runs "
              f"{budget:.3f} ms (their median)", file=sys.stderr)
        two = run(space, params, 1e6, 2, "two-workers", root, args.threads, args.accuracy)
        again = run(space, params, 1e6, 1, "one-worker-again", root, args.threads, args.accuracy)
        a = run(space, params, budget, 1, "verdict-a", root, args.threads, args.accuracy)
        b = run(space, params, budget, 1, "verdict-b", root, args.threads, args.accuracy)
    rows = pd.concat([wide, two, again, a, b], ignore_index=True)
    trips = rows.core_round_trip_ns.astype(float)
    rows["placement"] = placement_labels([None if np.isnan(t) else t for t in trips])
    rows["date"] = date.today().isoformat()
    wide, two, again, a, b = (rows[rows.run == label] for label in ("wide", "two-workers", "one-worker-again", "verdict-a", "verdict-b"))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows.to_csv(out, index=False)

    both = wide.merge(two, on="spec", suffixes=("_one", "_two"))
    lat_dev = 100 * (both.latency_ms_two / both.latency_ms_one - 1)
    ref_dev = 100 * (both.reference_ms_two / both.reference_ms_one - 1)
    # the host's own drift between runs, for scale: the one-worker run repeated after the two-worker run
    ones = wide.merge(again, on="spec", suffixes=("_one", "_again"))
    drift = 100 * (ones.latency_ms_again / ones.latency_ms_one - 1)
    print(f"one worker, run again: latency within 5 %: {np.mean(np.abs(drift) <= 5):.0%} (median {np.median(drift):+.1f} %, "
          f"largest {drift.abs().max():.1f} %): the drift any comparison between runs carries")
    verdicts = a.merge(b, on="spec", suffixes=("_a", "_b"))
    same = (verdicts.feasible_a.astype(bool) == verdicts.feasible_b.astype(bool))
    near = (np.abs(verdicts.latency_ms_a / budget - 1) <= 0.10)
    print(f"two workers vs one: {len(both)} candidates, latency within 5 %: {np.mean(np.abs(lat_dev) <= 5):.0%} "
          f"(median {np.median(lat_dev):+.1f} %, largest {lat_dev.abs().max():.1f} %); reference timings within 5 %: "
          f"{np.mean(np.abs(ref_dev) <= 5):.0%} (median {np.median(ref_dev):+.1f} %)")
    alike = (both.placement_one == both.placement_two).to_numpy()
    print(f"  reference timings within 5 % where both runs timed with the vCPUs placed alike: {np.sum(np.abs(ref_dev[alike]) <= 5)} "
          f"of {alike.sum()}; placed differently: {np.sum(np.abs(ref_dev[~alike]) <= 5)} of {(~alike).sum()}")
    print(f"verdicts at {budget:.3f} ms, run A vs run B: {same.sum()} of {len(verdicts)} the same ({same.mean():.0%}); "
          f"{int(near.sum())} candidates within 10 % of the budget; feasible {int(verdicts.feasible_a.sum())} (A) / "
          f"{int(verdicts.feasible_b.sum())} (B)")
    for row in verdicts[~same].itertuples():
        print(f"  flipped: {row.latency_ms_a:.3f} ms (A, {'feasible' if row.feasible_a else 'over'}, CPUs {row.placement_a}) vs "
              f"{row.latency_ms_b:.3f} ms (B, CPUs {row.placement_b})")
    sigma = float(np.std(np.log(ones.latency_ms_again / ones.latency_ms_one))) / np.sqrt(2)
    print(f"run-to-run noise of one latency (wide vs again): {100 * sigma:.1f} %; flips expected from it alone at this budget: "
          f"{expected_flips(wide.latency_ms.to_numpy(), budget, sigma):.1f} of {len(wide)}")
    print(f"placements (core round trip): {rows.groupby('run').placement.agg(lambda p: ', '.join(f'{k} {v}' for k, v in p.value_counts().items())).to_dict()}")
    print(f"rows: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
