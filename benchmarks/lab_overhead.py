"""What LAB costs on this CPU: LAB-BNN (or another family) at 224, all-sign vs LAB variants, TVM-compiled.

Each configuration is compiled once; then all are timed round-robin (``--rounds`` rounds, each a
``time_evaluator`` median of ``--repeat`` x ``--number`` runs) so that slow drifts of a shared machine
hit every configuration alike. Reported: the median over rounds and the ratio to all-sign.

    python benchmarks/lab_overhead.py                       # labbnn, writes results/benchmarks/lab_overhead.csv
    python benchmarks/lab_overhead.py --family bireal18 --rounds 7
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from labnas.models import create_model, default_spec
from labnas.tvm import TARGETS, compile_model, measure


def configurations(family: str) -> dict[str, object]:
    def spec(binarizer: str, lab_kernel: int = 3, conv_kernel: int = 3):
        s = default_spec(family, binarizer, lab_kernel=lab_kernel)
        for layer, slot_kernel in zip(s.layers, [l.kernel for l in s.layers]):
            layer.kernel = conv_kernel if slot_kernel == 3 else slot_kernel
        return s

    return {
        "all sign, conv 3x3": spec("sign"),
        "all LAB 3x3, conv 3x3": spec("lab", 3),
        "all LAB 5x5, conv 3x3": spec("lab", 5),
        "all LAB 7x7, conv 3x3": spec("lab", 7),
        "all sign, conv 5x5": spec("sign", 3, 5),
        "all LAB 7x7, conv 5x5": spec("lab", 7, 5),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--family", default="labbnn")
    p.add_argument("--input", type=int, default=224)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--number", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="results/benchmarks/lab_overhead.csv")
    args = p.parse_args(argv)

    shape = (1, 3, args.input, args.input)
    compiled = {}
    for name, spec in configurations(args.family).items():
        start = time.perf_counter()
        compiled[name] = compile_model(create_model(spec).eval(), shape, TARGETS["host"])
        print(f"compiled {name} in {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    rounds: dict[str, list[float]] = {name: [] for name in compiled}
    for r in range(args.rounds):
        for name, model in compiled.items():
            res = measure(model, number=args.number, repeat=args.repeat, threads=args.threads)
            rounds[name].append(res.median_ms)
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    base = float(np.median(rounds["all sign, conv 3x3"]))
    rows = []
    for name, values in rounds.items():
        med = float(np.median(values))
        rows.append(
            {
                "family": args.family,
                "configuration": name,
                "median_ms": round(med, 3),
                "min_ms": round(min(values), 3),
                "max_ms": round(max(values), 3),
                "vs_all_sign": round(med / base, 3),
                "rounds": len(values),
                "threads": args.threads,
                "cpu": platform.processor() or platform.machine(),
            }
        )
    df = pd.DataFrame(rows)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out, index=False)
    print(df[["configuration", "median_ms", "min_ms", "max_ms", "vs_all_sign"]].to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
