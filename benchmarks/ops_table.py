"""BOPs / FLOPs / OPs / params of the five families at 3x224x224, sign vs LAB (the README's ops table).

    python benchmarks/ops_table.py        # writes results/ops/ops_table.csv and results/ops/ops_table.md
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from labnas.models import FAMILIES, create_model, default_spec
from labnas.ops import count_ops


def main() -> int:
    rows = []
    for family in FAMILIES:
        for binarizer in ("sign", "lab"):
            r = count_ops(create_model(default_spec(family, binarizer)), (3, 224, 224))
            rows.append(
                {
                    "family": family,
                    "binarizer": binarizer,
                    "bops": r.bops,
                    "flops": r.flops,
                    "ops": r.ops,
                    "params": r.params,
                    "counters_agree": not r.disagreements,
                }
            )
    df = pd.DataFrame(rows)
    out = Path("results/ops")
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "ops_table.csv", index=False)
    lines = ["| family | binarizer | BOPs | FLOPs | OPs | params |", "|---|---|---|---|---|---|"]
    for r in df.itertuples():
        lines.append(f"| {r.family} | {r.binarizer} | {r.bops:.3e} | {r.flops:.3e} | {r.ops:.3e} | {r.params / 1e6:.2f} M |")
    (out / "ops_table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if df.counters_agree.all() else 1


if __name__ == "__main__":
    sys.exit(main())
