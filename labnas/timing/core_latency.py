"""How far apart two of this machine's CPUs are: the round trip of one cache line between them, in ns.

Why it matters: a network run on two TVM threads hands its activations from one core to the other at every
layer (each kernel's output is read by both threads in the next one), about 80 times per LAB-BNN inference.
On the 2-vCPU EPYC VM this project is measured on, the host places the two vCPUs sometimes on cores that share
an L3 (round trip ~90-140 ns) and sometimes on cores that do not (~370-420 ns), and moves them between the two
for minutes at a time, invisibly to ``/proc``. LAB-BNN all-sign at 224 then runs 1.27 ms or 2.1-2.2 ms on two
threads (one thread: 2.3-2.4 ms either way), while a pure-FMA load runs at the same speed in both placements.
A benchmark row records the round trip it was measured under (``machine_facts``), so that figures from the
two placements are not compared as if they were one machine (docs/timing.md).

The probe is a small C program (two threads pinned to two CPUs, bouncing an atomic flag 200,000 times),
compiled once with the system C compiler into labnas' cache; without a C compiler or a second CPU it answers
``None``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .._cache import cache_dir, read_json, write_json_atomic

__all__ = ["core_round_trip_ns", "placement_labels", "placement_now", "Placement", "APART_FACTOR", "PROBE_ROUNDS", "PROBE_SOURCE"]

PROBE_SOURCE = r"""
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
static _Atomic int flag __attribute__((aligned(64)));
static long rounds;
static int cpu_a, cpu_b;
static int pin(int cpu) { cpu_set_t s; CPU_ZERO(&s); CPU_SET(cpu, &s); return pthread_setaffinity_np(pthread_self(), sizeof s, &s); }
static void *echo(void *unused) {
  (void)unused;
  if (pin(cpu_b)) return (void *)1;
  for (long i = 0; i < rounds; i++) {
    while (atomic_load_explicit(&flag, memory_order_acquire) != 1) {}
    atomic_store_explicit(&flag, 0, memory_order_release);
  }
  return 0;
}
int main(int argc, char **argv) {
  if (argc < 4) return 2;
  cpu_a = atoi(argv[1]); cpu_b = atoi(argv[2]); rounds = atol(argv[3]);
  if (pin(cpu_a)) return 3;
  pthread_t t;
  if (pthread_create(&t, 0, echo, 0)) return 4;
  struct timespec s, e;
  clock_gettime(CLOCK_MONOTONIC, &s);
  for (long i = 0; i < rounds; i++) {
    atomic_store_explicit(&flag, 1, memory_order_release);
    while (atomic_load_explicit(&flag, memory_order_acquire) != 0) {}
  }
  clock_gettime(CLOCK_MONOTONIC, &e);
  void *failed;
  pthread_join(t, &failed);
  if (failed) return 5;
  printf("%.1f\n", ((e.tv_sec - s.tv_sec) * 1e9 + (e.tv_nsec - s.tv_nsec)) / rounds);
  return 0;
}
"""


def _first_two_cpus() -> tuple[int, int] | None:
    """The first two CPUs this process may run on (None with one): the pair every default probe measures."""
    allowed = sorted(os.sched_getaffinity(0))
    return (allowed[0], allowed[1]) if len(allowed) >= 2 else None


def _probe_binary() -> Path | None:
    """The compiled probe (built on first use, keyed by its source), or None without a C compiler."""
    compiler = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if compiler is None:
        return None
    binary = cache_dir() / f"core_latency_{hashlib.sha1(PROBE_SOURCE.encode()).hexdigest()[:10]}"
    if binary.exists():
        return binary
    binary.parent.mkdir(parents=True, exist_ok=True)
    source = binary.with_suffix(".c")
    source.write_text(PROBE_SOURCE)
    partial = binary.with_suffix(f".{os.getpid()}.tmp")
    built = subprocess.run([compiler, "-O2", "-pthread", "-o", str(partial), str(source)], capture_output=True)
    if built.returncode != 0:
        return None
    partial.replace(binary)  # atomic: two processes building at once both end with a whole binary
    return binary


def core_round_trip_ns(cpus: tuple[int, int] | None = None, rounds: int = 200_000) -> float | None:
    """Median of three round trips (ns) of a cache line between ``cpus`` (default: the first two this process
    may run on); ``None`` with fewer than two CPUs, without a C compiler, or when the probe fails (a CPU
    that cannot be pinned). About 0.1-0.3 s."""
    if cpus is not None and cpus[0] == cpus[1]:
        raise ValueError(f"core_round_trip_ns needs two different CPUs, got {cpus}: two spinning threads on one CPU only take turns")
    if cpus is None:
        cpus = _first_two_cpus()
        if cpus is None:
            return None
    binary = _probe_binary()
    if binary is None:
        return None
    times = []
    for _ in range(3):
        try:
            run = subprocess.run([str(binary), str(cpus[0]), str(cpus[1]), str(rounds)], capture_output=True, text=True,
                                 timeout=30)
        except subprocess.TimeoutExpired:  # a CPU taken away meanwhile: the two threads share one
            return None
        if run.returncode != 0:
            return None
        times.append(float(run.stdout.strip()))
    return sorted(times)[1]


#: Round trips per probe where a probe runs often (before each paired timing, each benchmark round): ~20-60 ms.
PROBE_ROUNDS = 50_000

#: A round trip more than this factor above the lowest one seen for the same CPUs means the host has put them
#: further apart. On the EPYC VM, probes of 50,000 round trips (what a timing spends, ~60 ms) measured 80-231 ns
#: with the vCPUs near and 364-511 ns with them apart (`bench_verdicts.py`, 97 probes, 2026-12-03): up to 2.9x and
#: at least 4.5x the lowest; 3.2 sits between with room on both sides.
APART_FACTOR = 3.2


def placement_labels(round_trips: Sequence[float | None]) -> list[str]:
    """Which placement of the CPUs each of a run's probes saw: ``"near"`` / ``"apart"`` when some round trips
    are apart from the run's lowest (:attr:`Placement.apart`), ``"one"`` when none is, ``"unknown"`` for a
    probe that answered None.

    Relative to the run's lowest rather than fixed: what counts as near depends on the CPU (a hyper-thread
    sibling is ~50 ns, another core of one L3 ~100 ns, another socket ~400 ns); only a jump inside the same run
    says the host moved the CPUs. A run that saw one placement cannot say which it was.
    """
    known = [rt for rt in round_trips if rt is not None]
    if not known:
        return ["unknown"] * len(round_trips)
    lowest = min(known)
    if not Placement(max(known), lowest).apart:
        return ["one" if rt is not None else "unknown" for rt in round_trips]
    return ["unknown" if rt is None else "apart" if Placement(rt, lowest).apart else "near" for rt in round_trips]


@dataclass(frozen=True)
class Placement:
    """Where the CPUs a timing runs on sit right now: ``round_trip_ns`` measured, ``lowest_ns`` the lowest this
    machine has shown for the same CPUs (kept in labnas' cache), ``apart`` when the first is more than
    :data:`APART_FACTOR` x the second (the host has put them on cores that share less than they can)."""

    round_trip_ns: float
    lowest_ns: float

    @property
    def apart(self) -> bool:
        return self.round_trip_ns > APART_FACTOR * self.lowest_ns


def placement_now(measure: Callable[[], float | None] | None = None) -> Placement | None:
    """Probe the placement of the first two CPUs this process may use (about 60 ms) and remember the lowest round
    trip seen for them on this machine; None when it cannot be probed (one CPU, no C compiler).

    ``measure`` replaces the probe (tests). Why the lowest seen is the yardstick: a calibration keeps the
    fastest quiet time it has seen (:mod:`labnas.timing.calibration`), which on a VM is the near placement, so a
    timing with the CPUs further apart than that is not comparable to it without saying so."""
    from ..tvm.cpu import cpu_model

    cpus = _first_two_cpus()
    if cpus is None and measure is None:
        return None
    key = f"{cpu_model()} | cpus {cpus}"
    now = measure() if measure is not None else core_round_trip_ns(cpus, rounds=PROBE_ROUNDS)
    if now is None:
        return None
    path = cache_dir() / "core_round_trip.json"
    table = read_json(path)
    lowest = min(float(table.get(key, now)), now)
    if lowest != table.get(key):
        table[key] = lowest
        write_json_atomic(path, table)
    return Placement(now, lowest)
