"""Which way should the float kernels split their work between threads: by image rows or by channels?

The convs and the binary kernels split an NCHW map between threads by output rows; the element-wise kernels
(BatchNorm, residual add), the max pool and the LAB kernels can split it by rows too, or by channels
(:attr:`labnas.tvm.SchedulePolicy.partition`, an argument of ``compile_model``). Split by channels, a thread reads about half of every map from
rows the other thread wrote: free when the two CPUs share a cache, a cross-core transfer when a VM's host puts
its vCPUs on cores that share none (:mod:`labnas.timing.core_latency`). Each network is compiled both ways and
the builds are timed round-robin in one process (``--rounds`` rounds), every round preceded by a probe of the
CPUs' round trip; reported per network and placement: both medians and the median of the per-round ratios
(rows / channels; below 1: rows faster). Outputs are checked against PyTorch for both builds.

    python benchmarks/bench_partition.py        # writes results/benchmarks/bench_partition.csv
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from labnas.models import create_model, default_spec  # noqa: E402
from labnas.timing import machine_facts, paired_ratio, round_robin, tvm_runner  # noqa: E402
from labnas.timing import PROBE_ROUNDS, core_round_trip_ns, placement_labels  # noqa: E402
from labnas.timing import verify  # noqa: E402
from labnas.tvm import PARTITIONS, TARGETS, SchedulePolicy, compile_model  # noqa: E402

NETWORKS = {"bireal18 all-sign": ("bireal18", "sign"), "bireal18 all-LAB": ("bireal18", "lab"),
            "labbnn all-sign": ("labbnn", "sign"), "labbnn all-LAB": ("labbnn", "lab")}


def build(family: str, binarizer: str, partition: str, threads: int | None):
    """The network compiled with the element-wise, pool and LAB kernels split by ``partition``, checked against PyTorch."""
    compiled = compile_model(create_model(default_spec(family, binarizer)).eval(), (1, 3, 224, 224), TARGETS["host"],
                             threads=threads, policy=SchedulePolicy(partition=partition))
    verify(compiled)
    return compiled


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="results/benchmarks/bench_partition.csv")
    args = p.parse_args(argv)
    facts = machine_facts(args.threads)
    print(f"{facts['cpu']} ({facts['isa']}), {facts['threads']} threads", file=sys.stderr)
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype("float32")
    calls = {}
    for name, (family, binarizer) in NETWORKS.items():
        for partition in PARTITIONS:
            calls[f"{name} | {partition}"], _ = tvm_runner(build(family, binarizer, partition, args.threads), x, args.threads)
    trips: list[float] = []
    rounds = round_robin(calls, rounds=args.rounds, progress="partition",
                         before_round=lambda: trips.append(core_round_trip_ns(rounds=PROBE_ROUNDS)))
    labels = placement_labels(trips)
    rows = []
    for placement in sorted(set(labels)):
        keep = [i for i, label in enumerate(labels) if label == placement]
        sub = {k: [v[i] for i in keep] for k, v in rounds.items()}
        for name in NETWORKS:
            rows_ms, chan_ms = (float(np.median(sub[f"{name} | {part}"])) for part in PARTITIONS)
            ratio = paired_ratio(sub, f"{name} | rows", f"{name} | channels")
            rows.append({"network": name, "placement": placement, "rounds": len(keep),
                         "round_trip_ns": round(float(np.median([trips[i] for i in keep])), 1),
                         "rows_ms": round(rows_ms, 3), "channels_ms": round(chan_ms, 3), "rows_over_channels": round(ratio, 3),
                         **facts, "date": date.today().isoformat()})
    df = pd.DataFrame(rows)
    print(df[["network", "placement", "rounds", "round_trip_ns", "rows_ms", "channels_ms", "rows_over_channels"]].to_string(index=False))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out, index=False)
    print(f"rows: {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
