"""Simulated against measured latency on this x86 host: does the simulator rank and size networks right?

The same AVX2 build (target ``x86``) of each network is simulated (:mod:`labnas.simulation`: block counts from
one run under qemu-x86_64, cycles from llvm-mca's model of the core LLVM detects here) and timed on this machine
(paired with the reference workload, drift-corrected, ``--passes`` passes over all networks, the lowest kept).
Networks: the five published families at 3x224x224 all-sign and all-LAB, and ``--per-space`` random candidates of
the ``bireal18`` and ``labbnn`` spaces. Also one row per kernel (one instrumented run against the kernel's
simulated time).

Reported: Kendall tau and Spearman between simulated and measured, the mean absolute error of the simulation at
the host's nominal clock, and after one fitted scale (the median of measured / simulated, which absorbs the
turbo clock a VM does not report; stated in the summary row).

    python benchmarks/bench_simulation.py --out results/benchmarks/bench_simulation.csv
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from scipy.stats import kendalltau, spearmanr  # noqa: E402

from labnas.models import create_model, default_spec  # noqa: E402
from labnas.simulation import host_cpu_model, simulate  # noqa: E402
from labnas.space import load_space  # noqa: E402
from labnas.timing import reference_for  # noqa: E402
from labnas.timing import machine_facts  # noqa: E402
from labnas.timing import measure, measure_in_passes  # noqa: E402
from labnas.tvm import TARGETS, compile_model  # noqa: E402

FAMILIES = ("labbnn", "quicknet", "bireal18", "xnornet_alexnet", "reactnet_mbv1")


def networks(per_space: int, seed: int):
    """``(label, space, spec)`` of every network the benchmark compares."""
    for family in FAMILIES:
        for binarizer in ("sign", "lab"):
            yield f"{family} all-{binarizer}", "", default_spec(family, binarizer)
    for name in ("bireal18", "labbnn"):
        space = load_space(name)
        for n, layers in enumerate(space.random_distinct(random.Random(f"{seed}-{name}"), per_space), 1):
            yield f"{name} #{n}", name, space.deploy_spec(layers)


def summary(df: pd.DataFrame, scale: float) -> dict:
    meas, sim = df.measured_ms.to_numpy(), df.simulated_ms.to_numpy()
    err = np.abs(sim / meas - 1)
    err_scaled = np.abs(scale * sim / meas - 1)
    return {"n": len(df), "kendall_tau": round(float(kendalltau(meas, sim).statistic), 3),
            "spearman": round(float(spearmanr(meas, sim).statistic), 3),
            "mae_pct_unscaled": round(100 * float(err.mean()), 2),
            "fitted_scale": round(scale, 4), "mae_pct_scaled": round(100 * float(err_scaled.mean()), 2),
            "max_err_pct_scaled": round(100 * float(err_scaled.max()), 2),
            "within_10pct_scaled": round(float(np.mean(err_scaled <= 0.10)), 3)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--per-space", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--passes", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="results/benchmarks/bench_simulation.csv")
    args = p.parse_args(argv)
    target = TARGETS["x86"]
    cpu = host_cpu_model()
    facts = machine_facts(args.threads)
    print(f"{facts['cpu']} ({facts['isa']}); build {target.name} ({target.config['mcpu']}); model {cpu.describe()}; "
          f"{args.threads} threads", file=sys.stderr, flush=True)
    reference = reference_for(target, args.threads)
    rows, compiled = [], []
    for label, space, spec in networks(args.per_space, args.seed):
        start = time.perf_counter()
        model = create_model(spec).eval()
        built = compile_model(model, (1, 3, 224, 224), target, threads=args.threads)
        sim = simulate(built, cpu, threads=args.threads)
        compiled.append(built)
        rows.append({"network": label, "space": space, "n_lab": spec.n_lab, "simulated_ms": round(sim.ms, 4),
                     "kernels_simulated_now": sim.simulated_now, "_sim": sim})
        print(f"{label}: simulated {sim.ms:.3f} ms ({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)
    timings = measure_in_passes(compiled, args.passes, threads=args.threads, reference=reference,
                                progress=lambda p_, i: print(f"pass {p_ + 1}: timed {i + 1}/{len(compiled)}", file=sys.stderr, flush=True)
                                if i + 1 == len(compiled) else None)
    kernel_rows = []
    for row, built, results in zip(rows, compiled, timings):
        best = min(results, key=lambda r: r.median_ms)
        row.update(measured_ms=round(best.median_ms, 4), passes_ms=" ".join(f"{r.median_ms:.4f}" for r in results),
                   measured_raw_ms=round(best.raw_median_ms, 4))
        profiled = measure(built, threads=args.threads, number=1, repeat=3, profile_kernels=True)
        sim = row.pop("_sim")
        simulated = {k.name: k.calls * k.ms(cpu, args.threads) for k in sim.kernels}
        for name, ms, calls, binary in profiled.kernels:
            if name in simulated:
                kernel_rows.append({"network": row["network"], "kernel": name, "calls": calls, "binary": binary,
                                    "measured_ms": round(ms, 4), "simulated_ms": round(simulated[name], 4)})
    df = pd.DataFrame(rows)
    scale = float(np.median(df.measured_ms / df.simulated_ms))
    df["simulated_scaled_ms"] = (scale * df.simulated_ms).round(4)
    df["error_pct_scaled"] = (100 * (df.simulated_scaled_ms / df.measured_ms - 1)).round(2)
    for key in ("cpu", "isa", "threads", "core_round_trip_ns"):
        df[key] = facts[key]
    df["build"] = f"{target.name} ({target.config['mcpu']})"
    df["cpu_model"] = cpu.describe()
    df["date"] = time.strftime("%Y-%m-%d")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out, index=False)
    kdf = pd.DataFrame(kernel_rows)
    kdf["simulated_scaled_ms"] = (scale * kdf.simulated_ms).round(4)
    kdf.to_csv(out.with_name(out.stem + "_kernels.csv"), index=False)
    report = [{"scope": "all", **summary(df, scale)}]
    report += [{"scope": "published families", **summary(df[df.space == ""], scale)}]
    report += [{"scope": name, **summary(part, scale)} for name, part in df[df.space != ""].groupby("space")]
    report_df = pd.DataFrame(report)
    report_df.to_csv(out.with_name(out.stem + "_summary.csv"), index=False)
    print(df[["network", "measured_ms", "simulated_ms", "simulated_scaled_ms", "error_pct_scaled"]].to_string(index=False))
    print(report_df.to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
