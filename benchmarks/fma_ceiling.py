"""The fp32 multiply-add ceiling of this CPU: how many float MACs per second its vector FMA units sustain.

The float kernels of a binary network (the stem, LAB's depthwise decision maps, the classifier) are judged
against this figure, as the binary kernels are against the popcount ceiling (:mod:`labnas.timing.popcount_limit`):
"fraction of the FMA ceiling" = MACs / time / ceiling. It is measured, not read off a data sheet, because a
virtual CPU's clock, its boost and whether its vector units are 256 or 512 bits wide are not in ``/proc/cpuinfo``.

A small C loop (compiled here with ``gcc -O2 -march=native``) runs 12 independent FMA chains on the widest
vector registers the compiler targets (AVX-512, AVX2 or NEON through GCC's vector extension), long enough to
take about a second, on one core and then on every core at once (one process per core, pinned), best of 5.
Needs gcc.

    python benchmarks/fma_ceiling.py          # prints GMAC/s per core and for all cores together
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SOURCE = r"""
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#ifndef LANES
#define LANES 16
#endif
typedef float vec __attribute__((vector_size(LANES * 4)));
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
int main(int argc, char **argv) {
  long n = atol(argv[1]);
  vec a[12], b, c;
  for (int l = 0; l < LANES; l++) { b[l] = 0.999999f; c[l] = 1e-7f; }
  for (int i = 0; i < 12; i++) for (int l = 0; l < LANES; l++) a[i][l] = (float)i;
  double best = 1e30;
  for (int rep = 0; rep < 5; rep++) {
    double t = now();
    for (long k = 0; k < n; k++) {
#pragma GCC unroll 12
      for (int i = 0; i < 12; i++) a[i] = a[i] * b + c;  /* contracted to one FMA (-ffp-contract=fast) */
    }
    double dt = now() - t;
    if (dt < best) best = dt;
  }
  float s = 0;
  for (int i = 0; i < 12; i++) for (int l = 0; l < LANES; l++) s += a[i][l];
  printf("%.6e %g\n", (double)n * 12 * LANES / best, s);  /* MACs per second; s keeps the chains alive */
  return 0;
}
"""


def vector_lanes() -> int:
    """fp32 lanes of the widest vector unit GCC will target here (16 for AVX-512, 8 for AVX2, 4 for NEON/SSE)."""
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    if " avx512f" in flags:
        return 16
    if " avx2" in flags:
        return 8
    return 4


def build(folder: Path, lanes: int) -> Path:
    src, exe = folder / "fma.c", folder / "fma"
    src.write_text(SOURCE)
    subprocess.run(["gcc", "-O2", "-march=native", "-ffp-contract=fast", f"-DLANES={lanes}", "-o", str(exe), str(src)], check=True)
    return exe


def run(exe: Path, iterations: int, cpus: list[int]) -> list[float]:
    """One process per CPU in ``cpus``, all at once; each one's MACs per second."""
    procs = []
    for cpu in cpus:
        procs.append(subprocess.Popen([str(exe), str(iterations)], stdout=subprocess.PIPE, text=True,
                                      preexec_fn=(lambda c=cpu: os.sched_setaffinity(0, {c}))))
    return [float(p.communicate()[0].split()[0]) for p in procs]


def measure_ceiling(iterations: int = 100_000_000) -> dict[str, float]:
    """MACs per second on one core (``one``) and on every CPU at once (``both``, the sum), as :func:`main` prints them."""
    cpus = sorted(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as tmp:
        exe = build(Path(tmp), vector_lanes())
        one = run(exe, iterations, cpus[:1])[0]
        every = run(exe, iterations, cpus)
    return {"one": one, "both": sum(every), "per_core": every}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--iterations", type=int, default=100_000_000, help="loop trips per timing (12 FMAs each)")
    args = p.parse_args(argv)
    if shutil.which("gcc") is None:
        print("fma_ceiling needs gcc (apt-get install gcc)", file=sys.stderr)
        return 2
    from labnas.tvm import cpu_model, isa_summary

    lanes = vector_lanes()
    ceiling = measure_ceiling(args.iterations)
    one, every, cpus = ceiling["one"], ceiling["per_core"], ceiling["per_core"]
    print(f"{cpu_model()}, {' '.join(isa_summary())}; {lanes} fp32 lanes per FMA")
    print(f"one core: {one / 1e9:.1f} GMAC/s")
    print(f"{len(cpus)} cores at once: {sum(every) / 1e9:.1f} GMAC/s ({', '.join(f'{v / 1e9:.1f}' for v in every)} per core)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
