#!/usr/bin/env bash
# The proxy-fidelity study in the background: one torch thread, nice, every setting with seed 0 first (a tau
# from each setting early), then the second seed. Resumable: re-running skips recorded rows.
set -u
cd "$(dirname "$0")/.."
export OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1
nice -n 10 python benchmarks/proxy_fidelity.py --study --seeds 0
nice -n 10 python benchmarks/proxy_fidelity.py --study --seeds 0 1
