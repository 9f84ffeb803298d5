"""Max pooling as a two-pass kernel without a padded copy (``labnas_maxpool``).

TVM legalises ``max_pool2d`` into a padded copy of the whole input (a scalar ``if_then_else`` per
element) and a pooling loop whose strided taps cannot be vectorised: on Bi-Real-18 at 224 that was
0.4-0.9 ms, 8-10 % of the network. Max is idempotent, so a window's padding taps can read the nearest
border pixel instead of ``-inf`` (that pixel is in the window whenever the window has a real pixel,
which PyTorch guarantees with ``padding <= kernel / 2``). That removes the copy, and the window
separates into two passes per output row:

1. ``rows[x'] = max_{ry} X[clamp(s y + ry - p), x']`` over the whole input row: contiguous, vectorised
   (the row clamp is one scalar per row);
2. ``out[x] = max_{rx} rows[clamp(s x + rx - p)]``: ``k`` reads per output from a row in L1.

The first pass is computed per output row inside the second's parallel loop, so ``rows`` never leaves
L1. Supported: ``dilation == 1`` and ``ceil_mode == False`` (every max pool of the five families);
others keep TVM's lowering.
"""

from __future__ import annotations

from tvm import te, tirx

from .schedule_float import vectorize_inner

__all__ = ["maxpool_compute", "schedule_maxpool", "supports", "strided_maxpool"]


def supports(kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int], dilation, ceil_mode: bool) -> bool:
    """Whether :func:`maxpool_compute` reproduces ``torch.nn.functional.max_pool2d`` with these arguments."""
    dil = (dilation, dilation) if isinstance(dilation, int) else tuple(dilation)
    return not ceil_mode and dil == (1, 1) and all(2 * p <= k for p, k in zip(padding, kernel))


def _clamped(index, padding: int, size: int):
    """``index`` clamped into ``[0, size)``; left alone when ``padding == 0`` (no tap can fall outside:
    keeping the index affine lets a unit-stride pass load whole vectors)."""
    if padding == 0:
        return index
    return tirx.max(tirx.min(index, size - 1), 0)


def maxpool_compute(x: te.Tensor, kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int]) -> te.Tensor:
    """``max_pool2d`` of NCHW ``x`` (float) with no dilation and floor output size, as two passes."""
    n, c, h, w = (int(v) for v in x.shape)
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    out_h, out_w = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    ry, rx = te.reduce_axis((0, kh), "ry"), te.reduce_axis((0, kw), "rx")
    rows = te.compute(
        (n, c, out_h, w), lambda nn, cc, y, col: te.max(x[nn, cc, _clamped(sh * y + ry - ph, ph, h), col], axis=ry), name="pool_rows"
    )
    return te.compute(
        (n, c, out_h, out_w),
        lambda nn, cc, y, xx: te.max(rows[nn, cc, y, _clamped(sw * xx + rx - pw, pw, w)], axis=rx),
        name="pool_cols",
    )


def schedule_maxpool(sch, lanes: int, by_rows: bool = True) -> None:
    """Parallel over (image, output row, channel) chunks, or (image, channel, output row) when not ``by_rows``
    (:attr:`labnas.tvm.policy.SchedulePolicy.partition` ``"channels"``); the row pass computed per output row, vectorised
    along the input row; the column pass vectorised along the output row (strided taps become gathers)."""
    rows_block, cols_block = sch.get_sblock("pool_rows"), sch.get_sblock("pool_cols")
    n, c, y, x, rx = sch.get_loops(cols_block)
    split = (n, y, c) if by_rows else (n, c, y)
    sch.reorder(*split, rx, x)
    outer = sch.fuse(*split)
    sch.parallel(outer)
    sch.compute_at(rows_block, outer)
    _, col, ry = sch.get_loops(rows_block)
    sch.reorder(ry, col)
    vectorize_inner(sch, col, lanes)
    vectorize_inner(sch, x, lanes)
    sch.decompose_reduction(rows_block, ry)
    sch.decompose_reduction(cols_block, rx)


def strided_maxpool(shape: tuple[int, int, int, int], kernel, stride, padding):
    """The 3x3/2 max pool with padding 1 (ResNet's and Bi-Real-18's stem) over NCHW ``shape`` as a hand-written
    PrimFunc, or ``None`` where it does not apply (other pools keep :func:`maxpool_compute`).

    Why: the two-pass kernel's column pass reads every other pixel (``rows[2x + rx - 1]``, clamped), which LLVM
    scalarises (one ``vinsertps`` per pixel), and its row buffer, computed inside the parallel loop, was a heap
    workspace allocated per output row. Here each parallel job (an image row of one channel) keeps its row
    maxima in a stack buffer padded by one clamped pixel on each side, and the column pass reads whole vectors
    and deinterleaves them (``T.Shuffle``: ``vpermt2ps`` on AVX-512, ``uzp1/uzp2`` on NEON):
    ``out[x] = max(rows[2x], rows[2x + 1], rows[2x + 2])`` in padded coordinates. 64 x 112 x 112 -> 56 x 56 on an
    AVX-512 Xeon, 2 threads: ~0.19 ms against ~0.53 ms. Threads take rows (the default partition).
    """
    from tvm.script import tirx as T

    n, c, h, w = (int(v) for v in shape)
    if tuple(kernel) != (3, 3) or tuple(stride) != (2, 2) or tuple(padding) != (1, 1):
        return None
    oh, ow = (h - 1) // 2 + 1, (w - 1) // 2 + 1
    lanes = next((v for v in (8, 4) if ow % v == 0 and w % v == 0), None)
    if lanes is None or w != 2 * ow:
        return None
    jobs, width = n * c * oh, 2 * ow + 2 * lanes  # rows[0]: clamped column 0; rows[1 + x]: column x; a clamped tail
    even, odd, third = ([2 * i + k for i in range(lanes)] for k in (0, 1, 2))

    @T.prim_func(private=True, s_tir=True)
    def maxpool(X: T.Buffer((n, c, h, w), "float32"), Y: T.Buffer((n, c, oh, ow), "float32")):
        T.func_attr({"tirx.noalias": True})
        with T.sblock("root"):
            for job in T.parallel(jobs):  # job = (image, output row, channel), channels fastest
                rows = T.decl_buffer((width,), "float32", scope="local")
                for xc in range(w // lanes):
                    rows[T.Ramp(1 + xc * lanes, 1, lanes)] = T.max(T.max(
                        X[job // (c * oh), job % c, T.max(2 * (job // c % oh) - 1, 0), T.Ramp(xc * lanes, 1, lanes)],
                        X[job // (c * oh), job % c, 2 * (job // c % oh), T.Ramp(xc * lanes, 1, lanes)]),
                        X[job // (c * oh), job % c, T.min(2 * (job // c % oh) + 1, h - 1), T.Ramp(xc * lanes, 1, lanes)])
                rows[0] = rows[1]
                for t in range(width - w - 1):
                    rows[w + 1 + t] = rows[w]
                for k in T.unroll(ow // lanes):
                    Y[job // (c * oh), job % c, job // c % oh, T.Ramp(k * lanes, 1, lanes)] = T.max(T.max(
                        T.Shuffle([rows[T.Ramp(2 * k * lanes, 1, lanes)], rows[T.Ramp(2 * k * lanes + lanes, 1, lanes)]], even),
                        T.Shuffle([rows[T.Ramp(2 * k * lanes, 1, lanes)], rows[T.Ramp(2 * k * lanes + lanes, 1, lanes)]], odd)),
                        T.Shuffle([rows[T.Ramp(2 * k * lanes, 1, lanes)], rows[T.Ramp(2 * k * lanes + lanes, 1, lanes)],
                                   rows[T.Ramp(2 * k * lanes + 2 * lanes, 1, lanes)]], third))

    return maxpool.with_attr("op_pattern", 8).with_attr("labnas_scheduled", 1).with_attr("labnas_rules", "hand")
