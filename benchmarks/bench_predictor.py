"""How well block latency tables predict end-to-end latency: random candidates from two spaces, on the host.

For each space the table is built first (``labnas profile --space SPACE --lut`` does the same and
writes the same file), then ``--per-space`` random candidates (every searched layer's choices drawn
uniformly, no duplicates) are compiled and timed end to end, each followed by the drift probe of
:mod:`labnas.timing.reference`. Reported per candidate: predicted, measured, error; overall: the share
within +-10 % and the mean absolute percentage error (MAPE), raw and with the prediction scaled by the
probe's drift since the table was built (``probe now / probe at build``).

    python benchmarks/bench_predictor.py     # writes results/lut/host/{labbnn,bireal18}.csv and
                                             # results/benchmarks/bench_predictor.csv
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

from labnas.latency import block_units, build_table, table_path  # noqa: E402
from labnas.models import LayerSpec, create_model  # noqa: E402
from labnas.search.objective import spec_key  # noqa: E402
from labnas.space import load_space  # noqa: E402
from labnas.timing import ReferenceTimer, measure  # noqa: E402
from labnas.tvm import TARGETS, compile_model  # noqa: E402


def random_layers(space, rng: random.Random) -> list[LayerSpec]:
    layers = space.default_layers()
    for i in space.layers:
        binarizer = rng.choice(space.binarizers)
        layers[i] = LayerSpec(binarizer=binarizer, lab_kernel=rng.choice(space.lab_kernels) if binarizer == "lab" else 3,
                              kernel=rng.choice(space.layer_kernels(i)))
    return layers


def summary(errors_pct: np.ndarray) -> dict[str, float]:
    return {"within_10pct": float(np.mean(np.abs(errors_pct) <= 10)), "mape_pct": float(np.mean(np.abs(errors_pct))),
            "max_abs_error_pct": float(np.max(np.abs(errors_pct)))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--spaces", nargs="+", default=["labbnn", "bireal18"])
    p.add_argument("--per-space", type=int, default=25)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--reuse-tables", action="store_true", help="use the tables in results/lut instead of rebuilding them")
    p.add_argument("--lut-root", default="results/lut")
    p.add_argument("--out", default="results/benchmarks/bench_predictor.csv")
    args = p.parse_args(argv)
    target = TARGETS["host"]
    probe = ReferenceTimer(target, args.threads)
    rows = []
    for name in args.spaces:
        space = load_space(name)
        path = table_path(space.name, target.name, args.lut_root)
        if args.reuse_tables:
            from labnas.latency import LatencyTable

            table = LatencyTable.load(path, space, target.name)
        else:
            start = time.perf_counter()
            table = build_table(space, target, threads=args.threads,
                                progress=lambda what, done, total, name=name: print(f"{name} table {done}/{total}: {what}", file=sys.stderr, flush=True))
            table.save(path)
            print(f"{name}: {len(table.entries)} entries in {time.perf_counter() - start:.0f} s -> {path}", file=sys.stderr, flush=True)
        built_ref = float(np.mean(table.meta["reference_ms"]))
        rng, seen = random.Random(f"{args.seed}-{name}"), set()
        while len(seen) < args.per_space:
            layers = random_layers(space, rng)
            key = spec_key(layers)
            if key in seen:
                continue
            seen.add(key)
            spec = space.deploy_spec(layers)
            model = create_model(spec).eval()
            shape = (1, *space.deploy_input)
            predicted = table.predict_units(block_units(model, shape))
            measured = measure(compile_model(model, shape, target), threads=args.threads).median_ms
            ref_now = probe.time_ms()
            normalised = predicted * ref_now / built_ref
            rows.append({"space": name, "candidate": len(seen), "n_lab": spec.n_lab, "spec_key": key,
                         "predicted_ms": round(predicted, 4), "measured_ms": round(measured, 4),
                         "error_pct": round(100 * (predicted / measured - 1), 2),
                         "reference_ms": round(ref_now, 4), "reference_at_build_ms": round(built_ref, 4),
                         "predicted_drift_normalised_ms": round(normalised, 4),
                         "error_drift_normalised_pct": round(100 * (normalised / measured - 1), 2)})
            last = rows[-1]
            print(f"{name} {len(seen)}/{args.per_space}: predicted {predicted:.3f} ms, measured {measured:.3f} ms "
                  f"({last['error_pct']:+.1f} %, drift-normalised {last['error_drift_normalised_pct']:+.1f} %)", file=sys.stderr, flush=True)
    df = pd.DataFrame(rows)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out, index=False)
    report = []
    for scope, part in [("all", df), *df.groupby("space")]:
        report.append({"scope": scope, "n": len(part), "errors": "raw", **summary(part.error_pct.to_numpy())})
        report.append({"scope": scope, "n": len(part), "errors": "drift-normalised", **summary(part.error_drift_normalised_pct.to_numpy())})
    print(pd.DataFrame(report).round(3).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
