"""Gradient descent at a finite learning rate: the discrete-time hierarchy against real gradient descent.

    python examples/gradient_descent.py                          # widths 256..2048, 4 seeds: under a minute on a CPU
    python examples/gradient_descent.py --widths 64,128 --seeds 1 --steps 10 --out /tmp/gd.h5

Gradient descent theta <- theta - lr * grad L is Euler's method for the gradient flow, so every
continuous-time prediction (the truncated hierarchy at p = 2, 4, Dyer & Gur-Ari's correction) is off by
O(lr) at every width. The discrete-time hierarchy predicts the steps themselves (docs/math.md section 7;
DG Appendix E.4.2): d-p2 iterates the frozen kernel, Delta_(t+1) = (I - (lr/n) K) Delta_t, exact at infinite
width and off by O(1/m); d-o1m also steps K^(2), K^(3) and the tensors O11, O111, M, P, and is off by
O(1/m^2). The script trains an MLP by full-batch gradient descent at a fraction of its largest stable step
2n / lambda_max(K^(2)(0)), computes every prediction from the same initial weights, and prints each one's
error against gradient descent (geometric mean over seeds) at every width, with the fitted slope against
width when there are two widths or more. The runs go into one resumable sweep file (``--out``), as with
``nth sweep --lr-fraction 0.5 --steps 40``. The continuous-time rows do not fall with width (predicted slope
0): they stay at the O(lr) distance between gradient descent and gradient flow, printed as the last row.
"""

import argparse
import os
import sys

import numpy as np

import nth
import nth.compare

#: The predictions compared with gradient descent (the width exponent of each one's error against it is
#: nth.row(label).exponent("gd")).
ROWS = {label: (nth.row(label).name, ("continuous " if nth.row(label).reference == "flow" else "")
                + nth.row(label).title) for label in ("discrete_p2", "discrete_o1m", "p2", "p4", "dg")}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--widths", default="256,512,1024,2048",
                    help="comma-separated widths (default 256,512,1024,2048)")
    ap.add_argument("--seeds", type=int, default=4, help="initializations per width (default 4)")
    ap.add_argument("--depth", type=int, default=1, help="hidden layers (default 1)")
    ap.add_argument("--n", type=int, default=6, help="training points of the built-in problem (default 6)")
    ap.add_argument("--d", type=int, default=8, help="input dimension (default 8)")
    ap.add_argument("--lr-fraction", type=float, default=0.5,
                    help="learning rate as a fraction of the stable step 2n / lambda_max(K^(2)(0)) (default 0.5)")
    ap.add_argument("--steps", type=int, default=40, help="gradient-descent steps (default 40)")
    ap.add_argument("--num-times", type=int, default=11, help="steps compared, evenly spaced (default 11)")
    ap.add_argument("--out", default="results/example_gd.h5", help="sweep file (default results/example_gd.h5)")
    ap.add_argument("--force", action="store_true", help="delete an existing --out and compute every run again")
    args = ap.parse_args(argv)
    widths = tuple(int(w) for w in args.widths.split(","))

    # lr_fraction sets each network's learning rate from its own K^(2)(0); with steps it makes every run
    # gradient descent: the horizon is lr * steps, and every prediction is compared with the trained network at
    # t = lr * step. p = 4 is needed for the O(1/m) system (it uses K^(3), K^(4)). The sweep is the same
    # resumable file as `nth sweep --lr-fraction F --steps S` writes.
    base = nth.SolveConfig(p=4, depth=args.depth, n=args.n, d=args.d, n_test=0, lr_fraction=args.lr_fraction,
                           steps=args.steps, num_times=args.num_times, infinite=False)
    if args.force and os.path.exists(args.out):
        os.remove(args.out)
    if os.path.dirname(args.out):
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
    try:
        counts = nth.run_sweep(nth.SweepConfig(widths=widths, num_seeds=args.seeds, base=base), args.out,
                               progress=True)
    except nth.NTHError as e:
        sys.exit(f"error: {e}")
    print(f"{args.out}: {counts['ran']} runs computed now, {counts['done']} were already there")

    # "max_f_error_gd_LABEL": max over the compared steps of |f_pred - f_GD| / sqrt(n) for prediction LABEL;
    # "max_f_error_gd": gradient descent itself against gradient flow, the O(lr) gap; "lr_gd": each run's lr.
    sw = nth.load_sweep(args.out)
    print(f"gradient descent at {args.lr_fraction:g} of the stable step (lr {np.nanmin(sw['scalars']['lr_gd']):.3g} "
          f"to {np.nanmax(sw['scalars']['lr_gd']):.3g}), {args.steps} steps, depth {args.depth}, n = {args.n}\n"
          f"error against it, max over steps of |f - f_GD| / sqrt(n), geometric mean over {args.seeds} seed(s)")
    fit = len(widths) > 1
    print(f"{'row':>6} {'prediction':<32} " + " ".join(f"{'m=' + str(w):>10}" for w in widths)
          + (f" {'slope [95% CI]':>22} {'predicted':>9}" if fit else ""))
    for label, (row, what) in ROWS.items():
        E = sw["scalars"][f"max_f_error_gd_{label}"]
        line = f"{row:>6} {what:<32} " + " ".join(f"{g:>10.3e}" for g in nth.geometric_mean(E, axis=1))
        if fit:
            s, lo, hi = nth.slope_with_ci(widths, E)
            line += f" {f'{s:.2f} [{lo:.2f}, {hi:.2f}]':>22} {nth.row(label).exponent('gd'):>9g}"
        print(line)
    print(f"{'gd':>6} {'GD against gradient flow':<32} "
          + " ".join(f"{g:>10.3e}" for g in nth.geometric_mean(sw["scalars"]["max_f_error_gd"], axis=1)))


if __name__ == "__main__":
    main()
