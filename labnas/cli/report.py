"""``labnas plot`` and ``labnas report``: figures and a Markdown report from results directories."""

from __future__ import annotations

import argparse
from pathlib import Path

from .._errors import for_cli
from .common import UserError

__all__ = ["add_report_parsers"]

FORMATS = (".png", ".svg", ".pdf")


def add_report_parsers(sub) -> None:
    p = sub.add_parser("plot", help="Pareto curves (accuracy vs latency / OPs) and the per-layer choice map")
    p.add_argument("results", nargs="+", help="results directories of one or more studies (overlaid)")
    p.add_argument("--x", default="latency", choices=["latency", "ops", "bops"], help="x axis (default latency)")
    p.add_argument("--out", help="output file (.png, .svg or .pdf); default RESULTS/pareto_X.png")
    p.add_argument("--map", action="store_true", help="also draw the choice map of the first study next to --out")
    p.set_defaults(func=run_plot)
    r = sub.add_parser("report", help="write report.md with the best architecture, Pareto table, breakdowns, figures")
    r.add_argument("results", help="a results directory")
    r.add_argument("--no-measure", action="store_true", help="skip re-timing the best architecture per kernel")
    r.add_argument("--threads", type=int, default=None,
                   help="TVM threads for the re-timing (default: the count the search timed the best trial with)")
    r.add_argument("--format", default="png", choices=["png", "svg", "pdf"], help="figure format (default png)")
    r.set_defaults(func=run_report)


def run_plot(args: argparse.Namespace) -> int:
    from ..report import ResultsError, load_results, plot_choice_map, plot_pareto

    out = Path(args.out) if args.out else Path(args.results[0]) / f"pareto_{args.x}.png"
    if out.suffix not in FORMATS:
        raise UserError(f"--out must end in {', '.join(FORMATS)}, got {out.name!r}")
    try:
        results = [load_results(r) for r in args.results]
        fig = plot_pareto(results, args.x)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=120)
        print(f"wrote {out}")
        if args.map:
            map_out = out.with_name(out.stem + "_choice_map" + out.suffix)
            plot_choice_map(results[0]).savefig(map_out, dpi=120)
            print(f"wrote {map_out}")
    except ResultsError as err:
        raise UserError(for_cli(err)) from None
    return 0


def run_report(args: argparse.Namespace) -> int:
    from ..report import ResultsError, write_report

    try:
        path = write_report(args.results, measure_latency=not args.no_measure, threads=args.threads, fmt=args.format,
                            progress=lambda text: print(f"{text} ...", flush=True))
    except ResultsError as err:
        raise UserError(for_cli(err)) from None
    print(f"wrote {path}")
    return 0
