#!/usr/bin/env bash
# The loss Hessian against the NTK across widths (docs/math.md section 11; DG App. E.3, Figures 9-10) on the
# bundled digits in place of MNIST: width sweeps with --spectra (the spectrum at initialization and after
# training), their figures (nth plot spectrum) and fitted exponents (results/spectrum.md).
#
#   relu_d2   DG Fig. 9a and 10a: depth 2, two classes of 10 images (n = 20, one output, targets -1/+1), the top
#             20 eigenvalues, trained to t = 100.
#   relu_d1   DG Fig. 10b: depth 1, two classes of 100 images (n = 200), the RMS eigenvalue of B; trained to t = 20.
#   tanh_*    the same with tanh (trained by the true gradient flow; the loss falls about 100-fold by t = 100 at
#             depth 2).
#   relu_c3   DG Fig. 9b: depth 2, three classes of 10 images with three outputs (mse on one-hot targets), the
#             top 30 eigenvalues: three near-equal copies of the top spectrum at large width.
#
# The ReLU nets are trained by gradient descent at lr 1 without the true flow (--no-flow), as DG trained theirs
# by (stochastic) gradient descent: ReLU's gradient flow jumps where a pre-activation crosses 0, so an adaptive
# solver takes tiny steps (at width 1024, depth 2, n = 20, dopri5 at rtol 1e-6 was 6% of the way to t = 100
# after 12 minutes on a contended 2-core CPU). lr 1 is a quarter of the stable step 2n / lambda_max(K^(2)(0))
# at depth 2 (4.0-4.3 at widths 256-2048, seed 0; 4.0-4.1 with three classes) and 0.38 of it at depth 1
# (2.6-2.7); the horizon lr * steps is the tanh runs'.
#
# The studies at n = 200 leave the trajectories K^(2)(t) out of their files (--no-save-k2: 2.2 MB per run
# otherwise); their K2 errors are kept.
#
# Each sweep is resumable: run the script again to continue where it stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
study() { local name=$1; shift; local t0=$SECONDS; echo "== $name: nth sweep $*"
          nth sweep "$@" --p 2 --data digits --n-test 0 --num-times 2 --spectra --out "results/spectrum_$name.h5" --quiet
          echo "spectrum_$name $((SECONDS - t0)) s" >> results/walltimes.txt
          nth plot spectrum "results/spectrum_$name.h5" --out "results/spectrum_$name.png" | tee "results/spectrum_$name.txt"; }
WIDTHS=64,128,256,512,1024,2048
study tanh_d2 --activation tanh --depth 2 --widths $WIDTHS --seeds 10 --t-max 100 --top 20
study tanh_d1 --activation tanh --depth 1 --digits-per-class 100 --widths $WIDTHS --seeds 10 --t-max 20 --top 4 \
      --no-save-k2
study relu_d2 --activation relu --depth 2 --widths $WIDTHS --seeds 10 --lr 1 --steps 100 --no-flow --top 20
study relu_d1 --activation relu --depth 1 --digits-per-class 100 --widths $WIDTHS --seeds 10 --lr 1 --steps 20 \
      --no-flow --top 4 --no-save-k2
study relu_c3 --activation relu --depth 2 --classes 3 --widths 256,512,1024,2048 --seeds 3 --lr 1 --steps 100 \
      --no-flow --top 30
