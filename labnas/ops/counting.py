"""BOPs, FLOPs and OPs of a BNN, counted by fvcore and thop and checked against torch's counter.

Conventions (those of Bi-Real Net, ReActNet, NAS-BNN):

- MACs are counted, not 2x MACs: a conv costs ``out_elements * (Cin / groups) * k * k``, a linear layer
  ``in * out``; bias adds are not counted. The BNN literature calls the float MACs "FLOPs".
- **BOPs** are the MACs of binary convolutions (both operands in {-1, +1}).
- **FLOPs** are all other conv and linear MACs: the stem, 1x1 shortcut convs, LAB's depthwise convs,
  the classifier.
- **OPs = BOPs / 64 + FLOPs** (one 64-bit popcount word per 64 binary MACs).
- **BatchNorm, pooling and element-wise ops are not counted.** BatchNorm folds into the preceding conv
  (or the next binarizer's threshold) at deployment; fvcore would add 2 and thop 4 ops per element.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
from torch import nn

from ..nn import BinaryConv2d

__all__ = ["OpCount", "count_ops", "AGREEMENT_TOLERANCE"]

#: Largest relative difference between two counters before the result flags a disagreement.
AGREEMENT_TOLERANCE = 0.01


@dataclass
class OpCount:
    """The complexity of one network at one input shape (batch 1)."""

    bops: int
    flops: int
    params: int
    layers: pd.DataFrame
    #: ``{counter: {"bops": ..., "flops": ...}}`` for hooks, fvcore, thop and torch.
    counters: dict[str, dict[str, int]] = field(default_factory=dict)
    #: Human-readable disagreements beyond :data:`AGREEMENT_TOLERANCE`; empty when all agree.
    disagreements: list[str] = field(default_factory=list)

    @property
    def ops(self) -> float:
        return self.bops / 64 + self.flops

    def summary(self) -> dict[str, Any]:
        return {
            "bops": self.bops,
            "flops": self.flops,
            "ops": self.ops,
            "params": self.params,
            "counters": self.counters,
            "disagreements": self.disagreements,
            "layers": self.layers.to_dict(orient="records"),
        }

    def rich_table(self, title: str = ""):
        from rich.table import Table

        table = Table(title=title)
        for col in ("layer", "type", "binary", "MACs", "params", "output"):
            table.add_column(col, justify="right" if col in ("MACs", "params") else "left")
        for row in self.layers.itertuples():
            table.add_row(row.layer, row.type, "yes" if row.binary else "", f"{row.macs:,}", f"{row.params:,}", row.output)
        table.add_section()
        table.add_row("BOPs", "", "", f"{self.bops:,}", "", "")
        table.add_row("FLOPs (float MACs)", "", "", f"{self.flops:,}", "", "")
        table.add_row("OPs = BOPs/64 + FLOPs", "", "", f"{self.ops:,.0f}", f"{self.params:,}", "")
        if self.disagreements:
            table.caption = "counters disagree: " + "; ".join(self.disagreements)
        else:
            table.caption = "fvcore, thop, torch FlopCounterMode and the hook counter agree within 1 %"
        return table


def _binary_convs(model: nn.Module) -> dict[str, BinaryConv2d]:
    return {name: m for name, m in model.named_modules() if isinstance(m, BinaryConv2d)}


def _count_hooks(model: nn.Module, x: torch.Tensor) -> tuple[pd.DataFrame, int, int]:
    """A forward-hook count over conv / linear modules: the per-layer table."""
    rows: list[dict[str, Any]] = []
    handles = []

    def hook(name: str, module: nn.Module):
        def fn(mod, inputs, out):
            if isinstance(mod, nn.Linear):
                macs = out.numel() // out.shape[0] * mod.in_features
                kind = "Linear"
            else:
                k = mod.weight.shape[2] * mod.weight.shape[3]
                macs = out.numel() // out.shape[0] * (inputs[0].shape[1] // mod.groups) * k
                kind = type(mod).__name__ + ("(depthwise)" if mod.groups > 1 else "")
            params = sum(p.numel() for p in mod.parameters(recurse=False))
            rows.append(
                {
                    "layer": name,
                    "type": kind,
                    "binary": isinstance(mod, BinaryConv2d),
                    "macs": int(macs),
                    "params": int(params),
                    "output": "x".join(str(d) for d in out.shape[1:]),
                }
            )

        return fn

    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear, BinaryConv2d)):
            handles.append(m.register_forward_hook(hook(name, m)))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    df = pd.DataFrame(rows, columns=["layer", "type", "binary", "macs", "params", "output"])
    bops = int(df.loc[df.binary, "macs"].sum())
    return df, bops, int(df.macs.sum()) - bops


def _count_fvcore(model: nn.Module, x: torch.Tensor) -> tuple[int, int]:
    """fvcore's JIT-trace count: conv/linear MACs per module; binary = a BinaryConv2d minus its binarizer."""
    from fvcore.nn import FlopCountAnalysis

    fca = FlopCountAnalysis(model, (x,))
    fca.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
    table = fca.by_module_and_operator()
    mac_ops = ("conv", "linear", "addmm", "matmul", "bmm", "einsum")

    def macs(name: str) -> int:
        return int(sum(v for op, v in table.get(name, {}).items() if op in mac_ops))

    bops = sum(macs(name) - macs(f"{name}.binarizer") for name in _binary_convs(model))
    return bops, macs("") - bops


def _count_thop(model: nn.Module, x: torch.Tensor) -> tuple[int, int]:
    """thop's own conv and linear counters, with BinaryConv2d's MACs kept apart as BOPs."""
    import thop
    from thop.vision.basic_hooks import count_convNd, count_linear

    recorded: dict[str, int] = defaultdict(int)

    def recorder(counter, key: str):
        def fn(m, x_, y):
            before = m.total_ops
            counter(m, x_, y)
            delta = int(m.total_ops - before)
            recorded[key] += delta
            if key == "bops":
                m.total_ops = before  # keep thop's own total float-only
            return None

        return fn

    custom = {
        nn.Conv2d: recorder(count_convNd, "flops"),
        nn.Linear: recorder(count_linear, "flops"),
        BinaryConv2d: recorder(count_convNd, "bops"),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        thop.profile(model, inputs=(x,), custom_ops=custom, verbose=False)
    return recorded["bops"], recorded["flops"]


def _count_torch(model: nn.Module, x: torch.Tensor) -> tuple[int, int]:
    """torch.utils.flop_counter (counts 2 x MACs of conv / mm / linear, per module path)."""
    from torch.utils.flop_counter import FlopCounterMode

    fcm = FlopCounterMode(display=False)
    with torch.no_grad(), fcm:
        model(x)
    counts = fcm.get_flop_counts()
    root = type(model).__name__

    def flops(name: str) -> int:
        return int(sum(counts.get(f"{root}.{name}", {}).values()))

    bop_flops = sum(flops(n) - flops(f"{n}.binarizer") for n in _binary_convs(model))
    return bop_flops // 2, (int(fcm.get_total_flops()) - bop_flops) // 2


def _disagreements(counters: dict[str, dict[str, int]]) -> list[str]:
    out = []
    names = list(counters)
    for metric in ("bops", "flops"):
        ref = counters[names[0]][metric]
        for other in names[1:]:
            value = counters[other][metric]
            denom = max(abs(ref), abs(value), 1)
            if abs(value - ref) / denom > AGREEMENT_TOLERANCE:
                out.append(f"{metric}: {names[0]} {ref:,} vs {other} {value:,} ({100 * (value - ref) / denom:+.1f} %)")
    return out


def count_ops(model: nn.Module, input_shape: tuple[int, ...]) -> OpCount:
    """Count a model's BOPs, FLOPs (float MACs), OPs and parameters at ``input_shape`` (batch 1).

    Every count is made four ways: forward hooks (the per-layer table), fvcore, thop, and
    ``torch.utils.flop_counter``. The hook count is reported; any counter that differs from it by
    more than 1 % on BOPs or FLOPs is listed in :attr:`OpCount.disagreements`.

    Arguments:
        model: a labnas model (or any module using :class:`~labnas.nn.BinaryConv2d`).
        input_shape: ``(C, H, W)`` or ``(1, C, H, W)``.
    """
    shape = tuple(input_shape)
    if len(shape) == 3:
        shape = (1, *shape)
    was_training = model.training
    model.eval()
    x = torch.randn(*shape)
    try:
        layers, bops, flops = _count_hooks(model, x)
        counters = {"hooks": {"bops": bops, "flops": flops}}
        for name, fn in (("fvcore", _count_fvcore), ("thop", _count_thop), ("torch", _count_torch)):
            b, f = fn(model, x)
            counters[name] = {"bops": int(b), "flops": int(f)}
    finally:
        model.train(was_training)
    params = sum(p.numel() for p in model.parameters())
    return OpCount(bops, flops, params, layers, counters, _disagreements(counters))
