#!/usr/bin/env bash
# Gradient descent at a finite learning rate (docs/math.md section 7): width sweeps at half and a tenth of the
# stable step, for the mlp and the resnet, compared with real gradient descent; their figures (errors against
# gradient descent, --quantity max_f_error_gd). Then minibatch SGD (docs/math.md section 10) on batches of n/4 at
# half the stable step 2B / lambda_max for 30 steps, the discrete rows d-p2 and d-o1m against real SGD on the same
# batches (seed 0): mse on the built-in problem (n = 16, d = 8) and cross-entropy on three digit classes (four
# images each, n = 12, 36 samples; the discrete-time tensors over 36 samples by nested JVPs cost about 2 minutes a
# run at width 128 and grow with the width). About 30 minutes on a 2-core CPU for the first part, hours for SGD.
set -euo pipefail
cd "$(dirname "$0")/.."
sweep() { local name=$1; shift; local t0=$SECONDS; echo "== $name: nth sweep $*"
          nth sweep "$@" --out "results/sweep_$name.h5" --quiet
          echo "$name $((SECONDS - t0)) s" >> results/walltimes.txt
          nth plot error-vs-width "results/sweep_$name.h5" --quantity max_f_error_gd; }
common=(--depth 1 --n 4 --d 3 --n-test 2 --p 4 --num-times 11 --no-inf)
mlp=(--widths 256,512,1024,2048,4096 --seeds 10)
sweep gd_half_mlp "${common[@]}" "${mlp[@]}" --lr-fraction 0.5 --steps 30
sweep gd_tenth_mlp "${common[@]}" "${mlp[@]}" --lr-fraction 0.1 --steps 150
sweep gd_half_resnet "${common[@]}" --arch resnet --widths 256,512,1024,2048 --seeds 5 --lr-fraction 0.5 --steps 30
sgd=(--depth 1 --p 4 --num-times 11 --seeds 5 --lr-fraction 0.5 --steps 30 --no-dg --no-inf)
sweep sgd_mse "${sgd[@]}" --widths 256,512,1024,2048 --batch-size 4
sweep sgd_ce3_digits "${sgd[@]}" --widths 128,256,512,1024 --data digits --loss cross-entropy --classes 3 \
      --digits-per-class 4 --n-test 3 --batch-size 3
