"""Swap the activation binarizers of an existing labnas model in one line."""

from __future__ import annotations

from typing import Callable

from torch import nn

from .nn import BinaryConv2d, get_binarizer

__all__ = ["convert"]


def convert(
    model: nn.Module,
    binarizer: str = "lab",
    where: Callable[[str, BinaryConv2d], bool] | None = None,
    **kwargs,
) -> nn.Module:
    """Replace the binarizer of every :class:`~labnas.nn.BinaryConv2d` in ``model`` (in place).

    Each binary conv gets a fresh binarizer built for its own input channels, so
    ``convert(model, "lab", kernel_size=5)`` puts a 5x5 LAB in front of every binary conv.

    Arguments:
        model: any module tree containing ``BinaryConv2d`` layers.
        binarizer: a binarizer registry name (``"lab"``, ``"ste_sign"``, ``"approx_sign"``, ...).
        where: optional filter ``(qualified_name, conv) -> bool``; only matching convs change.
        kwargs: passed to the binarizer's constructor.

    Returns:
        The same model, for chaining.

    Raises:
        ValueError: if the model has no ``BinaryConv2d`` (nothing would change) or the name is unknown.
    """
    convs = [(name, m) for name, m in model.named_modules() if isinstance(m, BinaryConv2d)]
    if not convs:
        raise ValueError("convert() found no labnas.nn.BinaryConv2d in the model; build it from labnas layers")
    device = next(model.parameters()).device
    for name, conv in convs:
        if where is None or where(name, conv):
            conv.binarizer = get_binarizer(binarizer, conv.in_channels, **kwargs).to(device)
    return model
