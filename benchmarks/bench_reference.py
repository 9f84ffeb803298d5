"""Which reference workload follows the host's slowdowns: the small conv pair or the space's own all-sign network?

Paired timing divides a candidate's time by a reference's time taken in the same rounds; the ratio is only as
steady as the reference is slowed by the same things as the candidate. This script compiles a few random
candidates of a space, the conv pair (``labnas.timing.CONV_PAIR``) and the space's all-sign network
(``labnas.timing.baseline_workload``), then for ``--minutes`` repeats measurements of each candidate: 7 rounds,
each timing the candidate, the conv pair and the baseline back to back (the conv pair over a window as long as
the candidate's, as ``labnas.timing.measure`` does). Per measurement it records the raw median and the median of
each ratio. The summary gives, per candidate and figure, the coefficient of variation across measurements and
the share of measurements within 5 % of the candidate's median: the steadier figure is the better reference.

Run it on the machine as it is (other tenants and all): the point is how each figure copes with the host's own
drift. Rows go to ``results/benchmarks/bench_reference.csv``.

    python benchmarks/bench_reference.py                     # bireal18_placement, 3 candidates, 6 minutes
    python benchmarks/bench_reference.py --space labbnn --minutes 10
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from labnas.models import create_model  # noqa: E402
from labnas.search import load_space  # noqa: E402
from labnas.timing import CONV_PAIR, ReferenceTimer, baseline_workload  # noqa: E402
from labnas.timing import VmRunner  # noqa: E402
from labnas.tvm import compile_model  # noqa: E402
from labnas.tvm import cpu_model, isa_summary  # noqa: E402
from labnas.tvm import resolve_target  # noqa: E402

ROUNDS = 7


def timer_of(model, shape, target, threads):
    """A function ``number -> ms per run`` for ``model`` compiled for ``target`` and run here."""
    runner = VmRunner.local(compile_model(model.eval(), shape, target, threads=threads).executable, threads)
    x = runner.tensor(np.random.default_rng(0).standard_normal(shape).astype("float32"))
    return lambda number: 1e3 * runner.time_runs([x], number, 1)[0]


def summarise(df: pd.DataFrame) -> pd.DataFrame:
    """Per candidate and figure: coefficient of variation (%) and share of measurements within 5 % of the median."""
    out = []
    for (cand, figure), s in df.melt(id_vars=["candidate"], value_vars=["raw_ms", "ratio_conv_pair", "ratio_baseline"],
                                    var_name="figure").groupby(["candidate", "figure"]).value:
        out.append({"candidate": cand, "figure": figure, "measurements": len(s),
                    "cv_pct": round(100 * s.std() / s.mean(), 2),
                    "within_5pct": round(100 * float((abs(s / s.median() - 1) <= 0.05).mean()), 1)})
    return pd.DataFrame(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--space", default="bireal18_placement")
    p.add_argument("--candidates", type=int, default=3)
    p.add_argument("--minutes", type=float, default=6.0)
    p.add_argument("--threads", type=int, default=None, help="TVM threads (default: every core)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", default="results/benchmarks/bench_reference.csv")
    args = p.parse_args(argv)

    space, target = load_space(args.space), resolve_target("host")
    threads = args.threads or os.cpu_count()
    shape = (1, *space.deploy_input)
    print(f"{cpu_model()} ({' '.join(isa_summary())}); {space.name}, {args.candidates} candidates, {threads} TVM threads, "
          f"{args.minutes:g} minutes", flush=True)
    rng = random.Random(f"reference-{args.seed}")
    candidates = [timer_of(create_model(space.deploy_spec(space.random_layers(rng))), shape, target, threads)
                  for _ in range(args.candidates)]
    baseline = baseline_workload(space.deploy_spec(space.default_layers()), space.deploy_input)
    big = timer_of(baseline.build(), baseline.shape, target, threads)
    small = ReferenceTimer(target, threads, workload=CONV_PAIR)
    rows, start = [], time.time()
    try:
        while time.time() - start < 60 * args.minutes:
            for i, cand in enumerate(candidates):
                window = cand(3) * 3  # warm-up, and the candidate's window per round (ms)
                small_number = max(3, math.ceil(max(2.0, window) / small.time_once(3)))
                r = np.array([(cand(3), small.time_once(small_number), big(3)) for _ in range(ROUNDS)])
                rows.append({"t_s": round(time.time() - start, 1), "candidate": i, "raw_ms": float(np.median(r[:, 0])),
                             "conv_pair_ms": float(np.median(r[:, 1])), "baseline_ms": float(np.median(r[:, 2])),
                             "ratio_conv_pair": float(np.median(r[:, 0] / r[:, 1])),
                             "ratio_baseline": float(np.median(r[:, 0] / r[:, 2]))})
            print(f"\r{time.time() - start:6.0f} s, {len(rows)} measurements", end="", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        print("\ninterrupted: summarising what was measured", file=sys.stderr)
    print(file=sys.stderr)
    df = pd.DataFrame(rows)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(args.out, index=False)
    summary = summarise(df)
    print(summary.to_string(index=False))
    print(summary.groupby("figure")[["cv_pct", "within_5pct"]].median().to_string())
    print(f"rows in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
