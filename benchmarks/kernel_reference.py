"""A reference table for kernel choices on the proxy task itself: Fashion-MNIST at its native 28x28.

No publication ablates LAB's kernel or the binary conv's kernel, so the accuracy of a kernel-size search has
nothing to be checked against. This script builds that table on the proxy task (labelled as such: it says how
kernel choices rank on Fashion-MNIST, not on ImageNet): Bi-Real-18 with the small stem (feature maps 28/14/7/4 in
stages 1-4), LAB in every binary layer, at width 0.125 (the capacity-limited regime in which the trained proxy
ranks the LAB stage ablation like ImageNet, docs/accuracy.md), every one of the 60,000 training images, trained
to the end of a cosine schedule, with precise BatchNorm, tested on all 10,000 test images.

The design is a 2^(6-2) fractional factorial of resolution IV (16 configurations): the LAB kernel (3 or 7) of
each of the four stages (factors A-D) and the binary conv kernel (3 or 5) of stages 1 and 3 (E = ABC, F = BCD).
Every main effect is estimated from all runs, free of two-factor interactions. Each configuration is trained
with seeds 0 and 1 (seed 0 of all 16 first), so every main effect has a seed noise measured from the
replicates: an effect under 3x its noise is reported as not resolvable.

Rows go to ``results/benchmarks/kernel_reference_runs.csv`` as each run finishes; a run saves a checkpoint after
every epoch (under ``$LABNAS_CACHE/kernel_reference``, default ``~/.cache/labnas``), so a study spread over
several sittings loses at most one epoch. ``--summary`` writes ``results/benchmarks/kernel_reference.csv``
(``config,accuracy`` in %, the format ``benchmarks/proxy_fidelity.py --reference`` reads) and prints the main
effects.

    nice -n 19 python benchmarks/kernel_reference.py            # run (or resume) the study; Ctrl-C stops cleanly
    nice -n 19 python benchmarks/kernel_reference.py --shard 1/2 &   # with --shard 0/2: both cores of an idle machine
    python benchmarks/kernel_reference.py --summary              # table + main effects from the recorded rows
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from labnas.accuracy import kernel_config_code, kernel_config_layers  # noqa: E402
from labnas.data import load_dataset  # noqa: E402
from labnas.results import append_row, read_rows  # noqa: E402
from labnas.models import ArchSpec  # noqa: E402
from labnas.train import TrainConfig, TrainingFailed, evaluate, train_proxy  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "results" / "benchmarks" / "kernel_reference_runs.csv"
TABLE = ROOT / "results" / "benchmarks" / "kernel_reference.csv"
#: ``cpu_s`` / ``wall_s``: of the process that finished the run (a run resumed from a checkpoint counts only its part)
RUN_COLUMNS = ["config", "seed", "accuracy", "status", "curve", "cpu_s", "wall_s", "cpu", "settings", "finished"]

#: The training every configuration gets (the capacity-limited proxy recipe at 28x28, trained 8 epochs).
RECIPE = dict(epochs=8, batch_size=64, lr=2.5e-3, schedule="cosine", warmup_epochs=0.25, precise_bn_images=2048)
WIDTH = 0.125
RESOLUTION = 28
LAB_LEVELS = (3, 7)
CONV_LEVELS = (3, 5)
CONV_STAGES = (0, 2)  # the binary conv kernel varies in stages 1 and 3
CURVE_TEST_IMAGES = 2000
SEEDS = (0, 1)
FACTORS = ("lab_s1", "lab_s2", "lab_s3", "lab_s4", "conv_s1", "conv_s3")


def design() -> list[tuple[int, ...]]:
    """The 16 runs of the 2^(6-2) design as +-1 levels of :data:`FACTORS` (E = ABC, F = BCD), standard order."""
    runs = []
    for i in range(16):
        a, b, c, d = (1 if (i >> bit) & 1 else -1 for bit in range(4))
        runs.append((a, b, c, d, a * b * c, b * c * d))
    return runs


def config_of(levels: tuple[int, ...]) -> str:
    """The configuration name (``labnas.accuracy.kernel_config_code``) of one design row."""
    lab = tuple(LAB_LEVELS[(x + 1) // 2] for x in levels[:4])
    conv = [3, 3, 3, 3]
    for stage, x in zip(CONV_STAGES, levels[4:]):
        conv[stage] = CONV_LEVELS[(x + 1) // 2]
    return kernel_config_code(lab, tuple(conv))


CONFIGS = {config_of(levels): levels for levels in design()}


def read_runs(path: Path = RUNS) -> list[dict]:
    return read_rows(path)


def append_run(row: dict, path: Path = RUNS) -> None:
    append_row(path, RUN_COLUMNS, row)


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def checkpoint_dir() -> Path:
    return Path(os.environ.get("LABNAS_CACHE", Path.home() / ".cache" / "labnas")) / "kernel_reference"


def run_one(config: str, seed: int, data) -> dict:
    """Train one (configuration, seed), resuming from its checkpoint; the finished row."""
    spec = ArchSpec("bireal18", kernel_config_layers(config), width_mult=WIDTH, in_channels=1, num_classes=10,
                    stem="small")
    train_config = TrainConfig(**RECIPE, seed=seed)
    ckpt = checkpoint_dir() / f"{config}-seed{seed}.pt"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    curve_file = ckpt.with_suffix(".curve.json")
    curve = json.loads(curve_file.read_text()) if curve_file.exists() and ckpt.exists() else []
    cpu0, wall0 = time.process_time(), time.perf_counter()

    def on_epoch(model, epoch: int) -> None:
        acc = evaluate(model, data.x_test[:CURVE_TEST_IMAGES], data.y_test[:CURVE_TEST_IMAGES])
        curve[epoch - 1:] = [round(100 * acc, 2)]
        curve_file.write_text(json.dumps(curve))
        print(f"    epoch {epoch}/{RECIPE['epochs']}: {100 * acc:.2f} % on {CURVE_TEST_IMAGES} test images, "
              f"{time.perf_counter() - wall0:.0f} s", flush=True)

    try:
        accuracy, status = train_proxy(spec, data, train_config, on_epoch=on_epoch, checkpoint=ckpt).accuracy, "ok"
    except TrainingFailed as err:
        accuracy, status = float("nan"), err.reason
    row = {"config": config, "seed": seed, "accuracy": f"{100 * accuracy:.2f}", "status": status,
           "curve": json.dumps(curve), "cpu_s": f"{time.process_time() - cpu0:.0f}",
           "wall_s": f"{time.perf_counter() - wall0:.0f}", "cpu": cpu_name(),
           "settings": json.dumps(dict(RECIPE, width_mult=WIDTH, resolution=RESOLUTION, dataset="fashion-mnist")),
           "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
    append_run(row)
    ckpt.unlink(missing_ok=True)
    curve_file.unlink(missing_ok=True)
    return row


def run_study(seeds: tuple[int, ...] = SEEDS, shard: tuple[int, int] = (0, 1)) -> None:
    """Train every (configuration, seed) not recorded yet, seed by seed; ``shard = (k, n)`` takes the k-th of every n
    runs of that order (two processes with shards 0/2 and 1/2 use both cores of an otherwise idle machine)."""
    k, n = shard
    done = {(r["config"], int(r["seed"])) for r in read_runs()}
    order = [(c, s) for s in seeds for c in CONFIGS]
    todo = [run for i, run in enumerate(order) if i % n == k and run not in done]
    print(f"kernel reference: {len(done)} runs recorded, {len(todo)} to go", flush=True)
    if not todo:
        return
    data = load_dataset("fashion-mnist", resolution=RESOLUTION)
    for i, (config, seed) in enumerate(todo, start=1):
        print(f"[{i}/{len(todo)}] {config} seed {seed}", flush=True)
        row = run_one(config, seed, data)
        print(f"  {config} seed {seed}: {row['accuracy']} % ({row['status']}), {row['cpu_s']} CPU s", flush=True)


def main_effects(rows: list[dict]) -> list[dict]:
    """Each factor's main effect (mean accuracy at its high level minus at its low level, in points) over every
    successful run, its seed noise (the standard error the seed-to-seed spread of replicated configurations puts
    on that difference) and whether it is resolvable (>= 3x the noise)."""
    ok = [r for r in rows if r["status"] == "ok" and r["config"] in CONFIGS]
    if not ok:
        return []
    acc = np.array([float(r["accuracy"]) for r in ok])
    levels = np.array([CONFIGS[r["config"]] for r in ok])
    by_config: dict[str, list[float]] = {}
    for r in ok:
        by_config.setdefault(r["config"], []).append(float(r["accuracy"]))
    pairs = [v for v in by_config.values() if len(v) > 1]
    # pooled within-configuration variance of one run (the seed noise), from the replicated configurations
    sigma = float(np.sqrt(np.mean([np.var(v, ddof=1) for v in pairs]))) if pairs else float("nan")
    out = []
    for j, name in enumerate(FACTORS):
        hi, lo = acc[levels[:, j] > 0], acc[levels[:, j] < 0]
        if not len(hi) or not len(lo):
            continue
        effect = float(hi.mean() - lo.mean())
        noise = sigma * float(np.sqrt(1 / len(hi) + 1 / len(lo)))
        out.append({"factor": name, "effect_pts": effect, "noise_pts": noise, "runs": len(ok),
                    "resolvable": bool(noise == noise and abs(effect) >= 3 * noise)})
    return out


def summarise(rows: list[dict] | None = None, out: Path = TABLE) -> list[dict]:
    """Write the reference table (one row per configuration: mean accuracy in %, seeds, per-seed values)."""
    rows = read_runs() if rows is None else rows
    by_config: dict[str, list[float]] = {}
    for r in rows:
        if r["status"] == "ok":
            by_config.setdefault(r["config"], []).append(float(r["accuracy"]))
    table = [{"config": c, "accuracy": round(float(np.mean(v)), 3), "seeds": len(v),
              "per_seed": " ".join(f"{x:.2f}" for x in v)} for c, v in by_config.items()]
    table.sort(key=lambda r: -r["accuracy"])
    if table:
        with out.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, list(table[0]))
            writer.writeheader()
            writer.writerows(table)
    return table


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--summary", action="store_true", help="only write the table and print the main effects")
    p.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    p.add_argument("--shard", default="0/1", help="K/N: run the K-th of every N runs (e.g. 0/2 and 1/2 in two processes)")
    args = p.parse_args(argv)
    try:
        shard = tuple(int(v) for v in args.shard.split("/"))
        if len(shard) != 2 or not 0 <= shard[0] < shard[1]:
            raise ValueError
    except ValueError:
        p.error(f"--shard must be K/N with 0 <= K < N, got {args.shard!r}")
    torch.set_num_threads(1)
    if not args.summary:
        try:
            run_study(tuple(args.seeds), shard)
        except KeyboardInterrupt:
            print("stopped; the finished runs are recorded and the current one resumes from its last epoch", flush=True)
            return 130
    table = summarise()
    print(f"{len(table)} configurations in {TABLE.relative_to(ROOT)}")
    for e in main_effects(read_runs()):
        verdict = "resolvable" if e["resolvable"] else "not resolvable (< 3x noise)"
        print(f"  {e['factor']:8s} {e['effect_pts']:+.2f} pts  noise {e['noise_pts']:.2f}  {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
