"""Argument helpers shared by the ``labnas`` verbs."""

from __future__ import annotations

import argparse

from .._errors import for_cli

__all__ = ["UserError", "thread_count", "add_remote_args", "remote_from_args", "require_board", "check_before_compiling", "_add_model_args", "_spec_from_args", "_source_from_args", "_parse_shape"]


class UserError(Exception):
    """An error with a message the user can act on; printed as one line, exit status 2."""


def _parse_shape(text: str) -> tuple[int, int, int]:
    try:
        dims = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        dims = ()
    if len(dims) != 3 or min(dims) < 1:
        raise argparse.ArgumentTypeError(f"input shape must look like 3x224x224 (CxHxW), got {text!r}")
    return dims  # type: ignore[return-value]


def thread_count(text: str) -> int:
    """``--threads``: a positive whole number; more than this machine's CPUs is allowed (a board may have more) but
    warned about, since on this machine the extra threads only wait for a core."""
    import os
    import sys

    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of threads >= 1, got {text!r} (leave it out for every core)")
    cores = os.cpu_count() or 1
    if value > cores:
        print(f"warning: --threads {value} is more than this machine's {cores} CPUs: timed here, the extra threads wait for "
              "a core and every latency reads high (fine for a board with more cores)", file=sys.stderr)
    return value


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("family", nargs="?", help="model family (xnornet_alexnet, bireal18, quicknet, reactnet_mbv1, labbnn)")
    p.add_argument("--binarizer", default="sign", help="binarizer of every layer when FAMILY is given: sign (the family's own), "
                   "lab, ste_sign, approx_sign, rsign, niblack or sauvola (default sign)")
    p.add_argument("--spec", help="instead of FAMILY: a spec .json, a search's best_spec.json, a study results folder "
                                   "(with --trial N; default its best feasible trial) or a 'labnas train' checkpoint .pt")
    p.add_argument("--trial", type=int, help="with --spec STUDY_FOLDER: the trial to take")
    p.add_argument("--input", type=_parse_shape, help="input shape CxHxW (default: a checkpoint's own, else 3x224x224)")


def _source_from_args(args: argparse.Namespace):
    """The ``labnas.deploy.SpecSource`` of ``--spec`` (None for FAMILY); fills ``args.input`` when unset."""
    from ..deploy import SpecSourceError, load_spec_source
    from ..deploy.export import default_input

    if not args.spec:
        if args.trial is not None:
            raise UserError("--trial needs --spec STUDY_FOLDER")
        if args.input is None:
            args.input = (3, 224, 224)
        return None
    if args.family:
        raise UserError(f"give either FAMILY ({args.family}) or --spec, not both")
    try:
        source = load_spec_source(args.spec, args.trial)
    except SpecSourceError as err:
        raise UserError(for_cli(err)) from None
    if args.input is None:
        args.input = default_input(source)
    return source


def _spec_from_args(args: argparse.Namespace):
    """The ArchSpec named by FAMILY/--binarizer or --spec (any form); the stem follows the input size."""
    from ..models import SpecError, default_spec

    source = _source_from_args(args)
    if source is not None:
        return source.spec
    try:
        if not args.family:
            raise UserError("give a FAMILY (e.g. bireal18) or --spec FILE")
        c, h, _ = args.input
        small = h < 100
        return default_spec(
            args.family,
            args.binarizer,
            in_channels=c,
            stem="small" if small else "imagenet",
            num_classes=10 if small else 1000,
        )
    except SpecError as err:
        raise UserError(for_cli(err)) from None


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def add_remote_args(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--rpc", type=_host_port, metavar="HOST:PORT", help="a board running 'python -m tvm.exec.rpc_server'")
    g.add_argument("--tracker", type=_host_port, metavar="HOST:PORT", help="a TVM RPC tracker with a pool of boards")
    p.add_argument("--key", help="the board key to request from --tracker")
    p.add_argument("--rpc-timeout", type=int, default=60, help="seconds before a silent board is given up (default 60)")


def require_board(target, remote) -> None:
    """A target that only runs on a board needs --rpc or --tracker; say how to start one."""
    if remote is None and target.is_remote_only:
        from ..timing import START_BOARD_HINT

        raise UserError(f"target {target.name} needs a board: pass --rpc HOST:PORT or --tracker HOST:PORT --key KEY ({START_BOARD_HINT})")


def check_before_compiling(target, remote) -> None:
    """What can fail before the expensive compile, checked first: the target's cross compiler, and the board
    when ``remote`` names one (an unreachable board fails in at most its RPC timeout)."""
    from ..timing import RemoteError, connect
    from ..tvm import TargetError

    try:
        target.check_compiler()
        if remote is not None:
            connect(remote)
    except (TargetError, RemoteError) as err:
        raise UserError(for_cli(err)) from None


def remote_from_args(args: argparse.Namespace):
    from ..timing import RemoteSpec

    if args.tracker and not args.key:
        raise UserError("--tracker needs --key (the board key the RPC servers registered with)")
    if args.rpc:
        return RemoteSpec(rpc=args.rpc, timeout_s=args.rpc_timeout)
    if args.tracker:
        return RemoteSpec(tracker=args.tracker, key=args.key, timeout_s=args.rpc_timeout)
    return None
