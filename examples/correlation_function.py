"""Dyer & Gur-Ari correlation functions: predict their width exponent from the cluster graph, then measure it.

    python examples/correlation_function.py                      # 3 rows of DG Table 1, widths 64..512: under a minute
    python examples/correlation_function.py "f(x1) f(x2)" --widths 32,64 --draws 50 --out /tmp/corr.h5

A correlation function is the expectation over initializations of a product of derivative tensors of the
network output, every derivative index summed in pairs (DG Definition 1). In nth's notation the factors are
separated by spaces, f(xK) is the output at input xK and d{mu,nu}f(xK) its second derivative with respect to
the parameters theta_mu, theta_nu; an index in two factors is summed over every parameter. For example

    d{mu}f(x1) d{nu}f(x2) d{mu,nu}f(x3) f(x4)  =  E[ sum_{mu,nu} df(x1)/dtheta_mu df(x2)/dtheta_nu
                                                    d^2f(x3)/dtheta_mu dtheta_nu f(x4) ]

Its cluster graph has a vertex per factor and an edge per summed index. DG Conjecture 1: with n_e clusters of
even size, n_o of odd size and M factors, C = O(m^s_C), s_C = n_e + n_o/2 - M/2, and the variance over
initializations is O(m^(2 s_C)) (docs/math.md section 8). Here the clusters are {x1, x2, x3} and {x4}, both of
odd size, and M = 4, so s_C = 0 + 2/2 - 4/2 = -1.

The script (1) prints the prediction for each function, (2) measures the functions by Monte Carlo over
initializations of DG's network (depth 3, tanh, Gaussian weights, inputs N(0, I) in 4 dimensions) into a
resumable HDF5 file, (3) reads the draws back and fits the exponents of |mean| and of the variance against
width with bootstrap 95% intervals, and prints them next to s_C and 2 s_C. The bound need not be tight: the
variance of d{mu}f(x1) d{mu}f(x2) (the NTK) falls like 1/m, below its bound 2 s_C = 0, as DG find.

Running the script again with the same arguments resumes the file; more --draws or other --widths add draws
to it; other arguments are refused by the library (choose another --out, or --force to start afresh).
"""

import argparse
import os
import sys

import numpy as np

import nth
import nth.compare

#: Rows 1, 3 and 4 of DG Table 1 (s_C = 0, 0, -1). Row 6, "d{mu}f(x1) d{nu}f(x2) d{mu,nu}f(x3) d{rho}f(x4)
#: d{sig}f(x5) d{rho,sig}f(x6)" (s_C = -2), needs a few thousand draws per width to resolve its mean.
TABLE1_ROWS = ("f(x1) f(x2)", "d{mu}f(x1) d{mu}f(x2)", "d{mu}f(x1) d{nu}f(x2) d{mu,nu}f(x3) f(x4)")


def fmt_fit(slope, ci) -> str:
    if slope is None:
        return "-"
    lo, hi = ("?" if v is None else f"{v:.2f}" for v in ci)
    return f"{slope:.2f} [{lo}, {hi}]"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("functions", nargs="*", default=list(TABLE1_ROWS),
                    help="correlation functions, each in quotes (default: rows 1, 3, 4 of DG Table 1)")
    ap.add_argument("--widths", default="64,128,256,512", help="comma-separated widths (default 64,128,256,512)")
    ap.add_argument("--draws", type=int, default=1000, help="initializations per width (default 1000, as DG)")
    ap.add_argument("--depth", type=int, default=3, help="hidden layers (default 3, as DG)")
    ap.add_argument("--in-dim", type=int, default=4, help="input dimension (default 4, as DG)")
    ap.add_argument("--activation", default="tanh", help="tanh (default), linear, relu, erf, ...")
    ap.add_argument("--input-seed", type=int, default=4,
                    help="seed of the inputs x1, x2, ... (default 4: every Table 1 row is resolved there, "
                    "results/dg_tables.md)")
    ap.add_argument("--out", default="results/example_corr.h5", help="file of draws (default results/example_corr.h5)")
    ap.add_argument("--force", action="store_true", help="delete an existing --out first")
    args = ap.parse_args(argv)
    widths = tuple(int(w) for w in args.widths.split(","))

    # 1. The prediction, from the notation alone: the clusters of the contraction graph and s_C.
    print("prediction (DG Conjecture 1):")
    for text in args.functions:
        try:
            c = nth.parse_correlation(text)
        except nth.NTHError as e:
            sys.exit(f"error: {e}")
        s = c.summary()
        clusters = " | ".join(" ".join(cl) for cl in s["clusters"])
        print(f"  {s['function']}\n    clusters: {clusters}\n    n_e = {s['n_e']}, n_o = {s['n_o']}, M = "
              f"{s['factors']}: s_C = {s['s_C_exact']}, variance exponent 2 s_C = {s['variance_exponent']:g}")

    # 2. The measurement. Draw i at width m is the initialization with key (seed, m, i), the inputs are the same
    #    at every width, and every function is evaluated on the same draws, by nested JVPs and gradients
    #    (no derivative tensor is formed). Draws are committed to the file in blocks as they finish.
    cfg = nth.CorrConfig(functions=tuple(args.functions), widths=widths, draws=args.draws, depth=args.depth,
                         in_dim=args.in_dim, activation=args.activation, input_seed=args.input_seed)
    if args.force and os.path.exists(args.out):
        os.remove(args.out)
    if os.path.dirname(args.out):
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
    try:
        nth.run_corr(cfg, args.out, progress=True)
    except nth.NTHError as e:
        sys.exit(f"error: {e}")

    # 3. Read the draws back ({width: array (draws, functions)}) and fit. moment_fits gives the mean, variance
    #    and standard error at each width, and the log-log exponents of |mean| and of the variance with
    #    bootstrap intervals (draws resampled at every width). A mean within 3 standard errors of zero at some
    #    width may be zero: it has no logarithm, so no exponent is fitted for it.
    stored = nth.load_corr(args.out, draws=args.draws)
    print(f"\nmeasured: {args.draws} draws per width, widths {', '.join(map(str, widths))}; {args.activation}, "
          f"depth {args.depth}, inputs in {args.in_dim} dimensions ({args.out})")
    names = [str(nth.parse_correlation(text)) for text in args.functions]
    w = max(len(name) for name in names)
    print(f"  {'function':<{w}} {'s_C':>5} {'exponent of |mean| [95% CI]':>28} {'2 s_C':>6} "
          f"{'exponent of variance':>24}")
    for j, name in enumerate(names):
        V = np.stack([stored["values"][w][:, j] for w in widths])  # (widths, draws)
        fit = nth.compare.moment_fits(widths, V)
        pred = nth.parse_correlation(name).s_C
        mean = fmt_fit(fit["slope_mean"], fit["slope_mean_ci"]) if fit["resolved"] else "not resolved"
        print(f"  {name:<{w}} {float(pred):>5g} {mean:>28} {2 * float(pred):>6g} "
              f"{fmt_fit(fit['slope_variance'], fit['slope_variance_ci']):>24}")
        if not fit["resolved"] and not fit["zero"]:
            z = ", ".join(f"{v:.1f}" for v in fit["z"])
            need = "" if fit["draws_needed"] is None else \
                f"; about {fit['draws_needed']} draws per width would resolve it"
            print(f"    |mean| / standard error at each width: {z}{need}")


if __name__ == "__main__":
    main()
