"""``labnas search``: the per-layer sign-vs-LAB search under a latency budget measured on the target."""

from __future__ import annotations

import argparse
from pathlib import Path

from .._errors import for_cli
from .common import UserError, add_remote_args, check_before_compiling, remote_from_args, require_board, thread_count
from ..space import OBJECTIVE_SETS, PRUNERS

__all__ = ["add_search_parser", "DEFAULT_SPACE"]

#: The space ``labnas search`` uses without ``--space``.
DEFAULT_SPACE = "bireal18_placement"


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}")
    return value


def add_search_parser(sub) -> None:
    p = sub.add_parser("search", help="search per-layer sign/LAB choices under a latency budget")
    p.add_argument("--budget-ms", type=_positive_float, required=True, help="latency budget on the target, in ms")
    p.add_argument("--space", default=DEFAULT_SPACE, help=f"a space name from search_spaces/ or a .toml path (default {DEFAULT_SPACE}); "
                   "'labnas list' shows them")
    p.add_argument("--target", default="host", help="preset (host, x86, x86-avx512, arm, arm-a76) or a TVM target as JSON")
    add_remote_args(p)
    p.add_argument("--trials", type=int, help="distinct candidates to measure: with the front sampler this many members "
                   "of the predicted front (default: its members that differ beyond timing noise), with tpe / nsga2 the "
                   "study's size (default 14)")
    p.add_argument("--timeout", type=float, help="stop starting new trials after this many seconds")
    p.add_argument("--study", help="study name (default: SPACE-TARGET-BUDGETms); re-running it resumes")
    p.add_argument("--storage", help="Optuna storage: sqlite:///..., postgresql://..., or a journal file *.log "
                   "(default sqlite:///results/STUDY/study.db)")
    p.add_argument("--results", default="results", help="results root directory (default results)")
    p.add_argument("--objectives", choices=list(OBJECTIVE_SETS), metavar="{" + ",".join(f"'{o}'" for o in OBJECTIVE_SETS) + "}",
                   help="what to optimise under the budget: accuracy alone (one best network), or the Pareto front of "
                        "accuracy and latency (and OPs); default: the space's own (bireal18_placement: accuracy,latency)")
    p.add_argument("--sampler", default="auto", choices=["auto", "front", "tpe", "nsga2"],
                   help="front: predict every candidate from the space's block table (built once, cached), then time only the "
                        "predicted Pareto front (needs the published estimator and a space of at most 2^20); tpe: Optuna's "
                        "TPE; nsga2: NSGA-II; auto (default): front where it applies, else tpe")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampler and of proxy training (default 0)")
    p.add_argument("--pruner", default="none", choices=list(PRUNERS),
                   help="multi-fidelity: stop unpromising trained-proxy runs early (Hyperband or successive halving on "
                        "epochs, or the median rule); needs --objectives accuracy; trials record the epochs they reached")
    p.add_argument("--workers", type=int, default=1, help="worker processes (each one torch thread)")
    p.add_argument("--threads", type=thread_count, help="TVM threads when timing (default: all cores)")
    p.add_argument("--recalibrate", action="store_true",
                   help="time the reference workload's quiet time again before the study uses it (drift correction)")
    from ..accuracy import ESTIMATORS

    p.add_argument("--accuracy", choices=list(ESTIMATORS),
                   help="accuracy estimator (default: the space's [proxy] estimator): "
                        + "; ".join(f"{e.name} = {e.summary}" for e in ESTIMATORS.values()))
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where the proxy trains")
    p.add_argument("--data-dir", help="dataset directory for fashion-mnist / cifar10 / imagefolder proxies")
    p.add_argument("--latency", choices=["measure", "simulate", "lut"],
                   help="measure: compile and time every candidate (here, or on the board of --rpc); simulate: compile it and "
                        "simulate it on the board target's CPU model (the default for rpi4, rpi5, a55, jetson-nx, arm, arm-a76 "
                        "without --rpc); lut: predict from the space's block latency table (labnas profile --space SPACE --lut), "
                        "then time the Pareto set end to end")
    p.add_argument("--lut-root", default="results/lut", help="where latency tables are (default results/lut)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")
    p.set_defaults(func=run_search_cli)


def run_search_cli(args: argparse.Namespace) -> int:
    import optuna
    from rich.console import Console

    from ..accuracy import EstimatorError
    from ..data import DatasetError
    from ..search import SearchConfig, SearchError, SpaceError, load_space, run_search
    from ..simulation import SimulationError
    from ..tvm import TargetError, resolve_target

    if args.trials is not None and args.trials < 1:
        raise UserError(f"--trials must be >= 1, got {args.trials}")
    if args.workers < 1:
        raise UserError(f"--workers must be >= 1, got {args.workers}")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UserError("--device cuda asked for, but torch sees no CUDA device; use --device cpu")
    try:
        space = load_space(args.space)
        target = resolve_target(args.target)
    except (SpaceError, TargetError) as err:
        raise UserError(for_cli(err)) from None
    remote = remote_from_args(args)
    check_before_compiling(target, remote)
    if args.latency is None:  # a board target without its board is simulated; everything else is measured
        from ..latency.source import simulation_model

        args.latency = "simulate" if simulation_model(target, remote) is not None else "measure"
    if args.latency == "simulate":
        from ..search.objective import simulated_cpu

        try:
            simulated_cpu(target, remote)
        except SimulationError as err:
            raise UserError(for_cli(err)) from None
    if args.latency == "measure":  # a table search compiles nothing until its front, which waits for a board
        require_board(target, remote)
    if args.sampler in ("auto", "front"):
        from ..search.study import front_possible

        why = front_possible(space, args.latency, args.accuracy or space.proxy.estimator)
        if why and args.sampler == "front":
            raise UserError(f"--sampler front cannot search this space: {why}; use --sampler tpe")
        args.sampler = "tpe" if why else "front"
    if args.trials is None and args.sampler != "front":
        args.trials = 14
    study_name = args.study or f"{space.name}-{target.name}-{args.budget_ms:g}ms"
    config = SearchConfig(
        budget_ms=args.budget_ms,
        objectives=args.objectives or space.objectives,
        target=target,
        remote=remote,
        threads=args.threads,
        seed=args.seed,
        device=args.device,
        latency=args.latency,
        lut_root=args.lut_root,
        sampler=args.sampler,
        pruner=args.pruner,
        accuracy=args.accuracy,
        recalibrate=args.recalibrate,
    )
    if args.latency == "lut":
        from ..latency import TableError, load_table

        try:
            load_table(space, target.name, args.lut_root)
        except TableError as err:
            raise UserError(for_cli(err)) from None
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # failed trials are listed, one line each, in the summary
    console = Console()
    console.print(f"study {study_name}: space {space.name} ({space.family}, {len(space.layers)} searched layers), "
                  f"target {target.name}, budget {args.budget_ms:g} ms, "
                  + (f"{args.trials} trials" if args.sampler != "front" else
                     "front search" + (f" ({args.trials} front members)" if args.trials else "")))
    try:
        run = run_search(
            space, config, study_name, Path(args.results), storage_url=args.storage, n_trials=args.trials,
            timeout=args.timeout, workers=args.workers, data_dir=args.data_dir, progress=not args.no_progress,
        )
    except (SearchError, DatasetError, EstimatorError, SimulationError) as err:
        raise UserError(for_cli(err)) from None
    except KeyboardInterrupt:
        import shlex
        import sys

        again = " ".join(shlex.quote(a) for a in getattr(args, "argv", None) or sys.argv[1:])
        print(f"interrupted: finished trials are stored in study {study_name} and written to "
              f"{Path(args.results) / study_name}/; resume with: labnas {again}", file=sys.stderr)
        raise
    _summary(console, run.results)
    return 0


def _summary(console, res) -> None:
    """Print a search's outcome from its result files (:class:`labnas.results.StudyResults`): the lines of
    :meth:`labnas.results.SearchSummary.lines` (what a Python caller gets from ``str(summary)``), the front
    search's quality, the front, and the next steps."""
    from rich.table import Table

    summary, front = res.summary(), res.pareto
    for line in summary.lines():
        if line.startswith("warning: "):
            console.print(f"[yellow]{line.removeprefix('warning: ')}[/]", markup=True, highlight=False)
        else:
            console.print(line, markup=False, highlight=False)
    if summary.reference_ms:
        drift = summary.reference_spread_pct
        warn = ("  [yellow]the host's speed moved: latency_ms is corrected for uniform drift (latency_raw_ms is not); "
                "see the README on timing a busy machine[/]") if drift > 10 else ""
        console.print(f"reference workload in the trials' paired rounds: {summary.reference_ms[0]:.3f} .. {summary.reference_ms[1]:.3f} ms "
                      f"(spread {drift:.0f} %){warn}")
    plan = res.settings.get("front_search")
    if plan:
        ratio = plan.get("measured_hypervolume", 0) / plan["predicted_hypervolume"] if plan.get("predicted_hypervolume") else float("nan")
        console.print(f"front search: all {plan['space_size']:,} candidates predicted from the block table in {plan['predict_s']:.1f} s; "
                      f"predicted front {plan['predicted_front']} ({plan.get('predicted_front_beyond_noise', plan['predicted_front'])} apart beyond noise), "
                      f"{plan.get('measured', 0)} measured, measured front "
                      f"{plan.get('measured_front', 0)} ({plan.get('measured_front_beyond_noise', 0)} apart beyond noise, "
                      f"{plan.get('front_ties_within_noise', 0)} neighbours tied within noise); "
                      f"hypervolume measured / predicted {ratio:.3f}")
    if not front.empty:
        estimator = summary.estimator or "accuracy"
        table = Table(title=f"Pareto front (feasible): accuracy ({estimator}) vs latency vs OPs")
        remeasured = "latency_measured_ms" in front and front.latency_measured_ms.notna().any()
        flagged = "accuracy_interpolated" in front and front.accuracy_interpolated.fillna(False).astype(bool).any()
        cols = ("trial", f"accuracy % ({estimator})", "latency ms", *(("measured ms",) if remeasured else ()), "MOPs", "LAB layers",
                *(("accuracy basis",) if flagged else ()))
        for col in cols:
            table.add_column(col, justify="right")
        interpolated = front.accuracy_interpolated.fillna(False).astype(bool) if flagged else [False] * len(front)
        for row, interp in zip(front.itertuples(), interpolated):
            measured = (f"{row.latency_measured_ms:.2f}" if row.latency_measured_ms == row.latency_measured_ms else "-",) if remeasured else ()
            basis = (("interpolated" if interp else "published"),) if flagged else ()
            table.add_row(str(row.trial), f"{100 * row.accuracy:.2f}", f"{row.latency_ms:.2f}", *measured, f"{row.ops / 1e6:.1f}",
                          str(row.n_lab), *basis)
        console.print(table)
    written = [p.name for p in (res.path / n for n in ("trials.csv", "trials.parquet", "pareto.csv", "best_spec.json")) if p.exists()]
    console.print(f"results in {res.path}/ ({', '.join(written)})")
    if not front.empty:
        console.print(f"next: labnas report {res.path}   (figures and report.md);  labnas train {res.path}   (train the best "
                      "candidate properly, then labnas export)", markup=False, highlight=False)
