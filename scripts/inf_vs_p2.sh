#!/usr/bin/env bash
# Kernel gradient descent with the limiting NTK (row inf, TP2b) against the frozen finite-width NTK (p = 2):
# both against true gradient flow, versus width. inf falls like m^(-1/2) (K^(2)(0) - Kbar^(2) = O(m^(-1/2))),
# p = 2 like 1/m. 16 seeds per width (the inf error varies 5x between seeds). About 3 minutes on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
nth sweep --p 2 --widths 64,128,256,512,1024,2048,4096,8192,16384 --seeds 16 --depth 1 --n 8 --d 4 --t-max 10 \
  --activation tanh --out results/inf_vs_p2.h5 --quiet
nth plot error-vs-width results/inf_vs_p2.h5 --out results/inf_vs_p2.png
python scripts/results_table.py results/inf_vs_p2.h5 > results/inf_vs_p2.md
