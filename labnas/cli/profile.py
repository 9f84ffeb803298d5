"""``labnas profile``: compile a network with TVM for a target and measure it there."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from .._errors import for_cli
from .common import (
    UserError,
    thread_count,
    _add_model_args,
    _source_from_args,
    _spec_from_args,
    add_remote_args,
    check_before_compiling,
    remote_from_args,
    require_board,
)

__all__ = ["add_profile_parser"]


def add_profile_parser(sub) -> None:
    p = sub.add_parser("profile", help="compile with TVM for a target CPU and measure latency there (host, x86, arm, ...)")
    _add_model_args(p)
    p.add_argument("--target", default="host", help="preset (host, x86, x86-avx512, arm, arm-a76) or a TVM target as JSON")
    add_remote_args(p)
    p.add_argument("--threads", type=thread_count, help="TVM threads for local runs (default: all cores)")
    p.add_argument("--repeat", type=int, default=10, help="timed repeats; the median is reported (default 10)")
    p.add_argument("--number", type=int, default=5, help="runs per repeat (default 5)")
    p.add_argument("--emulated", action="store_true", help="label the numbers as from an emulated board (e.g. qemu)")
    p.add_argument("--recalibrate", action="store_true", help="measure the reference workload's quiet time again (drift correction)")
    p.add_argument("--out", default="results/profile", help="directory for the JSON / CSV profile (default results/profile)")
    p.add_argument("--space", help="with --lut: the search space whose blocks to time (name or .toml)")
    p.add_argument("--lut", action="store_true", help="build the space's block latency table: results/lut/TARGET/SPACE.csv")
    p.add_argument("--lut-root", default="results/lut", help="where latency tables go (default results/lut)")
    p.set_defaults(func=run_profile)


def run_profile(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from ..models import create_model
    from ..timing import RemoteError, measure
    from ..timing.paired import TimingDisturbed
    from ..tvm import LoweringError, TargetError, compile_model, resolve_target
    from ..tvm.strategy import strategy_counts

    console = Console()
    if args.lut or args.space:
        return run_lut(args, console)
    if args.repeat < 1 or args.number < 1:
        raise UserError(f"--repeat and --number must be >= 1, got {args.repeat} and {args.number}")
    source = _source_from_args(args)
    spec = source.spec if source is not None else _spec_from_args(args)
    try:
        target = resolve_target(args.target)
    except TargetError as err:
        raise UserError(for_cli(err)) from None
    remote = remote_from_args(args)
    check_before_compiling(target, remote)
    model = create_model(spec)
    if source is not None and source.checkpoint is not None:  # the trained weights the user ships
        model.load_state_dict(source.checkpoint["model"])
    if args.input[0] != spec.in_channels:
        raise UserError(f"--input {'x'.join(map(str, args.input))} has {args.input[0]} channels, the network takes "
                        f"{spec.in_channels}; give --input {spec.in_channels}x{args.input[1]}x{args.input[2]}")
    shape = (1, *args.input)
    console.print(f"compiling {spec.family} for {target.name} ({target.description or target.config}) at {'x'.join(map(str, args.input))} ...")
    start = time.perf_counter()
    try:
        compiled = compile_model(model.eval(), shape, target, threads=args.threads)
    except LoweringError as err:
        raise UserError(for_cli(err)) from None
    compile_s = time.perf_counter() - start
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{spec.family}_{args.binarizer if not args.spec else Path(args.spec).stem}_{target.name}_{'x'.join(map(str, args.input))}"
    if target.cross_compiler:
        try:
            artifact = compiled.export(str(out_dir / f"{stem}.so"))
        except TargetError as err:
            raise UserError(for_cli(err)) from None
        console.print(f"cross-compiled {artifact} in {compile_s:.1f} s")
    from ..latency.source import SimulationError, simulated_latency, simulation_model
    from ..timing import reference_for

    try:
        cpu = None if args.emulated else simulation_model(target, remote)
        if cpu is not None:  # a board target without its board: the latency is simulated from the compiled code
            console.print(f"no board given: simulating on {cpu.describe()}")
            result = simulated_latency(compiled, cpu, args.threads, progress=lambda what: console.print(f"  {what}"))
        else:
            # Paired timing, drift-corrected, here or on the board; an emulator's timings mean nothing to correct.
            reference = None if args.emulated else reference_for(target, args.threads, remote, args.recalibrate)
            if reference is not None:
                console.print(f"reference workload: {reference.ms:.3f} ms calibrated ({reference.how}; --recalibrate measures it again)")
            result = measure(compiled, remote=remote, number=args.number, repeat=args.repeat, threads=args.threads,
                             profile_kernels=True, emulated=args.emulated, reference=reference)
    except (RemoteError, LoweringError, TimingDisturbed, SimulationError) as err:
        raise UserError(for_cli(err)) from None
    simulated = result.source == "simulated"
    if result.kernels:
        how = "simulated" if simulated else "one instrumented run"
        table = Table(title=f"{stem}: per-kernel time ({how})")
        for col in ("kernel", "ms", "calls", "binary"):
            table.add_column(col, justify="right" if col in ("ms", "calls") else "left")
        for name, ms, calls, binary in result.kernels[:40]:
            table.add_row(name, f"{ms:.3f}", str(calls), "yes" if binary else "")
        console.print(table)
    else:
        console.print("per-kernel times: local runs only (the RPC session times the whole model)")
    label = " (EMULATED: not the board's performance)" if result.emulated else ""
    if simulated:
        label = (f" SIMULATED on {result.cpu_model} ({result.device['board']}, {result.threads} threads at "
                 f"{result.device['clock_ghz']:g} GHz; predicted from the compiled code, not measured)")
    paired = (f"drift-corrected: {result.paired_ratio:.3f} x reference {result.reference_calibrated_ms:.3f} ms; raw median "
              f"{result.raw_median_ms:.3f} ms with the reference at {result.reference_ms:.3f} ms in the same rounds\n") if result.paired else ""
    headline = (f"latency {result.median_ms:.3f} ms{label}\n" if simulated else
                f"latency median {result.median_ms:.3f} ms (p10 {result.p10_ms:.3f}, p90 {result.p90_ms:.3f}; {len(result.runs_ms)} repeats){label}\n")
    console.print(
        headline
        + paired +
        f"target {target.name} ({target.describe_isa()}; kernels: {strategy_counts(compiled.strategies, with_source=True)}), "
        f"threads {result.threads or 'board default'}, device {json.dumps(result.device)}\n"
        + ("the simulation runs the kernels once under qemu; outputs are checked against PyTorch only where the "
           f"network runs (here or on a board); compile {compile_s:.1f} s" if simulated else
           f"outputs match PyTorch (max abs error {result.max_abs_error:.2e}); compile {compile_s:.1f} s")
    )
    record = {"spec": spec.to_dict(), "input": list(args.input), "compile_s": compile_s, **result.to_dict(),
              "popcount_strategies": [vars(d) for d in compiled.strategies]}
    (out_dir / f"{stem}.json").write_text(json.dumps(record, indent=2) + "\n")
    console.print(f"saved {out_dir / (stem + '.json')}")
    return 0


def run_lut(args: argparse.Namespace, console) -> int:
    """``labnas profile --space SPACE --target T --lut``: time every unique block of the space."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..latency import build_table, table_path
    from ..space import SpaceError, load_space
    from ..timing import RemoteError, TimingDisturbed
    from ..tvm import LoweringError, TargetError, resolve_target

    if not (args.lut and args.space):
        raise UserError("a latency table needs both --space SPACE and --lut (e.g. 'labnas profile --space labbnn --lut')")
    if args.family or args.spec:
        raise UserError("--lut times the blocks of --space; drop FAMILY / --spec")
    try:
        space = load_space(args.space)
        target = resolve_target(args.target)
        target.check_compiler()
    except (SpaceError, TargetError) as err:
        raise UserError(for_cli(err)) from None
    remote = remote_from_args(args)
    require_board(target, remote)
    path = table_path(space.name, target.name, args.lut_root)
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console)
    with bar:
        task = bar.add_task(f"blocks of {space.name} on {target.name}", total=None)

        def progress(what: str, done: int, total: int) -> None:
            bar.update(task, completed=done, total=total, description=what[:60])

        try:
            table = build_table(space, target, remote, args.threads, args.number, args.repeat, progress, recalibrate=args.recalibrate)
        except (RemoteError, LoweringError, TimingDisturbed) as err:
            raise UserError(for_cli(err)) from None
    table.save(path)
    meta = table.meta
    diffs = ", ".join(f"{d:+.3f}" for d in meta["calibration_differences_ms"])
    how = (f"paired with the reference workload (calibrated {meta['reference_calibration']['ms']:.3f} ms)"
           if meta.get("timing") == "paired" else "plain medians (a board's timing is its own)")
    console.print(
        f"{len(table.entries)} block entries in {meta['build_s']:.0f} s, {how}; prediction = {meta['scale']:.3f} x block sum "
        f"{meta['overhead_ms']:+.3f} ms, fitted to {len(meta['calibration_measured_ms'])} networks timed end to end "
        f"(measured minus block sum: {diffs} ms); saved {path}"
    )
    return 0
