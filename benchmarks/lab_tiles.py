"""Where LAB's speed comes from: LAB-BNN at 224, all-LAB 3x3 compiled with each family of LAB kernels, timed
side by side against all-sign in one process.

Configurations (each a measured choice among the LAB candidates of :func:`labnas.tvm.strategy.lab_candidates`,
restricted to some kinds of tile):

- ``whole-map padding``: ``fused`` and ``two`` tiles only, whose zero-padded LAB input is a pass over the
  whole map before the decision kernel;
- ``padded near``: every kind, with ``near`` / ``fused-near`` tiles, where each channel pair (or each packed
  word) pads the input maps it reads right before it sweeps them;
- and the all-sign network, the reference of LAB's overhead.

The strategies are measured with the thread count the networks run with, into a cache of this run's own
(``LABNAS_CACHE`` in a temporary folder), so nothing measured earlier on the machine decides. All networks
are checked against PyTorch, then timed round-robin (:func:`labnas.timing.compare.round_robin`): the
median of the per-round ratios cancels drifts of a shared host.

Each run adds its rows to the CSV (with its date and ``core_round_trip_ns``, the placement of the vCPUs it
ran under): the comparison differs between placements, so runs are kept side by side.

    python benchmarks/lab_tiles.py             # adds a run to results/benchmarks/lab_tiles.csv
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ["LABNAS_CACHE"] = tempfile.mkdtemp(prefix="labnas-lab-tiles-")  # before labnas reads it

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from labnas.models import create_model, default_spec  # noqa: E402
from labnas.timing import machine_facts, paired_ratio, round_robin, tvm_runner  # noqa: E402
from labnas.timing import verify  # noqa: E402
from labnas.tvm import TARGETS, LabPolicy, SchedulePolicy, compile_model  # noqa: E402
from labnas.tvm import strategy_counts  # noqa: E402

#: configuration -> the kinds of LAB tile its chooser may pick (None: every kind)
KINDS = {"all sign": None, "all LAB 3x3, whole-map padding": ("fused", "two"), "all LAB 3x3, padded near": None}


def compile_with(kinds: tuple[str, ...] | None, binarizer: str, family: str, shape, threads: int):
    """The network compiled with LAB tiles of ``kinds`` only (:class:`labnas.tvm.LabPolicy`). The xnor
    choices are shared by all configurations (one measurement, this run's cache); a restricted LAB choice is cached
    under its own key, so the unrestricted configuration measures its own."""
    return compile_model(create_model(default_spec(family, binarizer)).eval(), shape, TARGETS["host"], threads=threads,
                         policy=SchedulePolicy(lab=LabPolicy(kinds=kinds)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--family", default="labbnn")
    p.add_argument("--input", type=int, default=224)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--number", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="results/benchmarks/lab_tiles.csv")
    p.add_argument("--fresh", action="store_true", help="replace the file's earlier runs instead of adding to them")
    args = p.parse_args(argv)

    shape = (1, 3, args.input, args.input)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    calls, strategies = {}, {}
    for name, kinds in KINDS.items():
        compiled = compile_with(kinds, "sign" if name == "all sign" else "lab", args.family, shape, args.threads)
        verify(compiled)
        calls[name], _ = tvm_runner(compiled, x, args.threads)
        strategies[name] = strategy_counts([d for d in compiled.strategies if d.shape.startswith("lab")])
        print(f"{name}: {strategies[name]}", file=sys.stderr)
    facts = machine_facts(args.threads)
    times = round_robin(calls, args.rounds, args.repeat, args.number, progress="configurations")
    rows = []
    for name, series in times.items():
        rows.append({
            "family": args.family, "configuration": name, "median_ms": round(float(np.median(series)), 3),
            "min_ms": round(float(np.min(series)), 3), "max_ms": round(float(np.max(series)), 3),
            "vs_all_sign": round(paired_ratio(times, name, "all sign"), 3), "lab_strategies": strategies[name],
            "rounds": args.rounds, "date": time.strftime("%Y-%m-%d %H:%M"), **facts,
        })
    run = pd.DataFrame(rows)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    kept = pd.read_csv(out) if out.exists() and not args.fresh else None  # runs accumulate: placements differ
    pd.concat([kept, run], ignore_index=True).to_csv(out, index=False)
    print(run[["configuration", "median_ms", "min_ms", "max_ms", "vs_all_sign", "core_round_trip_ns", "lab_strategies"]]
          .to_string(index=False))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
