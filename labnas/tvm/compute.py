"""The compute definitions (TE) of labnas' bitpacked binary-conv and LAB kernels: what each kernel computes,
never how its loops run (that is :mod:`labnas.tvm.schedules`), as TOPI keeps ``topi/nn/*.py`` apart from
``topi/x86/*.py``. :mod:`labnas.tvm.kernels` describes the kernels together.
"""

from __future__ import annotations

from tvm import te, tirx

from .carry_save import carry_save_popcount
from .packed import WORD_BITS as WORD  # one word size for the packed weights and the kernels
from .packed import lab_source

__all__ = [
    "pack_compute",
    "lab_decision_compute",
    "lab_input_layout",
    "lab_pack_compute",
    "xnor_compute",
    "dot_compute",
    "CARRY_SAVE_MAX_TERMS",
    "WORD",
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


def _pad_words(bits: te.Tensor, channels: int, padding: int, pad_bit: int, width: int | None = None) -> te.Tensor:
    """``bits[N, H, Cw, W]`` (its first ``width`` columns, default all) padded spatially with the pad word: the
    words of a float map padded with +1 (pad bit 1: on under either compare, for every existing channel) or -1
    (off)."""
    n, h, words, w = (int(v) for v in bits.shape)
    w = width or w
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


def _lab_decision(x: te.Tensor, weight: te.Tensor, bias: te.Tensor, channels: int, width: int | None = None) -> te.Tensor:
    """The decision map over ``channels`` output channels; those past the input's ``C`` (the fused
    kernel's last, partial word) repeat channel ``C - 1`` and are masked out by the packing. ``width``
    (>= the map's): columns computed, those past the map's over zero padding (a tile of whole vectors
    where the vector does not divide the row; nobody reads them)."""
    n, c, h, w_map = (int(v) for v in x.shape)
    w = w_map if width is None else int(width)
    sources, _, k, _ = (int(v) for v in weight.shape)
    p = k // 2
    zero = tirx.const(0.0, x.dtype)
    real = (lambda cc: tirx.min(cc, c - 1)) if channels > c else (lambda cc: cc)
    groups, channel_of, slot_of = lab_input_layout(c, sources)

    def padded(nn, g, jj, yy, xx):
        inside = tirx.all(yy >= p, yy < h + p, xx >= p, xx < w_map + p)
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


def lab_pack_compute(x: te.Tensor, weight: te.Tensor, bias: te.Tensor, padding: int, pad_bit: int, strict: bool,
                     pixels: int = 1) -> te.Tensor:
    """LAB's decision map compared and packed in one kernel: what :func:`lab_decision_compute` followed by
    :func:`pack_compute` give (the same float sums, bit for bit), as ``int64[N, H + 2p, Cw, W + 2p]``.

    Why: the two-kernel path writes the float map (0.8 MB at 64 ch @ 56) and the packing reads it back
    and pads it once more; here each tile of decisions is compared and OR-ed into its words while in
    registers (:func:`_schedule_lab_pack`). The interior words are a stage of their own (``lab_bits``),
    padded with the pad word afterwards: 1/64 of the float map's size.

    ``pixels``: the tile's width; rows are computed to a multiple of it (a 56-wide map in four 16-float
    vectors: full-width multiply-adds, 14 % of them on zero padding nobody packs).
    """
    n, c, h, w = (int(v) for v in x.shape)
    words = -(-c // WORD)
    d = _lab_decision(x, weight, bias, words * WORD, -(-w // pixels) * pixels)
    b = te.reduce_axis((0, WORD), name="b")
    bits = te.compute(
        (n, h, words, int(d.shape[3])),
        lambda nn, y, ww, xx: _bit_or()(_channel_bit(d[nn, ww * WORD + b, y, xx], ww * WORD + b, b, c, strict), axis=b),
        name="lab_bits",
    )
    return _pad_words(bits, c, padding, pad_bit, w)


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
