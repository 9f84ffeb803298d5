"""Does drift correction hold on a busy machine? One fixed network timed in quiet and loaded phases.

Three scenarios, each in its own process (thread pools and CPU affinity start fresh), each a quiet phase
then a loaded phase (the benchmark starts the competitor itself, bounded in time, and stops it by pid):

- ``timeshared``: TVM on one thread pinned to CPU 0; the competitor spins on CPU 0 too at nice 5, so the
  scheduler gives TVM about 3/4 of the core in time slices: a steady, uniform slowdown (about 1.3x), the case
  drift correction is for.
- ``memory``: TVM on one thread pinned to CPU 0; the competitor streams a large array through memory on CPU 1
  (a neighbour sharing the last-level cache and memory bandwidth, not the core).
- ``oversubscribed``: TVM on every core; the competitor spins on the last CPU (a core TVM's pool needs).

Every measurement is :func:`labnas.timing.measure` paired with the reference workload (as a search trial
is): the raw median and the drift-corrected figure side by side, and whether it was re-timed (attempts > 1)
or refused as disturbed. The calibration is taken fresh at the start (quiet), not read from the cache.

    python benchmarks/bench_noise.py                 # writes results/benchmarks/bench_noise.csv
    python benchmarks/bench_noise.py --measurements 4 --phase-s 60

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
from labnas.timing import CalibratedReference, ReferenceTimer, measure  # noqa: E402
from labnas.timing.calibration import calibrate, calibration_key  # noqa: E402
from labnas.timing.compare import machine_facts  # noqa: E402
from labnas.timing.paired import TimingDisturbed  # noqa: E402
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


def phase(compiled, reference: CalibratedReference, measurements: int, args) -> list[dict]:
    rows = []
    for _ in range(measurements):
        try:
            r = measure(compiled, number=args.number, repeat=args.repeat, threads=reference.timer.runner.threads,
                        reference=reference)
            rows.append({"raw_ms": r.raw_median_ms, "corrected_ms": r.median_ms, "reference_ms": r.reference_ms,
                         "attempts": r.attempts, "refused": False, "reason": ""})
        except TimingDisturbed as err:
            rows.append({"raw_ms": np.nan, "corrected_ms": np.nan, "reference_ms": np.nan, "attempts": 3, "refused": True,
                         "reason": str(err).split(" in all")[0]})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--family", default="labbnn")
    p.add_argument("--input", type=int, default=224)
    p.add_argument("--measurements", type=int, default=6, help="measurements per phase")
    p.add_argument("--repeat", type=int, default=7, help="paired rounds per measurement")
    p.add_argument("--number", type=int, default=5)
    p.add_argument("--scenarios", nargs="+", default=list(COMPETITORS), choices=list(COMPETITORS))
    p.add_argument("--out", default="results/benchmarks/bench_noise.csv")
    args = p.parse_args(argv)
    cores = os.cpu_count() or 1
    if cores < 2:
        print("bench_noise needs 2 or more CPUs (the competitor runs beside TVM)", file=sys.stderr)
        return 2
    target = TARGETS["host"]
    model = create_model(default_spec(args.family, "sign")).eval()
    shape = (1, 3, args.input, args.input)
    if len(args.scenarios) > 1:  # one process per scenario: TVM's pool keeps the affinity it started with
        frames = []
        for scenario in args.scenarios:
            part = Path(args.out).with_suffix(f".{scenario}.part.csv")
            same = ["--family", args.family, "--input", str(args.input), "--measurements", str(args.measurements),
                    "--repeat", str(args.repeat), "--number", str(args.number)]
            subprocess.run([sys.executable, __file__, *same, "--scenarios", scenario, "--out", str(part)], check=True)
            frames.append(pd.read_csv(part))
            part.unlink()
        df = pd.concat(frames, ignore_index=True)
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
        timer = ReferenceTimer(target, threads)
        calibrated = calibrate(timer.time_once)
        reference = CalibratedReference(timer, calibrated, calibration_key(target.name, timer.runner.threads), "measured")
        print(f"{scenario}: {threads} TVM thread(s), reference calibrated at {calibrated:.3f} ms", file=sys.stderr)
        for load in ("quiet", "loaded"):
            competitor = start_competitor(scenario, competitor_cpu, 600) if load == "loaded" else None
            try:
                for row in phase(compiled, reference, args.measurements, args):
                    rows.append({"scenario": scenario, "phase": load, "threads": threads, "calibrated_ms": calibrated, **row})
                    print(f"  {load}: raw {row['raw_ms']:.3f} ms, corrected {row['corrected_ms']:.3f} ms, attempts {row['attempts']}"
                          + (f", refused: {row['reason']}" if row["refused"] else ""), file=sys.stderr, flush=True)
            finally:
                if competitor is not None:
                    competitor.kill()
                    competitor.wait()
    df = pd.DataFrame(rows)
    facts = machine_facts(0)
    for key in ("cpu", "isa", "cores", "tvm"):
        df[key] = facts[key]
    df["network"] = f"{args.family} all-sign {args.input}"
    df["date"] = time.strftime("%Y-%m-%d")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out, index=False)
    print(summary(df).to_string(index=False))
    print(f"wrote {out}")
    return 0


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per scenario: the quiet and loaded medians of raw and corrected latency, their change, re-timings, refusals."""
    out = []
    for scenario, g in df.groupby("scenario", sort=False):
        quiet, loaded = g[g.phase == "quiet"], g[g.phase == "loaded"]
        row = {"scenario": scenario}
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
