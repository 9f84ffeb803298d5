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
from .._errors import LabnasError

__all__ = ["TargetPreset", "TARGETS", "resolve_target", "TargetError", "host_preset"]


class TargetError(LabnasError, ValueError):
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
    #: float32 lanes of one vector register, which the float kernels' schedules vectorise over.
    float_lanes: int = 8
    #: Binary convs add their words through full adders before the popcount (labnas.tvm.carry_save).
    #: ``None``: chosen per layer by measurement where this machine can run the target
    #: (:mod:`labnas.tvm.strategy`), else the ISA's default (below); ``True``/``False`` pins it.
    carry_save_popcount: bool | None = None
    #: The vector popcount is one instruction (AVX-512 VPOPCNTDQ, NEON ``cnt``): the default where the
    #: choice cannot be measured is then the plain popcount, else the carry-save tree (AVX2's nibble table).
    native_popcount: bool = False
    #: CPU flags (``/proc/cpuinfo``) the compiled code needs; with ``arch``, whether it runs here.
    requires: tuple[str, ...] = ()
    #: The CPU model (:data:`labnas.simulation.CPU_MODELS`) a board target's latency is simulated on when no
    #: board is connected; ``None``: a target without one can only be measured.
    cpu_model: str | None = None

    def tvm_target(self):
        import tvm

        if self.config is None:
            return tvm.target.Target.from_device(tvm.cpu())
        return tvm.target.Target(self.config)

    @property
    def is_remote_only(self) -> bool:
        """True when the compiled code cannot run on this machine's architecture (a board's target)."""
        import platform

        return self.arch != platform.machine()

    @property
    def runs_here(self) -> bool:
        """True when code compiled for this target executes on this machine (architecture and ISA)."""
        from .cpu import can_run

        return can_run(self.arch, self.requires)

    def describe_isa(self) -> str:
        """The vector width and popcount strategy, for benchmark and profile headers."""
        pop = {True: "carry-save (pinned)", False: "native (pinned)", None: "per layer, measured"}[self.carry_save_popcount]
        if self.carry_save_popcount is None and not self.runs_here:
            pop = f"{'native' if self.native_popcount else 'carry-save'} (default; not runnable here)"
        return f"{self.float_lanes} float lanes, popcount {pop}"

    def check_compiler(self) -> None:
        if self.cross_compiler and shutil.which(self.cross_compiler) is None:
            raise TargetError(
                f"target {self.name!r} needs the cross compiler {self.cross_compiler}; "
                f"install it with 'apt-get install {self.compiler_package}'"
            )


def host_preset() -> TargetPreset:
    """This machine's CPU as TVM detects it, with the vector width and popcount its flags imply."""
    import platform

    from .cpu import cpu_flags

    flags = cpu_flags()
    arm = platform.machine() == "aarch64"
    return TargetPreset(
        "host", None, None, platform.machine(), description="this machine's CPU, as TVM detects it",
        float_lanes=16 if "avx512f" in flags else 8,
        native_popcount=arm or "avx512_vpopcntdq" in flags,
    )


def _arm_board(name: str, mcpu: str, description: str, cpu_model: str) -> TargetPreset:
    """An AArch64 + NEON board: cross-linked with gcc-aarch64-linux-gnu, one-instruction popcount (``cnt``);
    without a board its latency is simulated on ``cpu_model``."""
    config = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": mcpu, "mattr": ["+neon"]}
    return TargetPreset(name, config, "aarch64-linux-gnu-gcc", "aarch64", "gcc-aarch64-linux-gnu", description, native_popcount=True,
                        cpu_model=cpu_model)


TARGETS: dict[str, TargetPreset] = {
    p.name: p
    for p in (
        host_preset(),
        TargetPreset(
            "x86",
            {"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "haswell"},
            None,
            "x86_64",
            description="generic x86-64 with AVX2 (Haswell and later, Zen)",
            requires=("avx2",),
        ),
        TargetPreset(
            "x86-avx512",
            {"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "icelake-server"},
            None,
            "x86_64",
            description="x86-64 with AVX-512 and its vector popcount (Ice Lake and later, Zen 4 and later)",
            float_lanes=16,
            native_popcount=True,
            requires=("avx512f", "avx512bw", "avx512_vpopcntdq"),
        ),
        _arm_board("arm", "cortex-a72", "AArch64 + NEON, Cortex-A72 (Raspberry Pi 4, 64-bit OS)", "cortex-a72"),
        _arm_board("arm-a76", "cortex-a76", "AArch64 + NEON, Cortex-A76 (Raspberry Pi 5)", "cortex-a76"),
        _arm_board("rpi4", "cortex-a72", "Raspberry Pi 4 Model B: 4 x Cortex-A72 at 1.5 GHz", "cortex-a72"),
        _arm_board("rpi5", "cortex-a76", "Raspberry Pi 5: 4 x Cortex-A76 at 2.4 GHz", "cortex-a76"),
        _arm_board("a55", "cortex-a55", "Cortex-A55 boards (RK3566): 4 x Cortex-A55 at 1.8 GHz", "cortex-a55"),
        _arm_board("jetson-nx", "carmel", "Nvidia Jetson Xavier NX: 6 x Carmel (ARMv8.2) at 1.4 GHz", "carmel"),
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
    attrs = str(config.get("mattr", "")) + " " + str(config.get("mcpu", ""))
    native_popcount = arch == "aarch64" or "avx512vpopcntdq" in attrs or any(
        cpu in attrs for cpu in ("icelake", "sapphirerapids", "znver4", "znver5", "tigerlake", "graniterapids")
    )
    avx512 = native_popcount and arch == "x86_64"
    package = "gcc-aarch64-linux-gnu" if cc else None
    return TargetPreset(
        "custom", config, cc, arch, package, "user-supplied JSON", float_lanes=16 if avx512 else 8,
        native_popcount=native_popcount, requires=("avx512f", "avx512_vpopcntdq") if avx512 else (),
    )
