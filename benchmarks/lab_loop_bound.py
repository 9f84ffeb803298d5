"""How fast can LAB's decision loop run on this CPU at all? Hand-written AVX-512 loops against the FMA ceiling.

LAB's decision map (3x3, official pairing) is 18 multiply-adds per output from two input maps, with 18 weights
per channel. Vectorised along a row (as labnas' kernels do), every multiply-add reads a shifted input vector and a
broadcast weight. This script writes that loop in C with AVX-512 intrinsics, the input of one channel in L1 (two
30 x 64 maps), and times it on one core, in the register tiles labnas can schedule (``R`` rows x ``V`` vectors of 16
pixels, the 18 weights in registers, unaligned shifted loads) and with the shifts made in registers (aligned loads
and ``valignd``). The best of them is what a schedule of this loop can reach here, whatever TVM does; the pure FMA
ceiling (``benchmarks/fma_ceiling.py``'s loop) is the roof.

    python benchmarks/lab_loop_bound.py          # -> results/benchmarks/lab_loop_bound.csv (needs gcc, AVX-512)
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from fma_ceiling import measure_ceiling  # noqa: E402

SOURCE = r"""
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#define H 28
#define W 64  /* a multiple of 16 x every variant's vectors */
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
static float *in[2];
static int S, OFF;
static unsigned short masks[H][W / 16];
static float wts[2][9];

/* R rows x V vectors of 16 pixels, one channel, shifted rows loaded unaligned (SHIFT 0) or made from aligned loads
   with valignd (SHIFT 1); decisions compared and OR-ed into masks as the packing does. */
__attribute__((noinline)) static void tile_loop(void) {
#if WMEM  /* weights broadcast from memory at every use (an embedded-broadcast operand): registers for accumulators */
#define WEIGHT(s, t) _mm512_set1_ps(wp[(s) * 9 + (t)])
  const float *wp = &wts[0][0];
#else
  __m512 w[2][9];
  for (int s = 0; s < 2; s++) for (int t = 0; t < 9; t++) w[s][t] = _mm512_set1_ps(wts[s][t]);
#define WEIGHT(s, t) w[s][t]
#endif
  for (int y0 = 0; y0 < H; y0 += R) for (int xb = 0; xb < W; xb += 16 * V) {
#if WMEM
    __asm__ volatile("" : "+r"(wp));  /* the weights may have changed: reload them in this tile */
#endif
    __m512 acc[R][V];
    for (int r = 0; r < R; r++) for (int q = 0; q < V; q++) acc[r][q] = _mm512_setzero_ps();
    for (int s = 0; s < 2; s++) for (int ir = 0; ir < R + 2 && y0 + ir < H + 2; ir++) for (int q = 0; q < V; q++) {
      const float *row = in[s] + (y0 + ir) * S + OFF + xb + 16 * q;
      __m512 v0, v1, v2;
#if SHIFT
      __m512i a = _mm512_castps_si512(_mm512_load_ps(row - 16)), b = _mm512_castps_si512(_mm512_load_ps(row)),
              c = _mm512_castps_si512(_mm512_load_ps(row + 16));
      v0 = _mm512_castsi512_ps(_mm512_alignr_epi32(b, a, 15)); v1 = _mm512_castsi512_ps(b);
      v2 = _mm512_castsi512_ps(_mm512_alignr_epi32(c, b, 1));
#else
      v0 = _mm512_loadu_ps(row - 1); v1 = _mm512_loadu_ps(row); v2 = _mm512_loadu_ps(row + 1);
#endif
      for (int r = 0; r < R; r++) {
        int ky = ir - r;
        if (ky < 0 || ky > 2) continue;
        acc[r][q] = _mm512_fmadd_ps(v0, WEIGHT(s, 3 * ky), acc[r][q]);
        acc[r][q] = _mm512_fmadd_ps(v1, WEIGHT(s, 3 * ky + 1), acc[r][q]);
        acc[r][q] = _mm512_fmadd_ps(v2, WEIGHT(s, 3 * ky + 2), acc[r][q]);
      }
    }
    for (int r = 0; r < R && y0 + r < H; r++) for (int q = 0; q < V; q++)
      masks[y0 + r][xb / 16 + q] |= _mm512_cmp_ps_mask(acc[r][q], _mm512_setzero_ps(), _CMP_GE_OQ);
  }
}

int main(int argc, char **argv) {
  long iterations = atol(argv[1]);
  S = SHIFT ? 96 : 66; OFF = SHIFT ? 16 : 1;  /* unaligned: rows of 66 floats as labnas pads them */
  for (int s = 0; s < 2; s++) {
    in[s] = aligned_alloc(64, sizeof(float) * S * (H + 2));
    for (int i = 0; i < S * (H + 2); i++) in[s][i] = (float)((i * 7919) % 13) - 6.0f;
  }
  for (int s = 0; s < 2; s++) for (int t = 0; t < 9; t++) wts[s][t] = ((s * 9 + t) % 5) - 2.0f;
  tile_loop();
  double t0 = now();
  for (long i = 0; i < iterations; i++) tile_loop();
  double dt = now() - t0;
  printf("%.6e %d\n", (double)iterations * H * W * 18 / dt, masks[3][1]);
  return 0;
}
"""

#: (name, rows, vectors, shift in registers, weights from memory)
VARIANTS = [
    ("4 rows x 1 vector, unaligned loads", 4, 1, 0, 0),
    ("4 rows x 2 vectors, unaligned loads", 4, 2, 0, 0),
    ("2 rows x 4 vectors, unaligned loads", 2, 4, 0, 0),
    ("8 rows x 1 vector, unaligned loads", 8, 1, 0, 0),
    ("4 rows x 1 vector, aligned loads + valignd", 4, 1, 1, 0),
    ("2 rows x 4 vectors, aligned loads + valignd", 2, 4, 1, 0),
    ("4 rows x 4 vectors, weights broadcast from memory", 4, 4, 0, 1),
    ("2 rows x 4 vectors, weights broadcast from memory", 2, 4, 0, 1),
]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iterations", type=int, default=200_000, help="sweeps of the 28 x 64 map per timing")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default=str(ROOT / "results" / "benchmarks" / "lab_loop_bound.csv"))
    args = p.parse_args()
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    if shutil.which("gcc") is None or " avx512f" not in flags:
        print("lab_loop_bound needs gcc and an AVX-512 CPU (the loops are AVX-512 intrinsics)", file=sys.stderr)
        return 2
    from labnas.timing import machine_facts

    facts = machine_facts(1)
    cpu = min(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "lab_loop.c"
        src.write_text(SOURCE)
        exes = {}
        for name, rows, vectors, shift, weights_in_memory in VARIANTS:
            exe = Path(tmp) / f"lab_{rows}_{vectors}_{shift}_{weights_in_memory}"
            subprocess.run(["gcc", "-O3", "-march=native", f"-DR={rows}", f"-DV={vectors}", f"-DSHIFT={shift}",
                            f"-DWMEM={weights_in_memory}", "-o", str(exe), str(src)], check=True)
            exes[name] = exe
        rates: dict[str, list[float]] = {name: [] for name in exes}
        ceilings = []
        for _ in range(args.repeats):  # interleaved, so a drift of the host's speed hits every variant alike
            ceilings.append(measure_ceiling(100_000_000)["one"])
            for name, exe in exes.items():
                out = subprocess.run([str(exe), str(args.iterations)], capture_output=True, text=True, check=True,
                                     preexec_fn=lambda: os.sched_setaffinity(0, {cpu})).stdout
                rates[name].append(float(out.split()[0]))
    ceiling = float(np.median(ceilings))
    rows = [{**facts, "variant": "FMA ceiling (12 chains, registers only)", "gmac_per_s": round(ceiling / 1e9, 1),
             "of_ceiling": 1.0, "repeats": args.repeats, "date": date.today().isoformat()}]
    for name, values in rates.items():
        rate = float(np.median(values))
        rows.append({**facts, "variant": name, "gmac_per_s": round(rate / 1e9, 1), "of_ceiling": round(rate / ceiling, 3),
                     "repeats": args.repeats, "date": date.today().isoformat()})
    for row in rows:
        print(f"{row['variant']:45s} {row['gmac_per_s']:6.1f} GMAC/s  {row['of_ceiling']:.2f} of the ceiling")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(args.out, index=False)
    print(f"rows: {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
