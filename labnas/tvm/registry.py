"""labnas' hand-scheduled kernels, bound to their schedules by registration (as TOPI binds a compute to its
schedule), not by matching function names.

The importer emits each hand kernel through :func:`emit_kernel`, which stores its kind (and a measured
register tile) as attributes of the PrimFunc (``labnas_kernel``, ``labnas_tile``). The compiler looks the
kind up in :data:`HAND_KERNELS` and applies that schedule. The function name (``labnas_xnor_t4_tile``)
only labels the kernel in profiles.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from . import kernels, pooling

__all__ = ["HandKernel", "HAND_KERNELS", "emit_kernel", "registered_kernel", "schedule_kernel", "schedule_registered"]


@dataclass(frozen=True)
class HandKernel:
    """A kernel's schedule ``schedule(sch, lanes, tile, by_rows=...)`` and the lanes it vectorises over: ``"words"`` (int64
    lanes of the bitpacked kernels, :attr:`TargetPreset.vector_lanes`) or ``"float"`` (float32 lanes)."""

    schedule: Callable[..., None]
    lanes: str


#: kind -> schedule. ``labnas_dot`` (element-wise) is not here: fusion and the float scheduler take it.
HAND_KERNELS: dict[str, HandKernel] = {
    "labnas_pack": HandKernel(kernels.SCHEDULES["labnas_pack"], "words"),
    "labnas_xnor": HandKernel(kernels.SCHEDULES["labnas_xnor"], "words"),
    "labnas_lab": HandKernel(kernels.SCHEDULES["labnas_lab"], "words"),
    "labnas_lab_pack": HandKernel(kernels.SCHEDULES["labnas_lab_pack"], "words"),
    "labnas_maxpool": HandKernel(lambda sch, lanes, tile=None, by_rows=True: pooling.schedule_maxpool(sch, lanes, by_rows), "float"),
}


def emit_kernel(bb, kind: str, compute: Callable, *args, tile: tuple[int, ...] | None = None):
    """``bb.emit_te(compute, *args)`` as the registered hand kernel ``kind`` (with a measured ``tile``)."""
    if kind not in HAND_KERNELS:
        raise KeyError(f"no hand kernel {kind!r}; registered: {', '.join(HAND_KERNELS)}")
    attrs = {"labnas_kernel": kind, **({"labnas_tile": [int(v) for v in tile]} if tile else {})}
    return bb.emit_te(compute, *args, primfunc_name_hint=kernels.kernel_name(kind, tile), primfunc_attrs=attrs)


def registered_kernel(func) -> tuple[str, tuple[int, ...] | None] | None:
    """``(kind, tile)`` of a PrimFunc emitted by :func:`emit_kernel`, else None."""
    attrs = getattr(func, "attrs", None)
    if attrs is None or "labnas_kernel" not in attrs:
        return None
    tile = attrs["labnas_tile"] if "labnas_tile" in attrs else None
    return str(attrs["labnas_kernel"]), (tuple(int(v) for v in tile) if tile is not None else None)


def schedule_kernel(func, kind: str, lanes: int = 8, tile: tuple[int, ...] | None = None, by_rows: bool = True):
    """The hand schedule of ``kind`` applied to ``func``; returns the PrimFunc marked opaque (op_pattern 8, so
    FuseOps keeps it whole) and scheduled.

    ``lanes``: int64 lanes for the bitpacked kernels, float lanes for max pooling (8 fills two AVX2 or four
    NEON registers). ``tile``: a measured register tile (:mod:`labnas.tvm.strategy`) instead of the kernel's
    rule: ``(pixels,)`` for ``labnas_xnor``, ``(pixels, rows)`` for ``labnas_lab``, ``(rows, pixels, channels,
    chunks)`` for ``labnas_lab_pack``. ``by_rows``: the compile's map partition
    (:attr:`labnas.tvm.policy.SchedulePolicy.by_rows`): threads take image rows, else channels.
    """
    entry = HAND_KERNELS[kind]
    return kernels.mark_scheduled(func, lambda sch, n: entry.schedule(sch, n, tile, by_rows=by_rows), lanes)


def schedule_registered(mod, word_lanes: int, float_lanes: int, by_rows: bool = True):
    """Every registered hand kernel of ``mod`` scheduled (and marked opaque, so fusion keeps it whole), with the
    compile's map partition ``by_rows``."""
    for gv, func in list(mod.functions.items()):
        found = registered_kernel(func)
        if found is None:
            continue
        kind, tile = found
        lanes = word_lanes if HAND_KERNELS[kind].lanes == "words" else float_lanes
        mod[gv] = schedule_kernel(func, kind, lanes, tile, by_rows)
    return mod
