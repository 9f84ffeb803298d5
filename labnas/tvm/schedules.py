"""The hand schedules (s_tir) of labnas' binary kernels and the register-tile rules they fall back on.

Each schedule is ``schedule(sch, lanes, tile=None, *, by_rows=True)``: ``lanes`` the vector lanes, ``tile`` a
measured register tile (:mod:`labnas.tvm.strategy`; ``None``: the kernel's rule), ``by_rows`` the map partition
of the compile's :class:`labnas.tvm.policy.SchedulePolicy` (threads take image rows, or channels). Nothing here
reads module state: one compile's policy cannot leak into another's. The compute definitions are in
:mod:`labnas.tvm.compute`.
"""

from __future__ import annotations

__all__ = [
    "lab_tile",
    "lab_pack_tile",
    "xnor_tile",
    "WEIGHT_REUSE_BYTES",
    "SCHEDULES",
    "kernel_name",
    "mark_scheduled",
]


def _vector_lanes(extent: int, want: int) -> int:
    lanes = want
    while lanes > 1 and extent % lanes:
        lanes //= 2
    return lanes


def _schedule_pack(sch, vector: int, tile: tuple[int, ...] | None = None, *, by_rows: bool = True) -> None:
    """The interior words row by row (parallel over rows; for each word and channel the row in vectors of
    a power-of-two number of pixels, unrolled), then the padding pass, parallel over padded rows.

    Why power-of-two vectors: a row vectorised whole (``<56 x i64>`` words carried across the 64 channels)
    is scalarised by LLVM's legaliser, ~200 moves per channel; in chunks of at most ``vector`` pixels
    the words stay in registers: 64 ch @ 56 packed in 10.5 us instead of 67 us in context, 2 threads,
    AVX-512 Xeon (docs/kernels.md)."""
    block = sch.get_sblock("bits")
    n, y, w, x, b = sch.get_loops(block)
    sch.reorder(n, y, w, b, x)
    width = int(sch.get(x).extent)
    lanes = _vector_lanes(width, vector)
    if lanes < width:
        chunks, x = sch.split(x, [None, lanes])
        if width // lanes <= 16:  # the row's words stay in registers across the channels
            sch.unroll(chunks)
    sch.vectorize(x)  # before decompose_reduction (it needs compact dataflow)
    sch.parallel(sch.fuse(n, y))
    sch.decompose_reduction(block, b)
    n, y, *_ = sch.get_loops(sch.get_sblock("packed"))
    sch.parallel(sch.fuse(n, y))


def lab_tile(width: int, vector: int) -> tuple[int, int]:
    """``(pixels, rows)`` of the LAB kernel's register tile (times 2 channels).

    Rows that are a multiple of the vector: ``vector`` pixels x 4 rows. Other widths (ResNet's 28, 14,
    7) as one whole-row vector, which LLVM splits into registers, x 2 rows when that is at most two
    registers (the fastest of the tiles tried on every ResNet-18 width; docs/kernels.md).
    """
    if width % vector == 0:
        return vector, 4
    if width > 4 * vector:  # too wide for registers: a divisor of the row
        return _vector_lanes(width, vector), 1
    return width, (2 if width <= 2 * vector else 1)


def _schedule_lab(sch, vector: int, tile: tuple[int, ...] | None = None, *, by_rows: bool = True) -> None:
    """LAB's decision map: a tile of ``rows`` x ``pixels`` x 2 channels (which read the same two input
    channels in the official pairing), taps unrolled around it, so LLVM loads each input vector once for
    every row and channel of the tile that uses it.

    ``tile = (pixels, rows)`` (or the rule's, :func:`lab_tile`): the zero-padded input is a parallel pass
    over the whole map first, and the tiles run parallel over (channel pairs x rows).
    ``tile = (pixels, rows, chunk)``, a **near** tile: parallel over channel pairs only, each pair padding
    the two input maps it reads right before it sweeps them (:func:`lab_input_layout` makes them one compact
    region), so they are read back from L1; the row is vectorised in chunks of ``chunk`` floats. On the
    AVX-512 EPYC with 2 threads this halved the 64 @ 56 and 128 @ 28 maps (the whole-map pass did not
    scale past one thread); docs/kernels.md.
    """
    lab = sch.get_sblock("lab_decision")
    n, c, y, x, *taps = sch.get_loops(lab)
    ext = lambda loop: int(sch.get(loop).extent)  # noqa: E731
    c_out, c_in = sch.split(c, [None, 2 if ext(c) % 2 == 0 else 1])
    pixels, rows, *near = tile or lab_tile(ext(x), vector)
    y_out, y_in = sch.split(y, [None, next(r for r in (rows, 2, 1) if ext(y) % r == 0)])
    x_out, x_in = sch.split(x, [None, pixels])
    sch.reorder(n, c_out, y_out, x_out, *taps, c_in, y_in, x_in)
    chunks = ()
    if near and pixels > near[0]:
        chunk, x_in = sch.split(x_in, [None, near[0]])
        chunks = (chunk,)
    sch.vectorize(x_in)  # before decompose_reduction (it needs compact dataflow)
    for loop in (*taps, c_in, y_in, *chunks):
        sch.unroll(loop)
    if by_rows and near and ext(y_out) % 2 == 0:  # two row halves x channel pairs: threads take row halves
        y_half, y_out = sch.split(y_out, [2, None])
        sch.reorder(n, y_half, c_out, y_out)
        outer = sch.fuse(n, y_half, c_out)
    elif by_rows and not near:
        sch.reorder(n, y_out, c_out)
        outer = sch.fuse(n, y_out, c_out)
    else:
        outer = sch.fuse(n, c_out) if near else sch.fuse(n, c_out, y_out)
    sch.parallel(outer)
    sch.decompose_reduction(lab, taps[0])
    bias = sch.get_sblock("lab_bias")
    sch.reverse_compute_at(bias, x_out)  # added to the tile while it is in registers / L1
    sch.vectorize(sch.get_loops(bias)[-1])
    pad = sch.get_sblock("lab_input")
    if near:
        sch.compute_at(pad, outer)  # the pair's two padded maps, just before they are swept
        sch.vectorize(sch.get_loops(pad)[-1])
    else:
        _schedule_lab_input(sch, pad, by_rows)


def _schedule_lab_input(sch, pad, by_rows: bool) -> None:
    """The zero-padded LAB input as its own pass: parallel over rows (or groups x maps), vectorised along rows."""
    n, g, j, y, x = sch.get_loops(pad)
    if by_rows:
        sch.reorder(n, y, g, j)
        sch.parallel(sch.fuse(n, y))
    else:
        sch.parallel(sch.fuse(n, g, j))
    sch.vectorize(x)


def lab_pack_tile(height: int, width: int, vector: int, sources: int = 2) -> tuple[int, int, int, int] | None:
    """``(rows, pixels, channels, row chunks)`` of the fused LAB + packing kernel's tile, or ``None`` where
    the two-kernel path is faster. ``sources``: 2 for LAB's official pairing, 1 for ``per_channel``.

    Fused where it beat ``labnas_lab`` + ``labnas_pack`` (docs/kernels.md): rows a multiple of the vector
    take 4 rows x ``vector`` pixels x 1 channel, the rows in 2 parallel chunks, with the official pairing
    (``per_channel`` has half the multiply-adds per packed bit and keeps two kernels there); maps narrower
    than a vector (but at least half of one) take the whole map x 2 channels. Rows of 28 or 14 pixels
    (3.5 or 1.75 vectors) keep two kernels: no tile beat them.
    """
    if vector < 2:  # fusion off
        return None
    if width % vector == 0:
        if sources < 2:
            return None
        rows = next(r for r in (4, 2, 1) if height % r == 0)
        return rows, vector, 1, (2 if height % (2 * rows) == 0 else 1)
    if vector // 2 <= width < vector and height <= vector:
        return height, width, 2, 1
    return None


def _schedule_lab_pack(sch, vector: int, tile: tuple[int, ...] | None = None, *, by_rows: bool = True) -> None:
    """The fused LAB + packing kernel: parallel over (words x row chunks); inside, for each of a word's
    64 channels, the chunk's tiles of decisions (taps unrolled around the tile, as in :func:`_schedule_lab`),
    each compared and OR-ed into the chunk's words at once. Channels outside the tiles keep one
    channel's input rows in L1 while the chunk is swept.

    ``tile = (rows, pixels, channels, chunks)``: the zero-padded input is a pass over the whole map first;
    ``(rows, pixels, channels, chunks, 1)`` (``fused-near``): each (word, chunk) pads the input maps its 64
    channels read (one compact region with :func:`lab_input_layout`) right before it sweeps them."""
    bits, decision, raw = sch.get_sblock("lab_bits"), sch.get_sblock("lab_bias"), sch.get_sblock("lab_decision")
    reduce_extents = [int(iv.dom.extent) for iv in sch.get(raw).iter_vars if iv.iter_type == 2]  # CommReduce: s, ky, kx
    n, y, words, x, b = sch.get_loops(bits)
    ext = lambda loop: int(sch.get(loop).extent)  # noqa: E731
    rows, pixels, channels, chunks, *near = tile or lab_pack_tile(ext(y), ext(x), vector, sources=reduce_extents[0])
    y_chunk, y_out, y_in = sch.split(y, [chunks, None, rows])
    x_out, x_in = sch.split(x, [None, pixels])
    b_out, b_in = sch.split(b, [None, channels])
    # by rows, row chunks outermost: threads take row chunks, every word of them
    split = (n, y_chunk, words) if by_rows else (n, words, y_chunk)
    sch.reorder(*split, b_out, y_out, x_out, b_in, y_in, x_in)
    sch.parallel(sch.fuse(*split))
    sch.vectorize(x_in)  # before decompose_reduction (it needs compact dataflow)
    sch.unroll(y_in)
    sch.unroll(b_in)
    depth = 4  # parallel, b_out, y_out, x_out: the tile's own loops follow
    sch.compute_at(decision, x_out)
    sch.compute_at(raw, x_out)
    n_taps = sum(e > 1 for e in reduce_extents)  # compute_at made loops for these only
    loops = sch.get_loops(raw)[depth:]
    spatial, taps = loops[: len(loops) - n_taps], loops[len(loops) - n_taps :]
    sch.reorder(*taps, *spatial)
    sch.vectorize(spatial[-1])
    for loop in (*taps, *spatial[:-1]):
        sch.unroll(loop)
    sch.decompose_reduction(raw, taps[0])
    *outer, inner = sch.get_loops(decision)[depth:]
    sch.vectorize(inner)
    for loop in outer:
        sch.unroll(loop)
    sch.decompose_reduction(bits, b_out)
    pad = sch.get_sblock("lab_input")
    if near:  # the word's input maps (rows of the chunk) padded where they are swept
        sch.compute_at(pad, sch.get_loops(sch.get_sblock("lab_bits_init"))[0])  # the parallel (word, chunk) loop
        sch.vectorize(sch.get_loops(pad)[-1])
    else:
        _schedule_lab_input(sch, pad, by_rows)
    n, y, *_ = sch.get_loops(sch.get_sblock("packed"))
    sch.parallel(sch.fuse(n, y))


#: Packed weights larger than this are re-read from L2 per output pixel unless a tile of pixels shares them.
WEIGHT_REUSE_BYTES = 32 * 1024


def xnor_tile(weight_bytes: int, width: int, cout: int, vector: int) -> tuple[int, int]:
    """``(output-channel lanes, output pixels per tile)`` of the xnor kernel's register tile.

    The kernel is bound by the popcount's vector instructions (nibble-table ``vpshufb`` + ``vpsadbw``
    on AVX2), so the tile only has to keep the weights in cache: with small weights one pixel by
    ``vector`` channels is best; with large ones (512 -> 512 at 7x7: 295 KB) a row of up to 7 pixels
    shares each weight load so they are not re-read from L2 per pixel.
    """
    if weight_bytes > WEIGHT_REUSE_BYTES:
        pixels = next(p for p in (7, 4, 2, 1) if width % p == 0)
        return _vector_lanes(cout, max(vector // 2, 1)), pixels
    return _vector_lanes(cout, vector), 1


def _schedule_xnor(sch, vector: int, tile: tuple[int, ...] | None = None, *, by_rows: bool = True) -> None:
    """The plain xnor kernel: a register tile of ``lanes`` output channels x ``pixels`` output pixels
    (``tile=None``: :func:`xnor_tile`'s rule; a measured choice passes ``(pixels,)``, see
    :mod:`labnas.tvm.strategy`), the taps and words reduced around it, parallel over output rows."""
    block = sch.get_sblock("pop")
    if len(sch.get_loops(block)) == 4:  # the carry-save tree: no reduction loop
        _schedule_xnor_tree(sch, vector)
        return
    n, y, x, o, ky, kx, kw = sch.get_loops(block)
    cout, width = int(sch.get(o).extent), int(sch.get(x).extent)
    weight_bytes = 8 * cout * int(sch.get(ky).extent) * int(sch.get(kx).extent) * int(sch.get(kw).extent)
    lanes, x_in_len = xnor_tile(weight_bytes, width, cout, vector)
    pixels = tile[0] if tile else None
    if pixels is not None:
        if width % pixels:
            raise ValueError(f"an xnor tile of {pixels} pixels does not divide the output width {width}")
        lanes, x_in_len = _vector_lanes(cout, vector), pixels
    o_out, o_in = sch.split(o, [None, lanes])
    x_out, x_in = sch.split(x, [None, x_in_len])
    sch.reorder(n, y, x_out, o_out, ky, kx, kw, x_in, o_in)
    sch.parallel(sch.fuse(n, y))
    if lanes > 1:
        sch.vectorize(o_in)  # before decompose_reduction, which breaks the compact dataflow vectorize requires
    sch.unroll(x_in)
    sch.reverse_compute_at(sch.get_sblock("dot_tile"), o_out)  # NCHW tile written while in L1
    sch.decompose_reduction(block, ky)


def _schedule_xnor_tree(sch, vector: int) -> None:
    """The carry-save xnor kernel: parallel over blocks of ``vector / 2`` output channels (one AVX2
    register of int64), each running over all output pixels.

    A block's packed weights (``k^2 Cw`` words per channel, 4.6 KB for 512 -> 512 3x3) and the packed
    input (8 KB at 256@14, 27 KB at 64@56) stay in L1 for the whole block, so the tree's loads hit L1
    (the plain kernel's order, rows outer and all weights per pixel, is slower with the tree).
    """
    block = sch.get_sblock("pop")
    n, y, x, o = sch.get_loops(block)
    o_out, o_in = sch.split(o, [None, _vector_lanes(int(sch.get(o).extent), max(vector // 2, 1))])
    sch.reorder(o_out, n, y, x, o_in)
    sch.parallel(o_out)
    sch.vectorize(o_in)
    sch.reverse_compute_at(sch.get_sblock("dot_tile"), o_out)  # the block's NCHW float planes


#: The binary hand kernels' schedules, ``schedule(sch, vector, tile)``; bound to the emitted kernels by
#: :mod:`labnas.tvm.registry`. ``labnas_dot`` is element-wise and left to fusion and the float scheduler.
SCHEDULES = {
    "labnas_lab_pack": _schedule_lab_pack,
    "labnas_pack": _schedule_pack,
    "labnas_xnor": _schedule_xnor,
    "labnas_lab": _schedule_lab,
}


def kernel_name(kind: str, tile: tuple[int, ...] | None = None) -> str:
    """A hand kernel's function name: ``kind``, or ``kind_t4x2_tile`` for a measured register tile (4, 2).

    The name carries the tile from the importer to the scheduler and shows it in a profile; ``_tile``
    keeps the counter TVM appends to repeated names apart from the numbers."""
    return kind if tile is None else f"{kind}_t{'x'.join(str(int(v)) for v in tile)}_tile"


def mark_scheduled(func, schedule, lanes: int):
    """``schedule(sch, lanes)`` applied to ``func``, marked opaque (op_pattern 8: FuseOps keeps it whole),
    scheduled (the float scheduler skips it) and ``labnas_rules = "hand"``."""
    from tvm import s_tir

    sch = s_tir.Schedule(func)
    schedule(sch, lanes)
    return sch.mod["main"].with_attr("op_pattern", 8).with_attr("labnas_scheduled", 1).with_attr("labnas_rules", "hand")
