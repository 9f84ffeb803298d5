"""The accuracy proxy: a short, deterministic training run of a spec on a small dataset."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .data import Dataset
from .models import ArchSpec, create_model

__all__ = ["TrainConfig", "TrainResult", "train_proxy", "evaluate"]


@dataclass
class TrainConfig:
    """Adam with a linear decay to 0 (the LAB code's recipe), on at most ``subset`` training images."""

    epochs: int = 3
    batch_size: int = 64
    lr: float = 2.5e-3
    subset: int | None = None
    seed: int = 0
    device: str = "cpu"


@dataclass
class TrainResult:
    accuracy: float
    train_loss: float
    seconds: float
    epochs: int


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, device: str = "cpu", batch_size: int = 256) -> float:
    """Top-1 accuracy in eval mode."""
    model.eval()
    correct = 0
    for i in range(0, len(x), batch_size):
        xb = torch.from_numpy(x[i : i + batch_size]).to(device)
        correct += int((model(xb).argmax(1).cpu().numpy() == y[i : i + batch_size]).sum())
    return correct / len(x)


def train_proxy(spec: ArchSpec, data: Dataset, config: TrainConfig, progress=None) -> TrainResult:
    """Train ``spec`` on ``data`` and return test accuracy.

    ``progress`` is an optional callable ``(epoch, loss)`` called after each epoch (for progress bars
    and for Optuna to notice interrupts between epochs).
    """
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    model = create_model(spec).to(config.device)
    x, y = data.x_train, data.y_train
    if config.subset and config.subset < len(x):
        keep = rng.choice(len(x), config.subset, replace=False)
        x, y = x[keep], y[keep]
    steps_per_epoch = max(1, -(-len(x) // config.batch_size))
    total = steps_per_epoch * config.epochs
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: max(0.0, 1.0 - step / total))
    start, loss_value = time.perf_counter(), float("nan")
    for epoch in range(config.epochs):
        model.train()
        order = rng.permutation(len(x))
        losses = []
        for i in range(0, len(x), config.batch_size):
            idx = order[i : i + config.batch_size]
            if len(idx) < 2:  # BatchNorm needs two samples
                continue
            xb = torch.from_numpy(x[idx]).to(config.device)
            yb = torch.from_numpy(y[idx]).to(config.device)
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
        loss_value = float(np.mean(losses)) if losses else float("nan")
        if not np.isfinite(loss_value):
            raise FloatingPointError(f"training diverged at epoch {epoch + 1} (loss {loss_value})")
        if progress is not None:
            progress(epoch + 1, loss_value)
    acc = evaluate(model, data.x_test, data.y_test, config.device)
    return TrainResult(acc, loss_value, time.perf_counter() - start, config.epochs)
