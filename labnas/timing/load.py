"""How much CPU other processes take while this one times: the oversubscription check of paired timing.

Drift correction repairs a machine that is uniformly slower; it cannot repair oversubscription, when another
process runs on a core that TVM's thread pool uses and every barrier stalls (:mod:`labnas.timing.paired`).
The reference workload stalls at the same barriers, so its slowdown does not always betray it. What does:
the CPU time the rest of the machine used, on the CPUs this process may run on, during the timing window. From
``/proc/stat`` (the busy time of each CPU in this process's affinity, including time the hypervisor stole) minus
this process's own (``/proc/self/stat``, all its threads) over the wall time of the window: the number of those
cores others kept busy. When that exceeds the cores the
timing left free (``usable cores - TVM threads``) by :data:`OVERSUBSCRIBED_MARGIN`, the measurement was
oversubscribed.

Linux only; elsewhere (or when ``/proc`` cannot be read) the probe reports nothing and the reference's own
slowdown and spread remain the only checks. Tick resolution is 10 ms (USER_HZ 100), so windows shorter than
:data:`MIN_WINDOW_S` are not judged.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

__all__ = ["CpuSnapshot", "cpu_snapshot", "others_busy_cores", "others_in_vm_cores", "more_than_free", "oversubscription", "usable_cores", "OVERSUBSCRIBED_MARGIN"]

#: Cores others may keep busy beyond the free ones before a timing counts as oversubscribed (system daemons,
#: the Python interpreter's own bookkeeping in other processes, tick rounding).
OVERSUBSCRIBED_MARGIN = 0.35
#: Shorter windows hold too few 10 ms ticks to judge.
MIN_WINDOW_S = 0.15

_TICK_S = 1.0 / (os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100)


@dataclass(frozen=True)
class CpuSnapshot:
    """Busy CPU seconds of the CPUs this process may run on and of this process, at a wall-clock time (seconds)."""

    machine_busy_s: float
    own_busy_s: float
    wall_s: float
    #: of ``machine_busy_s``, the time the hypervisor gave these CPUs to others outside the VM (steal)
    steal_s: float = 0.0


def cpu_snapshot() -> CpuSnapshot | None:
    """The busy CPU time of this process's CPUs and of this process now, or None where ``/proc`` is not readable."""
    mine = _affinity()
    try:
        busy = steal = 0.0
        with open("/proc/stat") as fh:
            for line in fh:
                name, _, rest = line.partition(" ")
                if name == "cpu":  # the machine's total: the per-CPU lines follow
                    continue
                if not name.startswith("cpu"):
                    break
                if mine is not None and int(name[3:]) not in mine:
                    continue  # a CPU this process may not run on: its load does not compete with ours
                fields = [float(v) for v in rest.split()]
                # user nice system idle iowait irq softirq steal ...: busy is everything but idle and iowait
                # (guest time is already inside user and nice)
                busy += sum(fields[:8]) - fields[3] - (fields[4] if len(fields) > 4 else 0.0)
                steal += fields[7] if len(fields) > 7 else 0.0
        with open("/proc/self/stat") as fh:
            own = fh.read().rsplit(")", 1)[1].split()
    except (OSError, ValueError, IndexError):
        return None
    own_ticks = float(own[11]) + float(own[12])  # utime, stime (fields 14 and 15 of the full line)
    return CpuSnapshot(busy * _TICK_S, own_ticks * _TICK_S, time.perf_counter(), steal * _TICK_S)


def _affinity() -> set[int] | None:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def others_busy_cores(before: CpuSnapshot | None, after: CpuSnapshot | None) -> float | None:
    """Cores other processes (and the hypervisor) kept busy between two snapshots; None when not measurable."""
    if before is None or after is None:
        return None
    wall = after.wall_s - before.wall_s
    if wall < MIN_WINDOW_S:
        return None
    others = (after.machine_busy_s - before.machine_busy_s) - (after.own_busy_s - before.own_busy_s)
    return max(0.0, others / wall)


def others_in_vm_cores(before: CpuSnapshot | None, after: CpuSnapshot | None) -> float | None:
    """Cores other processes of this machine kept busy between two snapshots, leaving out what the hypervisor stole
    (a neighbour outside the VM slows every CPU alike: a slow spell, not contention); None when not measurable."""
    others = others_busy_cores(before, after)
    if others is None:
        return None
    return max(0.0, others - (after.steal_s - before.steal_s) / (after.wall_s - before.wall_s))


def usable_cores() -> int:
    """The cores this process may run on (its affinity), else every core."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def more_than_free(others_cores: float, threads: int, cores: int) -> bool:
    """Whether others kept more cores busy than ``threads`` on ``cores`` left free, beyond
    :data:`OVERSUBSCRIBED_MARGIN`: they competed for the cores the threads ran on."""
    return others_cores > max(0, cores - threads) + OVERSUBSCRIBED_MARGIN


def oversubscription(others_cores: float | None, threads: int, cores: int | None = None) -> str | None:
    """Why a timing with ``threads`` TVM threads was oversubscribed while others kept ``others_cores`` busy, or
    None when it was not (or could not be told). A single thread is never oversubscribed in this sense: sharing
    its core slows it uniformly, the case drift correction is for."""
    if others_cores is None or threads < 2:  # one thread has no barrier to stall at: time slicing slows it
        return None                          # uniformly, which the paired correction repairs
    cores = cores or usable_cores()
    if more_than_free(others_cores, threads, cores):
        return (f"other processes kept {others_cores:.2f} of {cores} cores busy while {threads} TVM thread(s) timed "
                f"({max(0, cores - threads)} left free): oversubscribed")
    return None
