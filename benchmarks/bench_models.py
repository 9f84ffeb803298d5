"""Whole networks at 3x224x224, batch 1: labnas BNNs (TVM) against fp32 ResNet-18 in torch and onnxruntime.

Contenders: ``bireal18`` and ``labbnn``, all-sign and all-LAB (3x3), compiled by labnas for this CPU;
torch fp32 ResNet-18 eager (oneDNN) and onnxruntime fp32 ResNet-18. All run in this process with the
same thread count and are timed round-robin (``--rounds`` rounds; medians over rounds) so a drift of the
machine's speed hits all of them alike. Reported: each network's median, its speedup over the fp32
ResNet-18 in torch and in onnxruntime, and LAB's overhead over all-sign per family: the median of the
per-round ratios (``lab_overhead_pct``; drift cancels within a round) and, for comparison, the ratio of
the two medians (``lab_overhead_pct_of_medians``).

Every round starts with a probe of the round trip of a cache line between the two CPUs
(:mod:`labnas.timing.core_latency`). On a VM whose host moves the vCPUs between cores that share a cache and
cores that do not, a run that saw both placements gets one set of rows per placement (``placement`` near /
apart, their rounds only), since the two are different machines for multi-threaded code; a run that saw one
placement has ``placement`` = one.

    python benchmarks/bench_models.py            # writes results/benchmarks/bench_models.csv
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from labnas.timing import (  # noqa: E402
    machine_facts,
    onnxruntime_runner,
    paired_ratio,
    round_robin,
    torch_runner,
    tvm_runner,
)
from labnas.timing import PROBE_ROUNDS, core_round_trip_ns, placement_labels  # noqa: E402
from labnas.models import create_model, default_spec  # noqa: E402
from labnas.models import resnet18_fp32  # noqa: E402
from labnas.tvm import TARGETS, compile_model  # noqa: E402
from labnas.timing import verify  # noqa: E402

BNNS = {  # contender: (family, binarizer)
    "bireal18 all-sign": ("bireal18", "sign"),
    "bireal18 all-LAB": ("bireal18", "lab"),
    "labbnn all-sign": ("labbnn", "sign"),
    "labbnn all-LAB": ("labbnn", "lab"),
}


def _kernel_facts(compiled, x: np.ndarray, threads: int) -> dict:
    """The popcount strategies the binary convs use, and the largest non-binary kernel's share of the
    summed kernel time (median of 20 profiled runs; the profile's hook adds a little to every kernel)."""
    from labnas.timing import VmRunner, kernel_profile
    from labnas.tvm import strategy_counts

    runner = VmRunner.local(compiled.executable, threads)
    profile = kernel_profile(runner, [runner.tensor(x)], runs=20)
    total = sum(ms for _, ms, _, _ in profile)
    float_kernels = [(ms, kernel) for kernel, ms, _, binary in profile if not binary and not kernel.startswith("vm.")]
    ms, kernel = max(float_kernels)
    return {"popcount_strategies": strategy_counts(compiled.strategies), "largest_float_kernel": kernel, "largest_float_kernel_pct": round(100 * ms / total, 1)}


def _rows(rounds: dict[str, list[float]], kernels: dict, size: int, facts: dict) -> list[dict]:
    """One row per contender from rounds taken in one placement of the CPUs."""
    med = {name: float(np.median(ms)) for name, ms in rounds.items()}
    rows = []
    for name, ms in med.items():
        family, binarizer = BNNS.get(name, ("resnet18_fp32", "none"))
        row = {"network": name, "median_ms": round(ms, 3), "min_ms": round(min(rounds[name]), 3), "max_ms": round(max(rounds[name]), 3),
               "speedup_vs_torch_resnet18": round(med["resnet18 fp32 torch"] / ms, 2),
               "speedup_vs_onnxruntime_resnet18": round(med["resnet18 fp32 onnxruntime"] / ms, 2)}
        if binarizer == "lab":
            row["lab_overhead_pct"] = round(100 * (paired_ratio(rounds, name, f"{family} all-sign") - 1), 1)
            row["lab_overhead_pct_of_medians"] = round(100 * (ms / med[f"{family} all-sign"] - 1), 1)
        rows.append({**row, **kernels.get(name, {}), "input": f"3x{size}x{size}", **facts, "date": time.strftime("%Y-%m-%d")})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--number", type=int, default=3)
    p.add_argument("--input", type=int, default=224)
    p.add_argument("--out", default="results/benchmarks/bench_models.csv")
    args = p.parse_args(argv)
    shape = (1, 3, args.input, args.input)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    calls, kernels = {}, {}
    facts = machine_facts(args.threads)
    print(f"CPU {facts['cpu']} ({facts['isa']}); host kernels: {facts['host_kernels']}", flush=True)
    for name, (family, binarizer) in BNNS.items():
        start = time.perf_counter()
        compiled = compile_model(create_model(default_spec(family, binarizer)).eval(), shape, TARGETS["host"], threads=args.threads)
        calls[name], _ = tvm_runner(compiled, x, args.threads)
        verify(compiled)  # against PyTorch, as every measurement is (up to 3 inputs: see labnas.timing.measure)
        kernels[name] = _kernel_facts(compiled, x, args.threads)
        print(f"compiled {name} in {time.perf_counter() - start:.1f} s; {kernels[name]}", file=sys.stderr, flush=True)
    resnet = resnet18_fp32()
    calls["resnet18 fp32 torch"], ref = torch_runner(resnet, x, args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        calls["resnet18 fp32 onnxruntime"], out = onnxruntime_runner(resnet, x, args.threads, os.path.join(tmp, "resnet18.onnx"))
        np.testing.assert_allclose(out, ref, rtol=1e-3, atol=1e-3)
        round_trips: list[float | None] = []
        rounds = round_robin(calls, args.rounds, args.repeat, args.number, progress="models",
                             before_round=lambda: round_trips.append(core_round_trip_ns(rounds=PROBE_ROUNDS)))
    labels = placement_labels(round_trips)
    rows = []
    for placement in sorted(set(labels)):
        picked = [i for i, label in enumerate(labels) if label == placement]
        if len(picked) < 3:
            print(f"{len(picked)} round(s) with the CPUs {placement}: too few for a row", file=sys.stderr)
            continue
        subset = {name: [ms[i] for i in picked] for name, ms in rounds.items()}
        trips = [round_trips[i] for i in picked if round_trips[i] is not None]
        where = {"placement": placement, "core_round_trip_ns": round(float(np.median(trips)), 1) if trips else None,
                 "rounds": len(picked)}
        rows += [{**row, **where} for row in _rows(subset, kernels, args.input, facts)]
    df = pd.DataFrame(rows)
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out_path, index=False)
    shown = ["placement", "core_round_trip_ns", "rounds", "network", "median_ms", "speedup_vs_torch_resnet18",
             "speedup_vs_onnxruntime_resnet18", "lab_overhead_pct", "largest_float_kernel_pct"]
    print(df[[c for c in shown if c in df.columns]].to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
