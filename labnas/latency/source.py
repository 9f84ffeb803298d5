"""Where a candidate's latency comes from: measured (this machine, or a board over RPC) or simulated (a board's
CPU model, predicted from the compiled code without the board).

Both give a :class:`labnas.timing.LatencyResult` whose ``source`` names which one it is; the search, the
profile command and the records read that one type and never ask how it was made.
"""

from __future__ import annotations

from ..simulation import CpuModel, SimulationError, get_cpu_model, simulate
from ..timing import LatencyResult

__all__ = ["simulation_model", "simulated_latency", "SimulationError"]


def simulation_model(target, remote=None) -> CpuModel | None:
    """The CPU model ``target`` is simulated on when no board is given (``remote`` is None), else None.

    A target that runs on this machine is measured here; a board target with a board connected is measured on it.
    """
    if remote is not None or not target.is_remote_only or target.cpu_model is None:
        return None
    return get_cpu_model(target.cpu_model)


def simulated_latency(compiled, cpu: CpuModel, threads: int | None = None, progress=None) -> LatencyResult:
    """``compiled``'s simulated latency on ``cpu`` as a LatencyResult (``source="simulated"``), with one row per
    kernel (ms per inference, calls, binary?) like a measured profile."""
    from ..tvm.kernels import SCHEDULES

    sim = simulate(compiled, cpu, threads, progress=progress)
    kernels = [(name, ms, calls, any(kind in name for kind in SCHEDULES)) for name, ms, calls, _ in sim.kernel_rows()]
    device = {"simulated": True, "cpu_model": cpu.name, "board": cpu.board, "clock_ghz": cpu.clock_ghz, "cores": cpu.cores,
              "scheduling_model": cpu.mca_cpu, "kernels_simulated_now": sim.simulated_now}
    return LatencyResult(sim.ms, sim.ms, sim.ms, [sim.ms], sim.threads, compiled.target.name, device, kernels=kernels,
                         source="simulated", cpu_model=cpu.name)
