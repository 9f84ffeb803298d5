"""Bitpacked binary-conv kernels for TVM: compute definitions (TE) apart from their schedules (s_tir).

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

from tvm import te, tirx

from .carry_save import carry_save_popcount
from .packed import WORD_BITS as WORD  # one word size for the packed weights and the kernels
from .packed import lab_source
from .schedule_float import split_by_rows

__all__ = [
    "pack_compute",
    "lab_decision_compute",
    "lab_pack_compute",
    "lab_pack_tile",
    "xnor_compute",
    "dot_compute",
    "mark_scheduled",
    "kernel_name",
]

def pack_compute(d: te.Tensor, padding: int, pad_bit: int, strict: bool) -> te.Tensor:
    """Bits of ``d`` packed along channels, as ``int64[N, H + 2p, Cw, W + 2p]`` (pixels innermost).

    Two stages, like :func:`lab_pack_compute`: the interior words (``bits``) straight from ``d`` (for each of a
    word's 64 channels, one contiguous load of a row, a compare, and an OR of the bit into every pixel's
    word), then the words padded with the pad word (all existing channels' bits for pad bit 1, none for 0):
    a pass over 1/64 of the float map. Padding the float map first (a scalar ``if_then_else`` per element)
    cost 3-6x more on the AVX-512 EPYC (256 ch @ 14: 28.5 -> 5.2 us; 64 @ 56: 23 -> 13 us).
    """
    n, c, h, w = (int(v) for v in d.shape)
    words = -(-c // WORD)
    b = te.reduce_axis((0, WORD), name="b")
    bits = te.compute(
        (n, h, words, w),
        lambda nn, y, ww, xx: _bit_or()(
            _channel_bit(d[nn, tirx.min(ww * WORD + b, c - 1), y, xx], ww * WORD + b, b, c, strict), axis=b
        ),
        name="bits",
    )
    return _pad_words(bits, c, padding, pad_bit)


def _pad_words(bits: te.Tensor, channels: int, padding: int, pad_bit: int) -> te.Tensor:
    """``bits[N, H, Cw, W]`` padded spatially with the pad word: the words of a float map padded with +1
    (pad bit 1: on under either compare, for every existing channel) or -1 (off)."""
    n, h, words, w = (int(v) for v in bits.shape)
    last = (1 << (channels - WORD * (words - 1))) - 1 if channels % WORD else -1

    def pad_word(ww):
        if not pad_bit:
            return tirx.const(0, "int64")
        return tirx.Select(ww < words - 1, tirx.const(-1, "int64"), tirx.const(last, "int64"))

    def out(nn, yy, ww, xx):
        yi, xi = yy - padding, xx - padding
        inside = tirx.all(yi >= 0, yi < h, xi >= 0, xi < w)
        clamp_y, clamp_x = tirx.max(tirx.min(yi, h - 1), 0), tirx.max(tirx.min(xi, w - 1), 0)
        return tirx.if_then_else(inside, bits[nn, clamp_y, ww, clamp_x], pad_word(ww))

    return te.compute((n, h + 2 * padding, words, w + 2 * padding), out, name="packed")


def _bit_or():
    return te.comm_reducer(lambda x, y: x | y, lambda t: tirx.const(0, t), name="bit_or")


def _channel_bit(value, ch, bb, channels: int, strict: bool):
    """Bit ``bb`` of a packed word: set when channel ``ch`` exists and its decision ``value`` says +1."""
    on = value > 0 if strict else value >= 0
    return tirx.Select(tirx.all(ch < channels, on), tirx.const(1, "int64") << bb.astype("int64"), tirx.const(0, "int64"))


def lab_decision_compute(x: te.Tensor, weight: te.Tensor, bias: te.Tensor) -> te.Tensor:
    """LAB's decision map ``bias[c] + sum_{s, ky, kx} weight[s, c, ky, kx] xpad[src_s(c), y + ky, x + kx]``.

    ``weight[S, C, k, k]`` and ``bias[C]`` are :class:`labnas.tvm.packed.FrozenLabDecision`'s: one
    source channel per output channel ``c`` for the folded ``per_channel`` pairing, two (``c // 2``
    and ``(C + c) // 2``) for the ``official`` one. ``xpad`` is the input zero-padded by ``k // 2``
    (its own stage: reading through a bounds check in the tap loop would stop the row vectorising).

    Its own kernel (``labnas_lab``), float32 NCHW, consumed by the sign packing kernel, where
    :func:`lab_pack_tile` finds no tile for :func:`lab_pack_compute` (ResNet's 28- and 14-wide maps).
    Against the unfused lowering (a C -> 2C grouped conv, two channel slices and a subtraction) it writes
    half the float map and runs no slice kernel.
    """
    return _lab_decision(x, weight, bias, int(x.shape[1]))


def lab_input_layout(channels: int, sources: int):
    """How the zero-padded LAB input ``lab_input[N, G, J, H + 2p, W + 2p]`` holds the ``channels`` input maps:
    ``(G, channel_of(g, j), slot_of(c, s))``, ``slot_of`` giving the ``(g, j)`` that decision channel ``c``'s
    source ``s`` reads.

    Official pairing with an even ``C``: decision channels ``2j`` and ``2j + 1`` both read input channels ``j``
    (s = 0) and ``C/2 + j`` (s = 1) (:func:`~labnas.tvm.packed.lab_source`), stored as ``[s, j]``, so the two
    maps a pair of decision channels reads are one compact region: a schedule can pad them right where
    the pair is computed (``near`` tiles, :func:`_schedule_lab`), in L1, instead of in a pass over the
    whole map first. Otherwise (``per_channel``, or an odd ``C``): one group, ``j`` = the input channel.
    """
    if sources == 2 and channels % 2 == 0:
        half = channels // 2
        return 2, (lambda g, j: j + g * half), (lambda c, s: (s, c // 2))
    return 1, (lambda g, j: j), (lambda c, s: (0, lab_source(c, s, channels, sources)))


def _lab_decision(x: te.Tensor, weight: te.Tensor, bias: te.Tensor, channels: int) -> te.Tensor:
    """The decision map over ``channels`` output channels; those past the input's ``C`` (the fused
    kernel's last, partial word) repeat channel ``C - 1`` and are masked out by the packing."""
    n, c, h, w = (int(v) for v in x.shape)
    sources, _, k, _ = (int(v) for v in weight.shape)
    p = k // 2
    zero = tirx.const(0.0, x.dtype)
    real = (lambda cc: tirx.min(cc, c - 1)) if channels > c else (lambda cc: cc)
    groups, channel_of, slot_of = lab_input_layout(c, sources)

    def padded(nn, g, jj, yy, xx):
        inside = tirx.all(yy >= p, yy < h + p, xx >= p, xx < w + p)
        return tirx.if_then_else(inside, x[nn, channel_of(g, jj), yy - p, xx - p], zero)

    xpad = te.compute((n, groups, -(-c // groups), h + 2 * p, w + 2 * p), padded, name="lab_input")
    s, ky, kx = te.reduce_axis((0, sources), "s"), te.reduce_axis((0, k), "ky"), te.reduce_axis((0, k), "kx")

    raw = te.compute(
        (n, channels, h, w),
        lambda nn, cc, y, xx: te.sum(
            weight[s, real(cc), ky, kx] * xpad[(nn, *slot_of(real(cc), s), y + ky, xx + kx)], axis=[s, ky, kx]
        ),
        name="lab_decision",
    )
    # te.sum(..., init=bias[c]) compiles to wrong sums in TVM 0.27; the bias is added per tile instead.
    return te.compute(raw.shape, lambda nn, cc, y, xx: raw[nn, cc, y, xx] + bias[real(cc)], name="lab_bias")


def lab_pack_compute(x: te.Tensor, weight: te.Tensor, bias: te.Tensor, padding: int, pad_bit: int, strict: bool) -> te.Tensor:
    """LAB's decision map compared and packed in one kernel: what :func:`lab_decision_compute` followed by
    :func:`pack_compute` give (the same float sums, bit for bit), as ``int64[N, H + 2p, Cw, W + 2p]``.

    Why: the two-kernel path writes the float map (0.8 MB at 64 ch @ 56) and the packing reads it back
    and pads it once more; here each tile of decisions is compared and OR-ed into its words while in
    registers (:func:`_schedule_lab_pack`). The interior words are a stage of their own (``lab_bits``),
    padded with the pad word afterwards: 1/64 of the float map's size.
    """
    n, c, h, w = (int(v) for v in x.shape)
    words = -(-c // WORD)
    d = _lab_decision(x, weight, bias, words * WORD)
    b = te.reduce_axis((0, WORD), name="b")
    bits = te.compute(
        (n, h, words, w),
        lambda nn, y, ww, xx: _bit_or()(_channel_bit(d[nn, ww * WORD + b, y, xx], ww * WORD + b, b, c, strict), axis=b),
        name="lab_bits",
    )
    return _pad_words(bits, c, padding, pad_bit)


#: Longest reduction (``k^2 ceil(C / 64)`` words) given the carry-save popcount: beyond it one expression per
#: output no longer beats the plain reduction loop (docs/kernels.md has the measurements).
CARRY_SAVE_MAX_TERMS = 100


def xnor_compute(a: te.Tensor, wbits: te.Tensor, stride: int, taps: int, carry_save: bool = False) -> te.Tensor:
    """The ±1 dot products ``taps - 2 popcount(a ^ w)`` as ``float32[N, Cout, H, W]`` (NCHW).

    ``wbits`` is laid out ``[k, k, Cw, Cout]`` (output channels innermost, to vectorise over), so the
    popcount sums (``pop``) come out NHWC; a second stage turns each register tile into NCHW float32
    (via int32: AVX2 has no int64 -> float conversion) while it is in cache, so the float epilogue reads
    contiguous rows instead of NHWC sums with a stride of Cout. The sums stay int64, the popcount's own
    type: narrowing every vector of popcounts to int32 costs two shuffles per four words on AVX2.

    ``carry_save`` (targets whose popcount is a nibble table, i.e. AVX2) writes each output's sum as
    one full-adder tree over all its words (:mod:`labnas.tvm.carry_save`): 7 popcounts instead of 36 for
    a 3x3 conv over 256 channels. ``pop`` then has no reduction loop and
    gets its own schedule. Reductions longer than :data:`CARRY_SAVE_MAX_TERMS` words keep the loop.
    """
    n, hp, words, wp = (int(v) for v in a.shape)
    k, _, _, cout = (int(v) for v in wbits.shape)
    ho, wo = (hp - k) // stride + 1, (wp - k) // stride + 1
    if carry_save and k * k * words <= CARRY_SAVE_MAX_TERMS:
        taps_words = [(ky, kx, kw) for ky in range(k) for kx in range(k) for kw in range(words)]
        pop = te.compute(
            (n, ho, wo, cout),
            lambda nn, y, x, o: carry_save_popcount(
                [a[nn, y * stride + ky, kw, x * stride + kx] ^ wbits[ky, kx, kw, o] for ky, kx, kw in taps_words]
            ),
            name="pop",
        )
    else:
        ky, kx, kw = te.reduce_axis((0, k), "ky"), te.reduce_axis((0, k), "kx"), te.reduce_axis((0, words), "kw")
        pop = te.compute(
            (n, ho, wo, cout),
            lambda nn, y, x, o: te.sum(
                tirx.popcount(a[nn, y * stride + ky, kw, x * stride + kx] ^ wbits[ky, kx, kw, o]),
                axis=[ky, kx, kw],
            ),
            name="pop",
        )
    return te.compute(
        (n, cout, ho, wo), lambda nn, o, y, x: (taps - 2 * pop[nn, y, x, o]).astype("int32").astype("float32"), name="dot_tile"
    )


def dot_compute(dot: te.Tensor, corr: te.Tensor) -> te.Tensor:
    """``out = dot + corr[o, y, x]``, float32 NCHW: element-wise, so the scale, BatchNorm,
    residual add and activation that follow fuse into it."""
    return te.compute(dot.shape, lambda nn, o, y, x: dot[nn, o, y, x] + corr[o, y, x], name="dot")


# -- schedules ---------------------------------------------------------------------------------------
def _vector_lanes(extent: int, want: int) -> int:
    lanes = want
    while lanes > 1 and extent % lanes:
        lanes //= 2
    return lanes


def _schedule_pack(sch, vector: int, tile: tuple[int, ...] | None = None) -> None:
    """The interior words row by row (parallel over rows; for each word and channel a vector along the
    row), then the padding pass, parallel over padded rows."""
    block = sch.get_sblock("bits")
    n, y, w, x, b = sch.get_loops(block)
    sch.reorder(n, y, w, b, x)
    width = int(sch.get(x).extent)
    if width > 64:  # LLVM splits up to 16 ymm of int64 lanes itself; beyond that, a divisor
        x = sch.split(x, [None, next(lanes for lanes in (32, 16, 8, 4, 2, 1) if width % lanes == 0)])[1]
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


def _schedule_lab(sch, vector: int, tile: tuple[int, ...] | None = None) -> None:
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
    if split_by_rows() and near and ext(y_out) % 2 == 0:  # two row halves x channel pairs: threads take row halves
        y_half, y_out = sch.split(y_out, [2, None])
        sch.reorder(n, y_half, c_out, y_out)
        outer = sch.fuse(n, y_half, c_out)
    elif split_by_rows() and not near:
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
        _schedule_lab_input(sch, pad)


def _schedule_lab_input(sch, pad) -> None:
    """The zero-padded LAB input as its own pass: parallel over rows (or groups x maps), vectorised along rows."""
    n, g, j, y, x = sch.get_loops(pad)
    if split_by_rows():
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


def _schedule_lab_pack(sch, vector: int, tile: tuple[int, ...] | None = None) -> None:
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
    split = (n, y_chunk, words) if split_by_rows() else (n, words, y_chunk)
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
        _schedule_lab_input(sch, pad)
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


def _schedule_xnor(sch, vector: int, tile: tuple[int, ...] | None = None) -> None:
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
