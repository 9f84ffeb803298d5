"""Simulated latency: a compiled network's time on a named CPU predicted from its own machine code.

Executed-block counts come from one run of the kernels under qemu-user, each block's cycles from llvm-mca's
scheduling model of the core, and a memory term from the bytes each kernel moves against the board's caches
(:mod:`labnas.simulation._simulate` states the model and what it leaves out). Deterministic, and needs no board:
Debian's ``qemu-user``, ``llvm-19`` and the target's (cross) C compiler.
"""

from .cpus import CPU_MODELS, CpuModel, SimulationError, get_cpu_model, host_cpu_model
from ._simulate import KernelEstimate, SimulatedLatency, simulate

# used by the benchmarks (measurement tools reach these through the package entry point)
from ._cycles import popcount_ceiling
from ._trace import kernel_calls

__all__ = ["popcount_ceiling", "kernel_calls", "CPU_MODELS", "CpuModel", "KernelEstimate", "SimulatedLatency", "SimulationError", "get_cpu_model", "host_cpu_model", "simulate"]
