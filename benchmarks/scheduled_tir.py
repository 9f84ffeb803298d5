"""Fingerprints of the scheduled TensorIR of every hand kernel kind and of whole compiled networks, to show that a
refactor of the kernels, schedules or policy leaves the generated code bit-identical.

Items: the LAB decision kernel (rule, whole-row and near tiles), the fused LAB + packing kernel (rule, whole-map,
row and fused-near tiles), the packing kernel and the xnor kernel (plain and carry-save, pixel tiles) over ResNet
map shapes and LAB kernels 3/5/7, each under both map partitions; and three small networks (Bi-Real-18 sign and LAB,
LAB-BNN LAB; small stem at 32x32) lowered for the rule-based ``arm`` target (importer, hand kernels, float
scheduler and pipeline; no measurement, so nothing machine-dependent enters). Each item's TVMScript is hashed.

    python benchmarks/scheduled_tir.py before.json            # on the old code
    python benchmarks/scheduled_tir.py after.json --compare before.json   # on the new: lists items that differ
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys

from tvm import te

from labnas.models import create_model, default_spec
from labnas.tvm import TARGETS, SchedulePolicy, compile_model, kernels
from labnas.tvm import schedule_kernel

LAB_MAPS = [(64, 56, 56, 3), (128, 28, 28, 3), (256, 14, 14, 5), (512, 7, 7, 3), (96, 28, 28, 7)]
XNOR_LAYERS = [(1, 58, 58, 64, 1), (2, 30, 30, 256, 2), (8, 9, 9, 512, 1)]
NETWORKS = [("bireal18", "lab"), ("labbnn", "lab"), ("bireal18", "sign")]


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def fingerprints() -> dict[str, str]:
    """Item name -> sha256 of its scheduled TVMScript."""
    out: dict[str, str] = {}
    for partition in ("rows", "channels"):
        by_rows = partition == "rows"
        for c, h, w, k in LAB_MAPS:
            x = te.placeholder((1, c, h, w), "float32", name="x")
            wt = te.placeholder((2, c, k, k), "float32", name="w")
            b = te.placeholder((c,), "float32", name="b")
            for tile in [None, (w, 1), (w, 2), (w, 1, 8), (w, 2, w)]:
                if tile is None or h % tile[1] == 0:
                    f = te.create_prim_func([x, wt, b, kernels.lab_decision_compute(x, wt, b)])
                    out[f"lab {c}x{h}x{w} k{k} {tile} {partition}"] = _digest(schedule_kernel(f, "labnas_lab", 8, tile, by_rows).script())
            for tile in [None, (h, w, 2, 1), (1, w, 1, 2), (h, w, 2, 1, 1)]:
                if tile is None and kernels.lab_pack_tile(h, w, 8) is None:
                    continue
                f = te.create_prim_func([x, wt, b, kernels.lab_pack_compute(x, wt, b, 1, 0, True)])
                out[f"labpack {c}x{h}x{w} k{k} {tile} {partition}"] = _digest(schedule_kernel(f, "labnas_lab_pack", 8, tile, by_rows).script())
            d = te.placeholder((1, c, h, w), "float32", name="d")
            f = te.create_prim_func([d, kernels.pack_compute(d, 1, 1, False)])
            out[f"pack {c}x{h}x{w} {partition}"] = _digest(schedule_kernel(f, "labnas_pack", 8, None, by_rows).script())
        for words, h, w, cout, s in XNOR_LAYERS:
            a = te.placeholder((1, h, words, w), "int64", name="a")
            wb = te.placeholder((3, 3, words, cout), "int64", name="wb")
            width = (w - 3) // s + 1
            for tree in (False, True):
                for tile in [None] + [(p,) for p in (4, 7) if width % p == 0]:
                    f = te.create_prim_func([a, wb, kernels.xnor_compute(a, wb, s, 64 * words * 9, tree)])
                    out[f"xnor {words} {h} {cout} s{s} cs{tree} {tile} {partition}"] = _digest(
                        schedule_kernel(f, "labnas_xnor", 8, tile, by_rows).script())
        for family, binarizer in NETWORKS:
            model = create_model(default_spec(family, binarizer, width_mult=0.25, num_classes=10, stem="small")).eval()
            compiled = compile_model(model, (1, 3, 32, 32), TARGETS["arm"], policy=SchedulePolicy(partition=partition))
            out[f"net {family} {binarizer} {partition}"] = _digest(compiled.lowered.script())
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="JSON file the fingerprints are written to")
    p.add_argument("--compare", metavar="BEFORE", help="a JSON file written earlier: list the items that differ")
    args = p.parse_args(argv)
    prints = fingerprints()
    with open(args.out, "w") as fh:
        json.dump(prints, fh, indent=1, sort_keys=True)
    print(f"{len(prints)} items -> {args.out}")
    if args.compare:
        with open(args.compare) as fh:
            before = json.load(fh)
        differ = sorted(k for k in before.keys() | prints.keys() if before.get(k) != prints.get(k))
        print(f"{len(differ)} of {len(prints)} items differ" + ("".join(f"\n  {k}" for k in differ) if differ else ": bit-identical"))
        return 1 if differ else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
