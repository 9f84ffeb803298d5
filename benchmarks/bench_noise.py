"""Does drift correction hold on a busy machine? One fixed network timed in quiet and loaded phases.

Three scenarios, each in its own process (thread pools and CPU affinity start fresh), each a quiet phase
then a loaded phase (the benchmark starts the competitor itself, bounded in time, and stops it by pid):

- ``timeshared``: TVM on one thread pinned to CPU 0; the competitor spins on CPU 0 too at nice 5, so the
  scheduler gives TVM about 3/4 of the core in time slices: a steady, uniform slowdown (about 1.3x), the case
  drift correction is for.
- ``memory``: TVM on one thread pinned to CPU 0; the competitor streams a large array through memory on CPU 1
  (a neighbour sharing the last-level cache and memory bandwidth, not the core).
- ``oversubscribed``: TVM on every core; the competitor spins on the last CPU (a core TVM's pool needs).

The network is a candidate (by default LAB-BNN all-LAB at 224). Every measurement is :func:`labnas.timing.measure`
paired with a reference workload, as a search trial is, once with each of the two references the product uses,
alternating: the family's all-sign network (``baseline``, what a search pairs its candidates with) and the small
conv pair (``conv pair``, what latency tables and ``labnas profile`` use). Each row has the raw median and the
drift-corrected figure side by side, and whether it was re-timed (attempts > 1) or refused as disturbed. The
calibrations are taken fresh at the start of each scenario (quiet), not read from the cache.

    python benchmarks/bench_noise.py                 # writes results/benchmarks/bench_noise.csv
    python benchmarks/bench_noise.py --scenarios oversubscribed   # one scenario again; the others' rows are kept

Run it on an otherwise idle machine (pause other jobs): it is its own competitor.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from labnas.models import create_model, default_spec  # noqa: E402
from labnas.timing import CONV_PAIR, CalibratedReference, ReferenceTimer, baseline_workload, measure  # noqa: E402
from labnas.timing import calibrate  # noqa: E402
from labnas.timing import machine_facts  # noqa: E402
from labnas.timing import TimingDisturbed  # noqa: E402
from labnas.tvm import TARGETS, compile_model  # noqa: E402

#: Competitor programs (python -c), each running until killed or ``limit`` seconds.
COMPETITORS = {
    "timeshared": "import time, sys; end = time.time() + float(sys.argv[1])\nwhile time.time() < end: pass",
    "memory": "import numpy as np, time, sys; a = np.ones(2**24); b = np.empty_like(a); end = time.time() + float(sys.argv[1])\n"
            "while time.time() < end: np.copyto(b, a); np.copyto(a, b)",
    "oversubscribed": "import time, sys; end = time.time() + float(sys.argv[1])\nwhile time.time() < end: pass",
}


#: Competitors' nice values (a time-sharing competitor at nice 5 gets 335 / (1024 + 335) of the core under CFS).
NICE = {"timeshared": 5}


def start_competitor(kind: str, cpu: int, limit_s: float) -> subprocess.Popen:
    niceness = NICE.get(kind, 0)
    proc = subprocess.Popen([sys.executable, "-c", COMPETITORS[kind], str(limit_s)], preexec_fn=lambda: os.nice(niceness))
    try:
        os.sched_setaffinity(proc.pid, {cpu})
    except OSError:
        pass
    time.sleep(0.5)  # let it reach its steady state
    return proc


def phase(compiled, references: dict[str, CalibratedReference], measurements: int, args) -> list[dict]:
    """``measurements`` rounds; in each, one paired measurement against every reference, one after the other."""
    rows = []
    for _ in range(measurements):
        for name, reference in references.items():
            try:
                r = measure(compiled, number=args.number, repeat=args.repeat, threads=reference.timer.runner.threads,
                            reference=reference)
                rows.append({"reference": name, "raw_ms": r.raw_median_ms, "corrected_ms": r.median_ms,
                             "reference_ms": r.reference_ms, "calibrated_ms": reference.ms, "attempts": r.attempts,
                             "refused": False, "reason": ""})
            except TimingDisturbed as err:
                rows.append({"reference": name, "raw_ms": np.nan, "corrected_ms": np.nan, "reference_ms": np.nan,
                             "calibrated_ms": reference.ms, "attempts": 3, "refused": True,
                             "reason": str(err).split(" in all")[0]})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--family", default="labbnn")
    p.add_argument("--binarizer", default="lab", choices=["sign", "lab"], help="the candidate: every binary layer this")
    p.add_argument("--input", type=int, default=224)
    p.add_argument("--measurements", type=int, default=6, help="measurements per phase")
    p.add_argument("--repeat", type=int, default=7, help="paired rounds per measurement")
    p.add_argument("--number", type=int, default=5)
    p.add_argument("--scenarios", nargs="+", default=list(COMPETITORS), choices=list(COMPETITORS))
    p.add_argument("--out", default="results/benchmarks/bench_noise.csv",
                   help="the CSV; rows of scenarios not run this time are kept")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # one scenario, in its own process
    args = p.parse_args(argv)
    cores = os.cpu_count() or 1
    if cores < 2:
        print("bench_noise needs 2 or more CPUs (the competitor runs beside TVM)", file=sys.stderr)
        return 2
    target = TARGETS["host"]
    spec = default_spec(args.family, args.binarizer)
    model = create_model(spec).eval()
    shape = (1, 3, args.input, args.input)
    if not args.child:  # one process per scenario: TVM's pool keeps the affinity it started with
        frames = []
        for scenario in args.scenarios:
            part = Path(args.out).with_suffix(f".{scenario}.part.csv")
            same = ["--family", args.family, "--binarizer", args.binarizer, "--input", str(args.input), "--measurements", str(args.measurements),
                    "--repeat", str(args.repeat), "--number", str(args.number)]
            subprocess.run([sys.executable, __file__, *same, "--scenarios", scenario, "--out", str(part), "--child"],
                           check=True)
            frames.append(pd.read_csv(part))
            part.unlink()
        df = pd.concat(frames, ignore_index=True)
        if Path(args.out).exists():  # keep the scenarios not run this time
            kept = pd.read_csv(args.out)
            df = pd.concat([kept[~kept.scenario.isin(args.scenarios)], df], ignore_index=True)
        df.to_csv(args.out, index=False)
        print(summary(df).to_string(index=False))
        print(f"wrote {args.out}")
        return 0
    compiled = compile_model(model, shape, target)
    rows = []
    for scenario in args.scenarios:
        threads = cores if scenario == "oversubscribed" else 1
        if threads == 1:
            os.sched_setaffinity(0, {0})  # TVM's one worker on CPU 0
        competitor_cpu = 0 if scenario == "timeshared" else cores - 1
        references = {}
        for name, workload in (("baseline", baseline_workload(spec, shape[1:])), ("conv pair", CONV_PAIR)):
            timer = ReferenceTimer(target, threads, workload=workload)
            calibrated = calibrate(timer.time_once)
            references[name] = CalibratedReference(timer, calibrated, timer.key(target.name), "measured")
            print(f"{scenario}: {threads} TVM thread(s), {workload.name} calibrated at {calibrated:.3f} ms", file=sys.stderr)
        for load in ("quiet", "loaded"):
            competitor = start_competitor(scenario, competitor_cpu, 600) if load == "loaded" else None
            try:
                for row in phase(compiled, references, args.measurements, args):
                    rows.append({"scenario": scenario, "phase": load, "threads": threads, **row})
                    print(f"  {load} ({row['reference']}): raw {row['raw_ms']:.3f} ms, corrected {row['corrected_ms']:.3f} ms, attempts {row['attempts']}"
                          + (f", refused: {row['reason']}" if row["refused"] else ""), file=sys.stderr, flush=True)
            finally:
                if competitor is not None:
                    competitor.kill()
                    competitor.wait()
    df = pd.DataFrame(rows)
    facts = machine_facts(0)
    for key in ("cpu", "isa", "cores", "tvm"):
        df[key] = facts[key]
    df["network"] = f"{args.family} all-{'LAB' if args.binarizer == 'lab' else 'sign'} {args.input}"
    df["date"] = time.strftime("%Y-%m-%d")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out, index=False)
    print(summary(df).to_string(index=False))
    print(f"wrote {out}")
    return 0


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per scenario and reference: the quiet and loaded medians of raw and corrected latency, their change,
    re-timings, refusals."""
    out = []
    for (scenario, reference), g in df.groupby(["scenario", "reference"], sort=False):
        quiet, loaded = g[g.phase == "quiet"], g[g.phase == "loaded"]
        row = {"scenario": scenario, "reference": reference}
        for col in ("raw_ms", "corrected_ms"):
            q, l = quiet[col].median(), loaded[col].median()
            row[f"{col} quiet"], row[f"{col} loaded"], row[f"{col} change %"] = round(q, 3), round(l, 3), round(100 * (l / q - 1), 1)
        row["loaded re-timed"] = int((loaded.attempts > 1).sum())
        row["loaded refused"] = int(loaded.refused.sum())
        row["loaded measurements"] = len(loaded)
        out.append(row)
    return pd.DataFrame(out)


if __name__ == "__main__":
    sys.exit(main())
