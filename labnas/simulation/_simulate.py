"""Simulated latency of a compiled network on a named CPU: executed blocks x their cycles, plus memory.

The model, per distinct kernel of the network (one call of it):

* **counts**: how many times each translation block of its machine code runs, per parallel task, from one run
  of the kernel under qemu-user (:mod:`._trace`);
* **cycles**: each block's steady-state cycles on the core, from llvm-mca's scheduling model (:mod:`._cycles`);
* **critical path**: cycles outside parallel regions, plus for each parallel region the slowest of its tasks
  (the ``T`` tasks run on ``T`` cores), plus ``launch_us`` per region (waking the workers, the barrier);
* **memory**: the kernel's buffers (inputs, weights, output) must stream from DRAM when they do not fit the
  caches the threads share; the kernel then takes ``max(compute, bytes / dram_gbs)`` (a roofline).

A network's latency is the sum over its kernels of calls x per-call time, at the preset's clock.

What it leaves out: cache misses of data that fits the caches (llvm-mca assumes L1 hits; the memory term only
charges DRAM), branch mispredictions, the TLB, frequency scaling and thermal throttling, the VM's own work
between kernels (allocation, a few microseconds per call), and cores slowing each other through a shared L2.
Counts are exact for the code that runs; cycles are as good as LLVM's scheduling model of the core.

Per-kernel figures are cached by the kernel's code, the target and the CPU model (``simulated_kernels.json``
in labnas' cache folder), so a search that reuses kernels simulates only the new ones.
"""

from __future__ import annotations

import functools
import hashlib
import re
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .._cache import cache_dir, read_json, write_json_atomic
from ._cycles import block_cycles, disassemble, mca_tool
from ._trace import KernelCall, build_program, kernel_calls, trace_program
from .cpus import CpuModel, SimulationError

__all__ = ["KernelEstimate", "SimulatedLatency", "simulate", "CACHE_VERSION"]

#: Bumped when the model changes, so cached kernel figures from an older model are not reused (the cache key also
#: holds a hash of this package's code).
CACHE_VERSION = 1


@functools.lru_cache(maxsize=1)
def _code_version() -> str:
    """A hash of this package's code as imported (the process keeps using the code it loaded)."""
    digest = hashlib.sha1()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


@dataclass(frozen=True)
class KernelEstimate:
    """One distinct kernel of a network on a CPU model: cycles of one call on the critical path (``serial`` +
    the slowest task of each parallel region), the parallel regions one call opens, and its buffers' bytes."""

    name: str
    calls: int
    serial_cycles: float
    parallel_cycles: float
    regions: int
    nbytes: int
    #: every task's cycles added up (the work, whatever the thread count): work / critical path = parallel speed-up
    work_cycles: float

    def compute_ms(self, cpu: CpuModel) -> float:
        return (self.serial_cycles + self.parallel_cycles) / (cpu.clock_ghz * 1e6) + self.regions * cpu.launch_us * 1e-3

    def memory_ms(self, cpu: CpuModel, threads: int) -> float:
        """DRAM time of one call: its buffers' bytes at the board's bandwidth, when they do not fit the caches."""
        cache_kib = cpu.l3_kib + (cpu.l2_kib if cpu.l2_shared else cpu.l2_kib * threads)
        return self.nbytes / (cpu.dram_gbs * 1e6) if self.nbytes > cache_kib * 1024 else 0.0

    def ms(self, cpu: CpuModel, threads: int) -> float:
        """One call's simulated time (ms)."""
        return max(self.compute_ms(cpu), self.memory_ms(cpu, threads))


@dataclass
class SimulatedLatency:
    """A network's simulated latency on one CPU model: ``ms`` for one inference, and the kernels it adds up."""

    ms: float
    cpu: CpuModel
    threads: int
    kernels: list[KernelEstimate] = field(default_factory=list)
    #: kernels simulated now (the rest came from the cache)
    simulated_now: int = 0

    def kernel_rows(self) -> list[tuple[str, float, int, float]]:
        """``(kernel, ms per inference, calls, share of the total)``, slowest first."""
        rows = [(k.name, k.calls * k.ms(self.cpu, self.threads), k.calls) for k in self.kernels]
        rows.sort(key=lambda row: -row[1])
        return [(name, ms, calls, ms / self.ms if self.ms else 0.0) for name, ms, calls in rows]

    def record(self) -> dict:
        return {"simulated_ms": self.ms, "cpu_model": self.cpu.name, "threads": self.threads,
                "cpu": self.cpu.record(), "kernels": [asdict(k) for k in self.kernels]}


def _cache_path() -> Path:
    return cache_dir() / "simulated_kernels.json"


def _code_key(func) -> str:
    """The kernel's code without its name (two networks' ``labnas_xnor3`` and ``labnas_xnor`` may be one kernel)."""
    text = re.sub(r"def \w+\(", "def kernel(", func.script(), count=1)
    return hashlib.sha1(text.encode()).hexdigest()


def _mca_version() -> str:
    out = subprocess.run([mca_tool(), "--version"], capture_output=True, text=True).stdout
    m = re.search(r"LLVM version (\S+)", out)
    return m.group(1) if m else "unknown"


def _estimate(call: KernelCall, trace, cycles: dict[int, float]) -> KernelEstimate:
    cost = lambda counter: sum(n * cycles.get(pc, 0.0) for pc, n in counter.items())  # noqa: E731
    serial = cost(trace.serial)
    tasks = [[cost(task) for task in region] for region in trace.regions]
    return KernelEstimate(call.name, call.calls, serial, sum(max(region) for region in tasks if region), len(tasks),
                          call.nbytes, serial + sum(sum(region) for region in tasks))


def simulate(compiled, cpu: CpuModel, threads: int | None = None, use_cache: bool = True, progress=None) -> SimulatedLatency:
    """The simulated latency of ``compiled`` (:class:`labnas.tvm.CompiledModel`, built for ``cpu.arch``) on ``cpu``.

    Arguments:
        threads: parallel tasks per region (default: the model's cores), as TVM's thread pool would run them.
        use_cache: reuse kernel figures simulated before (same code, target, CPU model, thread count).
        progress: called with a short text at each step (tracing, llvm-mca).

    Deterministic: the same build gives the same figure every time (counts and llvm-mca are).
    """
    threads = threads or cpu.cores
    if compiled.target.arch != cpu.arch:
        raise SimulationError(f"the network was compiled for {compiled.target.arch}; the CPU model {cpu.name} runs {cpu.arch}")
    lowered = getattr(compiled, "lowered", None)
    if lowered is None:
        raise SimulationError("the compiled model carries no lowered module; compile it with labnas.tvm.compile_model")
    import tvm

    prims = {gv.name_hint: f for gv, f in lowered.functions.items() if isinstance(f, tvm.tirx.PrimFunc)}
    calls = kernel_calls(lowered, compiled.executable)
    context = f"v{CACHE_VERSION}-{_code_version()}|{cpu.name}|{cpu.mca_cpu}|mca {_mca_version()}|{compiled.target.config}|threads {threads}"
    keys = {c.name: hashlib.sha1(f"{context}|{_code_key(prims[c.name])}".encode()).hexdigest() for c in calls}
    cache = read_json(_cache_path()) if use_cache else {}
    estimates: dict[str, KernelEstimate] = {}
    for c in calls:
        hit = cache.get(keys[c.name])
        if hit is not None:
            estimates[c.name] = KernelEstimate(**{**hit, "name": c.name, "calls": c.calls})
    missing = [c for c in calls if c.name not in estimates]
    if missing:
        with tempfile.TemporaryDirectory(prefix="labnas-sim-") as tmp:
            workdir = Path(tmp)
            if progress:
                progress(f"tracing {len(missing)} kernels under qemu")
            program = build_program(compiled.executable, missing, cpu.arch, workdir)
            traces, blocks = trace_program(program, threads, workdir)
            if progress:
                progress(f"llvm-mca -mcpu={cpu.mca_cpu} on {len(blocks)} blocks")
            cycles = block_cycles(blocks, disassemble(program.path, cpu.arch), cpu.arch, cpu.mca_cpu)
        fresh = {c.name: _estimate(c, t, cycles) for c, t in zip(missing, traces)}
        estimates.update(fresh)
        if use_cache:
            cache = read_json(_cache_path())
            cache.update({keys[name]: asdict(e) for name, e in fresh.items()})
            write_json_atomic(_cache_path(), cache)
    ordered = [estimates[c.name] for c in calls]
    total = sum(k.calls * k.ms(cpu, threads) for k in ordered)
    return SimulatedLatency(total, cpu, threads, ordered, len(missing))
