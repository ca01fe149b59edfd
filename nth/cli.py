"""Command line: ``nth solve`` (a thin layer over :func:`nth.run_solve`), ``nth sweep``, ``nth plot``, ``nth width-for``,
``nth kernel``, ``nth spectrum``, ``nth params``, ``nth corr`` and ``nth launch``."""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import signal
import sys
import threading
import time

from . import __version__
from ._precision import enable_float64
from .checks import check_seed
from .data import NORMALIZATIONS
from .dynamics import DG_METHODS, LIMIT_METHODS, SOLVERS
from .engine import CORR_ACTIVATIONS, DTYPES, CorrConfig, SolveConfig, dry_run
from .engine._config import DEFAULT_D, DEFAULT_N
from .errors import ConfigError, NTHError
from .io import ERROR_QUANTITIES, abandon, default_out_path, format_table, run_solve, stderr_log
from .kernel import IMPLEMENTATIONS
from .models import ACTIVATIONS, ARCHS, DEFAULT_DEPTH, DEFAULT_ORDER, INITS, PRESETS
from .models._activations import EXPECTATION_METHODS

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
    if not value >= 1:
        raise argparse.ArgumentTypeError(f"{text!r}: the memory budget must be at least 1 byte (e.g. 4GiB)")
    if not value <= MAX_BUDGET:
        raise argparse.ArgumentTypeError(f"{text!r}: a memory budget above {MAX_BUDGET:.0e} bytes (1 EB) means no "
                                         "machine; give the memory you have, e.g. 64GiB")
    return int(value)


#: The largest memory budget accepted (1 EB).
MAX_BUDGET = 1e18


def _seed(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer seed") from None
    try:
        check_seed("seed", v)
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return v


def _add_architecture(g) -> None:
    """Architecture, activation, initial scales and parametrization: shared by solve, sweep and kernel."""
    g.add_argument("--arch", default="mlp", choices=ARCHS,
                   help="built-in architecture: mlp (default), cnn (width = channels), resnet (blocks of width m)")
    g.add_argument("--kernel-size", type=int, default=3, help="cnn filter size (default 3)")
    g.add_argument("--activation", default="tanh", choices=tuple(ACTIVATIONS),
                   help="activation (default tanh; relu only with --p 2; linear: a deep linear network)")
    g.add_argument("--beta", type=float, default=1.0, help="softplus sharpness (default 1)")
    g.add_argument("--sigma-w", type=float, default=1.0, help="weight init std (default 1)")
    g.add_argument("--sigma-a", type=float, default=1.0, help="output-layer init std (default 1)")
    g.add_argument("--param", default="ntk", choices=PRESETS,
                   help="abc-parametrization (TP4 Table 1; default ntk): per-layer learning rates and init scales, "
                   "see 'nth params'")


def _add_common(s: argparse.ArgumentParser, sweep: bool, at_init: bool = False) -> None:
    """Options shared by ``nth solve``, ``nth sweep`` (which sets width and seed per run) and ``nth spectrum``
    (``at_init``: the spectrum at the initial weights, so no --spectra)."""
    s.add_argument("--p", type=int, default=4, help="truncation level p >= 2 (default 4)")
    g = s.add_argument_group("network")
    if not sweep:
        g.add_argument("--width", type=int, help="width m: hidden units, cnn channels, resnet block width (default 1024)")
    g.add_argument("--depth", type=int, help="hidden layers / conv layers / residual blocks (default 2)")
    _add_architecture(g)
    g.add_argument("--model", help="your own model: FILE.py:make_model or package.module:make_model, where "
                   "make_model(width, key) returns an Equinox module mapping inputs (n, ...) to outputs (n,) or (n, k)")
    g.add_argument("--outputs", type=int, help="outputs per input of a built-in architecture (default 1; the number "
                   "of classes for --loss cross-entropy)")
    g.add_argument("--kernel-impl", default="auto", choices=("auto",) + tuple(IMPLEMENTATIONS),
                   help="kernel implementation: auto (structured for the mlp, factored otherwise), "
                   + ", ".join(f"{name} ({impl.summary})" for name, impl in IMPLEMENTATIONS.items()))
    if not sweep:
        g.add_argument("--seed", type=_seed, default=0, help="seed of the initial weights (default 0)")
        g.add_argument("--weights", help=".npz with W1 (m x d), W2..WH (m x m), a (m,): width/depth from the file")
    g = s.add_argument_group("data")
    g.add_argument("--n", type=int, help="training points of the built-in problem (default 16)")
    g.add_argument("--d", type=int, help="input dimension of the built-in problem (default 8)")
    g.add_argument("--n-test", type=int, help="test inputs of the built-in problems (default 4)")
    g.add_argument("--data-seed", type=_seed, default=0, help="seed of the built-in problems (default 0)")
    g.add_argument("--data", help="'digits' (classes of scikit-learn's digits; 8x8 images for --arch cnn), or "
                   "an .npz with X (n x d, or n x ... for a cnn or --model), y (n,) or (n, k) (integer labels for "
                   "cross-entropy and logistic), optional X_test, labels (n,), labels_test (k,)")
    g.add_argument("--classes", type=int, default=2, help="--data digits: the digits 0..C-1 (default 2); labels "
                   "0..C-1, mse targets -1/+1 for two classes and one-hot for more")
    g.add_argument("--digits-per-class", type=int, default=10, help="training images per class for --data digits "
                   "(default 10)")
    g.add_argument("--normalization", default="sphere", choices=NORMALIZATIONS,
                   help="input normalization (default: project onto the unit sphere)")
    g = s.add_argument_group("training")
    g.add_argument("--loss", default="mse", help="training loss: mse (default), logistic (one output, labels 0/1), "
                   "cross-entropy (k >= 2 outputs, integer labels), or your own per-input loss FILE.py:fn or "
                   "package.module:fn with fn(f_a, y_a) -> scalar")
    g = s.add_argument_group("corrections and finite learning rate")
    g.add_argument("--dg", action=argparse.BooleanOptionalAction, default=None,
                   help="Dyer & Gur-Ari O(1/m) correction (default: on when p >= 4)")
    g.add_argument("--dg-method", choices=DG_METHODS,
                   help="DG by closed form (eigendecomposition; mse only, its default) or by its ODE (any loss; "
                   "the default for other losses); auto: the loss's own")
    g.add_argument("--inf", dest="infinite", action=argparse.BooleanOptionalAction, default=None,
                   help="row 'inf': kernel gradient descent with the limiting NTK Kbar^(2) from the network's f(0) "
                   "(default: on for --param ntk and standard)")
    g.add_argument("--quadrature-order", type=int, default=DEFAULT_ORDER,
                   help=f"Gauss-Hermite nodes per dimension for Kbar^(2) (default {DEFAULT_ORDER}; erf and relu use "
                   "closed forms)")
    g.add_argument("--mup-inf", dest="mup_inf", action=argparse.BooleanOptionalAction, default=None,
                   help="row 'mup-inf': the infinite-width limit of a one-hidden-layer muP net (units pushed forward by "
                   "their own dynamics; default: on for --param mup and meanfield at --depth 1)")
    g.add_argument("--limit-method", choices=LIMIT_METHODS, default="auto",
                   help="mup-inf's expectation: tensor trapezoidal rule, scrambled Sobol points or random particles "
                   "(antithetic, 4 replicates); auto: trapezoid up to dimension rank(X) + k = 3, else sobol")
    g.add_argument("--limit-points", type=int, default=2**16, help="mup-inf: points per replicate (a power of 2; "
                   "default 65536)")
    g.add_argument("--limit-h", type=float, default=0.2, help="mup-inf: trapezoidal step in standard-normal "
                   "coordinates (default 0.2; its error is estimated against 2h)")
    g.add_argument("--lr", type=float, help="also train by gradient descent with this learning rate ...")
    g.add_argument("--lr-fraction", type=float, help="... or with this fraction of the stable step "
                   "2n / lambda_max(H^(1/2) K^(2)(0) H^(1/2)) (H the loss Hessian at f(0); mse: H = I) ...")
    g.add_argument("--steps", type=int, help="... for this many steps; predictions are compared at t = lr * step, "
                   "and the discrete-time hierarchy (rows d-p2, d-o1m) predicts the steps themselves"
                   + (" (the horizon is then lr * steps, not --t-max)" if sweep else ""))
    g.add_argument("--batch-size", type=int, help="... by stochastic gradient descent on batches of this many inputs: "
                   "epochs of a seeded permutation cut into batches (the n mod B inputs left at an epoch's end sit it "
                   "out), the same batches for the network and every prediction, recorded in the file; the stable "
                   "step takes B for n (default: full batch)")
    g.add_argument("--batch-seed", type=_seed, default=0, help="seed of the batches' permutations (default 0)")
    g.add_argument("--flow", action=argparse.BooleanOptionalAction, default=True,
                   help="integrate the true gradient flow (default); with gradient descent, --no-flow skips it and "
                   "gradient descent is the only reference (for relu, whose kinks make the flow's adaptive solver "
                   "crawl)")
    g = s.add_argument_group("solver")
    if sweep:
        g.add_argument("--t-max", type=float, default=20.0, help="time horizon shared by every run (default 20)")
        g.add_argument("--num-times", type=int, default=11, help="saved times in [0, t_max] (default 11)")
    else:
        g.add_argument("--t-max", type=float, help="time horizon (default: where the frozen-NTK loss has fallen "
                       "1000-fold)")
        g.add_argument("--num-times", type=int, default=41, help="saved times in [0, t_max] (default 41)")
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
    g.add_argument("--matrix-free", action="store_true",
                   help="never store K^(p): contract it with the residual by a JVP inside the ODE (memory grows "
                   "like n^(p-1) instead of n^p; slower per step)")
    g.add_argument("--devices", type=int, help="devices to shard the kernels (and batched seeds) over (default: "
                   "every local device)")
    g.add_argument("--chunk", type=int, help="direction tuples per compiled kernel batch (default: chosen by the "
                   "memory planner)")
    g = s.add_argument_group("spectrum (docs/math.md section 11)")
    if not at_init:
        g.add_argument("--spectra", action="store_true", help="also the loss Hessian against the NTK at every saved "
                       "time of training (the flow's times, or gradient descent's saved steps): top eigenvalues of H, "
                       "all of G's, moments, Tr(B^2); stored under spectrum/ (use a small --num-times)")
    d = SolveConfig.defaults()
    g.add_argument("--top", type=int, default=d["top"], help=f"eigenvalues of H to compute (default {d['top']})")
    g.add_argument("--probes", type=int, default=d["probes"], help=f"Hutchinson probes (default {d['probes']})")
    g.add_argument("--spectrum-tol", *(("--tol",) if at_init else ()), type=float, default=d["spectrum_tol"],
                   help=f"Lanczos relative residual (default {d['spectrum_tol']:g})")
    g = s.add_argument_group("output")
    g.add_argument("--quiet", action="store_true", help="no progress output on stderr")
    if not at_init:
        g.add_argument("--save-k2", dest="save_k2", action=argparse.BooleanOptionalAction, default=True,
                       help="store the trajectories K^(2)(t) of the flow, gradient descent and every row (default on; "
                       "--no-save-k2 keeps a large-n file small: (T, nk, nk) per group; the K2 errors are kept)")


def _add_solve(sub) -> None:
    s = sub.add_parser("solve", help="kernels, truncated NTH at every level q = 2..p, true gradient flow, HDF5",
                       description="Predict a finite network's training by the truncated neural tangent "
                       "hierarchy (HY Eq. 15) at every level q = 2..p and compare with true gradient flow "
                       "of the same network from the same weights.")
    _add_common(s, sweep=False)
    s.add_argument("--out", help="HDF5 file to write (default results/solve_..._<time>.h5)")
    s.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    s.add_argument("--save-kernels", action="store_true", help="store K^(2)..K^(p) at t = 0 under /kernels")
    s.add_argument("--dry-run", action="store_true", help="print sizes and the memory plan of every stage, then "
                   "stop (nothing is computed)")


def _add_kernel(sub) -> None:
    s = sub.add_parser("kernel", help="the NTK of a problem: finite-width K^(2)(0), and with --infinite the "
                       "limiting Kbar^(2) and NNGP kernel",
                       description="Print (and optionally write) the NTK of the built-in problem or --data: the "
                       "empirical K^(2)(0) of a seeded network, and with --infinite the limiting NTK Kbar^(2) and "
                       "NNGP kernel of the same architecture (docs/math.md section 5), with their relative gap.")
    s.add_argument("--infinite", action="store_true", help="limiting kernels (layer recursion; closed forms for "
                   "erf and relu, Gauss-Hermite quadrature otherwise)")
    s.add_argument("--width", type=int, help="also the empirical K^(2)(0) at this width (default 1024 without "
                   "--infinite)")
    s.add_argument("--p", type=int, default=2, help="the empirical K^(2)(0) .. K^(p)(0) at the width (default 2); "
                   "under nth launch their direction tuples are shared out among the processes")
    s.add_argument("--seed", type=_seed, default=0, help="seed of the initial weights (default 0)")
    s.add_argument("--depth", type=int, help="hidden layers H (default 2)")
    s.add_argument("--outputs", type=int, help="outputs per input (default 1): kernels over the n k "
                   "samples (input, output); the limiting ones times the identity on outputs")
    _add_architecture(s)
    s.add_argument("--method", default="auto", choices=EXPECTATION_METHODS,
                   help="Gaussian expectations: closed form (erf, relu), quadrature, or auto (default)")
    s.add_argument("--quadrature-order", type=int, default=DEFAULT_ORDER,
                   help=f"Gauss-Hermite nodes per dimension (default {DEFAULT_ORDER})")
    s.add_argument("--n", type=int, help="points of the built-in problem (default 16)")
    s.add_argument("--d", type=int, help="input dimension of the built-in problem (default 8)")
    s.add_argument("--data-seed", type=_seed, default=0, help="seed of the built-in problem (default 0)")
    s.add_argument("--data", help="'digits' or an .npz with X (n x d; y is not needed) (inputs normalized onto the "
                   "unit sphere)")
    s.add_argument("--out", help="HDF5 file to write the kernels to")
    s.add_argument("--force", action="store_true", help="overwrite --out if it exists")


def _add_spectrum(sub) -> None:
    s = sub.add_parser("spectrum", help="the loss Hessian and the NTK at initialization: top eigenvalues, moments, "
                       "Tr(B^2)", description="The top eigenvalues of the loss Hessian H (Lanczos on Hessian-vector "
                       "products), the eigenvalues of the Gauss-Newton kernel G = (1/n) H0^(1/2) K H0^(1/2), the "
                       "moments Tr(H^j) (Hutchinson, with standard errors) and Tr(G^j), j = 1..4, and Tr(B^2) for "
                       "B = H n - J^T H0 J, of the network, data and loss of 'nth solve' at its initial weights "
                       "(docs/math.md section 11). Along training and across widths: 'nth solve --spectra' and "
                       "'nth sweep --spectra', then 'nth plot spectrum'.")
    _add_common(s, sweep=False, at_init=True)
    s.add_argument("--json", action="store_true", help="print one JSON object (keys hessian_top, gn_eigenvalues, "
                   "moments_H, moments_G, trace_B2, trace_B2_stderr, ...)")


def _widths(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(w) for w in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of widths, e.g. 256,512,1024") from None


def _add_sweep(sub) -> None:
    s = sub.add_parser("sweep", help="width sweep into one resumable HDF5 file",
                       description="Run nth solve for every width and seed, committing each finished run to one "
                       "HDF5 file; re-running with the same arguments resumes where it stopped.")
    s.add_argument("--widths", type=_widths, default=(256, 512, 1024, 2048, 4096),
                   help="comma-separated widths (default 256,512,1024,2048,4096)")
    s.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 per width (default 5)")
    _add_common(s, sweep=True)
    s.add_argument("--out", default="results/sweep.h5", help="sweep file (default results/sweep.h5)")
    s.add_argument("--batch-seeds", action="store_true", help="run the seeds of a width as one vmapped batch; same "
                   "results. Pays on an accelerator; on a CPU avoid it for a cnn (vmapped convolutions with per-seed "
                   "weights become slow grouped convolutions)")


def _add_distributed(s: argparse.ArgumentParser) -> None:
    s.add_argument("--distributed", action="store_true", help="join the other processes of a cluster run (one per "
                   "host, started by srun, mpirun, ...; jax.distributed finds them): each computes its share, process "
                   "0 writes. Not needed under nth launch")


def _add_launch(sub) -> None:
    from ._launch import DISTRIBUTED_COMMANDS

    s = sub.add_parser("launch", allow_abbrev=False,
                       help="run an nth command as several local processes (jax.distributed, loopback)",
                       description="Start N local processes of `nth COMMAND ...` joined through a coordinator on "
                       "127.0.0.1: each computes its share, process 0 writes the file. Returns the first failing "
                       f"exit status. Commands: {', '.join(DISTRIBUTED_COMMANDS)}.")
    s.add_argument("--processes", type=int, required=True, help="processes to start")
    s.add_argument("--port", type=int, help="the coordinator's port (default: a free one)")
    s.add_argument("--heartbeat", type=int, help="seconds of silence after which a process counts as dead and the "
                   "others stop (default 100)")
    s.add_argument("cmd", nargs=argparse.REMAINDER, metavar="COMMAND ...", help="the nth command and its options")


def _add_plot(sub) -> None:
    s = sub.add_parser("plot", help="figures from sweep and correlation files")
    kinds = s.add_subparsers(dest="kind", required=True)
    dk = kinds.add_parser("dichotomy", help="NTK movement and NTH error vs width, one sweep per parametrization")
    dk.add_argument("sweeps", nargs="+", help="PARAM=FILE pairs, e.g. ntk=results/ntk.h5 mup=results/mup.h5")
    dk.add_argument("--level", default="p4", help="NTH level shown on the right (default p4)")
    dk.add_argument("--out", required=True, help="PNG to write")
    ck = kinds.add_parser("corr", help="|C| (or the variance) vs width per correlation function, one series per file "
                          "written by nth corr, the predicted slope dashed")
    ck.add_argument("files", nargs="+", help="correlation files of nth corr holding the same functions")
    ck.add_argument("--variance", action="store_true", help="plot the variance over draws (predicted 2 s_C)")
    ck.add_argument("--out", required=True, help="PNG to write")
    for kind, helptext in (("error-vs-width", "log-log error vs width per level, DG, fitted slopes"),
                           ("trajectories", "f(t) and K2(t): true vs p = 2, p = 4, DG at the narrowest and widest width"),
                           ("kernel-sizes", "mean |K^(r)| and NTK movement vs width"),
                           ("spectrum", "the loss Hessian against the NTK vs width (DG Figs. 9-10), from a sweep run "
                            "with --spectra")):
        k = kinds.add_parser(kind, help=helptext)
        k.add_argument("sweep", help="sweep file written by nth sweep")
        k.add_argument("--out", help="PNG to write (default: next to the sweep file)")
        if kind == "error-vs-width":
            k.add_argument("--quantity", default="max_f_error", choices=tuple(ERROR_QUANTITIES),
                           help="error against the flow (default), or against gradient descent (_gd) in a sweep "
                           "with --lr")
        if kind == "trajectories":
            k.add_argument("--seed", type=_seed, default=0)
            k.add_argument("--entry", type=int, default=0, help="which output f_a to show (default 0)")


CORR_HELP = """\
A correlation function is a product of derivative tensors of the network output, averaged over
initializations (Dyer & Gur-Ari, Definition 1). Write its factors separated by spaces, the whole in quotes:

  f(xK)                  the output at input xK
  d{mu,nu}f(xK)          the derivative tensor d^2 f(xK) / d theta_mu d theta_nu (any number of indices)
  d{mu}f[i](xK)          the same of output i = 1..k of a network with k outputs (--outputs K; samples are
                         (input, output) pairs, and every factor names its output)

An index that appears in exactly two places is summed over every parameter (in two factors; twice in one
factor is a trace); x1, x2, ... (up to x1000) are distinct random inputs (N(0, I) of dimension --in-dim, the
same for every width and function). For example

  nth corr "d{mu}f(x1) d{nu}f(x2) d{mu,nu}f(x3) f(x4)"

prints the cluster graph (a vertex per factor, an edge per summed index), n_e and n_o (clusters of even and
odd size), M (factors) and the predicted exponent s_C = n_e + n_o/2 - M/2 (Conjecture 1; the variance goes
like m^(2 s_C)). With --widths it also measures the function: the mean, variance and standard error over
--draws initializations at each width, and the fitted exponents of |mean| and of the variance with bootstrap
95% intervals. A mean closer to zero than 3 standard errors at some width is reported, not fitted. Draws are
written to a resumable HDF5 file (--out); running again with the same arguments resumes, and more --draws or
other --widths add draws (draw i at width m is always the same initialization). An index used once or more than twice is refused, and so is a pattern with a cycle (e.g.
"d{mu,nu}f(x1) d{mu,nu}f(x2)", a trace over all parameters) unless --probes N estimates it with N random
probe vectors per draw (unbiased, not exact).
"""


def _add_corr(sub) -> None:
    s = sub.add_parser("corr", help="correlation functions of derivative tensors: predicted and measured width "
                       "exponents (Dyer & Gur-Ari Conjecture 1)", description=CORR_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("functions", nargs="+", metavar="FUNCTION", help="correlation function(s), each in quotes; "
                   "several are measured on the same draws")
    s.add_argument("--widths", type=_widths, help="comma-separated widths to measure at, e.g. 128,256,512,1024 "
                   "(without it only the prediction is printed)")
    d = CorrConfig.defaults()
    s.add_argument("--draws", type=int, help=f"initializations per width (default {d['draws']})")
    s.add_argument("--depth", type=int, help=f"hidden layers (default {d['depth']}, as Dyer & Gur-Ari)")
    s.add_argument("--in-dim", type=int, help=f"input dimension (default {d['in_dim']})")
    s.add_argument("--activation", choices=CORR_ACTIVATIONS,
                   help=f"activation (default {d['activation']}; linear is the deep linear network of Theorem 1; relu "
                   "uses the almost-everywhere derivatives)")
    s.add_argument("--init", choices=INITS, help=f"weights N(0, sigma^2) or uniform on {{-sigma, +sigma}} "
                   f"(rademacher; default {d['init']})")
    s.add_argument("--sigma-w", type=float, help=f"weight scale of the hidden layers (default {d['sigma_w']:g})")
    s.add_argument("--sigma-a", type=float, help=f"weight scale of the output layer (default {d['sigma_a']:g})")
    s.add_argument("--seed", type=_seed, help=f"seed of the initializations (default {d['seed']})")
    s.add_argument("--input-seed", type=_seed, help=f"seed of the inputs x1, x2, ... (default {d['input_seed']})")
    s.add_argument("--probes", type=int, default=0, help="random probes per draw for patterns with cycles "
                   "(default 0: refuse them)")
    s.add_argument("--outputs", type=int, help="outputs per input of the network (default: the largest output "
                   "f[i] the functions name, 1 if none)")
    s.add_argument("--integrate-output", action="store_true", default=None,
                   help="for functions of plain outputs f(x1) f(x2) ... (Gaussian weights, at most 8 factors): "
                   "average each draw exactly over the output weights given the hidden ones (Isserlis): the same "
                   "mean with a much smaller spread; the reported variance is then that of this estimator")
    s.add_argument("--out", help="resumable HDF5 file of the draws (default results/corr_<activation>_<init>_<hash "
                   "of the arguments>.h5)")
    s.add_argument("--no-file", action="store_true", help="keep the draws in memory; write nothing")
    s.add_argument("--json", action="store_true", help="print one JSON object instead of the table (with several "
                   "functions, {\"functions\": [one object per function]})")
    s.add_argument("--batch", type=int, help="draws per compiled call (default: as many as the memory budget holds, "
                   "at most 64)")
    s.add_argument("--devices", type=int, help="shard each batch of draws over this many devices (default: all)")
    s.add_argument("--memory-budget", type=parse_bytes, help="bytes a batch may use (default: 80%% of the "
                   "device's memory)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_width_for(sub) -> None:
    s = sub.add_parser("width-for", help="how wide must the network be: the width at which a prediction's error "
                       "falls below --eps, from a sweep's fitted error law",
                       description="Fit the error law c * m^s of each prediction of a sweep file (geometric mean over "
                       "seeds of the error over the sweep's horizon, log-log least squares) and print the width at "
                       "which it falls below --eps, with a 95%% bootstrap interval (seeds resampled at each width).")
    s.add_argument("sweep", help="sweep file written by nth sweep")
    s.add_argument("--eps", type=float, required=True, help="error to reach, e.g. 1e-4")
    s.add_argument("--level", help="one prediction (p2, p3, p4, ..., discrete_p2, discrete_o1m, dg, inf); default all")
    s.add_argument("--quantity", default="max_f_error", choices=tuple(ERROR_QUANTITIES),
                   help="the error whose law is fitted (default max_f_error; _gd: against gradient descent)")
    s.add_argument("--fit-widths", type=_widths, help="fit on these widths of the sweep only (e.g. to check the law "
                   "against a width the fit does not see)")
    s.add_argument("--json", action="store_true", help="print one JSON object {level: fit}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nth", description="Neural tangent hierarchy for finite-width networks.")
    parser.add_argument("--version", action="version", version=f"nth {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_solve(sub)
    _add_sweep(sub)
    _add_plot(sub)
    _add_kernel(sub)
    _add_spectrum(sub)
    _add_corr(sub)
    _add_width_for(sub)
    _add_launch(sub)
    from ._launch import DISTRIBUTED_COMMANDS

    for name in DISTRIBUTED_COMMANDS:  # the commands that run under several processes (nth._cluster)
        _add_distributed(sub.choices[name])
    pp = sub.add_parser("params", help="TP4 Table 1: abc-parametrizations, their classification and nth's mapping")
    pp.add_argument("--depth", type=int, default=DEFAULT_DEPTH, help="hidden layers L (default 2)")
    return parser


def config_from_args(args: argparse.Namespace) -> SolveConfig:
    """The SolveConfig of ``nth solve``/``nth sweep`` arguments: every field that has an option of its name."""
    return SolveConfig(**{f.name: getattr(args, f.name) for f in SolveConfig.flat_fields() if hasattr(args, f.name)})


def _solve(args) -> int:
    cfg = config_from_args(args)
    if args.dry_run:
        print(dry_run(cfg))
        return 0
    out = default_out_path(cfg) if args.out is None else args.out
    result = run_solve(cfg, out, force=args.force, progress=not args.quiet, log=None if args.quiet else stderr_log)
    print(format_table(result))
    return 0


def _sweep(args) -> int:
    from .io import SweepConfig, run_sweep

    base = config_from_args(args)
    # resolve the defaults that the file should record explicitly
    base = dataclasses.replace(base, depth=base.depth or (DEFAULT_DEPTH if base.model is None else None),
                               n=base.n or (DEFAULT_N if base.data is None else None),
                               d=base.d or (DEFAULT_D if base.data is None else None))
    if base.gradient_descent:  # the horizon is lr * steps
        base = dataclasses.replace(base, t_max=None)
    cfg = SweepConfig(widths=args.widths, num_seeds=args.seeds, base=base)
    t = time.perf_counter()
    counts = run_sweep(cfg, args.out, progress=not args.quiet, batch_seeds=args.batch_seeds, log=stderr_log)
    print(f"{args.out}: {counts['done']} runs were already there, {counts['ran']} computed now "
          f"({time.perf_counter() - t:.1f} s); {len(cfg.widths) * cfg.num_seeds} in all")
    return 0


def _plot(args) -> int:
    from . import plot

    if args.kind == "dichotomy":
        pairs = [s.split("=", 1) for s in args.sweeps]
        if any(len(p) != 2 for p in pairs):
            raise ConfigError(f"dichotomy sweeps must be PARAM=FILE pairs; got {args.sweeps}")
        for param, fit in plot.dichotomy(dict(pairs), args.out, level=args.level).items():
            print(f"{param:>10}: " + ", ".join(f"{k} slope {s:.2f} [{lo:.2f}, {hi:.2f}]" for k, (s, lo, hi) in fit.items()))
        print(f"wrote {args.out}")
        return 0
    if args.kind == "corr":
        for summary, path in zip(plot.correlation_vs_width(args.files, args.out, variance=args.variance), args.files):
            for st in summary:
                fit = st["slope_variance" if args.variance else "slope_mean"]
                print(f"{os.path.basename(path)}: {st['function']}: "
                      + ("not resolved" if fit is None else f"slope {fit:.2f}"))
        print(f"wrote {args.out}")
        return 0
    stem = os.path.splitext(args.sweep)[0]
    if args.kind == "error-vs-width":
        out = args.out if args.out is not None else f"{stem}_{args.quantity.replace('max_', '')}_vs_width.png"
        fits = plot.error_vs_width(args.sweep, out, quantity=args.quantity)
        for label, (s, lo, hi) in fits.items():
            print(f"{label:>4}: slope {s:.2f}  95% CI [{lo:.2f}, {hi:.2f}]")
    elif args.kind == "trajectories":
        out = args.out if args.out is not None else f"{stem}_trajectories.png"
        plot.trajectories(args.sweep, out, seed=args.seed, entry=args.entry)
    elif args.kind == "spectrum":
        out = args.out if args.out is not None else f"{stem}_spectrum.png"
        for name, fit in plot.spectrum(args.sweep, out).items():
            over = f"  (widths {','.join(map(str, fit['widths']))})" if "widths" in fit else ""
            if "slope" in fit:
                print(f"{name:>22}: slope {fit['slope']:.2f}  95% CI [{fit['ci'][0]:.2f}, {fit['ci'][1]:.2f}]")
            elif fit["slope_mean"] is not None:
                lo, hi = fit["slope_mean_ci"]
                print(f"{name:>22}: slope {fit['slope_mean']:.2f}  95% CI [{lo:.2f}, {hi:.2f}]{over}")
            else:
                print(f"{name:>22}: mean not resolved from zero at every width{over}")
    else:
        out = args.out if args.out is not None else f"{stem}_kernel_sizes.png"
        for label, (s, lo, hi) in plot.kernel_sizes(args.sweep, out).items():
            print(f"{label:>12}: slope {s:.2f}  95% CI [{lo:.2f}, {hi:.2f}]")
    print(f"wrote {out}")
    return 0


def _spectrum(args) -> int:
    import json

    from .engine import spectrum_at_init

    cfg = config_from_args(args)
    s = spectrum_at_init(cfg, progress=not args.quiet)
    d = s.as_dict()
    if args.json:
        print(json.dumps(d))
        return 0
    fmt = lambda xs: ", ".join(f"{x:.6g}" for x in xs)  # noqa: E731
    print(f"{d['num_params']} parameters; Lanczos {d['lanczos_steps']} steps, {d['probes']} Hutchinson probes")
    print(f"top eigenvalues of H: {fmt(d['hessian_top'])}")
    print(f"top eigenvalues of G: {fmt(d['gn_eigenvalues'][: len(d['hessian_top'])])}")
    for j in range(len(d["moments_G"])):
        print(f"Tr(H^{j + 1}) = {d['moments_H'][j]:.6g} +- {d['moments_H_stderr'][j]:.2g}   "
              f"Tr(G^{j + 1}) = {d['moments_G'][j]:.6g}")
    print(f"Tr(B^2) = {d['trace_B2']:.6g} +- {d['trace_B2_stderr']:.2g}; RMS eigenvalue of B "
          f"{d['rms_B']:.3g} = sqrt(Tr(B^2) / {d['num_params']})")
    return 0


def _kernel(args) -> int:
    from .io._kernel_report import KernelRequest, kernel_report

    req = KernelRequest(**{f.name: getattr(args, f.name) for f in KernelRequest.flat_fields() if hasattr(args, f.name)})
    print(kernel_report(req, out=args.out, force=args.force))
    return 0


#: nth corr's options that only a measurement uses (refused without --widths: nothing is measured): the fields of
#: CorrConfig but the functions, widths and probes, and the output file.
_CORR_MEASURE = tuple(f.name for f in CorrConfig.flat_fields()
                      if f.name not in ("functions", "widths", "probes", "outputs")) + ("out",)


def _corr_outputs(args) -> int:
    """--outputs, or the largest output the functions name (1 if none)."""
    if args.outputs is not None:
        return args.outputs
    from .kernel import parse_correlation

    named = [parse_correlation(f, allow_cycles=True).num_outputs for f in args.functions]
    return max([k for k in named if k is not None], default=1)


def _corr(args) -> int:
    import json

    from .io import default_corr_path, format_corr, run_corr

    measure = [k for k in _CORR_MEASURE if hasattr(args, k)]  # the options nth corr has
    given = [k for k in measure if getattr(args, k) is not None] + (["no_file"] if args.no_file else [])
    if args.widths is None:
        if given:
            raise ConfigError(f"--{given[0].replace('_', '-')} is a measurement option: add --widths (e.g. "
                              "--widths 128,256,512) to measure, or leave it out for the prediction alone")
        corrs = CorrConfig(functions=tuple(args.functions), probes=args.probes,
                           outputs=_corr_outputs(args)).validate()
        summary = [c.summary() for c in corrs]
    else:
        if args.no_file and args.out is not None:
            raise ConfigError("--no-file and --out contradict each other; give one of them")
        cfg = CorrConfig(functions=tuple(args.functions), widths=args.widths, probes=args.probes,
                         outputs=_corr_outputs(args),
                         **{k: getattr(args, k) for k in measure if k != "out" and getattr(args, k) is not None})
        cfg.validate()
        out = None if args.no_file else (args.out or default_corr_path(cfg))
        res = run_corr(cfg, out, progress=not (args.quiet or args.json), log=stderr_log)
        summary = res["summary"]
        if out is not None and not args.json:
            print(f"draws in {out}")
    if args.json:
        print(json.dumps(summary[0] if len(summary) == 1 else {"functions": summary}, allow_nan=False))
    else:
        print(format_corr(summary))
    return 0


def _width_for(args) -> int:
    import json

    import numpy as np

    from .compare import width_for
    from .io import load_sweep, no_values, prediction_labels

    sw = load_sweep(args.sweep)
    widths = np.asarray(sw["widths"])
    rows = np.arange(widths.size)
    if args.fit_widths is not None:
        missing = sorted(set(args.fit_widths) - set(widths.tolist()))
        if missing:
            raise ConfigError(f"--fit-widths {missing} are not widths of {args.sweep!r} ({widths.tolist()})")
        rows = np.flatnonzero(np.isin(widths, args.fit_widths))
    prefix = args.quantity + "_"
    labels = prediction_labels(sw["scalars"], prefix)
    if args.level is not None:
        if args.level not in labels:
            raise ConfigError(f"--level {args.level!r}: {args.sweep!r} holds {args.quantity} for {', '.join(labels)}")
        labels = [args.level]
    if not labels:
        raise ConfigError(no_values(sw, args.quantity))
    fits = {lab: width_for(widths[rows], sw["scalars"][prefix + lab][rows], args.eps) for lab in labels}
    if args.json:
        print(json.dumps(fits))
        return 0
    for lab, f in fits.items():
        if f["width"] is None:
            print(f"{lab:>4}: the error does not fall with width (fitted slope {f['slope']:.2f}); no width reaches it"
                  if f["never"] else f"{lab:>4}: the error falls too slowly (fitted slope {f['slope']:.2g}): below "
                  f"{args.eps:g} only beyond the largest float")
            continue
        lo, hi = (f"{v:.0f}" if v is not None else "never" for v in f["width_ci"])
        print(f"{lab:>4}: error ~ {f['c']:.3g} m^{f['slope']:.2f} (fit on widths {','.join(map(str, f['widths']))}): "
              f"below {args.eps:g} from m = {f['width']:.0f}  95% CI [{lo}, {hi}]")
    return 0


def _params(args) -> int:
    from .models._param import format_table as params_table

    print(params_table(args.depth))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run one command; every failure nth foresees ends with one line on stderr and exit status 2, an
    interruption with status 130 (see README, Reliability)."""
    args = build_parser().parse_args(argv)
    enable_float64()  # the command computes in float64 unless a run asks for float32 (nth._precision)
    try:
        _join_cluster(args)
        return {"solve": _solve, "sweep": _sweep, "plot": _plot, "kernel": _kernel, "spectrum": _spectrum,
                "params": _params, "corr": _corr, "launch": _launch,
                "width-for": _width_for}[args.command](args)
    except NTHError as e:
        print(f"nth: error: {e}", file=sys.stderr)
        return 2
    except MemoryError:
        print("nth: error: out of memory; lower the memory budget (--memory-budget) so that the plan refuses such a "
              "run before it starts, or reduce n, the width or p", file=sys.stderr)
        return 2
    except OSError as e:  # a file that vanished or a disk that failed under a running command
        print(f"nth: error: {e.strerror or e}" + (f": {e.filename!r}" if e.filename else ""), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nth: interrupted; nothing partial was written (a sweep keeps its finished runs)", file=sys.stderr)
        return INTERRUPTED


INTERRUPTED = 130


def _join_cluster(args) -> None:
    """Join the other processes (nth._cluster) where the command runs under several; the processes other than 0
    print nothing on stdout and show no progress (process 0 reports for all)."""
    from ._cluster import initialize, launched
    from ._launch import DISTRIBUTED_COMMANDS

    if args.command not in DISTRIBUTED_COMMANDS:
        if launched():
            raise ConfigError(f"nth {args.command} runs in one process; nth launch runs "
                              f"{', '.join(DISTRIBUTED_COMMANDS)}")
        return
    if initialize(auto=args.distributed) > 1:
        from ._cluster import process_index

        if process_index() > 0:
            args.quiet = True
            sys.stdout = open(os.devnull, "w")


def _launch(args) -> int:
    from ._launch import launch

    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    return launch(cmd, args.processes, port=args.port, heartbeat=args.heartbeat)


def _leave_on_signals() -> None:
    """Ctrl-C (SIGINT) and SIGTERM end the command at once, whatever the main thread is doing.

    Python runs signal handlers only between bytecodes of the main thread, which may sit inside a long XLA
    computation (the handler would wait for it), or inside a garbage-collection callback (where the
    KeyboardInterrupt would be swallowed and the run would go on). Instead the signal's number is written to a
    pipe at C level (``signal.set_wakeup_fd``) and a watcher thread removes this process's temporary and lock
    files (:func:`nth.io.abandon`), prints one line and leaves with ``os._exit`` (130, or 143 for SIGTERM),
    without tearing down an interpreter whose XLA threads are still running. Finished files are untouched."""
    r, w = os.pipe()
    os.set_blocking(w, False)
    signal.set_wakeup_fd(w, warn_on_full_buffer=False)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)

    def watch() -> None:
        while True:
            got = os.read(r, 1)
            if got and got[0] in (signal.SIGINT, signal.SIGTERM):
                abandon()
                what = "interrupted" if got[0] == signal.SIGINT else "terminated"
                os.write(2, f"\nnth: {what}; nothing partial was written (a sweep keeps its finished runs)\n".encode())
                os._exit(INTERRUPTED if got[0] == signal.SIGINT else 128 + signal.SIGTERM)

    threading.Thread(target=watch, name="nth-signals", daemon=True).start()


def entry() -> None:
    """The ``nth`` console script: :func:`main` with the signal handling of :func:`_leave_on_signals`."""
    _leave_on_signals()
    sys.exit(main())


if __name__ == "__main__":
    entry()
