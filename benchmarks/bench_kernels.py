"""Single layers: labnas binary (TVM, bitpacked) and labnas fp32 against torch fp32 and onnxruntime fp32.

Binary layers: the daBNN reference layer (3x3, 256 -> 256, 14x14) and the 3x3 layers of ResNet-18 at 224,
plus a 1x1 and a 5x5 binary conv. Float layers: the ResNet-18 stem (7x7/2, 3 -> 64 at 224) and the 1x1
stride-2 shortcuts, which labnas networks run in fp32. Every contender of a layer runs in this process
with the same thread count and is timed round-robin with the others (``--rounds`` rounds of ``--repeat``
timings of ``--number`` calls; medians over rounds), next to the measured xnor-popcount ceiling of this
CPU (:mod:`labnas.timing.popcount_limit`), so a drift of the machine's speed hits all of them alike.
Each round starts with a probe of the CPUs' placement (:mod:`labnas.timing.core_latency`); a row records
the median round trip over its rounds and how far they spread (max / min above
:data:`labnas.timing.core_latency.APART_FACTOR`: the host moved the vCPUs during that layer, and its row mixes
two machines).

    python benchmarks/bench_kernels.py            # writes results/benchmarks/bench_kernels.csv
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from torch import nn

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from labnas.timing import PROBE_ROUNDS, core_round_trip_ns  # noqa: E402
from labnas.timing import machine_facts, onnxruntime_runner, round_robin, torch_runner, tvm_runner  # noqa: E402
from labnas.nn import BinaryConv2d  # noqa: E402
from labnas.tvm import TARGETS, compile_model  # noqa: E402
from labnas.timing import VmRunner, kernel_profile  # noqa: E402
from labnas.timing import PopcountCeiling, xnor_words  # noqa: E402

#: name: (kind, channels in, channels out, input size, kernel, stride)
LAYERS = {
    "daBNN 3x3 256-256 @14": ("binary", 256, 256, 14, 3, 1),
    "R18 3x3 64-64 @56": ("binary", 64, 64, 56, 3, 1),
    "R18 3x3/2 64-128 @56": ("binary", 64, 128, 56, 3, 2),
    "R18 3x3 128-128 @28": ("binary", 128, 128, 28, 3, 1),
    "R18 3x3 512-512 @7": ("binary", 512, 512, 7, 3, 1),
    "1x1 256-256 @14": ("binary", 256, 256, 14, 1, 1),
    "5x5 128-128 @28": ("binary", 128, 128, 28, 5, 1),
    "stem 7x7/2 3-64 @224": ("float", 3, 64, 224, 7, 2),
    "1x1/2 64-128 @56": ("float", 64, 128, 56, 1, 2),
    "1x1/2 128-256 @28": ("float", 128, 256, 28, 1, 2),
    "1x1/2 256-512 @14": ("float", 256, 512, 14, 1, 2),
}


def float_conv(cin: int, cout: int, k: int, stride: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, padding=k // 2, bias=False)).eval()


def binary_conv(cin: int, cout: int, k: int, stride: int) -> nn.Module:
    return nn.Sequential(BinaryConv2d(cin, cout, k, stride, padding=k // 2, binarizer="ste_sign", pad_value=1)).eval()


def contenders(name: str, spec: tuple, threads: int, tmp: str) -> tuple[dict, dict]:
    """Build every contender of one layer; check each one's output; return (callables, facts)."""
    kind, cin, cout, hw, k, stride = spec
    x = np.random.default_rng(0).standard_normal((1, cin, hw, hw)).astype(np.float32)
    fp32 = float_conv(cin, cout, k, stride)
    calls, facts = {}, {}
    calls["torch_fp32"], ref = torch_runner(fp32, x, threads)
    calls["onnxruntime_fp32"], out = onnxruntime_runner(fp32, x, threads, os.path.join(tmp, "layer.onnx"))
    np.testing.assert_allclose(out, ref, rtol=1e-3, atol=1e-3)
    compiled = compile_model(fp32, x.shape, TARGETS["host"], threads=threads)
    calls["labnas_fp32"], out = tvm_runner(compiled, x, threads)
    np.testing.assert_allclose(out, ref, rtol=1e-3, atol=1e-3)
    if kind == "binary":
        compiled = compile_model(binary_conv(cin, cout, k, stride), x.shape, TARGETS["host"], threads=threads)
        calls["labnas_binary"], out = tvm_runner(compiled, x, threads)
        assert np.array_equal(out, compiled.reference(x)), f"{name}: binary kernel is not bit-exact"
        (decision,) = compiled.strategies
        facts["popcount_strategy"] = decision.strategy + (f" ({decision.speedup:.2f}x the default)" if decision.speedup else "")
        runner = VmRunner.local(compiled.executable, threads)
        profile = kernel_profile(runner, [runner.tensor(x)], runs=30)
        facts["xnor_kernel_ms"] = sum(ms for kernel, ms, _, _ in profile if "labnas_xnor" in kernel)
        facts["xnor_words"] = xnor_words(cin, cout, (hw + 2 * (k // 2) - k) // stride + 1, k)
    return calls, facts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--number", type=int, default=5)
    p.add_argument("--only", nargs="*", help="layer names (substrings) to run")
    p.add_argument("--out", default="results/benchmarks/bench_kernels.csv")
    args = p.parse_args(argv)
    facts = machine_facts(args.threads)
    print(f"CPU {facts['cpu']} ({facts['isa']}); host kernels: {facts['host_kernels']}", flush=True)
    layers = {n: s for n, s in LAYERS.items() if not args.only or any(o in n for o in args.only)}
    ceiling = PopcountCeiling(TARGETS["host"], args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, spec in layers.items():
            calls, layer_facts = contenders(name, spec, args.threads, tmp)
            if spec[0] == "binary":
                calls["popcount_ceiling"] = ceiling.run  # timed in the same rounds as the layer
            trips: list[float | None] = []
            timed = round_robin(calls, args.rounds, args.repeat, args.number, name,
                                before_round=lambda: trips.append(core_round_trip_ns(rounds=PROBE_ROUNDS)))
            medians = {who: float(np.median(ms)) for who, ms in timed.items()}
            torch_ms = medians["torch_fp32"]
            row = {"layer": name, "kind": spec[0]}
            for who in ("labnas_binary", "labnas_fp32", "torch_fp32", "onnxruntime_fp32"):
                if who in medians:
                    row[f"{who}_ms"] = round(medians[who], 4)
            if spec[0] == "binary":
                words = layer_facts["xnor_words"]
                limit_ms = medians["popcount_ceiling"] * words / ceiling.words
                row["speedup_binary_vs_torch"] = round(torch_ms / medians["labnas_binary"], 2)
                row["xnor_kernel_ms"] = round(layer_facts["xnor_kernel_ms"], 4)
                row["popcount_limit_ms"] = round(limit_ms, 4)
                row["fraction_of_limit"] = round(limit_ms / medians["labnas_binary"], 3)
                row["popcount_strategy"] = layer_facts["popcount_strategy"]
            row["labnas_fp32_vs_torch"] = round(medians["labnas_fp32"] / torch_ms, 2)
            row["onnxruntime_vs_torch"] = round(medians["onnxruntime_fp32"] / torch_ms, 2)
            row.update(facts)
            seen = [t for t in trips if t is not None]  # the placement of the CPUs during this layer's rounds
            row["core_round_trip_ns"] = round(float(np.median(seen)), 1) if seen else None
            row["core_round_trip_max_over_min"] = round(max(seen) / min(seen), 2) if seen else None
            rows.append(row)
            print(pd.DataFrame([row]).iloc[:, :12].to_string(index=False), flush=True)
    df = pd.DataFrame(rows)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out, index=False)
    cols = [c for c in df.columns if c not in facts]
    print(df[cols].to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
