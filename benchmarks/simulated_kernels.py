"""How close the AArch64 binary convs come to the core's popcount ceiling, by simulation (no board).

For each binary conv kernel (``labnas_xnor*``) of Bi-Real-18 at 3x224x224 compiled for each board's core: its
binary MACs, its simulated cycles on one core (all tasks' work, so the figure is per-core efficiency), and the
fraction of the core's ceiling (:func:`labnas.simulation._cycles.popcount_ceiling`: the ideal EOR/CNT/UADALP loop
through llvm-mca's model). Per layer shape; written to ``results/benchmarks/simulated_kernels.csv``.

    python benchmarks/simulated_kernels.py
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

from labnas.models import create_model, default_spec
from labnas.simulation import CPU_MODELS, simulate
from labnas.simulation import popcount_ceiling
from labnas.simulation import kernel_calls
from labnas.tvm import TARGETS, compile_model

BOARDS = {"rpi4": "cortex-a72", "rpi5": "cortex-a76", "a55": "cortex-a55", "jetson-nx": "carmel"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--family", default="bireal18")
    p.add_argument("--boards", nargs="+", default=list(BOARDS), choices=list(BOARDS))
    p.add_argument("--out", default="results/benchmarks/simulated_kernels.csv")
    args = p.parse_args(argv)
    rows = []
    for board in args.boards:
        target, cpu = TARGETS[board], CPU_MODELS[BOARDS[board]]
        compiled = compile_model(create_model(default_spec(args.family, "sign")).eval(), (1, 3, 224, 224), target)
        sim = simulate(compiled, cpu, threads=1)
        calls = {c.name: c for c in kernel_calls(compiled.lowered, compiled.executable)}
        ceiling = popcount_ceiling("aarch64", cpu.mca_cpu)
        for k in sim.kernels:
            if not k.name.startswith("labnas_xnor"):
                continue
            packed, weights, out = calls[k.name].args[:3]
            kh, kw, words, cout = weights.shape
            _, _, ho, wo = out.shape
            macs = kh * kw * words * 64 * cout * ho * wo
            rows.append({"board": board, "cpu_model": cpu.name, "scheduling_model": cpu.mca_cpu, "family": args.family,
                         "kernel": k.name, "calls": k.calls, "shape": f"{words * 64}->{cout} {kh}x{kw} @{ho}x{wo}",
                         "binary_macs": macs, "cycles_1core": round(k.work_cycles), "macs_per_cycle": round(macs / k.work_cycles, 1),
                         "ceiling_macs_per_cycle": round(ceiling, 1), "fraction_of_ceiling": round(macs / k.work_cycles / ceiling, 3),
                         "source": "simulated", "date": time.strftime("%Y-%m-%d")})
            print(rows[-1], file=sys.stderr, flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(out, index=False)
    print(pd.DataFrame(rows)[["board", "shape", "calls", "macs_per_cycle", "ceiling_macs_per_cycle", "fraction_of_ceiling"]].to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
