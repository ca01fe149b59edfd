#!/usr/bin/env bash
# The loss Hessian against the NTK across widths (docs/math.md section 11; DG App. E.3, Figures 9-10) on the
# bundled digits in place of MNIST: width sweeps with --spectra (the spectrum at initialization and after
# training), their figures (nth plot spectrum) and fitted exponents (results/spectrum.md).
#
#   relu_d2   DG Fig. 9a and 10a: depth 2, two classes of 10 images (n = 20, one output, targets -1/+1), the top
#             20 eigenvalues, trained to t = 100 (the frozen-kernel loss falls about 100-fold).
#   relu_d1   DG Fig. 10b: depth 1, two classes of 100 images (n = 200), the RMS eigenvalue of B; trained to t = 20.
#   tanh_*    the same with tanh.
#   relu_c3   DG Fig. 9b: depth 2, three classes of 10 images with three outputs (mse on one-hot targets), the
#             top 30 eigenvalues: three near-equal copies of the top spectrum at large width.
#
# Each sweep is resumable: run the script again to continue where it stopped. Cost: ReLU's true gradient flow is
# the bottleneck (its right-hand side jumps where a pre-activation crosses 0, so dopri5 at rtol 1e-6 takes tiny
# steps: at width 1024, depth 2, n = 20 it was 6% of the way to t = 100 after 12 minutes on a contended 2-core
# CPU); the tanh sweeps come first.
set -euo pipefail
cd "$(dirname "$0")/.."
study() { local name=$1; shift; local t0=$SECONDS; echo "== $name: nth sweep $*"
          nth sweep "$@" --p 2 --data digits --n-test 0 --num-times 2 --spectra --out "results/spectrum_$name.h5" --quiet
          echo "spectrum_$name $((SECONDS - t0)) s" >> results/walltimes.txt
          nth plot spectrum "results/spectrum_$name.h5" | tee "results/spectrum_$name.txt"; }
for act in tanh relu; do
  study "${act}_d2" --activation "$act" --depth 2 --widths 64,128,256,512,1024,2048 --seeds 10 --t-max 100 --top 20
  study "${act}_d1" --activation "$act" --depth 1 --digits-per-class 100 --widths 64,128,256,512,1024,2048 --seeds 10 \
        --t-max 20 --top 4
done
study relu_c3 --activation relu --depth 2 --classes 3 --widths 256,512,1024,2048 --seeds 3 --t-max 100 --top 30
