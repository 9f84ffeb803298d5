"""``labnas train`` and ``labnas export``: from a search result to a trained model compiled for the board."""

from __future__ import annotations

import argparse
from pathlib import Path

from .._errors import for_cli
from .common import UserError, _parse_shape

__all__ = ["add_deploy_parsers"]


def add_deploy_parsers(sub) -> None:
    p = sub.add_parser("train", help="train a found architecture properly (checkpoints every epoch, --resume)")
    p.add_argument("source", help="a spec .json, a search's best_spec.json, or a study results folder (with --trial N)")
    p.add_argument("--trial", type=int, help="with a study folder: the trial to train (default: its best feasible trial)")
    p.add_argument("--dataset", default="digits", help="digits, fashion-mnist, cifar10 or imagefolder (default digits)")
    p.add_argument("--data-dir", help="the dataset's folder (fashion-mnist, cifar10, imagefolder)")
    p.add_argument("--epochs", type=int, help="epochs (default 10)")
    p.add_argument("--lr", type=float, help="peak Adam learning rate (default 2.5e-3, the LAB recipe)")
    p.add_argument("--batch-size", type=int, help="images per step (default 64)")
    p.add_argument("--schedule", choices=["linear", "cosine", "constant"], help="learning-rate decay (default linear)")
    p.add_argument("--warmup-epochs", type=float, help="linear warm-up epochs (default 0)")
    p.add_argument("--grad-clip", type=float, help="clip the global gradient norm to this (default 0: no clipping)")
    p.add_argument("--resolution", type=int, default=0, help="resample images to this size (default: the dataset's; imagefolder 32)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers for imagefolder (default 2)")
    p.add_argument("--out", help="run folder (default results/train/NAME)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--keep-last", action="store_true", help="keep the last epoch's checkpoint (last.pt, with optimizer state) "
                   "after the run finishes; by default only model.pt stays")
    p.add_argument("--no-progress", action="store_true", help="one line per epoch instead of a progress bar")
    p.set_defaults(func=run_train)

    e = sub.add_parser("export", help="compile a trained checkpoint (or a spec) for a target: model.so + model.json")
    e.add_argument("source", help="a 'labnas train' checkpoint (model.pt), a spec .json, best_spec.json or study folder")
    e.add_argument("--trial", type=int, help="with a study folder: the trial to export")
    e.add_argument("--target", default="host", help="preset (host, x86, x86-avx512, arm, arm-a76) or a TVM target as JSON")
    e.add_argument("--input", type=_parse_shape, help="input shape CxHxW (default: the checkpoint's, else 224 or 32)")
    e.add_argument("--out", help="output folder (default results/export/NAME-TARGET)")
    e.add_argument("--onnx", action="store_true", help="also write model.onnx (the float graph, for other runtimes)")
    e.set_defaults(func=run_export)


def _name(source) -> str:
    base = Path(source.origin.rstrip("/")).name.removesuffix(".json").removesuffix(".pt")
    return f"{base}-trial{source.trial}" if source.trial is not None and Path(source.origin).is_dir() else base


def run_train(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from ..data import DatasetError
    from ..deploy import SpecSourceError, load_spec_source
    from ..deploy.training import TrainError, TrainSettings, train_spec

    console = Console()
    try:
        recipe = {name: getattr(args, name) for name in ("epochs", "batch_size", "lr", "schedule", "warmup_epochs", "grad_clip")}
        settings = TrainSettings(dataset=args.dataset, data_dir=args.data_dir, resolution=args.resolution, seed=args.seed,
                                 device=args.device, workers=args.workers,
                                 **{name: value for name, value in recipe.items() if value is not None})
        source = load_spec_source(args.source, args.trial)
    except (TrainError, SpecSourceError) as err:
        raise UserError(for_cli(err)) from None
    out = Path(args.out or f"results/train/{_name(source)}")
    console.print(f"training {source.spec.family} ({source.spec.n_lab} LAB layers) from {source.origin}"
                  f"{f' trial {source.trial}' if source.trial is not None else ''} on {args.dataset}, {settings.epochs} epochs -> {out}/")
    origin = {"source": source.origin, "trial": source.trial}
    if args.no_progress:
        def progress(epoch, epochs, loss):
            console.print(f"epoch {epoch}/{epochs}: loss {loss:.4f}; checkpoint {out / 'last.pt'}")
        bar = None
    else:
        bar = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
                       TimeElapsedColumn(), TimeRemainingColumn(), console=console)
        task = bar.add_task("epochs", total=settings.epochs, loss="-")

        def progress(epoch, epochs, loss):
            bar.update(task, completed=epoch, loss=f"{loss:.4f}")
        bar.start()
    try:
        metrics = train_spec(source.spec, settings, out, resume=args.resume, progress=progress, origin=origin, keep_last=args.keep_last)
    except (TrainError, DatasetError) as err:
        raise UserError(for_cli(err)) from None
    except KeyboardInterrupt:
        if bar:
            bar.stop()
        console.print(f"interrupted; continue with: labnas train {args.source} --out {out} --resume (same arguments)")
        raise
    finally:
        if bar:
            bar.stop()
    console.print(f"test accuracy {100 * metrics['accuracy']:.2f} % after {metrics['epochs']} epochs "
                  f"({metrics['train_seconds']:.0f} s); {out / 'model.pt'}, {out / 'metrics.json'}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ..deploy import SpecSourceError, load_spec_source
    from ..deploy.export import ExportError, export_model
    from ..tvm import LoweringError, TargetError, resolve_target

    console = Console()
    try:
        source = load_spec_source(args.source, args.trial)
        target = resolve_target(args.target)
        target.check_compiler()
    except (SpecSourceError, TargetError) as err:
        raise UserError(for_cli(err)) from None
    out = Path(args.out or f"results/export/{_name(source)}-{target.name}")
    console.print(f"compiling {source.spec.family} ({'trained' if source.checkpoint else 'untrained'}) for {target.name} ...")
    try:
        meta = export_model(source, target, out, args.input, onnx=args.onnx)
    except (ExportError, LoweringError, TargetError) as err:
        raise UserError(for_cli(err)) from None
    shape = "x".join(map(str, meta["input"]["shape"]))
    console.print(f"wrote {out / 'model.so'} ({target.name}), model.json (input {shape}, {meta['output']['classes']} classes)"
                  f"{', model.onnx' if args.onnx else ''}{' + model.onnx.data (its weights: keep them beside it)' if meta.get('onnx_data') else ''}\nrun it: python -m labnas.run {out / 'model.so'} --check"
                  f"{'   (on the board: add --rpc HOST:PORT)' if target.cross_compiler else ''}")
    return 0
