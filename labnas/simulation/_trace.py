"""Executed-block counts of a compiled network's kernels, from one run of them under qemu-user.

The kernels of a TVM build (its ``lib0.o``) are linked into a small static C program that allocates every
kernel's buffers at their compiled shapes and calls each distinct kernel once through its packed entry point
(``__tvm_ffi_NAME``). The program supplies the three runtime hooks the kernels call: the parallel launch runs
the ``T`` tasks of a parallel loop one after another (each task computes its own share, as on ``T`` cores),
and workspace allocation is ``aligned_alloc``. Marker functions between kernels and tasks let one pass over
qemu's log attribute every executed translation block to (kernel, parallel region, task).

qemu logs each block when it is translated (``-d in_asm``: its instruction addresses) and each time it runs
(``-d exec,nochain``); ``-dfilter`` keeps the log to the kernels' code and the markers. Counts do not depend on
the data (BNN kernels have no data-dependent control flow), so zero-filled buffers stand in for real ones.
"""

from __future__ import annotations

import os
import re
import subprocess
import tarfile
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .._tools import find_tool
from .cpus import SimulationError

__all__ = ["KernelArg", "KernelCall", "KernelTrace", "kernel_calls", "build_program", "trace_program", "Program"]

#: DLPack type codes of the dtypes TVM kernels take.
_DL_CODES = {"int": 0, "uint": 1, "float": 2, "bool": 1}

_CROSS = {"aarch64": ("aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu"), "x86_64": ("gcc", "gcc")}
_QEMU = {"aarch64": ("qemu-aarch64", "qemu-aarch64-static"), "x86_64": ("qemu-x86_64", "qemu-x86_64-static")}
_OBJDUMP = {"aarch64": "aarch64-linux-gnu-objdump", "x86_64": "objdump"}
_OBJCOPY = {"aarch64": "aarch64-linux-gnu-objcopy", "x86_64": "objcopy"}


@dataclass(frozen=True)
class KernelArg:
    """One buffer a kernel takes: DLPack type code and bits, and its static shape."""

    code: int
    bits: int
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n * max(self.bits, 8) // 8


@dataclass(frozen=True)
class KernelCall:
    """A distinct kernel of the network: its symbol, how many times one inference calls it, its buffers."""

    name: str
    calls: int
    args: tuple[KernelArg, ...]

    @property
    def nbytes(self) -> int:
        """Bytes of all its buffers: what one call reads and writes at least once."""
        return sum(a.nbytes for a in self.args)


@dataclass
class KernelTrace:
    """What one call of a kernel executed: block start address -> runs, outside parallel regions (``serial``) and
    per parallel region, per task (``regions[r][t]``)."""

    serial: Counter = field(default_factory=Counter)
    regions: list[list[Counter]] = field(default_factory=list)


def _dtype(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"([a-z]+)(\d+)", text)
    if text == "bool":
        return 1, 8
    if m is None or m.group(1) not in _DL_CODES:
        raise SimulationError(f"a kernel takes a buffer of dtype {text}, which the simulation harness does not know")
    return _DL_CODES[m.group(1)], int(m.group(2))


def kernel_calls(lowered, executable) -> list[KernelCall]:
    """The distinct kernels one inference of ``executable`` calls, with their call counts and buffer shapes.

    ``lowered``: the IRModule after the Relax pipeline (:attr:`labnas.tvm.CompiledModel.lowered`), whose PrimFuncs
    carry the static buffer shapes; the call sequence is read from the VM's program (``as_text``)."""
    import tvm

    prims = {gv.name_hint: f for gv, f in lowered.functions.items() if isinstance(f, tvm.tirx.PrimFunc)}
    main = executable.as_text().split("@main:", 1)[-1]
    counts = Counter(name for name in re.findall(r"call\s+(\S+)\s+in:", main) if name in prims)
    calls = []
    for name, n in counts.items():
        args = tuple(KernelArg(*_dtype(str(p.dtype)), tuple(int(s) for s in p.shape)) for p in prims[name].params)
        calls.append(KernelCall(name, n, args))
    return calls


def _tool(name: str, package: str) -> str:
    return find_tool(name, package, SimulationError, "simulated latency")


def _qemu(arch: str) -> str:
    return find_tool(_QEMU[arch], "qemu-user-static", SimulationError, "simulated latency")


def _ffi_include() -> str:
    import tvm_ffi

    return str(Path(tvm_ffi.__file__).parent / "include")


_PRELUDE = r"""
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "tvm/ffi/c_api.h"

typedef int (*kernel_fn)(void*, const TVMFFIAny*, int32_t, TVMFFIAny*);
typedef struct { void* sync; int32_t num_task; } group_env;
typedef int (*lambda_fn)(int, group_env*, void*);
extern void* __TVMBackendParallelLaunch;
extern void* __TVMBackendAllocWorkspace;
extern void* __TVMBackendFreeWorkspace;

/* Markers: each a distinct store, so no two fold into one function; the log sees their addresses. */
volatile int labnas_sim_sink;
__attribute__((noinline)) void labnas_sim_kernel(void) { labnas_sim_sink = 1; }
__attribute__((noinline)) void labnas_sim_task(void) { labnas_sim_sink = 2; }
__attribute__((noinline)) void labnas_sim_serial(void) { labnas_sim_sink = 3; }

static int threads = 1;

static int launch(lambda_fn f, void* cdata, int num_task) {
  int n = num_task > 0 ? num_task : threads;
  group_env env = {0, n};
  for (int i = 0; i < n; i++) {
    labnas_sim_task();
    int r = f(i, &env, cdata);
    if (r) return r;
  }
  labnas_sim_serial();
  return 0;
}
static void* workspace_alloc(int device_type, int device_id, uint64_t n, int code, int bits) {
  return aligned_alloc(64, (n + 63) / 64 * 64);
}
static int workspace_free(int device_type, int device_id, void* p) { free(p); return 0; }
void TVMFFIErrorSetRaisedFromCStrParts(const char* kind, const char** parts, int32_t n) {
  fprintf(stderr, "kernel error %s: ", kind);
  for (int i = 0; i < n; i++) fputs(parts[i], stderr);
  fputc('\n', stderr);
  exit(3);
}
static DLTensor tensor(int ndim, int code, int bits, int64_t* shape, size_t nbytes) {
  void* data = aligned_alloc(64, (nbytes + 63) / 64 * 64);
  memset(data, 0, (nbytes + 63) / 64 * 64);
  DLTensor t = {data, {kDLCPU, 0}, ndim, {(uint8_t)code, (uint8_t)bits, 1}, shape, NULL, 0};
  return t;
}
static int call(kernel_fn f, DLTensor* ts, int n) {
  TVMFFIAny args[64];
  TVMFFIAny ret;
  memset(args, 0, sizeof(args));
  ret.type_index = kTVMFFINone;
  for (int i = 0; i < n; i++) { args[i].type_index = kTVMFFIDLTensorPtr; args[i].v_ptr = &ts[i]; }
  labnas_sim_kernel();
  int r = f(NULL, args, n, &ret);
  labnas_sim_serial();
  return r;
}
"""


def harness_source(calls: list[KernelCall]) -> str:
    """The C program that calls each kernel once, in ``calls`` order (threads from ``argv[1]``)."""
    lines = [_PRELUDE]
    body = []
    for i, kc in enumerate(calls):
        if len(kc.args) > 64:
            raise SimulationError(f"kernel {kc.name} takes {len(kc.args)} buffers; the harness passes at most 64")
        lines.append(f"extern int __tvm_ffi_{kc.name}(void*, const TVMFFIAny*, int32_t, TVMFFIAny*);\n")
        body.append(f"  {{ DLTensor t[{len(kc.args)}];\n")
        for j, a in enumerate(kc.args):
            shape = ", ".join(map(str, a.shape)) or "1"
            lines.append(f"static int64_t shape_{i}_{j}[] = {{{shape}}};\n")
            body.append(f"    t[{j}] = tensor({len(a.shape)}, {a.code}, {a.bits}, shape_{i}_{j}, {a.nbytes});\n")
        body.append(f"    if (call(__tvm_ffi_{kc.name}, t, {len(kc.args)})) return 2;\n")
        body.append("".join(f"    free(t[{j}].data);\n" for j in range(len(kc.args))) + "  }\n")
    lines.append("int main(int argc, char** argv) {\n  if (argc > 1) threads = atoi(argv[1]);\n"
                 "  __TVMBackendParallelLaunch = (void*)launch;\n  __TVMBackendAllocWorkspace = (void*)workspace_alloc;\n"
                 "  __TVMBackendFreeWorkspace = (void*)workspace_free;\n")
    lines += body
    lines.append("  return 0;\n}\n")
    return "".join(lines)


@dataclass(frozen=True)
class Program:
    """A linked harness: the binary, its architecture, the kernels' code range and the markers' addresses."""

    path: Path
    arch: str
    calls: tuple[KernelCall, ...]
    code_start: int
    code_size: int
    markers: dict[str, int]


def _section(objdump: str, binary: Path, name: str) -> tuple[int, int]:
    out = subprocess.run([objdump, "-h", str(binary)], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        parts = line.split()
        if len(parts) > 3 and parts[1] == name:
            return int(parts[3], 16), int(parts[2], 16)
    raise SimulationError(f"the linked harness has no {name} section (the kernels' object was empty)")


def build_program(executable, calls: list[KernelCall], arch: str, workdir: Path) -> Program:
    """Export ``executable``'s kernels as an object, move its code into its own section (so its address range is
    known), and link it with the harness for ``arch`` as a static binary."""
    cc, package = _CROSS[arch]
    cc = _tool(cc, package)
    objcopy = _tool(_OBJCOPY[arch], "binutils-aarch64-linux-gnu" if arch == "aarch64" else "binutils")
    objdump = _tool(_OBJDUMP[arch], "binutils-aarch64-linux-gnu" if arch == "aarch64" else "binutils")
    workdir.mkdir(parents=True, exist_ok=True)
    archive = workdir / "kernels.tar"
    executable.export_library(str(archive))
    with tarfile.open(archive) as tar:
        member = next((m for m in tar.getmembers() if m.name.startswith("lib") and m.name.endswith(".o")), None)
        if member is None:
            raise SimulationError("the TVM build exported no kernel object (lib0.o)")
        (workdir / "lib0.o").write_bytes(tar.extractfile(member).read())
    subprocess.run([objcopy, "--rename-section", ".text=.labnas_kernels,alloc,load,readonly,code,contents",
                    str(workdir / "lib0.o"), str(workdir / "kernels.o")], check=True, capture_output=True)
    (workdir / "harness.c").write_text(harness_source(calls))
    binary = workdir / "harness"
    done = subprocess.run([cc, "-O1", "-static", "-I", _ffi_include(), str(workdir / "harness.c"), str(workdir / "kernels.o"),
                           "-o", str(binary), "-lm"], capture_output=True, text=True)
    if done.returncode != 0:
        raise SimulationError(f"linking the simulation harness failed: {done.stderr.strip().splitlines()[-1][:200]}")
    start, size = _section(objdump, binary, ".labnas_kernels")
    symbols = subprocess.run(["nm" if arch == "x86_64" else "aarch64-linux-gnu-nm", str(binary)], capture_output=True,
                             text=True, check=True).stdout
    markers = {}
    for line in symbols.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2] in ("labnas_sim_kernel", "labnas_sim_task", "labnas_sim_serial"):
            markers[parts[2].rsplit("_", 1)[1]] = int(parts[0], 16)
    return Program(binary, arch, tuple(calls), start, size, markers)


_TRACE = re.compile(rb"^Trace \d+: 0x[0-9a-f]+ \[[0-9a-f]+/([0-9a-f]+)/")
_INSN = re.compile(rb"^0x([0-9a-f]+):")


def trace_program(program: Program, threads: int, workdir: Path) -> tuple[list[KernelTrace], dict[int, list[int]]]:
    """Run the harness once under qemu with ``threads`` tasks per parallel region.

    Returns one :class:`KernelTrace` per kernel of ``program.calls`` and every translated block's instruction
    addresses (block start -> addresses, in order). The log streams through a pipe: a large network executes
    tens of millions of blocks and its log is never written to disk.
    """
    qemu = _qemu(program.arch)
    fifo = workdir / "qemu.log"
    if fifo.exists():
        fifo.unlink()
    os.mkfifo(fifo)
    marker_span = 16
    ranges = [f"0x{program.code_start:x}+0x{program.code_size:x}"] + [f"0x{a:x}+{marker_span}" for a in program.markers.values()]
    cmd = [qemu]
    if program.arch == "x86_64":
        cmd += ["-cpu", "max"]
    cmd += ["-d", "in_asm,exec,nochain", "-dfilter", ",".join(ranges), "-D", str(fifo), str(program.path), str(threads)]
    result: dict = {}

    def run() -> None:
        result["done"] = subprocess.run(cmd, capture_output=True, text=True)

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    kernel_pc, task_pc, serial_pc = program.markers["kernel"], program.markers["task"], program.markers["serial"]
    traces: list[KernelTrace] = []
    blocks: dict[int, list[int]] = {}
    current: Counter | None = None
    region_open = False
    block: list[int] | None = None
    with open(fifo, "rb") as log:
        for line in log:
            if line.startswith(b"Trace"):
                m = _TRACE.match(line)
                pc = int(m.group(1), 16)
                if pc == kernel_pc:
                    traces.append(KernelTrace())
                    current, region_open = traces[-1].serial, False
                elif pc == task_pc:
                    if not region_open:
                        traces[-1].regions.append([])
                        region_open = True
                    traces[-1].regions[-1].append(Counter())
                    current = traces[-1].regions[-1][-1]
                elif pc == serial_pc:
                    if traces:
                        current, region_open = traces[-1].serial, False
                elif current is not None:
                    current[pc] += 1
            elif line.startswith(b"IN:"):
                block = []
            elif block is not None:
                m = _INSN.match(line)
                if m:
                    block.append(int(m.group(1), 16))
                elif block:
                    blocks[block[0]] = block
                    block = None
    runner.join()
    fifo.unlink()
    done = result["done"]
    if done.returncode != 0:
        raise SimulationError(f"the simulation harness failed under {Path(qemu).name} (exit {done.returncode}): "
                              f"{(done.stderr.strip().splitlines() or ['no message'])[-1][:200]}")
    if len(traces) != len(program.calls):
        raise SimulationError(f"the harness ran {len(traces)} kernels of {len(program.calls)}")
    return traces, blocks
