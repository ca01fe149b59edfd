#!/usr/bin/env bash
# Width sweeps of the built-in convolutional and residual nets (docs/math.md section 9), their figures, and the
# exponent table results/architectures.md. About 40 minutes on a 2-core CPU (the generic kernel engine).
set -euo pipefail
cd "$(dirname "$0")/.."
sweep() { local name=$1; shift; local t0=$SECONDS; echo "== $name: nth sweep $*"
          nth sweep "$@" --out "results/sweep_$name.h5" --quiet
          echo "$name $((SECONDS - t0)) s" >> results/walltimes.txt
          for kind in error-vs-width trajectories kernel-sizes; do nth plot "$kind" "results/sweep_$name.h5"; done; }
sweep cnn_digits --arch cnn --depth 2 --data digits --digits-per-class 4 --n-test 0 --widths 32,64,128,256 \
      --seeds 5 --p 4 --t-max 100 --num-times 11
sweep resnet_d2 --arch resnet --depth 2 --n 8 --d 4 --n-test 0 --widths 128,256,512,1024 --seeds 5 --p 4 \
      --t-max 20 --num-times 11
# cross-entropy on 3 classes (3 outputs): about 10 minutes per run at width 512 on the 2-core CPU
sweep cnn_ce3_digits --arch cnn --depth 2 --data digits --classes 3 --digits-per-class 2 --loss cross-entropy \
      --outputs 3 --n-test 0 --widths 64,128,256,512 --seeds 5 --p 4 --t-max 100 --num-times 11
python scripts/results_table.py results/sweep_cnn_digits.h5 results/sweep_resnet_d2.h5 \
       results/sweep_cnn_ce3_digits.h5 > results/architectures.md
