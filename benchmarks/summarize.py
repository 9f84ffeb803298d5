"""docs/benchmarks.md from the committed CSVs under results/: one CSV per figure, so each figure has one source.

Each section names the command that writes its CSV and the machine and date the CSV records (a CSV written before
those columns existed says so). ``--check`` writes nothing and exits 1 when the page and the CSVs disagree (CI runs
it); without it the page is rewritten.

    python benchmarks/summarize.py            # regenerate docs/benchmarks.md
    python benchmarks/summarize.py --check    # is the committed page what the CSVs say?
"""

from __future__ import annotations

import argparse
import difflib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
PAGE = ROOT / "docs" / "benchmarks.md"


@dataclass
class Figure:
    """One section: its title, its CSV (under results/benchmarks/), the command that writes it, what it shows, and
    the function that turns the CSV into a markdown table."""

    title: str
    csv: str
    command: str
    says: str
    table: Callable[[pd.DataFrame], str]
    timed: bool = True  #: False: counts that do not depend on the machine


def md(df: pd.DataFrame) -> str:
    """A DataFrame as a markdown table (values as they print)."""
    head = "| " + " | ".join(map(str, df.columns)) + " |\n|" + "---|" * len(df.columns) + "\n"
    return head + "".join("| " + " | ".join("" if pd.isna(v) else str(v) for v in row) + " |\n" for row in df.itertuples(index=False))


def columns(*names: str) -> Callable[[pd.DataFrame], str]:
    """A figure that is the CSV's ``names`` columns as they are."""
    return lambda df: md(df[list(names)])


def provenance(df: pd.DataFrame) -> str:
    """Machine and date as the CSV records them."""
    def values(column: str) -> str:
        if column not in df:
            return ""
        return ", ".join(dict.fromkeys(str(v)[:10] if column == "date" else str(v) for v in df[column].dropna()))

    cpu, isa, date, threads = values("cpu"), values("isa"), values("date"), values("threads")
    machine = f"{cpu} ({isa})" if cpu and isa else cpu or "the CSV does not record the machine"
    when = date or "the CSV does not record the date"
    return f"Machine: {machine}{f'; {threads} TVM threads' if threads else ''}. Date: {when}."


# -- the figures ----------------------------------------------------------------------------------------------------


def predictor_table(df: pd.DataFrame) -> str:
    rows = []
    for space, part in [("all", df), *df.groupby("space")]:
        err = part.error_pct.abs()
        rows.append({"space": space, "candidates": len(part), "within 10 %": f"{(err <= 10).mean():.0%}",
                     "MAPE %": round(err.mean(), 1), "max error %": round(err.max(), 1),
                     "MAPE vs raw medians %": round(part.error_vs_raw_pct.abs().mean(), 1)})
    return md(pd.DataFrame(rows))


def boards_table(df: pd.DataFrame) -> str:
    pivot = df.pivot_table(index="family", columns=["board", "binarizer"], values="simulated_ms", aggfunc="first")
    rows = []
    boards = list(dict.fromkeys(df.board))
    for family in pivot.index:
        row = {"family": family}
        for board in boards:
            sign, lab = pivot.get((board, "sign"), {}).get(family), pivot.get((board, "lab"), {}).get(family)
            if sign is not None and lab is not None:
                threads = df[(df.board == board)].threads.iloc[0]
                row[f"{board} ({threads} thr) sign / LAB ms"] = f"{sign:.1f} / {lab:.1f} ({lab / sign - 1:+.0%})"
        rows.append(row)
    return md(pd.DataFrame(rows))


def stability_table(df: pd.DataFrame) -> str:
    rows = []
    for (family, binarizer), part in df.groupby(["family", "binarizer"], sort=False):
        acc = part.accuracy_pct
        rows.append({"family": family, "binarizer": binarizer, "runs %": ", ".join(f"{a:.1f}" for a in acc),
                     "spread": round(acc.max() - acc.min(), 1), "failed": int((part.status != "ok").sum())})
    return md(pd.DataFrame(rows))


def noise_table(df: pd.DataFrame) -> str:
    grouped = df.groupby(["scenario", "phase", "threads", "reference"], sort=False).agg(
        raw_ms=("raw_ms", "median"), corrected_ms=("corrected_ms", "median"), refused=("refused", "sum"), n=("raw_ms", "size"))
    return md(grouped.round(3).reset_index())


def verdicts_table(df: pd.DataFrame) -> str:
    rows = []
    for run, part in df.groupby("run", sort=False):
        lat = part.latency_ms
        rows.append({"run": run, "trials": len(part), "budget_ms": part.budget_ms.iloc[0], "median latency_ms": round(lat.median(), 3),
                     "spread (max/min)": round(lat.max() / lat.min(), 3), "feasible": int(part.feasible.sum()),
                     "placements apart": int((part.placement == "apart").sum())})
    return md(pd.DataFrame(rows))


def reference_table(df: pd.DataFrame) -> str:
    rows = []
    for candidate, part in df.groupby("candidate", sort=False):
        def spread(series: pd.Series) -> str:
            return f"{(series.quantile(0.9) / series.quantile(0.1) - 1):.1%}"
        rows.append({"candidate": candidate, "timings": len(part), "raw p90/p10": spread(part.raw_ms),
                     "/ conv pair p90/p10": spread(part.ratio_conv_pair), "/ own all-sign network p90/p10": spread(part.ratio_baseline)})
    return md(pd.DataFrame(rows))


FIGURES = [
    Figure("Operation counts at 3x224x224", "ops/ops_table.csv", "python benchmarks/ops_table.py",
           "OPs = BOPs/64 + FLOPs; fvcore, thop, torch's FLOP counter and forward hooks agree on every family (published: "
           "Bi-Real-18 1.63e8 OPs, ReActNet-A 0.87e8).", md, timed=False),
    Figure("The main command: front search against TPE", "benchmarks/bench_search.csv", "python benchmarks/bench_search.py",
           "Each front run is `labnas search --budget-ms 20` from an empty cache (kernel strategies, reference calibration and "
           "block table made inside its wall time, trials stopped by the 240 s allowance); `exhaustive front` times every "
           "member of the last run's predicted front; `tpe` is 14 TPE trials. Hypervolume against the exhaustive front's, "
           "every placement at its common latency: after the runs, every placement any run timed is timed again side by side "
           "in 40 paired rounds, drift between rounds divided out (`bench_search_common.csv`; `own_timings_...`: each run's "
           "own timings, minutes apart, against the exhaustive run's own; `_p10`/`_p90`: the ratio's band with the common "
           "rounds resampled, the common timing's own noise); "
           "`covered_within_noise`: the share of the exhaustive front that the run matches at least as accurate and at most "
           "3 % slower; `front`: the run's answer, the Pareto front on its own latencies (timed side by side at its end), "
           "`front_beyond_noise` of its points apart beyond noise; `front_overlap_within_noise`: the share of each front's "
           "points another front run matches at least as accurate and at most 3 % slower, both ways.",
           columns("run", "distinct_candidates", "wall_s", "front", "front_beyond_noise", "front_overlap_with_front_runs",
                   "front_overlap_within_noise",
                   "hypervolume_vs_exhaustive", "hypervolume_vs_exhaustive_p10", "hypervolume_vs_exhaustive_p90",
                   "own_timings_hypervolume_vs_exhaustive",
                   "exhaustive_front_covered_within_noise", "exhaustive_front_members_timed", "exhaustive_front")),
    Figure("Whole networks against torch and onnxruntime", "benchmarks/bench_models.csv", "python benchmarks/bench_models.py",
           "Paired round-robin medians at 3x224x224; speed-ups against fp32 ResNet-18 in torch and onnxruntime in the same run.",
           columns("network", "median_ms", "min_ms", "max_ms", "speedup_vs_torch_resnet18",
                   "speedup_vs_onnxruntime_resnet18", "lab_overhead_pct", "placement", "rounds")),
    Figure("Binary layers against fp32", "benchmarks/bench_kernels.csv", "python benchmarks/bench_kernels.py",
           "One layer each; `fraction_of_limit`: the xnor kernel against the popcount ceiling of this CPU.",
           columns("layer", "kind", "labnas_binary_ms", "torch_fp32_ms", "onnxruntime_fp32_ms",
                   "speedup_binary_vs_torch", "fraction_of_limit", "popcount_strategy")),
    Figure("What LAB and kernel sizes cost in a network", "benchmarks/lab_overhead.csv", "python benchmarks/lab_overhead.py",
           "LAB-BNN at 3x224x224, paired rounds; `vs_all_sign` is the median per-round ratio.",
           columns("family", "configuration", "median_ms", "min_ms", "max_ms", "vs_all_sign", "rounds")),
    Figure("Block-table latency predictor", "benchmarks/bench_predictor.csv", "python benchmarks/bench_predictor.py",
           "Random candidates predicted from the block table against their paired, drift-corrected measurement.", predictor_table),
    Figure("Simulated latency against measurement on x86, 1 thread", "benchmarks/bench_simulation_summary.csv",
           "python benchmarks/bench_simulation.py", "AVX2 build simulated (qemu + llvm-mca) against paired timings; per network "
           "in bench_simulation.csv (machine and date there).", md),
    Figure("Simulated latency against measurement on x86, 2 threads", "benchmarks/bench_simulation_2threads_summary.csv",
           "python benchmarks/bench_simulation.py --per-space 5 --threads 2 --out results/benchmarks/bench_simulation_2threads.csv",
           "The fitted scale (2.06x) is this VM's: its two vCPUs ran two threads no faster than one.", md),
    Figure("Simulated boards", "benchmarks/simulated_boards.csv", "python benchmarks/simulated_boards.py",
           "Each family all-sign and all-LAB 3x3 at 3x224x224 on the CPU models, all cores.", boards_table),
    Figure("Simulated binary kernels against the NEON ceiling", "benchmarks/simulated_kernels.csv", "python benchmarks/simulated_kernels.py",
           "Binary MACs per cycle of each xnor kernel on one core against the byte-lane popcount loop's ceiling.",
           columns("board", "family", "kernel", "shape", "macs_per_cycle", "ceiling_macs_per_cycle",
                   "fraction_of_ceiling")),
    Figure("Accuracy estimators against the LAB stage ablation", "benchmarks/proxy_fidelity.csv", "python benchmarks/proxy_fidelity.py",
           "Kendall tau against the 16 published Bi-Real-18 stage configurations (ImageNet); raw rows in proxy_fidelity_runs.csv.",
           columns("setting", "estimator", "configs", "seeds", "kendall_tau", "tau_lo90", "tau_hi90",
                   "spearman_rho", "gain_over_noise", "cpu_s_per_candidate")),
    Figure("Every family trains under the trained estimator", "benchmarks/proxy_stability.csv", "python benchmarks/proxy_stability.py",
           "Digits, width 0.25, 4 epochs, 3 seeds per family and binarizer.", stability_table),
    Figure("Drift correction under load", "benchmarks/bench_noise.csv", "python benchmarks/bench_noise.py --measurements 8",
           "LAB-BNN all-LAB measured quiet and beside competing workloads; medians over the measurements.", noise_table),
    Figure("Verdicts from run to run (LAB-BNN)", "benchmarks/bench_verdicts.csv", "python benchmarks/bench_verdicts.py",
           "The same candidates timed as search trials in repeated runs.", verdicts_table),
    Figure("Verdicts from run to run (Bi-Real-18)", "benchmarks/bench_verdicts_bireal18.csv", "python benchmarks/bench_verdicts.py --space bireal18_placement",
           "As above, Bi-Real-18 placements.", verdicts_table),
    Figure("Splitting float maps by rows or by channels", "benchmarks/bench_partition.csv", "python benchmarks/bench_partition.py",
           "Paired medians of whole networks compiled both ways.",
           columns("network", "placement", "rounds", "rows_ms", "channels_ms", "rows_over_channels")),
    Figure("LAB tiles in the network", "benchmarks/lab_tiles.csv", "python benchmarks/lab_tiles.py", "LAB-BNN with each LAB strategy family.",
           columns("family", "configuration", "median_ms", "vs_all_sign", "lab_strategies", "rounds")),
    Figure("LAB strategies timed inside the network", "benchmarks/bench_lab_in_network.csv", "python benchmarks/bench_lab_in_network.py",
           "Each candidate LAB strategy swapped into the whole network against the chooser's pick (ratio > 1: slower).",
           columns("family", "lab_shape", "candidate", "chooser", "ratio_to_chooser", "ratio_min", "ratio_max",
                   "rounds")),
    Figure("LAB maps in context against the FMA ceiling", "benchmarks/lab_context_costs.csv",
           "python benchmarks/lab_context_costs.py",
           "Each LAB-BNN LAB map: a float producer, then the sign packing or each LAB candidate, timed interleaved "
           "(us per call, producer included); lab_cost_us = over the sign packing; kernel_efficiency = LAB's "
           "multiply-adds at the measured FMA ceiling / the LAB kernels' time.",
           columns("lab_map", "variant", "us_per_call", "lab_cost_us", "lab_at_ceiling_us", "kernel_efficiency", "rounds")),
    Figure("LAB's decision loop written by hand", "benchmarks/lab_loop_bound.csv", "python benchmarks/lab_loop_bound.py",
           "The LAB 3x3 decision loop in AVX-512 intrinsics on one core, input in L1, per register tile, against the "
           "pure FMA ceiling: what any schedule of this loop can reach on the CPU.",
           columns("variant", "gmac_per_s", "of_ceiling", "repeats")),
    Figure("Reference workloads", "benchmarks/bench_reference.csv", "python benchmarks/bench_reference.py",
           "Spread of repeated timings, raw and divided by each reference timed in the same rounds.", reference_table),
]


def render() -> str:
    parts = ["# Benchmarks\n",
             "Generated by `python benchmarks/summarize.py` from the CSVs under `results/`; do not edit by hand "
             "(`--check` in CI fails when this page and the CSVs disagree). Each section: the command that writes its CSV, "
             "the machine and date the CSV records, the figure.\n"]
    for fig in FIGURES:
        df = pd.read_csv(RESULTS / fig.csv)
        where = provenance(df) if fig.timed else "Counted, not timed: the same on every machine."
        parts.append(f"## {fig.title}\n\n`{fig.command}` -> `results/{fig.csv}`. {where}\n\n{fig.says}\n\n"
                     f"{fig.table(df)}")
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="exit 1 when docs/benchmarks.md is not what the CSVs say")
    args = p.parse_args(argv)
    page = render()
    if args.check:
        current = PAGE.read_text() if PAGE.is_file() else ""
        if current != page:
            diff = "".join(list(difflib.unified_diff(current.splitlines(True), page.splitlines(True), "docs/benchmarks.md", "from the CSVs"))[:40])
            print(f"docs/benchmarks.md disagrees with results/benchmarks/*.csv; run 'python benchmarks/summarize.py'\n{diff}", file=sys.stderr)
            return 1
        print("docs/benchmarks.md matches the CSVs")
        return 0
    PAGE.write_text(page)
    print(f"wrote {PAGE.relative_to(ROOT)} ({len(FIGURES)} figures)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
