"""What LAB costs on this CPU: LAB-BNN (or another family) at 224, all-sign vs LAB variants, TVM-compiled.

Each configuration is compiled once and checked against PyTorch; then all are timed round-robin
(``--rounds`` rounds, each the median of ``--repeat`` x ``--number`` calls; see
:func:`labnas.timing.compare.round_robin`) so that slow drifts of a shared machine hit every configuration
alike. Reported: the median over rounds, the median of the per-round ratios to all-sign (``vs_all_sign``;
drift cancels within a round) and the ratio of the medians (``vs_all_sign_of_medians``).

    python benchmarks/lab_overhead.py                       # labbnn, writes results/benchmarks/lab_overhead.csv
    python benchmarks/lab_overhead.py --family bireal18 --rounds 7
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from labnas.timing import machine_facts, paired_ratio, round_robin, tvm_runner  # noqa: E402
from labnas.models import create_model, default_spec  # noqa: E402
from labnas.tvm import TARGETS, compile_model  # noqa: E402
from labnas.timing import verify  # noqa: E402


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
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--number", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="results/benchmarks/lab_overhead.csv")
    args = p.parse_args(argv)

    shape = (1, 3, args.input, args.input)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    calls = {}
    for name, spec in configurations(args.family).items():
        start = time.perf_counter()
        compiled = compile_model(create_model(spec).eval(), shape, TARGETS["host"], threads=args.threads)
        verify(compiled)  # against PyTorch (see labnas.timing.measure)
        calls[name], _ = tvm_runner(compiled, x, args.threads)
        print(f"compiled {name} in {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    rounds = round_robin(calls, args.rounds, args.repeat, args.number, progress="configurations")
    base_name = "all sign, conv 3x3"
    base = float(np.median(rounds[base_name]))
    facts = machine_facts(args.threads)
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
                "vs_all_sign": round(paired_ratio(rounds, name, base_name), 3),
                "vs_all_sign_of_medians": round(med / base, 3),
                "rounds": len(values),
                **facts,
            }
        )
    df = pd.DataFrame(rows)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out, index=False)
    print(df[["configuration", "median_ms", "min_ms", "max_ms", "vs_all_sign", "vs_all_sign_of_medians"]].to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
