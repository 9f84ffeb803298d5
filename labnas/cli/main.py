"""The ``labnas`` command line: a thin layer over the Python API.

Each verb lives in its own ``_cli_*`` function; errors that are the user's to fix (a bad spec, an
unknown family, an unreachable board) print one line and exit with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys

from .. import __version__
from .._errors import LabnasError, for_cli
from .common import UserError, _add_model_args, _spec_from_args

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="labnas",
        description="Hardware-aware NAS for binary neural networks: where does LAB pay for itself?",
    )
    parser.add_argument("--version", action="version", version=f"labnas {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("ops", help="count BOPs, FLOPs and OPs of a network (fvcore + thop, cross-checked)")
    _add_model_args(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_cli_ops)

    p = sub.add_parser("list", help="list the search spaces, target presets, simulated CPU models, binarizers, model families and accuracy estimators")
    p.set_defaults(func=_cli_list)

    from .deploy import add_deploy_parsers
    from .profile import add_profile_parser
    from .report import add_report_parsers
    from .search import add_search_parser

    add_profile_parser(sub)
    add_search_parser(sub)
    add_report_parsers(sub)
    add_deploy_parsers(sub)
    return parser


def _cli_list(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from ..accuracy import ESTIMATOR_NAMES
    from .search import DEFAULT_SPACE
    from ..models import FAMILIES
    from ..nn import BINARIZERS
    from ..space import SpaceError, load_space, space_paths
    from ..tvm import TARGETS

    console = Console()
    spaces = Table(title="search spaces (--space)")
    for col in ("name", "family", "deploy", "accuracy"):  # the name is what users type: never cut
        spaces.add_column(col, no_wrap=col != "accuracy", overflow="fold")
    descriptions = []
    for name, path in space_paths().items():
        try:
            s = load_space(str(path))
        except SpaceError as err:
            spaces.add_row(name, "", "", "unusable")
            descriptions.append(f"{name}: unusable: {err}")
            continue
        estimator = s.proxy.estimator if s.proxy.estimator == "published" else f"{s.proxy.estimator} ({s.proxy.dataset})"
        spaces.add_row(name + (" (default)" if name == DEFAULT_SPACE else ""), s.family, "x".join(map(str, s.deploy_input)),
                       estimator)
        descriptions.append(f"{name}: {s.description}")
    console.print(spaces)
    for line in descriptions:
        console.print(f"  {line}", markup=False)
    console.print("targets (--target): " + ", ".join(f"{t.name} ({t.description})" if t.description else t.name for t in TARGETS.values()))
    from ..simulation import CPU_MODELS

    console.print("simulated CPU models (board targets without --rpc; labnas.simulation):")
    for cpu in CPU_MODELS.values():
        console.print(f"  {cpu.describe()}", markup=False)
    console.print("binarizers (--binarizer, space files): sign (the family's own), " + ", ".join(sorted(BINARIZERS)))
    console.print("families: " + ", ".join(FAMILIES))
    console.print("accuracy estimators (--accuracy): " + ", ".join(ESTIMATOR_NAMES))
    return 0


def _cli_ops(args: argparse.Namespace) -> int:
    import json

    from ..ops import count_ops

    spec = _spec_from_args(args)
    from ..models import create_model

    result = count_ops(create_model(spec), (1, *args.input))
    if args.json:
        described = {"family": spec.family, "binarizer": args.binarizer if not args.spec else None, "spec": args.spec,
                     "n_lab": spec.n_lab, "input": list(args.input)}
        print(json.dumps({**described, **result.summary()}, indent=2))
    else:
        from rich.console import Console

        Console().print(result.rich_table(title=f"{spec.family} ({args.binarizer if not args.spec else args.spec}) at {'x'.join(map(str, args.input))}"))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except UserError as err:
        print(f"labnas {args.command}: error: {err}", file=sys.stderr)
        return 2
    except LabnasError as err:  # a library error no verb expected: still one line, with the flags that fix it
        print(f"labnas {args.command}: error: {for_cli(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"labnas {args.command}: interrupted", file=sys.stderr)
        return 130
    except OSError as err:  # a folder that cannot be written (read-only, full disk, no permission)
        if not err.filename:
            raise
        print(f"labnas {args.command}: error: cannot write {err.filename}: {err.strerror}; "
              "pick a writable folder (--results / --out) or free some space", file=sys.stderr)
        return 2

