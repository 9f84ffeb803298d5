"""Simulated latency of the published families on each board's CPU model: where does a 20 ms budget cut?

Each family at 3x224x224, all-sign and all-LAB (3x3), is compiled for the board's core (TVM's ``mcpu``) and
simulated on its CPU model (:mod:`labnas.simulation`) with the board's cores as threads, and with one thread.
Nothing here runs on a board: every figure is a simulation, labelled as such in the CSV.

    python benchmarks/simulated_boards.py --out results/benchmarks/simulated_boards.csv
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

from labnas.models import create_model, default_spec
from labnas.simulation import CPU_MODELS, simulate
from labnas.tvm import TARGETS, compile_model

FAMILIES = ("labbnn", "quicknet", "bireal18", "xnornet_alexnet", "reactnet_mbv1")
#: board target preset -> its CPU model
BOARDS = {"rpi4": "cortex-a72", "rpi5": "cortex-a76", "a55": "cortex-a55", "jetson-nx": "carmel"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--boards", nargs="+", default=list(BOARDS), choices=list(BOARDS))
    p.add_argument("--families", nargs="+", default=list(FAMILIES))
    p.add_argument("--out", default="results/benchmarks/simulated_boards.csv")
    args = p.parse_args(argv)
    out = Path(args.out)
    rows = pd.read_csv(out).to_dict("records") if out.exists() else []
    done = {(r["board"], r["family"], r["binarizer"]) for r in rows}
    for board in args.boards:
        target, cpu = TARGETS[board], CPU_MODELS[BOARDS[board]]
        for family in args.families:
            for binarizer in ("sign", "lab"):
                if (board, family, binarizer) in done:
                    continue
                start = time.perf_counter()
                compiled = compile_model(create_model(default_spec(family, binarizer)).eval(), (1, 3, 224, 224), target)
                all_cores = simulate(compiled, cpu, threads=cpu.cores)
                one = simulate(compiled, cpu, threads=1)
                memory = sum(k.calls * k.memory_ms(cpu, cpu.cores) for k in all_cores.kernels
                             if k.memory_ms(cpu, cpu.cores) > k.compute_ms(cpu))
                rows.append({"board": board, "cpu_model": cpu.name, "family": family, "binarizer": binarizer,
                             "threads": cpu.cores, "simulated_ms": round(all_cores.ms, 3), "simulated_1thread_ms": round(one.ms, 3),
                             "dram_bound_ms": round(memory, 3), "clock_ghz": cpu.clock_ghz, "scheduling_model": cpu.mca_cpu,
                             "source": "simulated", "date": time.strftime("%Y-%m-%d")})
                pd.DataFrame(rows).to_csv(out, index=False)  # row by row: an interrupted run resumes
                print(f"{board} {family} all-{binarizer}: {all_cores.ms:.2f} ms on {cpu.cores} threads, {one.ms:.2f} ms on 1 "
                      f"({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)
    df = pd.DataFrame(rows)
    wide = df.pivot_table(index=["board", "family"], columns="binarizer", values="simulated_ms")
    wide["lab_overhead_pct"] = (100 * (wide["lab"] / wide["sign"] - 1)).round(1)
    print(wide.to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
