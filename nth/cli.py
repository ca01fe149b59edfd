"""Command line: ``nth solve`` (a thin layer over :func:`nth.pipeline.run_solve`)."""

from __future__ import annotations

import argparse
import re
import sys

from . import __version__
from .errors import ConfigError, NTHError
from .model import ACTIVATIONS
from .odeint import SOLVERS
from .pipeline import DTYPES, SolveConfig, default_out_path, format_table, run_solve, stderr_log

_UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9, "t": 1e12, "tb": 1e12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_bytes(text: str) -> int:
    """'4GiB', '512MB', '1e9' -> bytes."""
    m = re.fullmatch(r"\s*([0-9.eE+-]+)\s*([A-Za-z]*)\s*", text)
    if not m or m.group(2).lower() not in _UNITS:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size; use e.g. 4GiB, 512MB or 1000000000")
    try:
        value = float(m.group(1)) * _UNITS[m.group(2).lower()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size; use e.g. 4GiB, 512MB") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: the memory budget must be positive")
    return int(value)


def _add_solve(sub) -> None:
    s = sub.add_parser("solve", help="kernels, truncated NTH at every level q = 2..p, true gradient flow, HDF5",
                       description="Predict a finite network's training by the truncated neural tangent "
                       "hierarchy (HY Eq. 15) at every level q = 2..p and compare with true gradient flow "
                       "of the same network from the same weights.")
    s.add_argument("--p", type=int, default=4, help="truncation level p >= 2 (default 4)")
    g = s.add_argument_group("network")
    g.add_argument("--width", type=int, help="hidden width m (default 1024)")
    g.add_argument("--depth", type=int, help="number of hidden layers H (default 2)")
    g.add_argument("--activation", default="tanh", choices=ACTIVATIONS,
                   help="activation (default tanh; relu only with --p 2)")
    g.add_argument("--beta", type=float, default=1.0, help="softplus sharpness (default 1)")
    g.add_argument("--sigma-w", type=float, default=1.0, help="weight init std (default 1)")
    g.add_argument("--sigma-a", type=float, default=1.0, help="output-layer init std (default 1)")
    g.add_argument("--seed", type=int, default=0, help="seed of the initial weights (default 0)")
    g.add_argument("--weights", help=".npz with W1 (m x d), W2..WH (m x m), a (m,): width/depth from the file")
    g = s.add_argument_group("data")
    g.add_argument("--n", type=int, help="training points of the built-in problem (default 16)")
    g.add_argument("--d", type=int, help="input dimension of the built-in problem (default 8)")
    g.add_argument("--data-seed", type=int, default=0, help="seed of the built-in problem (default 0)")
    g.add_argument("--data", help=".npz with X (n x d), y (n,), optional X_test (k x d)")
    g.add_argument("--n-test", type=int, help="test inputs of the built-in problem (default 4)")
    g.add_argument("--normalization", default="sphere", choices=("sphere", "none"),
                   help="input normalization (default: project onto the unit sphere)")
    g = s.add_argument_group("corrections and finite learning rate")
    g.add_argument("--dg", action=argparse.BooleanOptionalAction, default=None,
                   help="Dyer & Gur-Ari O(1/m) correction (default: on when p >= 4)")
    g.add_argument("--dg-method", default="closed", choices=("closed", "ode"),
                   help="DG by closed form (eigendecomposition, default) or by its ODE")
    g.add_argument("--lr", type=float, help="also train by gradient descent with this learning rate ...")
    g.add_argument("--steps", type=int, help="... for this many steps; predictions are compared at t = lr * step")
    g = s.add_argument_group("solver")
    g.add_argument("--t-max", type=float, help="time horizon (default: where the frozen-NTK loss has fallen "
                   "1000-fold)")
    g.add_argument("--num-times", type=int, default=41, help="number of saved times in [0, t_max] (default 41)")
    g.add_argument("--rtol", type=float, default=1e-10, help="relative tolerance (default 1e-10)")
    g.add_argument("--atol", type=float, default=1e-12, help="absolute tolerance (default 1e-12)")
    g.add_argument("--max-steps", type=int, default=100_000, help="Diffrax max_steps (default 100000)")
    g.add_argument("--nth-solver", default="tsit5", choices=tuple(SOLVERS), help="NTH solver (default tsit5)")
    g.add_argument("--flow-solver", default="dopri8", choices=tuple(SOLVERS),
                   help="gradient-flow solver (default dopri8)")
    g.add_argument("--dtype", default="float64", choices=tuple(DTYPES), help="floating point type (default float64)")
    g.add_argument("--memory-budget", type=parse_bytes,
                   help="refuse kernels predicted to need more (e.g. 8GiB; default: half the RAM, or 75%% of the "
                   "GPU's memory)")
    g = s.add_argument_group("output")
    g.add_argument("--out", help="HDF5 file to write (default results/solve_..._<time>.h5)")
    g.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    g.add_argument("--save-kernels", action="store_true", help="store K^(2)..K^(p) at t = 0 under /kernels")
    g.add_argument("--quiet", action="store_true", help="no progress output on stderr")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nth", description="Neural tangent hierarchy for finite-width networks.")
    parser.add_argument("--version", action="version", version=f"nth {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_solve(sub)
    return parser


def config_from_args(args: argparse.Namespace) -> SolveConfig:
    return SolveConfig(p=args.p, width=args.width, depth=args.depth, activation=args.activation, beta=args.beta,
                       sigma_w=args.sigma_w, sigma_a=args.sigma_a, n=args.n, d=args.d, seed=args.seed,
                       data_seed=args.data_seed, data=args.data, weights=args.weights,
                       normalization=args.normalization, t_max=args.t_max, num_times=args.num_times,
                       rtol=args.rtol, atol=args.atol, max_steps=args.max_steps, nth_solver=args.nth_solver,
                       flow_solver=args.flow_solver, dtype=args.dtype, memory_budget=args.memory_budget,
                       save_kernels=args.save_kernels, n_test=args.n_test, dg=args.dg, dg_method=args.dg_method,
                       lr=args.lr, steps=args.steps)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "solve":
            cfg = config_from_args(args)
            out = args.out or default_out_path(cfg)
            result = run_solve(cfg, out, force=args.force, progress=not args.quiet,
                               log=None if args.quiet else stderr_log)
            print(format_table(result))
            return 0
        raise ConfigError(f"unknown command {args.command!r}")
    except NTHError as e:
        print(f"nth: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nth: interrupted; no output file was written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
