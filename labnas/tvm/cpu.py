"""What this machine's CPU is and can run: model name and instruction-set flags, read once.

Kernel choices depend on them (vector width, whether a vector popcount is one instruction), so the
``host`` target preset, the strategy cache key and every device record read them from here.
"""

from __future__ import annotations

import functools
import platform

__all__ = ["cpu_model", "cpu_flags", "ISA_FLAGS", "isa_summary", "can_run", "cache_kib", "l2_bytes"]

#: CPU features that change which kernels are fast (vector width, native popcount, dot products).
ISA_FLAGS = ("avx2", "avx512f", "avx512bw", "avx512_vpopcntdq", "avx512_bitalg", "avx512_vnni", "asimd", "asimddp", "sve")


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> tuple[str | None, frozenset[str]]:
    """The first processor's model name and flags from ``/proc/cpuinfo`` (x86 ``flags``, ARM ``Features``)."""
    model, flags = None, None
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name") and model is None:
                    model = line.split(":", 1)[1].strip()
                elif line.startswith(("flags", "Features")) and flags is None:
                    flags = frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return model, flags or frozenset()


def cpu_model() -> str:
    return _cpuinfo()[0] or platform.processor() or platform.machine()


def cpu_flags() -> frozenset[str]:
    """Every flag the kernel reports for this CPU (empty when ``/proc/cpuinfo`` is unreadable)."""
    return _cpuinfo()[1]


def isa_summary() -> list[str]:
    """The flags of :data:`ISA_FLAGS` this CPU has, in that order."""
    flags = cpu_flags()
    return [f for f in ISA_FLAGS if f in flags]


def can_run(arch: str, requires: tuple[str, ...]) -> bool:
    """Whether code for ``arch`` (``uname -m``) needing the CPU flags ``requires`` executes on this machine."""
    return arch == platform.machine() and set(requires) <= cpu_flags()


def cache_kib(level: int) -> int:
    """This machine's data/unified cache of ``level`` per core, in KiB (sysfs), or 0 where it cannot be read."""
    from pathlib import Path

    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            if int((index / "level").read_text()) == level and (index / "type").read_text().strip() in ("Data", "Unified"):
                size = (index / "size").read_text().strip()
                return int(size[:-1]) * (1024 if size.endswith("M") else 1) if size[-1] in "KM" else int(size) // 1024
        except (OSError, ValueError):
            continue
    return 0


@functools.lru_cache(maxsize=1)
def l2_bytes(default: int = 256 * 1024) -> int:
    """The per-core level-2 cache of this machine in bytes (:func:`cache_kib`), ``default`` where it cannot be read.
    Tiles whose working set must stay in L2 are only candidates where it fits this machine's (1-2 MiB on recent x86
    servers, 256 KiB on older cores)."""
    return 1024 * cache_kib(2) or default
