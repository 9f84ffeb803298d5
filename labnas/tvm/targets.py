"""Compilation targets as data: a preset table, plus any TVM target a user passes as JSON.

TVM 0.27 rejects CLI target strings ("llvm -mcpu=...") and ignores ``mcpu=native``; presets are the
dict form, and ``host`` asks TVM for the CPU it runs on (``Target.from_device``).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["TargetPreset", "TARGETS", "resolve_target", "TargetError"]


class TargetError(ValueError):
    """An unknown preset or a malformed target JSON; the message names the presets."""


@dataclass(frozen=True)
class TargetPreset:
    name: str
    #: The TVM target dict; ``None`` means "the host CPU, as TVM detects it".
    config: dict[str, Any] | None
    #: C compiler that links the exported ``.so``; ``None`` is the host's default.
    cross_compiler: str | None
    #: ``uname -m`` of the machines this target runs on.
    arch: str
    #: Debian package that provides ``cross_compiler``.
    compiler_package: str | None = None
    description: str = ""
    #: int64 / float lanes the hand schedules vectorise over.
    vector_lanes: int = 8
    #: Binary convs add their words through full adders before the popcount (labnas.tvm.carry_save):
    #: on AVX2, whose vector popcount is a 7-instruction nibble table, 1.3-1.9x faster. Off on NEON, whose
    #: ``cnt`` is one instruction (the tree's 5 logic ops per saved popcount are not expected to pay; untimed).
    carry_save_popcount: bool = False

    def tvm_target(self):
        import tvm

        if self.config is None:
            return tvm.target.Target.from_device(tvm.cpu())
        return tvm.target.Target(self.config)

    @property
    def is_remote_only(self) -> bool:
        """True when the compiled code cannot run on this (x86_64) machine."""
        import platform

        return self.arch != platform.machine()

    def check_compiler(self) -> None:
        if self.cross_compiler and shutil.which(self.cross_compiler) is None:
            raise TargetError(
                f"target {self.name!r} needs the cross compiler {self.cross_compiler}; "
                f"install it with 'apt-get install {self.compiler_package}'"
            )


TARGETS: dict[str, TargetPreset] = {
    p.name: p
    for p in (
        TargetPreset("host", None, None, "x86_64", description="this machine's CPU, as TVM detects it", carry_save_popcount=True),
        TargetPreset(
            "x86",
            {"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "haswell"},
            None,
            "x86_64",
            description="generic x86-64 with AVX2 (Haswell and later, Zen)",
            carry_save_popcount=True,
        ),
        TargetPreset(
            "arm",
            {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a72", "mattr": ["+neon"]},
            "aarch64-linux-gnu-gcc",
            "aarch64",
            "gcc-aarch64-linux-gnu",
            "AArch64 + NEON, Cortex-A72 (Raspberry Pi 4, 64-bit OS)",
        ),
        TargetPreset(
            "arm-a76",
            {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a76", "mattr": ["+neon"]},
            "aarch64-linux-gnu-gcc",
            "aarch64",
            "gcc-aarch64-linux-gnu",
            "AArch64 + NEON, Cortex-A76 (Raspberry Pi 5)",
        ),
    )
}


def resolve_target(spec: str) -> TargetPreset:
    """A preset name, a TVM target as a JSON object, or a path to a JSON file holding one."""
    if spec in TARGETS:
        return TARGETS[spec]
    text = spec
    if not spec.lstrip().startswith("{"):
        path = Path(spec)
        if not path.is_file():
            raise TargetError(f"unknown target {spec!r}; use one of {', '.join(TARGETS)} or a TVM target as JSON")
        text = path.read_text()
    try:
        config = json.loads(text)
    except json.JSONDecodeError as err:
        raise TargetError(f"target JSON is malformed ({err.msg} at char {err.pos}); e.g. '{{\"kind\": \"llvm\"}}'") from None
    if not isinstance(config, dict) or config.get("kind") != "llvm":
        raise TargetError('target JSON must be an object with "kind": "llvm" (labnas compiles for CPUs)')
    import tvm

    try:
        tvm.target.Target(config)
    except Exception as err:  # noqa: BLE001 - TVM raises several types
        raise TargetError(f"TVM rejects the target {json.dumps(config)}: {str(err).splitlines()[0]}") from None
    triple = str(config.get("mtriple", ""))
    arch = "aarch64" if triple.startswith("aarch64") else "x86_64"
    cc = "aarch64-linux-gnu-gcc" if arch == "aarch64" else None
    native_popcount = arch == "aarch64" or "avx512vpopcntdq" in str(config.get("mattr", ""))
    package = "gcc-aarch64-linux-gnu" if cc else None
    return TargetPreset("custom", config, cc, arch, package, "user-supplied JSON", carry_save_popcount=not native_popcount)
