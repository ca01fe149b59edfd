#!/usr/bin/env bash
# Gradient descent at a finite learning rate (docs/math.md section 7): width sweeps at half and a tenth of the
# stable step, for the mlp and the resnet, compared with real gradient descent; their figures (errors against
# gradient descent, --quantity max_f_error_gd). About 30 minutes on a 2-core CPU.
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
