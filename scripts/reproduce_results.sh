#!/usr/bin/env bash
# Re-create every committed file under results/ (sweeps, figures, tables). Each sweep resumes if interrupted.
# Wall times of the committed run are in results/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
run() { local name=$1; shift; local t0=$SECONDS; echo "== $name: nth sweep $*"; nth sweep "$@" --out "results/sweep_$name.h5" --quiet
        echo "$name $((SECONDS - t0)) s" >> results/walltimes.txt
        for kind in error-vs-width trajectories kernel-sizes; do nth plot "$kind" "results/sweep_$name.h5"; done; }
: > results/walltimes.txt
run tanh_d1      --widths 256,512,1024,2048,4096 --seeds 10 --p 5 --depth 1 --n 8 --d 4 --activation tanh
run gelu_d1      --widths 256,512,1024,2048,4096 --seeds 5 --p 5 --depth 1 --n 8 --d 4 --activation gelu
run digits_tanh_d1 --widths 256,512,1024,2048,4096 --seeds 5 --p 4 --depth 1 --data digits --activation tanh
run tanh_d2      --widths 256,512,1024,2048 --seeds 5 --p 4 --depth 2 --n 8 --d 4 --activation tanh
nth plot error-vs-width results/sweep_tanh_d1.h5 --quantity max_test_error
python scripts/lr_sweep.py --fractions 0.0005,0.005,0.05,0.5 > results/lr_sweep.txt
python scripts/results_table.py results/sweep_{tanh_d1,gelu_d1,digits_tanh_d1,tanh_d2}.h5 > results/exponents.md
scripts/inf_vs_p2.sh
scripts/dichotomy.sh
scripts/architectures.sh
scripts/gd_sweeps.sh
python scripts/gd_lr_study.py --width 1024 --seeds 5 --out results/gd_lr_study
python scripts/classifier_table.py results/sweep_sgd_mse.h5 results/sweep_sgd_ce3_digits.h5 > /dev/null  # the tables of results/sgd.md
python scripts/sgd_ntk_drift.py --seeds 400 --steps 30 --out results/sgd_ntk_drift
scripts/dg_tables.sh
scripts/classifier_sweeps.sh
python scripts/classifier_table.py results/sweep_ce3_digits.h5 results/sweep_logistic_digits.h5 > /dev/null  # the tables of results/classifiers.md
