#!/usr/bin/env bash
# Classifiers (docs/math.md section 10): width sweeps with the cross-entropy loss on three digit classes and the
# logistic loss on two, trained by gradient descent at half the stable step for 30 steps, so that one sweep
# measures p = 2, p = 4 and DG against true gradient flow and the discrete rows d-p2, d-o1m against gradient
# descent; their figures. Cross-entropy takes one image per class (n = 3, 9 samples): the discrete-time tensors
# M and P have N^4 entries by nested JVPs, 6.6e3 here against 1.0e5 for two images per class. About 30 minutes
# on a 2-core CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
sweep() { local name=$1; shift; local t0=$SECONDS; echo "== $name: nth sweep $*"
          nth sweep "$@" --out "results/sweep_$name.h5" --quiet
          echo "$name $((SECONDS - t0)) s" >> results/walltimes.txt
          nth plot error-vs-width "results/sweep_$name.h5"
          nth plot error-vs-width "results/sweep_$name.h5" --quantity max_f_error_gd; }
common=(--depth 1 --p 4 --num-times 11 --data digits --widths 256,512,1024,2048,4096 --seeds 5 --lr-fraction 0.5 --steps 30)
sweep ce3_digits "${common[@]}" --loss cross-entropy --classes 3 --digits-per-class 1 --n-test 3
sweep logistic_digits "${common[@]}" --loss logistic --classes 2 --digits-per-class 3 --n-test 2
