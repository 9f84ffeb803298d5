"""CPU models for simulated latency: a core's scheduling model (llvm-mca), its clock, caches and cores.

A model names the *stated* hardware of one board, not a guess tuned to make a budget bind: the clock is the
board's default maximum, the thread count of a run defaults to its big cores (TVM's default: every core), and the
cache sizes are the SoC's. ``mca_cpu`` is the scheduling model llvm-mca simulates; where LLVM has none for the
core, ``mca_stand_in`` says which model stands in for it and why.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .._errors import LabnasError

__all__ = ["CpuModel", "CPU_MODELS", "get_cpu_model", "SimulationError"]


class SimulationError(LabnasError, RuntimeError):
    """The simulation cannot run (a missing tool, an unknown CPU model); the message says how to fix it."""


@dataclass(frozen=True)
class CpuModel:
    """One CPU a network's latency is simulated on.

    Attributes:
        name: preset name (``labnas list`` shows them).
        arch: ``uname -m`` of the code it runs (``aarch64`` or ``x86_64``).
        board: the product it stands for.
        mca_cpu: llvm-mca's ``-mcpu`` (the core's scheduling model).
        tvm_mcpu: LLVM's ``mcpu`` the code is compiled for (what TVM targets).
        clock_ghz: the clock the cycles are converted at (the board's default maximum).
        cores: cores a run may use; the default thread count of a simulation.
        l1d_kib, l2_kib, l3_kib: data cache per core, L2 per core (or shared, see ``l2_shared``), last level.
        dram_gbs: sustained memory bandwidth of the board (STREAM-like copy), GB/s.
        launch_us: cost of one parallel region (waking the workers and the closing barrier), microseconds.
        mca_stand_in: empty when llvm-mca models the core itself, else why another model stands in.
    """

    name: str
    arch: str
    board: str
    mca_cpu: str
    tvm_mcpu: str
    clock_ghz: float
    cores: int
    l1d_kib: int
    l2_kib: int
    l3_kib: int
    dram_gbs: float
    launch_us: float
    l2_shared: bool = False
    mca_stand_in: str = ""

    def describe(self) -> str:
        """One line for headers and reports: the board, the core model, the clock and the caches."""
        stand_in = f"; scheduling model {self.mca_cpu} ({self.mca_stand_in})" if self.mca_stand_in else ""
        l2 = f"L2 {self.l2_kib} KiB {'shared' if self.l2_shared else 'per core'}" if self.l2_kib else "no L2"
        l3 = f", L3 {self.l3_kib} KiB" if self.l3_kib else ""
        return (f"{self.name}: {self.board}, {self.cores} cores at {self.clock_ghz:g} GHz, L1d {self.l1d_kib} KiB, "
                f"{l2}{l3}, {self.dram_gbs:g} GB/s{stand_in}")

    def record(self) -> dict:
        return asdict(self)


CPU_MODELS: dict[str, CpuModel] = {
    m.name: m
    for m in (
        CpuModel("cortex-a72", "aarch64", "Raspberry Pi 4 Model B (BCM2711)", "cortex-a72", "cortex-a72",
                 clock_ghz=1.5, cores=4, l1d_kib=32, l2_kib=1024, l3_kib=0, dram_gbs=4.0, launch_us=6.0, l2_shared=True,
                 mca_stand_in="LLVM schedules the A72 with its Cortex-A57 model (the A72 is the A57's successor)"),
        CpuModel("cortex-a76", "aarch64", "Raspberry Pi 5 (BCM2712)", "neoverse-n1", "cortex-a76",
                 clock_ghz=2.4, cores=4, l1d_kib=64, l2_kib=512, l3_kib=2048, dram_gbs=9.0, launch_us=4.0,
                 mca_stand_in="LLVM 19 schedules cortex-a76 with the Cortex-A57 model; Neoverse N1 is the A76's "
                              "infrastructure twin (the same core design), which LLVM models"),
        CpuModel("cortex-a55", "aarch64", "Rockchip RK3566 boards (Radxa Zero 3, Quartz64)", "cortex-a55", "cortex-a55",
                 clock_ghz=1.8, cores=4, l1d_kib=32, l2_kib=0, l3_kib=512, dram_gbs=3.0, launch_us=8.0),
        CpuModel("carmel", "aarch64", "Nvidia Jetson Xavier NX (Carmel ARMv8.2, 20 W 6-core mode)", "neoverse-n1", "carmel",
                 clock_ghz=1.4, cores=6, l1d_kib=64, l2_kib=2048, l3_kib=4096, dram_gbs=20.0, launch_us=5.0, l2_shared=True,
                 mca_stand_in="LLVM has no Carmel scheduling model; Neoverse N1 is the nearest ARMv8.2 out-of-order core "
                              "with two 128-bit NEON pipes"),
    )
}

#: Friendly names users type (``--target rpi4``) -> the model.
ALIASES = {"rpi4": "cortex-a72", "rpi5": "cortex-a76", "jetson-nx": "carmel", "a55": "cortex-a55"}


def get_cpu_model(name: str) -> CpuModel:
    """A preset by name or alias; an unknown name raises :class:`SimulationError` listing the presets."""
    key = ALIASES.get(name, name)
    if key not in CPU_MODELS:
        names = ", ".join([*CPU_MODELS, *ALIASES])
        raise SimulationError(f"no simulated CPU model {name!r}; choose one of: {names}")
    return CPU_MODELS[key]


def host_cpu_model(clock_ghz: float | None = None) -> CpuModel:
    """This machine's CPU as a model, to validate the simulation where the truth can be measured.

    The scheduling model is the core LLVM detects (``Target.from_device``); the clock is ``/proc/cpuinfo``'s
    nominal figure unless given (a VM reports its base clock, not the turbo it runs at: the validation states
    whether a scale was fitted for that)."""
    import os
    import platform

    import tvm

    from ..tvm.cpu import cache_kib

    mcpu = str(tvm.target.Target.from_device(tvm.cpu()).attrs.get("mcpu", "generic"))
    if clock_ghz is None:
        clock_ghz = 2.0
        try:
            for line in open("/proc/cpuinfo"):
                if line.startswith("cpu MHz"):
                    clock_ghz = float(line.split(":")[1]) / 1000
                    break
        except (OSError, ValueError):
            pass
    return CpuModel("host", platform.machine(), "this machine", mcpu, mcpu, clock_ghz=round(clock_ghz, 3),
                    cores=os.cpu_count() or 1, l1d_kib=cache_kib(1), l2_kib=cache_kib(2), l3_kib=cache_kib(3),
                    dram_gbs=20.0, launch_us=2.0)
