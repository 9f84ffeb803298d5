"""Binary conv layers: labnas (TVM, bitpacked xnor-popcount) against torch fp32 conv2d (oneDNN).

Shapes: the daBNN reference layer (3x3, 256 -> 256, 14x14) and the 3x3 layers of ResNet-18 at 224.
Both sides run in this process with the same thread count, timed round-robin (``--rounds`` rounds of
``--repeat`` timings each); medians over rounds. The labnas time is the whole compiled layer (pack the
activations, xnor-popcount, integer-to-float) and, separately, the xnor-popcount kernel alone.

    python benchmarks/bench_kernels.py            # writes results/benchmarks/bench_kernels.csv
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from labnas.nn import BinaryConv2d
from labnas.tvm import TARGETS, compile_model
from labnas.tvm.measure import set_threads

SHAPES = {  # name: (channels in, channels out, spatial, stride)
    "daBNN 3x3 256-256 @14": (256, 256, 14, 1),
    "R18 3x3 64-64 @56": (64, 64, 56, 1),
    "R18 3x3 128-128 @28": (128, 128, 28, 1),
    "R18 3x3 256-256 @14": (256, 256, 14, 1),
    "R18 3x3 512-512 @7": (512, 512, 7, 1),
    "R18 3x3/2 64-128 @56": (64, 128, 56, 2),
}


def time_torch(x: torch.Tensor, w: torch.Tensor, stride: int, repeat: int) -> float:
    for _ in range(3):
        F.conv2d(x, w, stride=stride, padding=1)
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        F.conv2d(x, w, stride=stride, padding=1)
        runs.append(time.perf_counter() - start)
    return 1e3 * float(np.median(runs))


def time_labnas(vm, dev, xi, repeat: int) -> float:
    return 1e3 * vm.time_evaluator("main", dev, number=5, repeat=repeat)(xi).median


def xnor_only(vm, xi) -> float:
    """The xnor-popcount kernel's own time, from the VM's instrument hook (median of 20 calls)."""
    times, start = [], {}

    def instrument(func, symbol, before, ret, *args):
        if "labnas_xnor" in symbol:
            if before:
                start[0] = time.perf_counter()
            else:
                times.append(time.perf_counter() - start[0])
        return 0

    vm.set_instrument(instrument)
    for _ in range(20):
        vm["main"](xi)
    return 1e3 * float(np.median(times))


def main(argv: list[str] | None = None) -> int:
    import tvm
    from tvm import relax

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--out", default="results/benchmarks/bench_kernels.csv")
    args = p.parse_args(argv)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    torch.set_num_threads(args.threads)
    set_threads(args.threads)
    dev = tvm.cpu()
    cases = {}
    for name, (cin, cout, hw, stride) in SHAPES.items():
        conv = BinaryConv2d(cin, cout, 3, stride, binarizer="ste_sign", pad_value=1)
        model = nn.Sequential(conv).eval()
        compiled = compile_model(model, (1, cin, hw, hw), TARGETS["host"])
        x = np.random.default_rng(0).standard_normal((1, cin, hw, hw)).astype(np.float32)
        vm = relax.VirtualMachine(compiled.executable, dev)
        xi = tvm.runtime.tensor(x, dev)
        assert np.array_equal(vm["main"](xi).numpy(), compiled.reference(x)), name
        w = torch.randn(cout, cin, 3, 3)
        cases[name] = (vm, xi, torch.from_numpy(x), w, stride, cin, cout, hw)
        print(f"compiled {name}", file=sys.stderr, flush=True)
    measured: dict[str, dict[str, list[float]]] = {n: {"labnas": [], "torch": []} for n in cases}
    for r in range(args.rounds):
        for name, (vm, xi, xt, w, stride, *_ ) in cases.items():
            measured[name]["labnas"].append(time_labnas(vm, dev, xi, args.repeat))
            measured[name]["torch"].append(time_torch(xt, w, stride, args.repeat))
        print(f"round {r + 1}/{args.rounds}", file=sys.stderr, flush=True)
    rows = []
    for name, (vm, xi, _xt, _w, stride, cin, cout, hw) in cases.items():
        ho = (hw + 2 - 3) // stride + 1
        bops = ho * ho * cout * cin * 9
        lab, tor = float(np.median(measured[name]["labnas"])), float(np.median(measured[name]["torch"]))
        xnor = xnor_only(vm, xi)
        rows.append({
            "layer": name, "labnas_ms": round(lab, 4), "labnas_xnor_kernel_ms": round(xnor, 4), "torch_fp32_ms": round(tor, 4),
            "speedup_vs_torch": round(tor / lab, 2), "binary_GOPs_per_s": round(bops / (lab * 1e-3) / 1e9, 1),
            "threads": args.threads,
        })
    df = pd.DataFrame(rows)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out, index=False)
    print(df.to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
