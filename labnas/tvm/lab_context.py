"""A LAB candidate timed in context: inside a small network whose first kernel writes the LAB's input.

Why: in a compiled network the LAB map's input was written one kernel earlier by a float kernel (BatchNorm, residual
add) that splits the map between the threads by the policy's partition, so half of it sits in each core's cache.
A candidate timed alone reads an input its own threads left in their caches on the previous call, which favours
tiles whose split differs from the producer's; in the network those tiles pay a cross-core transfer. The chooser's
picks then moved when re-measured (``near 56x1x8`` against ``two 56x2``, 2-3 % of LAB-BNN each; docs/kernels.md).

The network here is ``x -> x * s + t (float scheduler, the policy's partition) -> LAB kernel(s) -> packed bits``,
built with the importer's own kernels (:func:`labnas.tvm.registry.emit_kernel`), scheduled and lowered by the
compile's pipeline, and run by the Relax VM, so the timing includes what the network pays around the LAB kernels
(the producer's writes, the decision map's allocation on the two-kernel path).
"""

from __future__ import annotations

import numpy as np

__all__ = ["LabContext"]


class LabContext:
    """One LAB map's candidates compiled in context and timed by the Relax VM.

    ``shape``: the :class:`labnas.tvm.strategy.LabShape`; ``target``: the :class:`~labnas.tvm.targets.TargetPreset`
    (one this machine runs); ``by_rows``: the compile's partition (:attr:`labnas.tvm.policy.SchedulePolicy.by_rows`).
    """

    def __init__(self, shape, target, by_rows: bool = True, seed: int = 0):
        import tvm

        self.shape, self.target, self.by_rows = shape, target, by_rows
        self.dev = tvm.cpu()
        rng = np.random.default_rng(seed)
        c, h, w, k = shape.channels, shape.height, shape.width, shape.kernel
        self.inputs = [rng.standard_normal(s).astype(np.float32) for s in ((1, c, h, w), (shape.sources, c, k, k), (c,))]
        self.scale = rng.uniform(0.5, 1.5, (1, c, 1, 1)).astype(np.float32)
        self.shift = rng.standard_normal((1, c, 1, 1)).astype(np.float32)

    def build(self, fused: bool, tile: tuple[int, ...] | None):
        """The context network with the LAB map computed by the fused kernel (``fused``) or the LAB kernel + the
        packing, with register ``tile`` (:func:`labnas.tvm.strategy.parse_lab_strategy` of a strategy), compiled: a
        ``tvm.relax.VirtualMachine``."""
        from . import kernels
        from .registry import emit_kernel

        s = self.shape

        def lab(bb, y, wt, b):
            if fused:
                return emit_kernel(bb, "labnas_lab_pack", kernels.lab_pack_compute, y, wt, b, s.padding, s.pad_bit,
                                   s.strict, tile[1] if tile else 1, tile=tile)
            d = emit_kernel(bb, "labnas_lab", kernels.lab_decision_compute, y, wt, b, tile=tile)
            return emit_kernel(bb, "labnas_pack", kernels.pack_compute, d, s.padding, s.pad_bit, s.strict)

        return self._compile(("x", "w", "b"), lab)

    def build_baseline(self, packing: bool):
        """The context network without LAB, ``x -> producer`` or ``x -> producer -> sign packing`` (what a LAB map is
        weighed against), compiled: a ``tvm.relax.VirtualMachine`` whose ``main`` takes ``x`` only."""
        from . import kernels
        from .registry import emit_kernel

        s = self.shape

        def sign(bb, y):
            return emit_kernel(bb, "labnas_pack", kernels.pack_compute, y, s.padding, s.pad_bit, s.strict) if packing else y

        return self._compile(("x",), sign)

    def _compile(self, names: tuple[str, ...], after_producer):
        """``main(*names)`` = ``after_producer(bb, producer(x), *rest)`` (``names`` the first of this context's inputs),
        scheduled, lowered and built as a compile does: a ``tvm.relax.VirtualMachine``."""
        import tvm
        from tvm import relax

        from .registry import schedule_registered
        from .schedule_float import labnas_pipeline

        bb = relax.BlockBuilder()
        params = [relax.Var(name, relax.TensorType(a.shape, "float32")) for name, a in zip(names, self.inputs)]
        with bb.function("main", params):
            with bb.dataflow():
                x, *rest = params
                y = bb.emit(relax.op.add(relax.op.multiply(x, relax.const(self.scale)), relax.const(self.shift)))
                out = bb.emit_output(after_producer(bb, y, *rest))
            bb.emit_func_output(out)
        tvm_target = self.target.tvm_target()
        mod = schedule_registered(bb.get(), self.target.vector_lanes, self.target.float_lanes, self.by_rows)
        with tvm_target:
            lowered = labnas_pipeline(tvm_target, self.target.float_lanes, self.by_rows)(mod)
        executable = tvm.relax.build(lowered, target=tvm_target, relax_pipeline=None)
        return relax.VirtualMachine(executable, self.dev)

    def timer(self, vm, baseline: bool = False):
        """A function timing one call of ``vm``'s ``main`` (seconds; as many calls as fit in ~20 ms), fed this context's
        inputs (``baseline``: ``x`` only, for :meth:`build_baseline`)."""
        from .kernel_timing import call_timer

        return call_timer(vm, self.dev, self.args()[:1] if baseline else self.args())

    def args(self):
        import tvm

        return [tvm.runtime.tensor(a, self.dev) for a in self.inputs]

    def packed(self, vm) -> np.ndarray:
        """The packed bits the context network computes (for checking candidates against each other)."""
        return vm["main"](*self.args()).numpy()
