"""What each LAB map costs next to the sign packing it replaces, in context, against the FMA ceiling.

For each LAB map of LAB-BNN at 224 (64 @ 56, 128 @ 28, 256 @ 14, 512 @ 7; 3x3, official pairing), the small network
of :class:`labnas.tvm.lab_context.LabContext` (a float producer, then the LAB kernels) is compiled with every LAB
candidate of :func:`labnas.tvm.lab_candidates`, and two baselines: the producer alone and the producer followed by
the sign packing. All are timed interleaved (``--rounds`` rounds, the median per variant) with the thread count the
networks run with. Reported per map: each variant's microseconds per call, its cost over the sign packing, and the
time LAB's multiply-adds would take at this CPU's measured FMA ceiling (``benchmarks/fma_ceiling.py``'s
measurement, run here first), so the LAB kernels' efficiency reads off one row.

    python benchmarks/lab_context_costs.py             # -> results/benchmarks/lab_context_costs.csv
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import date
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from fma_ceiling import measure_ceiling  # noqa: E402

from labnas.timing import machine_facts  # noqa: E402
from labnas.tvm import TARGETS, LabContext, LabShape, lab_candidates, parse_lab_strategy  # noqa: E402

#: LAB-BNN's LAB maps at 224 (channels, height = width); its binary convs pad with 0 and compare strictly.
MAPS = ((64, 56), (128, 28), (256, 14), (512, 7))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--out", default=str(ROOT / "results" / "benchmarks" / "lab_context_costs.csv"))
    args = p.parse_args()
    os.environ["TVM_NUM_THREADS"] = str(args.threads)
    facts = machine_facts(args.threads)
    target = TARGETS["host"]
    ceiling = measure_ceiling()["both" if args.threads > 1 else "one"]  # MAC/s
    print(f"{facts['cpu']} ({facts['isa']}); {args.threads} threads; FMA ceiling {ceiling / 1e9:.1f} GMAC/s", file=sys.stderr)
    rows = []
    for channels, size in MAPS:
        shape = LabShape(channels, size, size, 3, 2, 1, 0, True, True)
        context = LabContext(shape, target)
        timers = {"producer": context.timer(context.build_baseline(False), baseline=True),
                  "sign packing": context.timer(context.build_baseline(True), baseline=True)}
        for strategy in lab_candidates(shape, target.vector_lanes):
            timers[strategy] = context.timer(context.build(*parse_lab_strategy(strategy)))
        times: dict[str, list[float]] = {name: [] for name in timers}
        for _ in range(args.rounds):
            for name, timer in timers.items():
                times[name].append(timer() * 1e6)
        median = {name: float(np.median(v)) for name, v in times.items()}
        at_ceiling = shape.work / ceiling * 1e6
        for name, us in median.items():
            lab = name not in ("producer", "sign packing")
            over_sign = us - median["sign packing"] if lab else np.nan
            rows.append({**facts, "lab_map": f"{channels} @ {size}x{size}", "variant": name, "us_per_call": round(us, 1),
                         "lab_cost_us": round(over_sign, 1) if lab else np.nan,
                         "lab_at_ceiling_us": round(at_ceiling, 1) if lab else np.nan,
                         "kernel_efficiency": round(at_ceiling / (us - median["producer"]), 3) if lab else np.nan,
                         "rounds": args.rounds, "date": date.today().isoformat()})
            print(f"{channels} @ {size}: {name:24s} {us:7.1f} us", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(args.out, index=False)
    print(f"rows: {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
