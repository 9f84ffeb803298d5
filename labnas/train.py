"""Training a spec on a dataset: the short proxy runs of a search and the health checks on them.

A run that diverges (a non-finite loss) or ends no better than guessing is not an accuracy: it raises
:class:`TrainingFailed` naming the reason, so a search records a failed trial instead of ranking it.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ._errors import LabnasError
from .data import Dataset
from .models import ArchSpec, create_model

__all__ = [
    "AdamRecipe",
    "TrainConfig",
    "TrainResult",
    "TrainingFailed",
    "RecipeError",
    "SCHEDULES",
    "train_proxy",
    "train_model",
    "evaluate",
    "lr_factor",
    "chance_floor",
    "recalibrate_batchnorm",
    "adam_with_schedule",
    "train_step",
]

SCHEDULES = ("linear", "cosine", "constant")



class RecipeError(LabnasError, ValueError):
    """A training recipe that cannot run (unknown schedule, no epochs, ...); the message names the setting."""


class TrainingFailed(RuntimeError):
    """A training run whose result is not an accuracy: ``reason`` is ``"diverged"`` or ``"chance"``."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class AdamRecipe:
    """The optimiser recipe every training in labnas shares: Adam at peak ``lr``, ``warmup_epochs`` of linear
    warm-up, then ``schedule`` down to 0 at the end of ``epochs``.

    The proxy runs of a search (:class:`TrainConfig`, built from a space's ``[proxy]`` table), ``labnas train``
    (``labnas.deploy.TrainSettings``) and the accuracy settings themselves (``labnas.accuracy.ProxySettings``)
    extend it, so the recipe's fields, their meaning and their checks live here once.

    Attributes:
        epochs: passes over the (sub)set of training images.
        batch_size: images per step (>= 2: BatchNorm needs two samples to train).
        lr: peak Adam learning rate.
        schedule: ``"linear"`` (the LAB code's PolynomialDecay p=1), ``"cosine"`` (QuickNet's) or
            ``"constant"``, applied after warm-up.
        warmup_epochs: epochs of linear warm-up from 0 to ``lr`` (may be fractional).
        grad_clip: clip the global gradient norm to this value (0: no clipping).
    """

    epochs: int = 3
    batch_size: int = 64
    lr: float = 2.5e-3
    schedule: str = "linear"
    warmup_epochs: float = 0.0
    grad_clip: float = 0.0

    def recipe_problem(self) -> str | None:
        """What is wrong with the recipe, as a message naming settings ``{opt:NAME}`` (see ``labnas._errors``);
        None when nothing is. Each subclass raises it as its own error type."""
        if self.schedule not in SCHEDULES:
            return f"unknown {{opt:schedule}} {self.schedule!r}; choose one of {', '.join(SCHEDULES)}"
        if self.epochs < 1 or self.batch_size < 2 or self.lr <= 0:
            return (f"{{opt:epochs}} must be >= 1, {{opt:batch_size}} >= 2 and {{opt:lr}} > 0 "
                    f"(got {self.epochs}, {self.batch_size}, {self.lr})")
        if not 0 <= self.warmup_epochs < self.epochs or self.grad_clip < 0:
            return (f"{{opt:warmup_epochs}} must be in [0, epochs) and {{opt:grad_clip}} >= 0 "
                    f"(got {self.warmup_epochs}, {self.grad_clip})")
        return None

    def recipe_fields(self) -> dict:
        """The recipe alone (the fields of this class), e.g. to pass it on or compare two runs."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(AdamRecipe)}

    def optimizer(self, model: torch.nn.Module, steps_per_epoch: int):
        """Adam and its per-step schedule for ``model`` (see :func:`adam_with_schedule`)."""
        return adam_with_schedule(model, self.lr, self.schedule, self.warmup_epochs, steps_per_epoch, self.epochs)


@dataclass(frozen=True)
class TrainConfig(AdamRecipe):
    """One proxy run: the :class:`AdamRecipe` plus what makes it one run.

    Attributes:
        subset: train on at most this many images (None: all), drawn with ``seed``.
        seed: seeds torch (initial weights) and numpy (subset and batch order).
        device: ``"cpu"`` or ``"cuda"``.
        precise_bn_images: after training, BatchNorm statistics are re-estimated on this many training
            images with the final weights (0: keep the running averages). See :func:`recalibrate_batchnorm`.
    """

    subset: int | None = None
    seed: int = 0
    device: str = "cpu"
    precise_bn_images: int = 2048

    def __post_init__(self) -> None:
        problem = self.recipe_problem()
        if problem:
            raise RecipeError(problem)


@dataclass
class TrainResult:
    """Test accuracy (fraction in [0, 1]) after ``epochs`` epochs; ``train_loss`` is the last epoch's mean."""

    accuracy: float
    train_loss: float
    seconds: float
    epochs: int


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """The multiplier of the peak learning rate at optimiser step ``step`` of ``total``.

    Linear warm-up over the first ``warmup`` steps (from 1/warmup up to 1), then ``schedule`` from 1
    down to 0 at ``total``.
    """
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return max(0.0, 1.0 - progress)


def chance_floor(num_classes: int) -> float:
    """The accuracy under which a run counts as failed: twice chance (1 / classes), capped at 0.5."""
    return min(0.5, 2.0 / num_classes)


@torch.no_grad()
def recalibrate_batchnorm(model: torch.nn.Module, x: np.ndarray, device: str = "cpu", batch_size: int = 256) -> None:
    """Re-estimate every BatchNorm's running mean and variance from images ``x`` with the current weights.

    Why: the running averages of a short training run mix statistics of weights from many steps back, and a
    binary network's signs amplify the mismatch. ReActNet on digits trained to 97 % in train mode measured
    88 % in eval mode on one seed; with recalibrated statistics, 97 % ("precise BN", Wu & Johnson 2021).
    A supernet needs it for the same reason: its shared running averages mix every sampled sub-network.
    """
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not bns or len(x) == 0:
        return
    saved = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the batches
    was_training = model.training
    model.train()
    for i in range(0, len(x), batch_size):
        if len(x[i : i + batch_size]) > 1:
            model(torch.from_numpy(x[i : i + batch_size]).to(device))
    for bn, momentum in zip(bns, saved):
        bn.momentum = momentum
    model.train(was_training)


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, device: str = "cpu", batch_size: int = 256) -> float:
    """Top-1 accuracy (fraction) of ``model`` in eval mode on images ``x`` (N, C, H, W) and labels ``y``."""
    model.eval()
    correct = 0
    for i in range(0, len(x), batch_size):
        xb = torch.from_numpy(x[i : i + batch_size]).to(device)
        correct += int((model(xb).argmax(1).cpu().numpy() == y[i : i + batch_size]).sum())
    return correct / len(x)


def adam_with_schedule(model: torch.nn.Module, lr: float, schedule: str, warmup_epochs: float, steps_per_epoch: int,
                       epochs: int) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """Adam at peak ``lr`` and its per-step schedule (:func:`lr_factor`): warm-up, then ``schedule`` to 0."""
    total = steps_per_epoch * epochs
    warmup = int(round(warmup_epochs * steps_per_epoch))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(step, total, warmup, schedule))


def train_step(model: torch.nn.Module, opt, sched, xb: torch.Tensor, yb: torch.Tensor, epoch: int,
               grad_clip: float = 0.0) -> float:
    """One cross-entropy step on the batch ``(xb, yb)``; returns its loss. Raises :class:`TrainingFailed`
    ("diverged", naming ``epoch``) on a non-finite loss, before the weights are touched."""
    loss = F.cross_entropy(model(xb), yb)
    if not torch.isfinite(loss):
        raise TrainingFailed("diverged", f"training diverged at epoch {epoch} (loss {loss.item()})")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()
    sched.step()
    return loss.item()


def _memory_format(device: str) -> torch.memory_format:
    """The activation layout training runs in: channels-last on the CPU, where oneDNN's depthwise convolutions
    (every LAB) train 2-3x faster in it (all-LAB7 Bi-Real-18 at 28x28, one thread: 0.73 -> 0.32 s a step);
    the framework's default elsewhere."""
    return torch.channels_last if device == "cpu" else torch.contiguous_format


def _save_checkpoint(path: Path, model, opt, sched, rng: np.random.Generator, epochs_done: int, loss: float) -> None:
    """Everything a run needs to continue after ``epochs_done`` epochs, written atomically (temp file, rename)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(), "epochs_done": epochs_done,
                "loss": loss}, tmp)
    tmp.replace(path)


def train_model(
    model: torch.nn.Module,
    data: Dataset,
    config: TrainConfig,
    progress: Callable[[int, float], None] | None = None,
    before_step: Callable[[np.random.Generator], None] | None = None,
    checkpoint: Path | None = None,
) -> float:
    """Train ``model`` in place on ``data.x_train``; return the last epoch's mean training loss.

    ``before_step(rng)`` runs before every step (the supernet samples its sub-network there).
    ``checkpoint``: a file the run's state (weights, optimiser, schedule, batch order) is saved to after every
    epoch and resumed from when it exists, so a long run stopped midway loses at most one epoch; the resumed run
    takes the same batches and schedule as an uninterrupted one. The caller deletes it once the result is kept.
    Raises :class:`TrainingFailed` ("diverged") as soon as an epoch's loss is not finite.
    """
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    x, y = data.x_train, data.y_train
    if config.subset and config.subset < len(x):
        keep = rng.choice(len(x), config.subset, replace=False)
        x, y = x[keep], y[keep]
    steps_per_epoch = max(1, -(-len(x) // config.batch_size))
    layout = _memory_format(config.device)
    model.to(memory_format=layout)
    opt, sched = config.optimizer(model, steps_per_epoch)
    loss_value = float("nan")
    first_epoch = 0
    if checkpoint is not None and Path(checkpoint).exists():
        state = torch.load(checkpoint, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"])
        first_epoch, loss_value = int(state["epochs_done"]), float(state["loss"])
    for epoch in range(first_epoch, config.epochs):
        model.train()
        order = rng.permutation(len(x))
        losses = []
        for i in range(0, len(x), config.batch_size):
            idx = order[i : i + config.batch_size]
            if len(idx) < 2:  # BatchNorm needs two samples
                continue
            if before_step is not None:
                before_step(rng)
            xb = torch.from_numpy(x[idx]).to(config.device).contiguous(memory_format=layout)
            yb = torch.from_numpy(y[idx]).to(config.device)
            losses.append(train_step(model, opt, sched, xb, yb, epoch + 1, config.grad_clip))
        loss_value = float(np.mean(losses)) if losses else float("nan")
        if checkpoint is not None:
            _save_checkpoint(Path(checkpoint), model, opt, sched, rng, epoch + 1, loss_value)
        if progress is not None:
            progress(epoch + 1, loss_value)
    model.to(memory_format=torch.contiguous_format)  # what export, comparison and inference code expect
    return loss_value


def train_proxy(spec: ArchSpec, data: Dataset, config: TrainConfig, progress=None, on_epoch=None,
                checkpoint: Path | None = None) -> TrainResult:
    """Build ``spec``, train it on ``data`` and return its test accuracy.

    ``progress`` is an optional callable ``(epoch, loss)`` called after each epoch (for progress bars
    and for Optuna to notice interrupts between epochs); ``on_epoch(model, epoch)`` too, with the model
    (multi-fidelity pruning scores it there and may stop the run by raising). Raises
    :class:`TrainingFailed` when the run diverges or its test accuracy is below :func:`chance_floor`.
    ``checkpoint``: see :func:`train_model` (a resumed run calls ``progress``/``on_epoch`` for its remaining epochs).
    """
    torch.manual_seed(config.seed)
    model = create_model(spec).to(config.device)
    start = time.perf_counter()

    def after_epoch(epoch: int, loss: float) -> None:
        if progress is not None:
            progress(epoch, loss)
        if on_epoch is not None:
            on_epoch(model, epoch)

    loss_value = train_model(model, data, config, after_epoch, checkpoint=checkpoint)
    if config.precise_bn_images:
        pick = np.random.default_rng(config.seed).permutation(len(data.x_train))[: config.precise_bn_images]
        recalibrate_batchnorm(model, data.x_train[np.sort(pick)], config.device)
    acc = evaluate(model, data.x_test, data.y_test, config.device)
    floor = chance_floor(data.num_classes)
    if acc < floor:
        raise TrainingFailed("chance", f"test accuracy {acc:.3f} is below twice chance ({floor:.2f}): the run did not learn")
    return TrainResult(acc, loss_value, time.perf_counter() - start, config.epochs)
