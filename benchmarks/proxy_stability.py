"""Does the default trained accuracy estimator train every family it may be asked to search?

Every family in ``labnas.models`` x {all-sign, all-LAB} x 3 seeds, trained by the estimator that
``labnas.accuracy.build_estimator`` makes from the default space's ``[proxy]`` settings (forced to the
trained estimator: the published one trains nothing). Prints and writes accuracy per run, mean and spread
(max - min) per (family, binarizer) to ``results/benchmarks/proxy_stability.csv``. A run that diverges or
ends below twice chance is recorded with that reason, not as an accuracy.

    python benchmarks/proxy_stability.py [--space labbnn] [--seeds 0 1 2] [--families quicknet ...]
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from labnas.accuracy import build_estimator  # noqa: E402
from labnas.models import FAMILIES, default_spec  # noqa: E402
from labnas.space import load_space  # noqa: E402
from labnas.train import TrainingFailed  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "results" / "benchmarks" / "proxy_stability.csv"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--space", default="labbnn", help="the space whose [proxy] settings are used (default labbnn)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    settings = load_space(args.space).proxy.replace(estimator="trained", seeds=1)
    rows, data = [], None
    for family in args.families:
        estimator = build_estimator(family, settings, data=data)
        data = estimator.data
        for binarizer in ("sign", "lab"):
            layers = default_spec(family, binarizer).layers
            accs = []
            for seed in args.seeds:
                start = time.process_time()
                try:
                    acc, status = 100 * estimator.estimate(layers, seed=seed).accuracy, "ok"
                except TrainingFailed as err:
                    acc, status = float("nan"), err.reason
                accs.append(acc)
                rows.append({"family": family, "binarizer": binarizer, "seed": seed, "accuracy_pct": round(acc, 2),
                             "status": status, "cpu_s": round(time.process_time() - start, 1)})
            ok = [a for a in accs if a == a]
            spread = max(ok) - min(ok) if len(ok) == len(accs) else float("nan")
            print(f"{family:16s} {binarizer:5s} runs {', '.join(f'{a:.1f}' for a in accs)}  mean {np.mean(accs):.1f}  "
                  f"spread {spread:.1f} pts", flush=True)
    print(f"estimator: {estimator.describe()}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with OUT.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
