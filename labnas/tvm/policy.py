"""How one compile schedules its kernels: a typed policy passed as an argument of
:func:`labnas.tvm.compile_model`, through the strategy chooser to every schedule (as TOPI passes a config to a
registered schedule). No module state steers a schedule, so a benchmark comparing two policies compiles twice with
two arguments, and the chooser's cache key names the policy it measured under.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from .._errors import LabnasError

__all__ = ["SchedulePolicy", "LabPolicy", "XnorPolicy", "PARTITIONS", "PolicyError"]

#: How kernels split an NCHW map between threads (see :attr:`SchedulePolicy.partition`).
PARTITIONS = ("rows", "channels")


class PolicyError(LabnasError, ValueError):
    """A schedule policy that cannot be applied; the message names the field and its allowed values."""


@dataclass(frozen=True)
class LabPolicy:
    """How one compile chooses its LAB strategies (a part of :class:`SchedulePolicy`, never module state).

    ``pins``: LAB shapes (by :attr:`labnas.tvm.strategy.LabShape.key`) answered with the given strategy, unmeasured (a
    decision of source ``pinned``). ``kinds``: the tile kinds the chooser may measure among (the first word of a
    strategy: ``fused``, ``two``, ``fused-near``, ``near``; ``None``: all of :func:`labnas.tvm.strategy.lab_candidates`).
    A restricted choice is cached under its own key (:meth:`cache_key`), so it never stands in for the unrestricted
    answer."""

    pins: Mapping[str, str] = field(default_factory=dict)
    kinds: tuple[str, ...] | None = None
    #: one strategy for every LAB shape not in :attr:`pins` (a test compiling a network with each kernel kind)
    every: str | None = None

    def pin_for(self, key: str) -> str | None:
        """The pinned strategy of the shape with :attr:`LabShape.key` ``key``, or None (then it is chosen)."""
        return self.pins.get(key, self.every)

    def allows(self, strategy: str) -> bool:
        """Whether the chooser may measure ``strategy`` (its kind, the first word, is in :attr:`kinds`)."""
        return self.kinds is None or strategy.split()[0] in self.kinds

    def cache_key(self, key: str) -> str:
        """The strategy cache's key for the LAB shape with :attr:`labnas.tvm.strategy.LabShape.key` ``key``."""
        return key if self.kinds is None else f"{key} | kinds {'/'.join(self.kinds)}"


@dataclass(frozen=True)
class XnorPolicy:
    """Pinned xnor (popcount) strategies: ``pins`` by :attr:`labnas.tvm.strategy.XnorShape.key`, ``every`` for every
    other shape (``None``: chosen by the target's pin, measurement or default). A pinned answer is a decision of
    source ``pinned``, unmeasured and uncached."""

    pins: Mapping[str, str] = field(default_factory=dict)
    every: str | None = None

    def pin_for(self, key: str) -> str | None:
        return self.pins.get(key, self.every)


@dataclass(frozen=True)
class SchedulePolicy:
    """One compile's scheduling choices.

    Attributes:
        partition: how the NCHW element-wise kernels (BatchNorm, residual add, activation), the max pool and the
            LAB kernels split a map between threads: ``"rows"`` (by image rows, as the convs and the binary kernels
            do, so a thread mostly reads what it wrote itself one kernel earlier; with a VM's vCPUs on cores that
            share no cache every map read from the other core's writes is a cross-core transfer) or
            ``"channels"``. docs/kernels.md has the measurements behind the default.
        lab: pinned or restricted LAB strategies (:class:`LabPolicy`).
        xnor: pinned popcount strategies (:class:`XnorPolicy`).
    """

    partition: str = "rows"
    lab: LabPolicy = field(default_factory=LabPolicy)
    xnor: XnorPolicy = field(default_factory=XnorPolicy)

    def __post_init__(self) -> None:
        if self.partition not in PARTITIONS:
            raise PolicyError(f"unknown map partition {self.partition!r}; choose one of {', '.join(PARTITIONS)}")

    @property
    def by_rows(self) -> bool:
        """Whether threads split a map by image rows (what the schedules take)."""
        return self.partition == "rows"

    @property
    def cache_tag(self) -> str:
        """What of the policy enters the strategy cache's key: strategies measured with maps split by rows are
        not the answer for channels (a restricted LAB choice adds its own tag, :meth:`LabPolicy.cache_key`)."""
        return f"split {self.partition}"
