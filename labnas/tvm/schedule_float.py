"""A generic CPU schedule for the float kernels of a BNN, and the Relax pipeline that applies it.

TVM 0.27's default CPU pipeline leaves every kernel a naive single-threaded loop nest (ResNet-18
runs 14x slower than torch) and its auto-tuner crashes in the PyPI wheel. The float parts of a BNN
(stem, 1x1 shortcuts, LAB's depthwise convs, BatchNorm, residual adds, pooling, the classifier) are a
small share of its MACs, so one rule per block shape gets most of the way:

- a reduction block (conv, depthwise conv, dense, pooling): move the reduction loops inside the
  spatial ones except the innermost spatial loop, vectorise that innermost loop, and run the
  outer spatial loops in parallel;
- an element-wise block: fuse all loops, run in parallel, vectorise the inner lanes.

Kernels that already carry a hand schedule (the labnas binary kernels) are left alone. Each rule
falls back to a plainer one if TVM refuses it, so scheduling never breaks a build.
"""

from __future__ import annotations

__all__ = ["schedule_float_ops", "labnas_pipeline", "vectorize_inner", "SCHEDULED_ATTR", "RULES_ATTR", "RULES"]

SCHEDULED_ATTR = "labnas_scheduled"
RULES_ATTR = "labnas_rules"
LANES = 8
PARALLEL_MIN = 4  # fuse outer loops until at least this many parallel iterations
def _extent(sch, loop) -> int | None:
    try:
        return int(sch.get(loop).extent)
    except (TypeError, ValueError):
        return None


def _parallel_prefix(sch, loops):
    """Fuse leading loops until there is enough parallel work, then parallelise the fused loop."""
    take, total = 0, 1
    for loop in loops:
        ext = _extent(sch, loop)
        if ext is None:
            break
        take += 1
        total *= ext
        if total >= PARALLEL_MIN * 16:
            break
    if take == 0:
        return None
    fused = sch.fuse(*loops[:take]) if take > 1 else loops[0]
    sch.parallel(fused)
    return fused


def vectorize_inner(sch, loop, lanes: int) -> None:
    """Vectorise a loop whole when short (LLVM splits odd widths such as 28 or 7), else by ``lanes``."""
    ext = _extent(sch, loop)
    if not ext or ext < 2:
        return
    if ext <= 8 * lanes:
        sch.vectorize(loop)
    elif ext % lanes == 0:
        sch.vectorize(sch.split(loop, [None, lanes])[1])


def _schedule_reduction(sch, block, spatial, reduce, lanes: int) -> None:
    inner = spatial[-1]
    sch.reorder(*spatial[:-1], *reduce, inner)
    vectorize_inner(sch, inner, lanes)  # before decompose_reduction (it needs compact dataflow)
    if spatial[:-1]:
        _parallel_prefix(sch, spatial[:-1])
    sch.decompose_reduction(block, reduce[0])


def _conv_tile(width: int, out_channels: int, lanes: int) -> tuple[int, int]:
    """``(output pixels, output channels)`` of a direct conv's register tile: a vector of pixels along
    x times up to 8 channels (16 with AVX-512's 32 registers), i.e. up to 8 (16) vector accumulators,
    each input vector reused by every channel's weight. The stem 7x7/2 at 224 with 16 lanes: 16 x 16
    ran 0.80 ms, 16 x 8 0.95 ms, whole 112-pixel rows 3.4-22 ms (spills)."""
    pixels = next((p for p in (lanes, 8, 7, 4, 2) if width % p == 0), 1)
    channels = next(c for c in (16 if lanes >= 16 else 8, 8, 4, 2, 1) if out_channels % c == 0)
    return pixels, channels


def _split_phases(sch, block, stride: int):
    """Store the conv's input as ``[n, c, y, x % s, x // s]`` so a stride-``s`` row of taps is a
    contiguous vector (no gathers). The padded copy, when there is one, is re-laid out for free;
    otherwise the input is copied (only the rows the conv reads; see :func:`_schedule_conv2d`).
    Returns the block that writes the re-laid-out input."""
    source = sch.get(block).reads[0].source
    if source.name.startswith("pad"):
        producer = sch.get_sblock(source.name)
    else:
        producer = sch.cache_read(block, 0, "global")
    width = int(sch.get(block).reads[0].source.shape[-1])
    pad = 0.0 if width % stride else None  # a width the stride does not divide: the last phase column is padding
    sch.transform_layout(producer, ("write", 0), lambda n, c, h, w: (n, c, h, w % stride, w // stride), pad_value=pad)
    return producer


def _schedule_conv2d(sch, block, loops, lanes: int) -> None:
    """Direct NCHW conv (stem, 1x1 shortcuts): register tile of pixels x output channels, reduction
    over (c, ky, kx) around it, parallel over output rows. A strided conv reads a phase-split copy of
    its input rows, made per output row inside the parallel loop: the generic rule's single vector
    accumulator and stride-2 gathers leave a 7x7/2 stem several times slower than torch."""
    n, f, y, x, rc, ry, rx = loops
    width, in_width, kx = _extent(sch, x), int(sch.get(block).reads[0].source.shape[-1]), _extent(sch, rx)
    stride = (in_width - kx) // (width - 1) if width > 1 else 1
    producer = None
    if stride > 1:
        producer = _split_phases(sch, block, stride)  # first: layout rewrites need one writer per buffer
        n, f, y, x, rc, ry, rx = sch.get_loops(block)
    pixels, channels = _conv_tile(width, _extent(sch, f), lanes)
    f_out, f_in = sch.split(f, [None, channels])
    x_out, x_in = sch.split(x, [None, pixels])
    sch.reorder(n, y, f_out, x_out, rc, ry, rx, f_in, x_in)
    sch.vectorize(x_in)  # before decompose_reduction (it needs compact dataflow)
    sch.unroll(f_in)
    rows = sch.fuse(n, y)
    sch.parallel(rows)
    if producer is not None:
        sch.compute_at(producer, rows)
    sch.decompose_reduction(block, rc)


def _schedule_group_conv(sch, block, loops, lanes: int) -> None:
    """Grouped conv with few channels per group (depthwise convs such as QuickNet's blur pool, or a LAB
    C -> 2C conv outside the labnas_lab kernel): a tile of 4 rows x 8 pixels x the 2 outputs of a group,
    all taps unrolled, so LLVM loads each input vector once for every output row and channel that uses
    it (the direct-conv tile shares nothing across rows here)."""
    n, f, y, x, rc, ry, rx = loops
    height, width = _extent(sch, y), _extent(sch, x)
    pixels, _ = _conv_tile(width, 1, lanes)
    rows = next(r for r in (4, 2, 1) if height % r == 0)
    channels = 2 if _extent(sch, f) % 2 == 0 else 1
    f_out, f_in = sch.split(f, [None, channels])
    y_out, y_in = sch.split(y, [None, rows])
    x_out, x_in = sch.split(x, [None, pixels])
    sch.reorder(n, f_out, y_out, x_out, rc, ry, rx, f_in, y_in, x_in)
    sch.vectorize(x_in)
    for loop in (ry, rx, f_in, y_in):
        sch.unroll(loop)
    sch.parallel(sch.fuse(n, f_out, y_out))
    sch.decompose_reduction(block, rc)


def _schedule_spatial(sch, block, loops, lanes: int, by_rows: bool = True) -> None:
    """An element-wise block: NCHW maps split between threads by image rows when ``by_rows`` (see
    :class:`labnas.tvm.policy.SchedulePolicy`), else the leading loops fused and run in parallel; vectorised."""
    if by_rows and len(loops) == 4 and (_extent(sch, loops[2]) or 0) >= PARALLEL_MIN:
        n, c, y, x = loops  # NCHW: threads take whole image rows, every channel of them
        sch.reorder(n, y, c, x)
        sch.parallel(sch.fuse(n, y))
        vectorize_inner(sch, x, lanes)
        return
    if len(loops) == 1:
        ext = _extent(sch, loops[0])
        if ext and ext % lanes == 0 and ext >= 4 * lanes:
            outer, inner = sch.split(loops[0], [None, lanes])
            sch.parallel(outer)
            sch.vectorize(inner)
        else:
            sch.parallel(loops[0])
        return
    _parallel_prefix(sch, loops[:-1])
    vectorize_inner(sch, loops[-1], lanes)


#: Rule names recorded per block (``labnas_rules`` attribute): the first three are shape-aware schedules,
#: ``in-consumer`` a producer computed inside its consumer's parallel loop (a conv's padded input);
#: ``reduction`` and ``elementwise`` the generic ones; ``parallel-only`` a block the full rule failed on
#: (run in parallel, not vectorised) and ``default`` one left as TVM legalised it (a single-threaded loop nest).
RULES = ("conv2d", "group-conv", "reduction", "in-consumer", "elementwise", "parallel-only", "default")


def _schedule_block(func, block_name: str, lanes: int, by_rows: bool = True):
    """Try the full rule, then parallel-only; return ``(func, rule)``, the input unchanged when no rule fits."""
    from tvm import s_tir

    for level in ("full", "parallel"):
        sch = s_tir.Schedule(func)
        try:
            block = sch.get_sblock(block_name)
            loops = sch.get_loops(block)
            if any(int(sch.get(lp).kind) == 1 for lp in loops):  # ForKind.PARALLEL: moved into its consumer's loop
                return func, "in-consumer"
            ivs = sch.get(block).iter_vars
            if len(loops) != len(ivs) or not loops:
                return func, "default"
            kinds = [int(iv.iter_type) for iv in ivs]  # 0: data-parallel, 2: reduction
            spatial = [lp for lp, k in zip(loops, kinds) if k == 0]
            reduce = [lp for lp, k in zip(loops, kinds) if k == 2]
            if len(spatial) + len(reduce) != len(loops):
                return func, "default"
            rule = "parallel-only"
            if level == "full":
                is_conv = len(spatial) == 4 and len(reduce) == 3 and kinds[:4] == [0] * 4
                if is_conv and block_name.startswith("group_conv2d_nchw") and _extent(sch, loops[4]) <= 2:
                    _schedule_group_conv(sch, block, loops, lanes)
                    rule = "group-conv"
                elif is_conv and block_name.startswith(("conv2d_nchw", "group_conv2d_nchw")):
                    _schedule_conv2d(sch, block, loops, lanes)
                    rule = "conv2d"
                elif reduce and spatial:
                    _schedule_reduction(sch, block, spatial, reduce, lanes)
                    rule = "reduction"
                elif spatial:
                    _schedule_spatial(sch, block, spatial, lanes, by_rows)
                    rule = "elementwise"
            else:
                _parallel_prefix(sch, spatial or loops[:1])
            return sch.mod["main"], rule
        except Exception:  # noqa: BLE001 - TVM raises ScheduleError and friends; try the plainer rule
            continue
    return func, "default"


def _block_names(func) -> list[str]:
    """Names of the blocks directly under the root (all of them, in a kernel FuseTIR produced)."""
    from tvm import s_tir

    sch = s_tir.Schedule(func)
    try:
        return [sch.get(b).name_hint for b in sch.get_child_blocks(sch.get_sblock("root"))]
    except Exception:  # noqa: BLE001 - a function without a root block: nothing to schedule
        return []


def _inline_injective(func):
    """Inline every block that can be inlined into its consumers (FuseTIR leaves one buffer per op)."""
    from tvm import s_tir

    sch = s_tir.Schedule(func)
    changed = True
    while changed:
        changed = False
        try:
            blocks = sch.get_child_blocks(sch.get_sblock("root"))
        except Exception:  # noqa: BLE001
            return func
        for block in blocks[:-1]:
            if "pad" in sch.get(block).name_hint:
                continue  # a padded copy keeps the conv's inner loop free of bounds checks (vectorisable)
            try:
                sch.compute_inline(block)
                changed = True
                break
            except Exception:  # noqa: BLE001 - a reduction, or an output: keep it
                continue
    return sch.mod["main"]


def schedule_float_ops(mod, lanes: int = LANES, by_rows: bool = True):
    """Schedule every PrimFunc of ``mod`` that has no schedule yet (see the module docstring).

    ``lanes``: float32 lanes of the target's vectors (8 for AVX2 or two NEON registers, 16 for AVX-512).
    ``by_rows``: element-wise NCHW kernels split between threads by image rows (else by channels), the compile's
    :attr:`labnas.tvm.policy.SchedulePolicy.by_rows`.
    Each function gets the attribute ``labnas_rules``, ``"block:rule, ..."`` (a rule of :data:`RULES`), so
    a test or a profile can tell which kernels run a real schedule.
    """
    from tvm import tirx

    for gv, func in list(mod.functions.items()):
        if not isinstance(func, tirx.PrimFunc) or (func.attrs and SCHEDULED_ATTR in func.attrs):
            continue
        func = _inline_injective(func)
        rules = []
        # convolutions first: their rule may re-lay-out and move their padded input (a block scheduled
        # before would be in the way); then the others (a padded input moved into its conv's loop is left
        # as it is and recorded as in-consumer)
        convs = [n for n in _block_names(func) if n.startswith(("conv2d_nchw", "group_conv2d_nchw"))]
        for name in convs + [n for n in _block_names(func) if n not in convs]:
            func, rule = _schedule_block(func, name, lanes, by_rows)
            rules.append(f"{name}:{rule}")
        mod[gv] = func.with_attr(SCHEDULED_ATTR, 1).with_attr(RULES_ATTR, ", ".join(rules))
    return mod


def labnas_pipeline(target, lanes: int = LANES, by_rows: bool = True):
    """TVM's CPU pipeline with :func:`schedule_float_ops` (``lanes``, ``by_rows``) run on the fused kernels."""
    import tvm
    from tvm.relax.backend.cpu_generic import pipeline as cpu

    @tvm.transform.module_pass(opt_level=0)
    def _pipeline(mod, _ctx):
        with target:
            mod = tvm.transform.Sequential(cpu.library_dispatch_passes(target) + cpu.legalize_passes(target))(mod)
            mod = schedule_float_ops(mod, lanes, by_rows)
            mod = tvm.transform.Sequential(cpu.dataflow_lower_passes(target) + cpu.finalize_passes(target))(mod)
        return mod

    return _pipeline
