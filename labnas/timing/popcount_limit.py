"""The xnor-popcount throughput ceiling of a CPU, measured with the code the xnor kernel compiles to.

A binary conv is ``sum popcount(a ^ w)`` over 64-bit words. Its ceiling on a CPU is how many words
per second xor + popcount + accumulate can go through when nothing else is in the way: operands
already in L1, every lane busy, every thread busy. This module measures that with a TVM kernel
vectorised the way :mod:`labnas.tvm.kernels` vectorises the conv (int64 lanes; on AVX2, LLVM's
nibble-table ``vpshufb`` + ``vpsadbw``), so "fraction of the limit" says how much of the conv's time
goes to anything else: loads from L2, loop overhead, the pack and the epilogue, thread imbalance.
"""

from __future__ import annotations

import numpy as np

__all__ = ["PopcountCeiling", "xnor_words"]

_ROWS = 256  # 256 x 8 words x 2 operands = 32 KB: the L1 data cache of current x86 and ARM cores
_LANES = 8


def xnor_words(in_channels: int, out_channels: int, out_hw: int, kernel: int) -> int:
    """64-bit xor-popcount operations of one binary conv (what the limit is counted in)."""
    return out_hw * out_hw * out_channels * kernel * kernel * -(-in_channels // 64)


class PopcountCeiling:
    """The ceiling kernel, compiled once for a local ``target``: :meth:`run` executes it once
    (``words`` xor-popcounts), :meth:`words_per_second` times it.

    ``^ t`` in the kernel makes every task's words different, so nothing is hoisted out of the task
    loop; 512 tasks give every thread an equal share.
    """

    def __init__(self, target, threads: int, tasks: int = 512):
        import tvm
        from tvm import s_tir, te, tirx

        from .runner import set_threads

        a = te.placeholder((_ROWS, _LANES), "int64", name="a")
        b = te.placeholder((_ROWS, _LANES), "int64", name="b")
        r = te.reduce_axis((0, _ROWS), "r")
        out = te.compute(
            (tasks, _LANES), lambda t, lane: te.sum(tirx.popcount(a[r, lane] ^ b[r, lane] ^ t.astype("int64")), axis=r), name="out"
        )
        sch = s_tir.Schedule(te.create_prim_func([a, b, out]))
        block = sch.get_sblock("out")
        t, lane, rr = sch.get_loops(block)
        r_out, r_in = sch.split(rr, [None, 4])  # four independent popcounts in flight per step
        sch.reorder(t, r_out, r_in, lane)
        sch.parallel(t)
        sch.vectorize(lane)
        sch.unroll(r_in)
        sch.decompose_reduction(block, r_out)
        self.lib = tvm.compile(tvm.IRModule({"main": sch.mod["main"]}), target=target.tvm_target())
        set_threads(threads)
        self.dev = tvm.cpu()
        rng = np.random.default_rng(0)
        self.args = [tvm.runtime.tensor(rng.integers(-(2**62), 2**62, (_ROWS, _LANES)).astype("int64"), self.dev) for _ in range(2)]
        self.args.append(tvm.runtime.tensor(np.zeros((tasks, _LANES), "int64"), self.dev))
        self.words = tasks * _ROWS * _LANES
        self._main = self.lib.mod["main"]

    def run(self) -> None:
        self._main(*self.args)

    def words_per_second(self, repeat: int = 10) -> float:
        seconds = self.lib.mod.time_evaluator("main", self.dev, number=5, repeat=repeat)(*self.args).median
        return self.words / seconds
