"""A fixed reference workload timed next to every candidate, to expose drift in the host's speed.

Shared machines drift: on the 2-core CI machine the same compiled network measured 20-50 % apart in
runs 15 minutes apart, each series tight. A latency is only comparable with latencies taken while
the machine ran at the same speed, so the search times this fixed workload (a binary conv layer and a
float conv, compiled once per process) right after each candidate and stores it with the trial.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from ..models import ArchSpec
from ..nn import BinaryConv2d
from ..tvm.lowering import compile_model
from ..tvm.targets import TargetPreset
from .remote import RemoteSpec
from .runner import VmRunner

__all__ = ["CalibratedReference", "ReferenceTimer", "ReferenceWorkload", "CONV_PAIR", "baseline_workload",
           "workload_named", "reference_for"]


@dataclass(frozen=True)
class ReferenceWorkload:
    """What the reference times: ``name`` (part of the calibration key, and stored with a study so a resumed
    search rebuilds the same workload), ``build()`` (a fresh eval-mode module) and its input ``shape`` (NCHW).

    Two kinds. :data:`CONV_PAIR`, a float 3x3 conv and a binary 3x3 conv at 64x28x28: small, fits in L2, any
    network's companion (``labnas profile``, latency tables). :func:`baseline_workload`, the searched space's own
    all-sign network: the search's companion, because a like-for-like reference is slowed down by what slows the
    candidates (cache and memory-bandwidth contention as well as time slicing). Measured on the shared 2-core
    EPYC (``benchmarks/bench_reference.py``, docs/timing.md): per-measurement ratio spread 3.9-4.2 % CV against
    the baseline, 14-15 % against the conv pair, raw medians 20 %.
    """

    name: str
    build: Callable[[], nn.Module]
    shape: tuple[int, ...]


def _conv_pair() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(64, 64, 3, padding=1, bias=False),  # a float conv (stem / shortcut kind of work)
        BinaryConv2d(64, 64, 3, binarizer="ste_sign", pad_value=1),  # a bitpacked binary conv
    ).eval()


#: The default reference: a float conv and a binary conv, 64 channels at 28x28.
CONV_PAIR = ReferenceWorkload("conv pair 64x28x28", _conv_pair, (1, 64, 28, 28))


def baseline_workload(spec: ArchSpec, input_shape: tuple[int, int, int]) -> ReferenceWorkload:
    """The all-sign network of ``spec``'s family and global settings (width, channels, classes, stem; every binary
    layer sign with its slot's default kernel) at ``input_shape`` (CxHxW): the same workload for every candidate of
    a space, whichever layers they change."""
    from ..models import create_model, default_spec

    base = default_spec(spec.family, "sign", width_mult=spec.width_mult, in_channels=spec.in_channels,
                        num_classes=spec.num_classes, stem=spec.stem)
    c, h, w = input_shape
    name = (f"baseline {spec.family} all-sign {c}x{h}x{w} width {spec.width_mult:g} {spec.num_classes} classes "
            f"{spec.stem} stem")
    return ReferenceWorkload(name, lambda: create_model(base).eval(), (1, c, h, w))


def workload_named(name: str | None, spec: ArchSpec, input_shape: tuple[int, int, int]) -> ReferenceWorkload:
    """The workload a stored calibration names (``None``: one stored before workloads had names, the conv pair),
    rebuilt for ``spec``'s space; :class:`ValueError` when ``name`` is neither."""
    if name in (None, CONV_PAIR.name):
        return CONV_PAIR
    baseline = baseline_workload(spec, input_shape)
    if name != baseline.name:
        raise ValueError(f"the stored reference workload {name!r} is not this space's ({baseline.name!r})")
    return baseline


class ReferenceTimer:
    """The reference workload compiled once for a target; :meth:`time_once` / :meth:`time_ms` time it where it runs.

    On this machine it is loaded once and stays loaded. For a board (``remote``) it is uploaded into each RPC
    session that times a candidate (:meth:`attach`, then :meth:`release`): a board's RPC server serves one
    session at a time, so the reference must share the candidate's, and no session may stay open between
    measurements.
    """

    def __init__(self, target: TargetPreset, threads: int | None = None, seed: int = 0, remote: RemoteSpec | None = None,
                 workload: "ReferenceWorkload | None" = None):
        self.workload = workload or CONV_PAIR
        model, shape = self.workload.build(), self.workload.shape
        self.compiled = compile_model(model, shape, target, threads=threads)
        self.remote, self.threads = remote, threads
        self._x = np.random.default_rng(seed).standard_normal(shape).astype("float32")
        self.runner: VmRunner | None = None
        if remote is None:
            self._use(VmRunner.local(self.compiled.executable, threads))

    def attach(self, runner: VmRunner) -> None:
        """Time next to the candidate on ``runner``: for a board, the reference is uploaded into ``runner``'s RPC
        session (the one the candidate is timed in); on this machine it keeps its own runner, loaded at init."""
        if self.remote is not None:
            self._use(VmRunner.remote(self.compiled, self.remote, self.threads, session=runner.session,
                                      filename="labnas_reference.so"))

    def _use(self, runner: VmRunner) -> None:
        self.runner, self.x = runner, runner.tensor(self._x)

    def release(self) -> None:
        """Let go of a board's session (local: nothing to do)."""
        if self.remote is not None:
            self.runner = self.x = None

    def time_ms(self, number: int = 10, repeat: int = 5) -> float:
        """Median of ``repeat`` timings of ``number`` runs each (ms per run)."""
        return self.runner.time_ms([self.x], number, repeat)

    def time_once(self, number: int = 10) -> float:
        """One timing: the mean of ``number`` runs (ms per run), for paired rounds."""
        return 1e3 * self.runner.time_runs([self.x], number, 1)[0]

    def key(self, target_name: str) -> str:
        """The calibration key of this reference: CPU (or board), ISA, target, threads, versions."""
        from .calibration import board_calibration_key, calibration_key

        suffix = "" if self.workload is CONV_PAIR else f" | reference {self.workload.name}"
        if self.remote is None:
            return calibration_key(target_name, self.runner.threads) + suffix
        return board_calibration_key(self.remote.describe(), target_name, self.threads) + suffix

    def calibrated_ms(self, target_name: str, recalibrate: bool = False) -> tuple[float, str]:
        """The calibration for ``target_name`` at the runner's threads (see :mod:`labnas.timing.calibration`); for a
        board, measured in a session of its own when it is not cached."""
        from .calibration import load_or_calibrate

        if self.remote is None:
            from .load import cpu_snapshot

            return load_or_calibrate(self.time_once, self.key(target_name), recalibrate, threads=self.runner.threads,
                                     cpu_probe=cpu_snapshot)
        opened = []

        def time_once_on_board() -> float:
            if not opened:
                self._use(VmRunner.remote(self.compiled, self.remote, self.threads, filename="labnas_reference.so"))
                opened.append(True)
            return self.time_once()

        try:
            return load_or_calibrate(time_once_on_board, self.key(target_name), recalibrate, local=False)
        finally:
            self.release()


@dataclass(frozen=True)
class CalibratedReference:
    """The reference workload compiled for one target and thread count, with the quiet time (ms) that
    drift-corrected latencies are scaled by. ``how`` says where the calibration came from: ``"stored"``
    (a study's or a table's own), ``"cached"`` (this machine's cache) or ``"measured"`` (just now)."""

    timer: ReferenceTimer
    ms: float
    key: str
    how: str

    def record(self) -> dict[str, Any]:
        """What a study or a latency table stores, so that it keeps its scale when used again."""
        return {"key": self.key, "ms": round(self.ms, 5), "workload": self.timer.workload.name}

    def observe(self, reference_ms: float) -> bool:
        """Note the reference's median in a measurement's paired rounds: a clearly faster one than the cached
        calibration lowers the cache (:func:`labnas.timing.calibration.lower_cached`), so the next study starts
        on the right scale; this reference keeps its ``ms``. Returns whether the cache was lowered."""
        from .calibration import lower_cached

        return lower_cached(self.key, reference_ms, local=self.timer.remote is None)


def reference_for(target: TargetPreset, threads: int | None = None, remote: RemoteSpec | None = None,
                  recalibrate: bool = False, stored: dict | None = None,
                  workload: ReferenceWorkload | None = None) -> CalibratedReference | None:
    """The calibrated reference for paired timing where the target runs: this machine, or the board at ``remote``
    (the reference is then uploaded into each session that times a candidate). ``None`` only for a target this
    machine cannot run when no board is given (there is nothing to time on).

    ``stored`` is a calibration recorded earlier (``{"key", "ms"}``, see :meth:`CalibratedReference.record`): it
    is used when it was made for the same CPU (or board), ISA, target, thread count and versions, so that a resumed
    search or a table keeps the scale it began with; otherwise the cached calibration is used, measured first if
    there is none or ``recalibrate`` is set. ``workload``: what the reference times (default :data:`CONV_PAIR`).
    """
    if remote is None and target.is_remote_only:
        return None
    timer = ReferenceTimer(target, threads, remote=remote, workload=workload)
    key = timer.key(target.name)
    if stored and stored.get("key") == key and not recalibrate:
        return CalibratedReference(timer, float(stored["ms"]), key, "stored")
    ms, how = timer.calibrated_ms(target.name, recalibrate)
    return CalibratedReference(timer, ms, key, how)
