"""``labnas train``: train an architecture properly (not the proxy), with checkpoints and resume.

The network is the spec at its own width with the dataset's channels and classes (the small stem for
inputs under 100 px). Each epoch ends with an atomic checkpoint (``last.pt``); ``resume=True`` continues
from it. Batch order is a function of (seed, epoch) and the optimiser and schedule states are saved, so on
CPU a resumed run ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .._errors import LabnasError
from ..data import DATASETS, load_dataset
from ..models import ArchSpec, create_model
from ..train import AdamRecipe, TrainingFailed, recalibrate_batchnorm, train_step

__all__ = ["TrainSettings", "TrainError", "train_spec", "training_spec", "CHECKPOINT", "FINAL"]

CHECKPOINT = "last.pt"
FINAL = "model.pt"


class TrainError(LabnasError, ValueError):
    """A training run that cannot start or resume; the message says what to change."""


@dataclass(frozen=True)
class TrainSettings(AdamRecipe):
    """How ``labnas train`` trains: the :class:`labnas.train.AdamRecipe` (the LAB code's recipe by default:
    Adam 2.5e-3, linear decay to 0; 10 epochs of batch 64) and the data it reads.

    Attributes:
        dataset: a name from ``labnas.data.DATASETS``; ``imagefolder`` is streamed from disk.
        data_dir: the dataset's directory (fashion-mnist, cifar10, imagefolder).
        resolution: resample images to this size (0: the dataset's own; imagefolder default 32).
        seed: initial weights and batch order.
        device: ``cpu`` or ``cuda``.
        workers: DataLoader worker processes for ``imagefolder``.
    """

    epochs: int = 10
    dataset: str = "digits"
    data_dir: str | None = None
    resolution: int = 0
    seed: int = 0
    device: str = "cpu"
    workers: int = 2

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise TrainError(f"unknown dataset {self.dataset!r}; choose one of {', '.join(DATASETS)}")
        problem = self.recipe_problem()
        if problem:
            raise TrainError(problem)
        if self.device == "cuda" and not torch.cuda.is_available():
            raise TrainError("{opt:device} cuda asked for, but torch sees no CUDA device; use {opt:device} cpu")

    def recipe(self) -> dict:
        """What must match for a run to resume (everything but where the data lives and the device)."""
        d = dataclasses.asdict(self)
        d.pop("data_dir"), d.pop("device"), d.pop("workers")
        return d


def training_spec(spec: ArchSpec, channels: int, classes: int, size: int) -> ArchSpec:
    """The spec adapted to a dataset: its channels and classes, the small stem under 100 px."""
    return dataclasses.replace(spec, in_channels=channels, num_classes=classes, stem="small" if size < 100 else spec.stem,
                               layers=[dataclasses.replace(l) for l in spec.layers])


class _Arrays:
    """An in-memory dataset: batches in an order fixed by (seed, epoch)."""

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int, seed: int):
        self.x, self.y, self.batch_size, self.seed = x, y, batch_size, seed

    def __len__(self) -> int:
        return -(-len(self.x) // self.batch_size)

    def epoch(self, epoch: int):
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.x))
        for i in range(0, len(order), self.batch_size):
            idx = np.sort(order[i : i + self.batch_size])
            if len(idx) > 1:
                yield torch.from_numpy(self.x[idx]), torch.from_numpy(self.y[idx])


class _Stream:
    """An image folder streamed through a DataLoader (workers, random crop + flip for training)."""

    def __init__(self, dataset, batch_size: int, seed: int, workers: int, train: bool):
        self.dataset, self.batch_size, self.seed, self.workers, self.train = dataset, batch_size, seed, workers, train

    def __len__(self) -> int:
        return -(-len(self.dataset) // self.batch_size)

    def epoch(self, epoch: int):
        g = torch.Generator().manual_seed(self.seed * 100003 + epoch)
        loader = torch.utils.data.DataLoader(self.dataset, batch_size=self.batch_size, shuffle=self.train, generator=g,
                                             num_workers=self.workers, drop_last=False)
        for xb, yb in loader:
            if len(xb) > 1:
                yield xb, yb


def _data(settings: TrainSettings):
    """(train batches, test batches, channels, classes, size, description, (pixel mean, pixel std))."""
    if settings.dataset == "imagefolder":
        from ..data import ImageFolderStream

        size = settings.resolution or 32
        train = ImageFolderStream(settings.data_dir, "train", size, augment=True)
        test = ImageFolderStream(settings.data_dir, "test", size, augment=False)
        return (_Stream(train, settings.batch_size, settings.seed, settings.workers, True),
                _Stream(test, 256, settings.seed, settings.workers, False), 3, len(train.classes), size,
                f"imagefolder {settings.data_dir} ({len(train)} train / {len(test)} test images, {len(train.classes)} classes)",
                (127.5, 63.75, 255.0))
    data = load_dataset(settings.dataset, settings.data_dir, seed=0, resolution=settings.resolution)
    c, h, _ = data.shape
    return (_Arrays(data.x_train, data.y_train, settings.batch_size, settings.seed),
            _Arrays(data.x_test, data.y_test, 256, settings.seed), c, data.num_classes, h,
            f"{data.name} ({len(data.x_train)} train / {len(data.x_test)} test images)", (data.pixel_mean, data.pixel_std, data.pixel_max))


def _save(path: Path, blob: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(blob, tmp)
    os.replace(tmp, path)


@torch.no_grad()
def _accuracy(model, batches, device: str) -> float:
    model.eval()
    correct = total = 0
    for xb, yb in batches.epoch(0):
        correct += int((model(xb.to(device)).argmax(1).cpu() == yb).sum())
        total += len(yb)
    return correct / max(1, total)


def train_spec(
    spec: ArchSpec,
    settings: TrainSettings,
    out_dir: str | Path,
    resume: bool = False,
    progress: Callable[[int, int, float], None] | None = None,
    origin: dict | None = None,
    keep_last: bool = False,
) -> dict:
    """Train ``spec`` on ``settings.dataset``; write ``last.pt`` every epoch, then ``model.pt`` and ``metrics.json``.

    Arguments:
        spec: the architecture (its width is kept; channels, classes and stem follow the data).
        settings: the recipe.
        out_dir: the run's folder. A folder holding another run's checkpoint is refused unless ``resume``.
        resume: continue from ``out_dir/last.pt`` (same spec and recipe required).
        progress: called as ``progress(epoch, epochs, loss)`` after each epoch.
        origin: where the spec came from (study, trial), stored with the checkpoint.
        keep_last: keep ``last.pt`` (weights, optimizer and scheduler state: several times ``model.pt``) after a
            finished run; by default it is removed once ``model.pt`` is written, as nothing resumes a finished run.

    Returns the metrics dict (also written to ``metrics.json``): test accuracy, epochs, seconds, spec.
    """
    out = Path(out_dir)
    last = out / CHECKPOINT
    train_batches, test_batches, channels, classes, size, described, (pixel_mean, pixel_std, pixel_max) = _data(settings)
    tspec = training_spec(spec, channels, classes, size)
    torch.manual_seed(settings.seed)
    model = create_model(tspec).to(settings.device)
    opt, sched = settings.optimizer(model, len(train_batches))
    start_epoch, seconds = 0, 0.0
    if last.exists() and not resume:
        raise TrainError(f"{out} already holds a run ({CHECKPOINT}); continue it with {{opt:resume}} or pick another {{opt:out}}")
    if (out / FINAL).exists() and not last.exists():
        raise TrainError(f"{out} already holds a finished run ({FINAL}); pick another {{opt:out}}")
    if resume:
        if not last.exists():
            raise TrainError(f"nothing to resume: {last} does not exist")
        ckpt = torch.load(last, map_location=settings.device, weights_only=False)
        if ckpt["spec"] != tspec.to_dict() or ckpt["recipe"] != settings.recipe():
            raise TrainError(f"{last} was written for another spec or recipe; use the same arguments or another {{opt:out}}")
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        start_epoch, seconds = ckpt["epoch"], ckpt["seconds"]
    out.mkdir(parents=True, exist_ok=True)
    loss_value = float("nan")
    for epoch in range(start_epoch, settings.epochs):
        began = time.perf_counter()
        model.train()
        losses = []
        for xb, yb in train_batches.epoch(epoch):
            try:
                losses.append(train_step(model, opt, sched, xb.to(settings.device), yb.to(settings.device), epoch + 1,
                                          settings.grad_clip))
            except TrainingFailed as err:
                raise TrainError(f"{err}; lower {{opt:lr}}") from None
        loss_value = float(np.mean(losses))
        seconds += time.perf_counter() - began
        _save(last, {"spec": tspec.to_dict(), "recipe": settings.recipe(), "model": model.state_dict(),
                     "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "epoch": epoch + 1,
                     "seconds": seconds, "loss": loss_value, "origin": origin or {}})
        if progress is not None:
            progress(epoch + 1, settings.epochs, loss_value)
    recal = np.concatenate([xb.numpy() for xb, _ in _take(train_batches.epoch(settings.epochs), 2048)])
    recalibrate_batchnorm(model, recal, settings.device)
    accuracy = _accuracy(model, test_batches, settings.device)
    metrics = {"accuracy": accuracy, "epochs": settings.epochs, "train_seconds": round(seconds, 2), "final_loss": loss_value,
               "dataset": described, "recipe": settings.recipe(), "spec": tspec.to_dict(), "input": [channels, size, size],
               "pixel_mean": pixel_mean, "pixel_std": pixel_std, "pixel_max": pixel_max, "origin": origin or {}}
    _save(out / FINAL, {"spec": tspec.to_dict(), "model": {k: v.cpu() for k, v in model.state_dict().items()},
                        "input": [channels, size, size], "pixel_mean": pixel_mean, "pixel_std": pixel_std, "pixel_max": pixel_max,
                        "metrics": {k: metrics[k] for k in ("accuracy", "epochs", "dataset")},
                        "trial": (origin or {}).get("trial")})
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    if not keep_last:
        last.unlink(missing_ok=True)
    return metrics


def _take(batches, n: int):
    taken = 0
    for xb, yb in batches:
        if taken >= n:
            return
        yield xb[: n - taken], yb
        taken += len(xb)
