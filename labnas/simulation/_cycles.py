"""Cycles per execution of each executed block, from llvm-mca's model of a core.

Every block the trace saw is disassembled from the linked binary (``llvm-objdump``, LLVM's own syntax, so
llvm-mca reads it back) and handed to llvm-mca as one code region; all regions of a network go through one
llvm-mca run. A region's figure is its steady-state cost: total cycles over ``ITERATIONS`` back-to-back
iterations, divided by the iterations. That is right for the blocks that dominate (loop bodies, run millions
of times) and close for the rest, which are run a few times and cost little. llvm-mca assumes every load hits
L1 and every branch is predicted; the memory term of :mod:`labnas.simulation._simulate` adds what caches cost.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from .._tools import find_tool
from .cpus import SimulationError

__all__ = ["disassemble", "block_cycles", "mca_tool", "ITERATIONS"]

#: Iterations llvm-mca simulates per region: enough for the pipeline to reach its steady state.
ITERATIONS = 100

#: llvm-mca releases tried, newest first (Debian's llvm-19 has Neoverse N1 and Zen 4 models; llvm-14 has fewer).
_MCA = ("llvm-mca-19", "llvm-mca-18", "llvm-mca-17", "llvm-mca-16", "llvm-mca-15", "llvm-mca")
_OBJDUMP = ("llvm-objdump-19", "llvm-objdump-18", "llvm-objdump-17", "llvm-objdump-16", "llvm-objdump-15", "llvm-objdump")

_LINE = re.compile(r"^\s*([0-9a-f]+):\s+(.*)$")
_BARE_ADDRESS = re.compile(r"(?<![-#$\w])0x[0-9a-f]+(?!\s*\()")
_TRIPLE = {"aarch64": "aarch64-linux-gnu", "x86_64": "x86_64-linux-gnu"}


def _first(names: tuple[str, ...], package: str) -> str:
    return find_tool(names, package, SimulationError, "simulated latency")


def mca_tool() -> str:
    """The newest llvm-mca on this machine."""
    return _first(_MCA, "llvm-19")


def _clean(text: str) -> str:
    """One disassembled instruction as llvm-mca's assembler accepts it: comments and symbol hints dropped,
    PC-relative targets (branches, ``adr``/``adrp``, calls) pointed at one label, since only their cost counts."""
    text = re.split(r"\s//|\s#\s", re.sub(r"<[^>]*>", "", text) + " ")[0]
    return _BARE_ADDRESS.sub(".Lsim_target", text).strip()


def disassemble(binary: Path, arch: str, section: str = ".labnas_kernels") -> dict[int, str]:
    """Address -> instruction text of every instruction in ``section`` of ``binary``."""
    objdump = _first(_OBJDUMP, "llvm-19")
    out = subprocess.run([objdump, "-d", "--no-show-raw-insn", f"--section={section}", str(binary)],
                         capture_output=True, text=True, check=True).stdout
    code = {}
    for line in out.splitlines():
        m = _LINE.match(line)
        if m and m.group(2).strip():
            code[int(m.group(1), 16)] = _clean(m.group(2).replace("\t", " "))
    return code


def block_cycles(blocks: dict[int, list[int]], code: dict[int, str], arch: str, mca_cpu: str) -> dict[int, float]:
    """Cycles per execution of each block (start address -> cycles), for the core ``mca_cpu``.

    Addresses not in ``code`` are skipped: qemu's x86 listing wraps long instructions' bytes onto a second line
    with its own address, and the harness' markers lie outside the kernels' section (they cost 0)."""
    mca = mca_tool()
    regions, order = [".Lsim_target:"], []
    for start, addresses in sorted(blocks.items()):
        addresses = [a for a in addresses if a in code]
        if not addresses:
            continue
        order.append(start)
        regions.append(f"# LLVM-MCA-BEGIN b{start:x}")
        regions += [code[a] for a in addresses]
        regions.append(f"# LLVM-MCA-END b{start:x}")
    if not order:
        return {}
    source = "\n".join(regions) + "\n"
    args = [mca, f"-mtriple={_TRIPLE[arch]}", f"-mcpu={mca_cpu}", f"-iterations={ITERATIONS}",
            "-skip-unsupported-instructions=lack-sched", "-all-stats=false", "-instruction-info=false", "-resource-pressure=false"]
    done = subprocess.run(args + ["-"], input=source, capture_output=True, text=True)
    if done.returncode != 0 and "skip-unsupported" in done.stderr:
        done = subprocess.run(args[:4] + args[5:] + ["-"], input=source, capture_output=True, text=True)
    if done.returncode != 0:
        raise SimulationError(f"llvm-mca -mcpu={mca_cpu} failed: {done.stderr.strip().splitlines()[0][:200]}")
    totals = [int(v) for v in re.findall(r"^Total Cycles:\s+(\d+)", done.stdout, flags=re.M)]
    if len(totals) != len(order):
        raise SimulationError(f"llvm-mca reported {len(totals)} regions of {len(order)}")
    return {start: total / ITERATIONS for start, total in zip(order, totals)}


#: The ideal binary-MAC loop per ISA: XOR, per-byte popcount, and a byte-lane accumulate (the widening to wider lanes
#: every 31 steps amortised away), eight independent chains so latency hides behind throughput. ``bits`` binary MACs
#: per iteration.
_POPCOUNT_LOOP = {
    "aarch64": (1024, [line for c in range(8) for line in (f"eor v{c}.16b, v{16 + c}.16b, v{24 + c}.16b", f"cnt v{c}.16b, v{c}.16b",
                                                            f"add v{8 + c}.16b, v{8 + c}.16b, v{c}.16b")]),
}


def popcount_ceiling(arch: str, mca_cpu: str) -> float:
    """Binary MACs per cycle of one core at best: the ideal xor-popcount-accumulate loop (:data:`_POPCOUNT_LOOP`)
    through llvm-mca's model of ``mca_cpu``, operands in registers (NEON: EOR, CNT and ADD throughput)."""
    if arch not in _POPCOUNT_LOOP:
        raise SimulationError(f"no popcount ceiling loop for {arch}")
    bits, loop = _POPCOUNT_LOOP[arch]
    code = {i: text for i, text in enumerate(loop)}
    return bits / block_cycles({0: list(code)}, code, arch, mca_cpu)[0]
