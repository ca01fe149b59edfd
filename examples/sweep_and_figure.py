"""How fast does each level of the neural tangent hierarchy approach true training as the network widens?

    python examples/sweep_and_figure.py                          # widths 128..2048, 6 seeds: about 40 s on a 2-core CPU
    python examples/sweep_and_figure.py --widths 64,128 --seeds 2 --p 3 --out /tmp/sweep.h5

The script runs a width sweep of nth's built-in MLP problem into one HDF5 file (by default a depth-1 tanh
network on n = 8 points in d = 4, the network and data of results/sweep_tanh_d1.h5), reads it back, fits the
log-log slope of the error against width for every prediction (with 95% bootstrap intervals over seeds),
prints each slope next to the exponent the theory predicts, draws the figure that `nth plot error-vs-width`
draws, and finally asks how wide the network must be for a target error.

The predicted exponents (docs/math.md section 3): truncating the hierarchy at level p freezes K^(p), whose
drift is driven by K^(p+1) ~ m^-floor(p/2), so the error against true gradient flow at a fixed horizon is
O(1/m) for p = 2 and 3 and O(1/m^2) for p = 4 and 5; Dyer & Gur-Ari's correction (dg) is O(1/m^2) like
p = 4; kernel gradient descent with the infinite-width NTK (inf) is O(1/sqrt(m)).

The sweep file is resumable: running the script again with the same arguments computes only the runs the
file does not hold yet (none, if it finished), and the library refuses a file made with other arguments.
--force deletes an existing --out first and computes every run again. The figure is drawn again every time
(nth.plot replaces an existing PNG at that path and refuses any other file).
"""

import argparse
import os
import sys


import nth
import nth.compare
import nth.plot


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--widths", default="128,256,512,1024,2048",
                    help="comma-separated widths (default 128,256,512,1024,2048)")
    ap.add_argument("--seeds", type=int, default=6, help="initializations per width (default 6)")
    ap.add_argument("--p", type=int, default=4, help="highest truncation level (default 4; DG needs p >= 4)")
    ap.add_argument("--depth", type=int, default=1, help="hidden layers (default 1)")
    ap.add_argument("--n", type=int, default=8, help="training points of the built-in problem (default 8)")
    ap.add_argument("--d", type=int, default=4, help="input dimension (default 4)")
    ap.add_argument("--n-test", type=int, default=4, help="test inputs (default 4)")
    ap.add_argument("--t-max", type=float, default=20.0, help="horizon shared by every width (default 20)")
    ap.add_argument("--num-times", type=int, default=11, help="saved times in [0, t-max] (default 11)")
    ap.add_argument("--eps", type=float, default=1e-4, help="target error for the width-for question (default 1e-4)")
    ap.add_argument("--out", default="results/example_sweep.h5", help="sweep file (default results/example_sweep.h5)")
    ap.add_argument("--figure", help="PNG to write (default: next to --out, as nth plot names it)")
    ap.add_argument("--force", action="store_true", help="delete an existing --out and compute every run again")
    args = ap.parse_args(argv)
    widths = tuple(int(w) for w in args.widths.split(","))
    figure = args.figure or os.path.splitext(args.out)[0] + "_f_error_vs_width.png"

    # 1. Describe the sweep. A SolveConfig holds everything that defines one run (network, data, horizon,
    #    solvers); the SweepConfig repeats it for every width and for seeds 0..S-1. Every width is compared on
    #    the same horizon t_max, because the errors grow with time.
    base = nth.SolveConfig(p=args.p, depth=args.depth, activation="tanh", n=args.n, d=args.d, n_test=args.n_test,
                           t_max=args.t_max, num_times=args.num_times)
    sweep = nth.SweepConfig(widths=widths, num_seeds=args.seeds, base=base)

    # 2. Run it. Each finished (width, seed) run is committed to the file at once, so an interrupted sweep
    #    keeps its runs and the same call resumes it. Per run: the kernels K^(2)..K^(p) at initialization, the
    #    truncated hierarchy at every level q = 2..p, DG, kernel gradient descent with the limiting NTK, and
    #    the true gradient flow of the same network from the same weights.
    if args.force and os.path.exists(args.out):
        os.remove(args.out)
    if os.path.dirname(args.out):
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
    existed = os.path.exists(args.out)
    try:
        counts = nth.run_sweep(sweep, args.out, progress=True)
    except nth.NTHError as e:
        sys.exit(f"error: {e}" + (f" (or pass --force to start {args.out} afresh)" if existed else ""))
    print(f"{args.out}: {counts['ran']} runs computed now, {counts['done']} were already there")

    # 3. Load it. Every per-run scalar comes back as a (widths, seeds) array; the largest output error over
    #    the saved times, max_t |f_pred(t) - f_true(t)| / sqrt(n), of prediction LABEL is "max_f_error_LABEL".
    sw = nth.load_sweep(args.out)
    labels = nth.io.prediction_labels(sw["scalars"], "max_f_error_")  # p2, ..., dg, inf: the sweep's rows

    # 4. Fit the error law c * m^s and compare s with the prediction. Errors differ by decades between
    #    initializations, so the slope is fitted to the geometric mean over seeds, and the 95% interval comes
    #    from resampling seeds at every width. With one seed the interval is a single point.
    print(f"\nerror against true gradient flow, geometric mean over {len(sw['seeds'])} seed(s), "
          f"t in [0, {args.t_max:g}]")
    print(f"{'level':>6} " + " ".join(f"{'m=' + str(w):>10}" for w in sw["widths"])
          + f" {'fitted slope [95% CI]':>24} {'predicted':>9}")
    for lab in labels:
        E = sw["scalars"][f"max_f_error_{lab}"]
        slope, lo, hi = nth.slope_with_ci(sw["widths"], E)
        row = " ".join(f"{g:>10.3e}" for g in nth.geometric_mean(E, axis=1))
        print(f"{lab:>6} {row} {f'{slope:.2f} [{lo:.2f}, {hi:.2f}]':>24} {nth.row(lab).exponent('flow'):>9g}")

    # 5. The figure of `nth plot error-vs-width`: every level against width on log-log axes, the seeds as dots,
    #    the fitted slopes in the legend, and dashed reference slopes.
    nth.plot.error_vs_width(args.out, figure)
    print(f"wrote {figure}")

    # 6. How wide must the network be? Solve the fitted law c * m^s = eps for m, with a bootstrap interval
    #    (seeds resampled at every width). This extrapolates: it is worth something only within a few doublings
    #    of the widest width that was run, so farther answers are not printed.
    print(f"\nwidth at which the error falls below {args.eps:g} (fitted law, 95% interval):")
    far = 16 * max(widths)
    for lab in labels:
        fit = nth.compare.width_for(sw["widths"], sw["scalars"][f"max_f_error_{lab}"], args.eps)
        if fit["never"]:
            print(f"{lab:>6}: the fitted error does not fall with width (slope {fit['slope']:.2f})")
        elif fit["width"] is None or fit["width"] > far:
            print(f"{lab:>6}: beyond m = {far} (16x the widest width run), too far to extrapolate")
        else:
            lo, hi = (f"{v:.0f}" if v is not None and v <= far else f"> {far}" for v in fit["width_ci"])
            print(f"{lab:>6}: m = {fit['width']:.0f}  [{lo}, {hi}]")


if __name__ == "__main__":
    main()
