"""Simulated latency (labnas.simulation): counts from qemu, cycles from llvm-mca, the network figure, its labels."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from labnas.models import create_model, default_spec
from labnas.simulation import CPU_MODELS, SimulationError, get_cpu_model, host_cpu_model, simulate
from labnas.simulation._cycles import block_cycles, disassemble
from labnas.simulation._trace import build_program, kernel_calls, trace_program
from labnas.tvm import TARGETS, compile_model

TINY = str(Path(__file__).parent / "data" / "tiny_space.toml")


def _have(*tools: str) -> bool:
    return all(shutil.which(t) for t in tools)


X86_TOOLS = _have("gcc", "objcopy", "llvm-mca-19", "llvm-objdump-19") and (_have("qemu-x86_64") or _have("qemu-x86_64-static"))
ARM_TOOLS = _have("aarch64-linux-gnu-gcc", "llvm-mca-19", "llvm-objdump-19") and (_have("qemu-aarch64") or _have("qemu-aarch64-static"))
needs_x86 = pytest.mark.skipif(not X86_TOOLS, reason="needs qemu-user, llvm-19 and gcc (.ci/run installs them)")
needs_arm = pytest.mark.skipif(not ARM_TOOLS, reason="needs qemu-user, llvm-19 and gcc-aarch64-linux-gnu (.ci/run installs them)")


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LABNAS_CACHE", str(tmp_path / "cache"))


def _tiny(target: str, binarizer: str = "lab", size: int = 16):
    model = create_model(default_spec("labbnn", binarizer, stem="small", num_classes=10, width_mult=0.25)).eval()
    return compile_model(model, (1, 3, size, size), TARGETS[target], threads=1)


@pytest.fixture(scope="module")
def tiny_x86():
    return _tiny("x86")


@pytest.fixture(scope="module")
def tiny_arm():
    return _tiny("arm")


def test_presets_state_their_hardware():
    for name in ("cortex-a72", "cortex-a76", "cortex-a55", "carmel"):
        cpu = CPU_MODELS[name]
        assert cpu.cores >= 4 and cpu.clock_ghz > 1 and cpu.l1d_kib >= 32 and cpu.dram_gbs > 0
        assert str(cpu.cores) in cpu.describe() and f"{cpu.clock_ghz:g} GHz" in cpu.describe()
    assert CPU_MODELS["carmel"].mca_stand_in and "no Carmel" in CPU_MODELS["carmel"].describe()
    assert get_cpu_model("rpi4") is CPU_MODELS["cortex-a72"] and get_cpu_model("jetson-nx") is CPU_MODELS["carmel"]
    with pytest.raises(SimulationError, match="choose one of"):
        get_cpu_model("pentium")
    for board in ("rpi4", "rpi5", "a55", "jetson-nx", "arm", "arm-a76"):
        assert TARGETS[board].cpu_model in CPU_MODELS and TARGETS[board].arch == "aarch64"


@needs_x86
def test_trace_counts_every_call_of_a_loop(tiny_x86, tmp_path):
    """The harness runs each kernel once; the max pool-free tiny network's float BN kernel touches every element, so
    its executed instructions are at least its elements over the vector width, and the counts split by task."""
    calls = kernel_calls(tiny_x86.lowered, tiny_x86.executable)
    assert {c.name for c in calls} >= {"labnas_xnor", "conv2d"}
    assert all(c.calls >= 1 for c in calls)
    bn = next(c for c in calls if c.name == "fused_batch_norm")
    elements = 1
    for s in bn.args[0].shape:
        elements *= s
    program = build_program(tiny_x86.executable, [bn], "x86_64", tmp_path)
    for threads in (1, 2):
        traces, blocks = trace_program(program, threads, tmp_path)
        (trace,) = traces
        code = disassemble(program.path, "x86_64")
        executed = sum(n * len([a for a in blocks[pc] if a in code]) for region in trace.regions for task in region
                       for pc, n in task.items())
        assert len(trace.regions) >= 1 and all(len(region) == threads for region in trace.regions)
        assert elements / 8 <= executed <= 40 * elements  # 8 float lanes (AVX2); a few instructions per vector


@needs_x86
def test_block_cycles_follow_the_core_model(tmp_path):
    """llvm-mca's cycles for a block: a chain of dependent FMAs costs their latency each, independent multiplies
    overlap on the core's two vector ports."""
    code = {0: "vfmadd231ps %ymm1, %ymm2, %ymm0", 1: "vfmadd231ps %ymm1, %ymm2, %ymm0", 2: "vfmadd231ps %ymm1, %ymm2, %ymm0",
            10: "vmulps %ymm1, %ymm2, %ymm3", 11: "vmulps %ymm1, %ymm2, %ymm4", 12: "vmulps %ymm1, %ymm2, %ymm5"}
    cycles = block_cycles({0: [0, 1, 2], 10: [10, 11, 12]}, code, "x86_64", "haswell")
    assert cycles[0] == pytest.approx(15, abs=1.5)  # 3 dependent FMAs x 5 cycles (Haswell)
    assert cycles[10] < 3  # 3 independent multiplies, two per cycle


@needs_x86
def test_simulation_is_deterministic_and_cached(tiny_x86):
    cpu = host_cpu_model(clock_ghz=3.0)
    first = simulate(tiny_x86, cpu, threads=1, use_cache=False)
    again = simulate(tiny_x86, cpu, threads=1, use_cache=False)
    assert first.ms == again.ms > 0
    assert {k.name for k in first.kernels} == {c.name for c in kernel_calls(tiny_x86.lowered, tiny_x86.executable)}
    stored = simulate(tiny_x86, cpu, threads=1)
    cached = simulate(tiny_x86, cpu, threads=1)
    assert stored.simulated_now == len(stored.kernels) and cached.simulated_now == 0 and cached.ms == pytest.approx(first.ms)
    assert sum(ms for _, ms, _, _ in first.kernel_rows()) == pytest.approx(first.ms)
    faster = simulate(tiny_x86, host_cpu_model(clock_ghz=6.0), threads=1, use_cache=False)
    assert faster.ms < first.ms  # cycles at twice the clock (launch costs do not scale)


@needs_arm
def test_arm_simulation_threads_and_cores(tiny_arm):
    a72 = get_cpu_model("cortex-a72")
    one, four = simulate(tiny_arm, a72, threads=1), simulate(tiny_arm, a72, threads=4)
    assert 0 < four.ms < one.ms
    work1 = sum(k.calls * k.work_cycles for k in one.kernels)
    work4 = sum(k.calls * k.work_cycles for k in four.kernels)
    assert work4 == pytest.approx(work1, rel=0.25)  # the same work, split four ways
    with pytest.raises(SimulationError, match="compiled for aarch64"):
        simulate(tiny_arm, host_cpu_model())


def _cli(*args, env_cache: Path, timeout=900):
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "LABNAS_CACHE": str(env_cache)}
    return subprocess.run([sys.executable, "-m", "labnas.cli", *args], capture_output=True, text=True, timeout=timeout, env=env)


@needs_arm
@pytest.mark.slow
def test_profile_arm_without_a_board_simulates_the_same_figure_twice(tmp_path):
    outs = []
    for run in range(2):
        r = _cli("profile", "bireal18", "--input", "3x16x16", "--target", "arm", "--out", str(tmp_path / f"p{run}"),
                 env_cache=tmp_path / f"cache{run}")  # two empty caches: both runs simulate every kernel
        assert r.returncode == 0, r.stderr
        assert "SIMULATED on cortex-a72" in r.stdout and "Raspberry Pi 4" in r.stdout
        outs.append(json.loads((tmp_path / f"p{run}" / "bireal18_sign_arm_3x16x16.json").read_text()))
    assert outs[0]["source"] == "simulated" and outs[0]["cpu_model"] == "cortex-a72" and outs[0]["threads"] == 4
    assert outs[0]["median_ms"] == outs[1]["median_ms"] > 0
    so = tmp_path / "p0" / "bireal18_sign_arm_3x16x16.so"
    assert so.exists() and int.from_bytes(so.read_bytes()[18:20], "little") == 183  # the board's build is still written


@needs_arm
@pytest.mark.slow
def test_search_on_a_board_preset_runs_on_simulated_latency(tmp_path):
    r = _cli("search", "--space", TINY, "--budget-ms", "20", "--target", "rpi4", "--trials", "3", "--results", str(tmp_path),
             "--no-progress", env_cache=tmp_path / "cache")
    assert r.returncode == 0, r.stderr
    assert "simulated (cortex-a72, no board) latency range" in r.stdout
    out = tmp_path / "tiny-rpi4-20ms"
    df = pd.read_csv(out / "trials.csv")
    done = df[df.state == "COMPLETE"]
    assert len(done) == 3 and set(done.latency_source) == {"simulated"} and set(done.cpu_model) == {"cortex-a72"}
    assert json.loads((out / "study.json").read_text())["latency"] == "simulate"
    r = _cli("report", str(out), env_cache=tmp_path / "cache")
    assert r.returncode == 0, r.stderr
    assert "Simulated, not measured" in (out / "report.md").read_text()
    from labnas.report.plots import plot_pareto
    from labnas.results import load_results

    results = load_results(out)
    assert results.simulated_on == "cortex-a72"
    if not results.feasible.empty:  # Bi-Real-18 at 8x8 fits 20 ms: the axis names the simulation
        assert "SIMULATED on cortex-a72" in plot_pareto([results]).axes[0].get_xlabel()


def test_simulate_refuses_a_target_this_machine_runs(tmp_path):
    r = _cli("search", "--space", TINY, "--budget-ms", "20", "--target", "host", "--latency", "simulate", "--trials", "1",
             "--results", str(tmp_path), env_cache=tmp_path / "cache")
    assert r.returncode == 2 and "simulated latency needs a board target" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
