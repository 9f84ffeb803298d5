"""Are the LAB strategies the chooser picks in isolation the best ones inside the network?

The kernel-strategy chooser (:mod:`labnas.tvm.strategy`) times each LAB map's candidates (fused into the packing or
not, padded per channel pair or not, register tiles) as a kernel alone, on an input one thread wrote. Inside a
network the input was written by the kernel before, split between the threads, so a tile that wins alone could
lose in context. This benchmark compiles the whole network once per (LAB shape, candidate): that shape pinned to the
candidate, every other shape at the chooser's answer, and times it round-robin with the chooser's own build
(``--rounds`` rounds, :func:`labnas.timing.compare.round_robin`; both outputs checked against PyTorch first),
reporting the median of the per-round ratios candidate / chooser. The chooser's own answer is among the candidates: its ratio is a second build of the same
network and shows the noise floor of the comparison.

    python benchmarks/bench_lab_in_network.py                 # labbnn all-LAB 3x3 at 224, 2 threads
    python benchmarks/bench_lab_in_network.py --family bireal18 --rounds 12

Rows go to ``results/benchmarks/bench_lab_in_network.csv``.
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

from labnas.models import create_model, default_spec  # noqa: E402
from labnas.timing import machine_facts, paired_ratio, round_robin, tvm_runner  # noqa: E402
from labnas.timing import PROBE_ROUNDS, core_round_trip_ns  # noqa: E402
from labnas.timing import verify  # noqa: E402
from labnas.tvm import TARGETS, compile_model  # noqa: E402
from labnas.tvm import LabPolicy, SchedulePolicy  # noqa: E402
from labnas.tvm import LabShape, lab_candidates  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--family", default="labbnn")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--out", default=str(ROOT / "results" / "benchmarks" / "bench_lab_in_network.csv"))
    args = p.parse_args()

    target, shape = TARGETS["host"], (1, 3, 224, 224)
    model = create_model(default_spec(args.family, "lab")).eval()
    x = np.random.default_rng(0).standard_normal(shape).astype("float32")
    facts = machine_facts(args.threads)
    print(f"{facts['cpu']} ({facts['isa']}); {args.family} all-LAB 3x3 at 224, {args.threads} threads", file=sys.stderr)

    def build(pins: dict[str, str]):
        """The network compiled with LAB shapes pinned (:class:`labnas.tvm.LabPolicy`), every other shape at
        the chooser's answer, checked against PyTorch: (call, LAB/xnor decisions)."""
        compiled = compile_model(model, shape, target, threads=args.threads, policy=SchedulePolicy(lab=LabPolicy(pins=pins)))
        verify(compiled)
        return tvm_runner(compiled, x, args.threads)[0], compiled.strategies

    rows = []
    chooser_call, decisions = build({})
    chosen = {d.shape: d.strategy for d in decisions if d.shape.startswith("lab ")}
    for key in chosen:  # every LAB shape of the network, as the chooser saw it
        for candidate in lab_candidates(LabShape.from_key(key), target.vector_lanes):
            candidate_call, _ = build({key: candidate})
            trips: list[float] = []
            rounds = round_robin({"candidate": candidate_call, "chooser": chooser_call}, rounds=args.rounds,
                                 before_round=lambda: trips.append(core_round_trip_ns(rounds=PROBE_ROUNDS) or np.nan))
            ratios = [c / b for c, b in zip(rounds["candidate"], rounds["chooser"])]
            row = {**facts, **dict(family=args.family, lab_shape=key, candidate=candidate, chooser=chosen.get(key),
                       is_chooser=candidate == chosen.get(key),
                       ratio_to_chooser=round(paired_ratio(rounds, "candidate", "chooser"), 4),
                       ratio_min=round(min(ratios), 4), ratio_max=round(max(ratios), 4),
                       core_round_trip_ns=round(float(np.nanmedian(trips)), 1), rounds=args.rounds,
                       date=date.today().isoformat())}  # this candidate's probe replaces the facts' one
            rows.append(row)
            mark = "  (the chooser's)" if row["is_chooser"] else ""
            print(f"{key}: {candidate:22s} {row['ratio_to_chooser']:.3f} x the chooser's build{mark}", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(args.out, index=False)
    print(f"rows: {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
