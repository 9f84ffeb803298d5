"""Bitpacked binary-conv kernels for TVM: one entry point for the compute definitions (TE,
:mod:`labnas.tvm.compute`) and their schedules (s_tir, :mod:`labnas.tvm.schedules`).

Two or three stages per binary conv, each its own PrimFunc so a profile shows them apart:

1. ``labnas_pack``: the binarizer's decision map ``d[N, C, H, W]`` -> bits, padded spatially with the
   pad bit and packed along channels: ``int64[N, H + 2p, Cw, W + 2p]``. The compare (``d > 0`` or
   ``d >= 0``) happens here, fused into the packing.
2. ``labnas_xnor``: ``pop[n, y, x, o] = sum_{ky, kx, w} popcount(A[n, s y + ky, w, s x + kx] ^ W[ky, kx, w, o])``.
   Each tile of sums becomes ``K - 2 pop`` (float32, NCHW) in the same kernel, ``K = C k^2``.
3. ``labnas_dot``, zero-padded convs only: ``out[n, o, y, x] = (K - 2 pop) + corr``, where ``corr`` (a
   constant computed by :func:`labnas.tvm.packed.padding_correction`) adds back what the -1 padding
   taps subtracted. Element-wise, so it fuses with the scale, BatchNorm, residual and activation
   that follow; without padding correction those fuse on their own and a bare binary conv is two
   kernels.

A LAB binarizer adds ``labnas_lab`` before the packing: its decision map (``beta u1 - beta u0``) as
one kernel straight from the frozen weights, in place of the C -> 2C depthwise conv, two channel
slices and a subtraction the plain lowering would run. Where a tile fits the map (:func:`lab_pack_tile`),
``labnas_lab_pack`` replaces both ``labnas_lab`` and ``labnas_pack``: it compares and packs each tile of
the decision map while it is in registers, so the float map is never written.
"""

from __future__ import annotations

from . import compute, schedules
from .compute import *  # noqa: F403 - the facade re-exports both halves
from .schedules import *  # noqa: F403

__all__ = [*compute.__all__, *schedules.__all__]
