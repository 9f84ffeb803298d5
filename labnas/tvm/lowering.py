"""PyTorch BNN -> Relax IRModule -> compiled executable, with binary convs as bitpacked kernels.

``torch.export`` traces the frozen model (see :mod:`labnas.tvm.packed`); the Relax importer maps
``labnas::xnor_conv2d`` to the pack / xnor-popcount / dot kernels of :mod:`labnas.tvm.kernels` (and a
``labnas::lab_decision`` feeding it into the same packing kernel where a tile fits), which get their hand
schedules and are marked opaque so fusion keeps them whole. Float parts (stem, 1x1
shortcuts, LAB's depthwise conv, BatchNorm, the classifier) are ordinary Relax ops.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .._errors import LabnasError
from .packed import freeze
from .targets import TargetPreset

__all__ = ["LoweringError", "CompiledModel", "import_model", "compile_model", "check_numerics"]


class LoweringError(LabnasError, RuntimeError):
    """The model has a layer the lowering does not know, or TVM's output does not match PyTorch."""


def _lab_plan(lab_node, importer, lab_choice) -> tuple[bool, tuple[int, ...] | None]:
    """``(fused, tile)`` for a ``labnas::lab_decision`` node: computed inside its binary conv's packing
    kernel (``labnas_lab_pack``) or as its own kernel (``labnas_lab``), with a measured register tile or
    ``None`` (the kernel's rule). Fusion needs the map to feed exactly one ``labnas::xnor_conv2d``."""
    from .strategy import LabShape

    users = list(lab_node.users)
    conv = users[0] if len(users) == 1 and getattr(users[0], "target", None) is torch.ops.labnas.xnor_conv2d.default else None
    _, channels, height, width = (int(v) for v in importer.env[lab_node.args[0]].ty.shape)
    sources, _, k, _ = (int(v) for v in importer.env[lab_node.args[1]].ty.shape)  # FrozenLabDecision.weight: [S, C, k, k]
    padding, pad_value, strict = conv.args[5:8] if conv is not None else (0, 1, True)
    shape = LabShape(channels, height, width, k, sources, int(padding), 1 if pad_value == 1 else 0, bool(strict), conv is not None)
    return lab_choice(shape)


def _convert_lab_decision(node, importer, lab_choice):
    """Custom importer for ``labnas::lab_decision``: LAB's decision map as one hand-scheduled kernel, or
    nothing when its binary conv computes it inside the packing (see :func:`_lab_plan`)."""
    from . import kernels
    from .registry import emit_kernel

    x, weight, bias = (importer.env[a] for a in node.args[:3])
    fused, tile = _lab_plan(node, importer, lab_choice)
    if fused:
        return x  # a stand-in nobody reads: the conv's converter takes the LAB's inputs from the graph
    return emit_kernel(importer.block_builder, "labnas_lab", kernels.lab_decision_compute, x, weight, bias, tile=tile)


def _convert_xnor_conv2d(node, importer, carry_save=False, lab_choice=None):
    """Custom importer for ``labnas::xnor_conv2d``: emit pack -> xnor (-> dot, for the zero-padding correction).

    ``carry_save`` picks the xnor kernel's full-adder popcount (see :func:`kernels.xnor_compute`): a bool,
    or a function of the kernel's :class:`~labnas.tvm.strategy.XnorShape` returning ``(carry_save, pixels)``
    (a per-layer choice, with the plain kernel's tile of output pixels or ``None`` for the default). A LAB
    decision map that feeds only this conv is computed and packed by one kernel (``labnas_lab_pack``)
    where ``lab_choice`` (see :func:`_lab_plan`) says so.
    """

    from . import kernels
    from .registry import emit_kernel

    d_node = node.args[0]
    d, wbits, corr = (importer.env[a] for a in node.args[:3])
    in_channels, stride, padding, pad_value, strict = node.args[3:8]
    bb = importer.block_builder
    pad_bit = 1 if pad_value == 1 else 0
    k = int(wbits.ty.shape[0])
    fused, tile = (False, None)
    if getattr(d_node, "target", None) is torch.ops.labnas.lab_decision.default:
        fused, tile = _lab_plan(d_node, importer, lab_choice)
    if fused:
        x, weight, bias = (importer.env[a] for a in d_node.args[:3])
        packed = emit_kernel(bb, "labnas_lab_pack", kernels.lab_pack_compute, x, weight, bias, padding, pad_bit, bool(strict),
                              tile[1] if tile else 1, tile=tile)
    else:
        packed = emit_kernel(bb, "labnas_pack", kernels.pack_compute, d, padding, pad_bit, bool(strict))
    pixels = None
    if callable(carry_save):
        from .strategy import XnorShape

        shape = XnorShape(tuple(int(v) for v in packed.ty.shape), tuple(int(v) for v in wbits.ty.shape), int(stride))
        carry_save, pixels = carry_save(shape)
    dot = emit_kernel(bb, "labnas_xnor", kernels.xnor_compute, packed, wbits, stride, in_channels * k * k, carry_save,
                      tile=(pixels,) if pixels else None)
    if pad_value == 0 and padding:
        return bb.emit_te(kernels.dot_compute, dot, corr, primfunc_name_hint="labnas_dot")
    return dot


def _convert_max_pool2d(node, importer, with_indices: bool = False):
    """Custom importer for ``aten.max_pool2d`` (``max_pool2d_with_indices`` after torch's decomposition,
    whose indices nobody reads in inference): :mod:`labnas.tvm.pooling`'s two-pass kernel where it
    applies, TVM's own lowering otherwise."""
    from tvm import relax

    from . import pooling
    from .registry import emit_kernel

    args = importer.retrieve_args(node)
    pair = lambda v: (v, v) if isinstance(v, int) else tuple(int(i) for i in v)  # noqa: E731
    kernel = pair(args[1])
    stride = pair(args[2]) if len(args) > 2 and args[2] else kernel
    padding = pair(args[3]) if len(args) > 3 else (0, 0)
    dilation = args[4] if len(args) > 4 else 1
    ceil_mode = bool(args[5]) if len(args) > 5 else False
    if args[0].ty.ndim != 4 or not pooling.supports(kernel, stride, padding, dilation, ceil_mode):
        return importer._max_pool2d_with_indices(node) if with_indices else importer._max_pool2d(node)
    bb = importer.block_builder
    shape = tuple(int(v) for v in args[0].ty.shape)
    hand = pooling.strided_maxpool(shape, kernel, stride, padding) if args[0].ty.dtype == "float32" else None
    if hand is not None:  # the stem's 3x3/2 pool, written by hand (see pooling.strided_maxpool)
        func = bb.add_func(hand, "labnas_maxpool")
        out_shape = (shape[0], shape[1], (shape[2] - 1) // 2 + 1, (shape[3] - 1) // 2 + 1)
        out = bb.emit(relax.call_tir(func, [args[0]], relax.TensorType(out_shape, "float32")))
        return bb.emit(relax.Tuple([out, relax.op.zeros_like(out)])) if with_indices else out
    out = emit_kernel(bb, "labnas_maxpool", pooling.maxpool_compute, args[0], kernel, stride, padding)
    return bb.emit(relax.Tuple([out, relax.op.zeros_like(out)])) if with_indices else out


def import_model(model: nn.Module, input_shape: tuple[int, ...], carry_save=False, lab_pack_vector: int | None = 8, lab_choice=None):
    """Freeze, export and import a labnas model; returns ``(IRModule, frozen torch model)``.

    ``carry_save``: binary convs sum their popcounts through full adders; a bool for every layer, or
    a function ``XnorShape -> (bool, pixels)`` (:meth:`labnas.tvm.strategy.PopcountChooser.choose`).
    ``lab_choice``: a function ``LabShape -> (fused, tile)`` (:meth:`~labnas.tvm.strategy.PopcountChooser.choose_lab`);
    without it LAB follows the kernels' rules for ``lab_pack_vector`` lanes (``None``: never fused).
    """
    from tvm.relax.frontend.torch import from_exported_program

    frozen = freeze(model, input_shape)
    x = torch.zeros(*input_shape)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ep = torch.export.export(frozen, (x,))
            if lab_choice is None:
                from .strategy import lab_rule

                lab_choice = functools.partial(lab_rule, vector=lab_pack_vector or 0)  # 0: no width has a fused tile
            converters = {
                "xnor_conv2d.default": functools.partial(_convert_xnor_conv2d, carry_save=carry_save, lab_choice=lab_choice),
                "lab_decision.default": functools.partial(_convert_lab_decision, lab_choice=lab_choice),
                "max_pool2d.default": _convert_max_pool2d,
                "max_pool2d_with_indices.default": functools.partial(_convert_max_pool2d, with_indices=True),
            }
            mod = from_exported_program(ep, custom_convert_map=converters, unwrap_unit_return_tuple=True)
    except (KeyError, AssertionError, NotImplementedError, ValueError) as err:
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise LoweringError(f"the TVM importer does not support a layer of this model: {msg}") from None
    return mod, frozen


@dataclass
class CompiledModel:
    """A compiled model and what it was built from."""

    executable: object
    target: TargetPreset
    input_shape: tuple[int, ...]
    frozen: nn.Module
    #: The kernel strategy of each binary conv and each LAB map (:class:`labnas.tvm.strategy.Decision`), in
    #: the order they were lowered.
    strategies: list = field(default_factory=list)
    #: The IRModule after the Relax pipeline, as built: its kernels' TIR with static buffer shapes (what
    #: :mod:`labnas.simulation` reads to call each kernel on its own).
    lowered: object = None

    def export(self, path: str) -> str:
        """Write a deployable shared library, linked with the target's (cross) compiler."""
        from tvm.support import cc

        self.target.check_compiler()
        if self.target.cross_compiler:
            self.executable.export_library(path, fcompile=cc.cross_compiler(self.target.cross_compiler))
        else:
            self.executable.export_library(path)
        return path

    def run_local(self, x: np.ndarray) -> np.ndarray:
        import tvm
        from tvm import relax

        vm = relax.VirtualMachine(self.executable, tvm.cpu())
        return vm["main"](tvm.runtime.tensor(x)).numpy()

    @torch.no_grad()
    def reference(self, x: np.ndarray) -> np.ndarray:
        return self.frozen(torch.from_numpy(x)).numpy()


def compile_model(model: nn.Module, input_shape: tuple[int, ...], target: TargetPreset, timing_lock=None,
                  threads: int | None = None, policy=None) -> CompiledModel:
    """Lower and compile a labnas model for ``target`` at ``input_shape`` (with batch, e.g. (1, 3, 224, 224)).

    ``timing_lock``: a context-manager factory held while kernel strategies are timed (first compiles of new
    shapes, :mod:`labnas.tvm.strategy`); a search passes its host lock. ``threads``: the TVM worker count the
    network will run with here (``None``: every CPU), which kernel strategies are measured for. ``policy``: the
    :class:`labnas.tvm.SchedulePolicy` (map partition, pinned or restricted LAB strategies) that reaches the chooser
    and every schedule (``None``: the default policy)."""
    import tvm

    from .registry import schedule_registered
    from .schedule_float import labnas_pipeline

    from .policy import SchedulePolicy
    from .strategy import PopcountChooser

    policy = policy or SchedulePolicy()
    chooser = PopcountChooser(target, timing_lock=timing_lock or contextlib.nullcontext, threads=threads, policy=policy)
    mod, frozen = import_model(
        model, input_shape, carry_save=chooser.choose, lab_pack_vector=target.vector_lanes, lab_choice=chooser.choose_lab
    )
    tvm_target = target.tvm_target()
    mod = schedule_registered(mod, target.vector_lanes, target.float_lanes, policy.by_rows)
    with tvm_target:
        lowered = labnas_pipeline(tvm_target, target.float_lanes, policy.by_rows)(mod)
    executable = tvm.relax.build(lowered, target=tvm_target, relax_pipeline=None)  # what tvm.compile does, keeping `lowered`
    return CompiledModel(executable, target, tuple(input_shape), frozen, chooser.decisions, lowered)


#: Largest relative L2 error ``||out - ref|| / ||ref||`` accepted between TVM and PyTorch.
NUMERICS_TOLERANCE = 2e-2


def check_numerics(out: np.ndarray, ref: np.ndarray, what: str = "model") -> float:
    """Raise :class:`LoweringError` unless the compiled output matches PyTorch; return the max abs error.

    A BNN's output is discontinuous in its inputs: an activation within float rounding (~1e-7) of its
    threshold binarizes differently under TVM's and oneDNN's summation orders, and each such flip moves
    a binary conv output by 2. On small inputs this never happens (tests hold TVM to 1e-4); on a 224
    network a few flips do (seen: 2 % of the logit range on a random LAB-BNN). A wrong kernel, layout or
    pairing moves the output by tens of percent, so the check is a relative L2 error of at most
    :data:`NUMERICS_TOLERANCE`.
    """
    if out.shape != ref.shape:
        raise LoweringError(f"{what}: TVM output shape {out.shape} != PyTorch {ref.shape}")
    if not np.all(np.isfinite(out)):
        raise LoweringError(f"{what}: TVM output has non-finite values")
    err = float(np.max(np.abs(out - ref))) if out.size else 0.0
    rel = float(np.linalg.norm(out - ref) / max(np.linalg.norm(ref), 1e-12))
    if rel > NUMERICS_TOLERANCE:
        raise LoweringError(
            f"{what}: TVM output differs from PyTorch (relative L2 error {rel:.3g} > {NUMERICS_TOLERANCE}, max abs {err:.3g})"
        )
    return err
