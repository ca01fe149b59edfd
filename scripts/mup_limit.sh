#!/usr/bin/env bash
# The feature-learning limit (docs/math.md section 12; TP4 Sec. 6.1): width sweeps of one-hidden-layer tanh nets
# under muP, each run predicting the muP limit (row mup-inf, solved once per sweep: it depends on no seed and no
# width) beside the kernel-regime rows (p = 2..4, DG), then the error-vs-width figures and the table of fitted
# exponents (results/mup_limit.md). The limit's expectation: scrambled Sobol points (dimension rank(X) + k > 3),
# 2^18 per replicate, 4 replicates; its own error is recorded in every run (attribute limit_error).
#
#   mup_default   the built-in problem (n = 16, d = 8, 4 test inputs), mse, p = 4
#   mup_digits    two classes of 10 digits (n = 20, d = 64), mse on targets -1/+1, p = 2
#   mup_ce3       three classes of 10 digits (n = 30, k = 3 outputs), cross-entropy, p = 2
#   ntk_default   the built-in problem under NTK parametrization (the kernel regime), for the depth-1 dichotomy
#                 figure results/dichotomy_d1.png: kernel movement and errors of both, with mup's distance to its
#                 limit
#
# Each sweep is resumable: run the script again to continue where it stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
common=(--param mup --depth 1 --activation tanh --widths 256,512,1024,2048,4096,8192 --seeds 10 --t-max 10
        --num-times 21 --limit-points 262144 --no-save-k2)
study() { local name=$1; shift; local t0=$SECONDS; echo "== $name: nth sweep $*"
          nth sweep "${common[@]}" "$@" --out "results/$name.h5" --quiet
          echo "$name $((SECONDS - t0)) s" >> results/walltimes.txt
          nth plot error-vs-width "results/$name.h5" --out "results/${name}_f_error_vs_width.png"; }
study mup_default --p 4
study mup_digits --p 2 --data digits
study mup_ce3 --p 2 --data digits --classes 3 --loss cross-entropy
nth sweep --param ntk --depth 1 --activation tanh --widths 256,512,1024,2048,4096,8192 --seeds 10 --t-max 10 \
    --num-times 21 --no-save-k2 --p 4 --out results/ntk_default.h5 --quiet
nth plot dichotomy ntk=results/ntk_default.h5 mup=results/mup_default.h5 --out results/dichotomy_d1.png
python scripts/results_table.py results/mup_default.h5 results/mup_digits.h5 results/mup_ce3.h5 \
    results/ntk_default.h5 > results/mup_limit.md
