#!/usr/bin/env bash
# TP4's dynamical dichotomy: width sweeps of the same network under NTK, standard (learning rate 1/m) and
# maximal-update (muP) parametrization, then the figure results/dichotomy.png (NTK movement and p = 4 error
# vs width). About 13 minutes on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
common=(--widths 128,256,512,1024,2048 --seeds 5 --depth 2 --n 8 --d 4 --p 4 --t-max 10 --activation tanh)
for param in ntk standard mup; do
  nth sweep --param "$param" "${common[@]}" --out "results/dichotomy_${param}.h5" --quiet
done
nth plot dichotomy ntk=results/dichotomy_ntk.h5 standard=results/dichotomy_standard.h5 \
  mup=results/dichotomy_mup.h5 --out results/dichotomy.png
python scripts/results_table.py results/dichotomy_{ntk,standard,mup}.h5 > results/dichotomy.md
