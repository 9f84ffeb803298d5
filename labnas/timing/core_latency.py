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
from pathlib import Path

from .._cache import cache_dir

__all__ = ["core_round_trip_ns", "PROBE_SOURCE"]

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
        allowed = sorted(os.sched_getaffinity(0))
        if len(allowed) < 2:
            return None
        cpus = (allowed[0], allowed[1])
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
