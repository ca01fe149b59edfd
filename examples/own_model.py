"""The neural tangent hierarchy for your own Equinox model, checked against the model's true gradient flow.

    python examples/own_model.py                                 # width 256, p = 4: under a minute on a CPU
    python examples/own_model.py --width 64 --p 3 --n 4 --out /tmp/own.h5
    python examples/own_model.py --model path/to/file.py:make_model

The model is examples/my_model.py: make_model(width, key) returns a two-hidden-layer softplus network with
biases, in NTK parametrization (every layer divided by the square root of its fan-in). nth loads it by name,
exactly as `nth solve --model examples/my_model.py:make_model` does, computes the kernels K^(2)..K^(p) by
nested JVPs through the model's forward pass, solves the truncated hierarchy at every level q = 2..p (and
Dyer & Gur-Ari's correction when p >= 4), integrates the true gradient flow of the same network from the same
weights, and prints how far each prediction is from it.

Expected (docs/math.md section 3): p = 2 (frozen NTK) and p = 3 are off by O(1/m), p = 4 and DG by O(1/m^2).
With the defaults (width 256, n = 8, t in [0, 100], over which the training loss falls about 9-fold) p = 4 is
about 35x closer to the trained network than p = 2. The errors grow with the horizon (HY Theorem 2.6 bounds
them by about (t / sqrt(m))^p): `--t-max 1500` (loss 250-fold down) leaves p = 4 only 7x closer. One width and
one seed show the size of the errors; how they fall with width needs several widths and seeds
(sweep_and_figure.py, or `nth sweep --model ...`).
"""

import argparse
import os
import sys

import nth

HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=os.path.join(HERE, "my_model.py") + ":make_model",
                    help="FILE.py:make_model or package.module:make_model (default: examples/my_model.py)")
    ap.add_argument("--width", type=int, default=256, help="width passed to make_model (default 256)")
    ap.add_argument("--seed", type=int, default=0, help="initial weights: make_model(width, PRNGKey(seed)) (default 0)")
    ap.add_argument("--p", type=int, default=4, help="truncation level (default 4)")
    ap.add_argument("--n", type=int, default=8, help="training points of the built-in problem, inputs in d = 8 "
                    "(default 8)")
    ap.add_argument("--n-test", type=int, default=2, help="test inputs (default 2)")
    ap.add_argument("--t-max", type=float, default=100.0,
                    help="horizon (default 100; 0: where the frozen-NTK loss has fallen 1000-fold, as nth solve)")
    ap.add_argument("--num-times", type=int, default=21, help="saved times in [0, t-max] (default 21)")
    ap.add_argument("--out", help="also write the run to this HDF5 file (the layout of nth solve)")
    ap.add_argument("--force", action="store_true", help="replace --out if it exists")
    args = ap.parse_args(argv)

    # The model enters the run configuration by name, as on the command line. Architecture options (depth,
    # activation, ...) do not apply: make_model defines the network. The data is nth's built-in problem: n
    # points on the unit sphere in d = 8 dimensions (the input size my_model.py expects) with smooth targets.
    cfg = nth.SolveConfig(model=args.model, width=args.width, seed=args.seed, p=args.p, n=args.n,
                          n_test=args.n_test, t_max=args.t_max or None, num_times=args.num_times)
    try:
        # run_solve checks the configuration and the output path before any work, runs every stage (progress on
        # stderr) and, with an output path, writes the file atomically at the end; without one it writes nothing.
        result = nth.run_solve(cfg, args.out, force=args.force,
                               log=lambda msg: print(msg, file=sys.stderr, flush=True))
    except nth.NTHError as e:
        sys.exit(f"error: {e}")

    # result.predictions maps each prediction ("p2", ..., "dg") to its trajectory and its measures: the largest
    # errors over the saved times against the true gradient flow (outputs on the training inputs, the NTK K^(2)(t),
    # and outputs at the test inputs).
    c = result.config
    print(f"{args.model}: width {c['width']}, {c['num_params']} parameters; n = {c['n']}, t in [0, {c['t_max']:.4g}], "
          f"training loss fell {result.loss_fall:.3g}-fold")
    print(f"{'level':>6} {'max_t |f-f_true|/sqrt(n)':>26} {'max_t |K2-K2_true|':>20} {'test error':>12}")
    for label, pred in result.predictions.items():
        e = pred.measures
        print(f"{label:>6} {e.max_f_error:>26.3e} {e.max_K2_error:>20.3e} "
              f"{e.max_test_error if e.max_test_error is not None else float('nan'):>12.3e}")
    if args.p >= 4:  # p = 3 is O(1/m) like p = 2; from p = 4 on the error is O(1/m^2)
        ratio = result.predictions["p2"].measures.max_f_error / result.predictions["p4"].measures.max_f_error
        print(f"p4 is {ratio:.3g}x closer to the trained network than the frozen NTK (p2)")
    if result.path:
        print(f"wrote {result.path}")


if __name__ == "__main__":
    main()
