"""The ``nth solve`` pipeline as a library call: data -> network -> kernels -> truncated NTH at every level
q = 2..p and true gradient flow -> errors -> HDF5 file. The CLI only parses arguments into a
:class:`SolveConfig` and prints what :func:`run_solve` returns.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

from . import store
from .checks import check_scales
from .compare import f_error, k2_error
from .data import NORMALIZATIONS, Dataset, load_problem, read_npz
from .errors import ConfigError, DataError
from .corrections import METHODS as DG_METHODS
from .corrections import dg_correction
from .gradflow import FlowSolution, GDSolution, gradient_descent, gradient_flow, stable_lr
from .hierarchy import NTHSolution, default_horizon, truncated_nth
from .infinite import DEFAULT_ORDER, check_options as check_infinite_options, limiting_kernels
from .kernels import KernelOperator, kernels
from .plan import SolvePlan, plan_solve
from .model import MLP, check_activation, init_mlp, mlp_from_arrays
from .param import check_param, preset
from .odeint import SOLVERS, check_tolerances

DTYPES = {"float64": jnp.float64, "float32": jnp.float32}
DEFAULT_WIDTH, DEFAULT_DEPTH, DEFAULT_N, DEFAULT_D, DEFAULT_N_TEST = 1024, 2, 16, 8, 4
#: The default horizon is where the frozen-NTK loss has fallen this much (the true loss then falls > 100x).
DEFAULT_LOSS_FALL = 1000.0
#: float32 cannot resolve relative changes below its epsilon (1.2e-7): tolerances are raised to these.
FLOAT32_MIN_RTOL, FLOAT32_MIN_ATOL = 1e-6, 1e-8
RELU_RTOL, RELU_ATOL, RELU_MAX_STEPS = 1e-6, 1e-8, 1_000_000
#: The float32 reference's own error, max_t |f_true32 - f_true64| / sqrt(n) ~ A m^B (results/float32_floor.txt:
#: 1.9e-7 at m = 256 to 5.0e-7 at m = 4096, depth 1, n = 8, t = 20, geometric mean of 3 seeds).
FLOAT32_FLOOR_A, FLOAT32_FLOOR_B = 2.8e-8, 0.32
#: A float32 error within this factor of the floor is not resolved.
FLOAT32_MARGIN = 10.0


def float32_floor(width: int) -> float:
    """The error floor float32 puts under an error-vs-width curve at this width (measured fit, see above)."""
    return FLOAT32_FLOOR_A * width**FLOAT32_FLOOR_B


def float32_warnings(errors: dict[str, dict[str, float]], width: int) -> list[str]:
    """One line per prediction whose float32 error is within FLOAT32_MARGIN of :func:`float32_floor`."""
    floor = float32_floor(width)
    out = []
    for label, e in errors.items():
        v = e.get("max_f_error")
        if v is not None and v < FLOAT32_MARGIN * floor:
            out.append(f"{label}: error {v:.2e} is within {FLOAT32_MARGIN:g}x of the float32 floor ({floor:.1e} at "
                       f"m = {width}); it measures float32 rounding, not the hierarchy. Use --dtype float64.")
    return out


@dataclasses.dataclass(frozen=True)
class SolveConfig:
    """Everything that defines an ``nth solve`` run. ``None`` means "the default" (or "from the file")."""

    p: int = 4
    width: int | None = None
    depth: int | None = None
    activation: str = "tanh"
    beta: float = 1.0
    sigma_w: float = 1.0
    sigma_a: float = 1.0
    n: int | None = None
    d: int | None = None
    seed: int = 0
    data_seed: int = 0
    data: str | None = None
    weights: str | None = None
    normalization: str = "sphere"
    t_max: float | None = None
    num_times: int = 41
    rtol: float = 1e-10
    atol: float = 1e-12
    max_steps: int = 100_000
    nth_solver: str = "tsit5"
    flow_solver: str = "dopri8"
    dtype: str = "float64"
    memory_budget: int | None = None
    save_kernels: bool = False
    n_test: int | None = None
    dg: bool | None = None
    dg_method: str = "closed"
    lr: float | None = None
    steps: int | None = None
    digits_per_class: int = 10
    matrix_free: bool = False
    chunk: int | None = None
    devices: int | None = None
    param: str = "ntk"
    infinite: bool | None = None
    quadrature_order: int = DEFAULT_ORDER

    @property
    def use_inf(self) -> bool:
        """The m = inf row (kernel gradient descent with Kbar^(2)): on by default in the kernel regime (ntk,
        standard); it does not exist for feature-learning parametrizations (TP4 Theorem 3.8)."""
        # the regime of a preset does not depend on depth; depth 1 is where every preset exists
        return preset(self.param, 1).has_kernel_limit if self.infinite is None else self.infinite

    @property
    def use_dg(self) -> bool:
        """DG needs K^(3) and K^(4): on by default when p >= 4 (p >= 5 when K^(p) is matrix-free)."""
        return self.p >= (5 if self.matrix_free else 4) if self.dg is None else self.dg

    def for_dtype(self) -> "SolveConfig":
        """The config with solver settings this run can meet, each change announced by :meth:`adjustments`.

        float32 resolves about 1.2e-7, so rtol >= 1e-6 and atol >= 1e-8 (MATH.md section 6). ReLU's gradient
        flow has a discontinuous right-hand side (relu' jumps where a pre-activation crosses 0), which an
        8th-order adaptive solver at rtol 1e-10 cannot step across: left at their defaults, its flow solver,
        tolerances and step limit become dopri5, 1e-6, 1e-8 and 10^6.
        """
        c = self
        if c.activation == "relu":
            defaults = {f.name: f.default for f in dataclasses.fields(SolveConfig)}
            relu = {"flow_solver": "dopri5", "rtol": RELU_RTOL, "atol": RELU_ATOL, "max_steps": RELU_MAX_STEPS}
            c = dataclasses.replace(c, **{k: v for k, v in relu.items() if getattr(c, k) == defaults[k]})
        if c.dtype == "float32":
            c = dataclasses.replace(c, rtol=max(c.rtol, FLOAT32_MIN_RTOL), atol=max(c.atol, FLOAT32_MIN_ATOL))
        return c

    def adjustments(self) -> str:
        """One line naming what :meth:`for_dtype` changes, or "" if nothing."""
        c = self.for_dtype()
        changed = [f"{k} {getattr(self, k)} -> {getattr(c, k)}" for k in ("flow_solver", "rtol", "atol", "max_steps")
                   if getattr(self, k) != getattr(c, k)]
        why = "float32 resolves about 1.2e-7" if self.dtype == "float32" else ""
        if self.activation == "relu":
            why = "ReLU's gradient flow has a discontinuous right-hand side" + (f"; {why}" if why else "")
        return f"adjusted for this run ({why}): " + ", ".join(changed) if changed else ""

    def validate(self) -> None:
        """Check every field before any work is done; raise ConfigError naming the bad value."""
        if not isinstance(self.p, int) or self.p < 2:
            raise ConfigError(f"p = {self.p!r} must be an integer >= 2 (p = 2 is the frozen NTK)")
        check_activation(self.activation, self.p, self.beta)
        for name in ("width", "depth", "n", "d"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 1):
                raise ConfigError(f"{name} = {v!r} must be a positive integer")
        check_param(self.param)
        if self.weights is None:
            preset(self.param, self.depth or DEFAULT_DEPTH)  # meanfield refuses depth >= 2
        if self.infinite:
            preset(self.param, 1).limit_lrs()  # raises: no limiting kernel outside the kernel regime
        check_infinite_options(self.activation, "auto", self.quadrature_order, self.beta)
        if self.weights is not None and (self.width is not None or self.depth is not None):
            raise ConfigError("width and depth are read from the weights file; do not pass --width/--depth "
                              "together with --weights")
        if self.data is not None and (self.n is not None or self.d is not None):
            raise ConfigError("n and d are read from the data; do not pass --n/--d together with --data "
                              "(for digits, set the size with --digits-per-class)")
        check_scales(sigma_w=self.sigma_w, sigma_a=self.sigma_a)
        if self.t_max is not None and not (math.isfinite(self.t_max) and self.t_max > 0):
            raise ConfigError(f"t_max = {self.t_max!r} must be a finite positive time")
        if not isinstance(self.num_times, int) or self.num_times < 2:
            raise ConfigError(f"num_times = {self.num_times!r} must be an integer >= 2")
        check_tolerances(self.rtol, self.atol, self.max_steps)
        for name in ("nth_solver", "flow_solver"):
            if getattr(self, name) not in SOLVERS:
                raise ConfigError(f"{name} = {getattr(self, name)!r}; accepted: {', '.join(SOLVERS)}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype = {self.dtype!r}; accepted: {', '.join(DTYPES)}")
        if self.normalization not in NORMALIZATIONS:
            raise ConfigError(f"normalization = {self.normalization!r}; accepted: {', '.join(NORMALIZATIONS)}")
        if self.memory_budget is not None and self.memory_budget <= 0:
            raise ConfigError(f"memory_budget = {self.memory_budget!r} must be a positive number of bytes")
        if self.dg and self.p < 4:
            raise ConfigError(f"the DG correction needs K^(3) and K^(4), so p >= 4; got p = {self.p}")
        if self.matrix_free and self.p < 3:
            raise ConfigError(f"matrix_free needs p >= 3 (at p = {self.p} the top kernel is K^(2) itself)")
        if self.dg and self.matrix_free and self.p == 4:
            raise ConfigError("the DG correction needs a dense K^(4), which matrix_free at p = 4 never forms; "
                              "use --no-dg, p >= 5, or drop --matrix-free")
        if self.devices is not None and (not isinstance(self.devices, int) or self.devices < 1):
            raise ConfigError(f"devices = {self.devices!r} must be a positive integer (or None for every device)")
        if self.chunk is not None and (not isinstance(self.chunk, int) or self.chunk < 1):
            raise ConfigError(f"chunk = {self.chunk!r} must be a positive integer (direction tuples per batch)")
        if self.dg_method not in DG_METHODS:
            raise ConfigError(f"dg_method = {self.dg_method!r}; accepted: {', '.join(DG_METHODS)}")
        builtin = self.data in (None, "digits")
        if self.n_test is not None and (not builtin or not isinstance(self.n_test, int) or self.n_test < 0):
            raise ConfigError(f"n_test = {self.n_test!r}: a non-negative integer, for the built-in problems only "
                              "(with --data FILE, test inputs come from X_test in the file)")
        if not isinstance(self.digits_per_class, int) or self.digits_per_class < 1:
            raise ConfigError(f"digits_per_class = {self.digits_per_class!r} must be a positive integer")
        if (self.lr is None) != (self.steps is None):
            raise ConfigError("finite learning rate needs both lr and steps (--lr ETA --steps S)")
        if self.lr is not None:
            if not (math.isfinite(self.lr) and self.lr > 0):
                raise ConfigError(f"lr = {self.lr!r} must be a finite positive learning rate")
            if not isinstance(self.steps, int) or self.steps < 1:
                raise ConfigError(f"steps = {self.steps!r} must be a positive integer")
            if self.t_max is not None:
                raise ConfigError("with --lr/--steps the horizon is t_max = lr * steps; do not pass --t-max")


@dataclasses.dataclass
class SolveResult:
    """What a run produced: inputs, kernels, the reference, every prediction, errors and wall times.

    ``predictions`` maps a label ("p2", ..., "p{p}", "dg") to an NTHSolution or DGSolution; ``errors`` maps
    the same labels (and "gd" for gradient descent against the flow) to their error summaries.
    """

    config: dict[str, Any]
    data: Dataset
    f0: np.ndarray
    kernels: dict[int, np.ndarray]
    test_kernels: dict[int, np.ndarray] | None
    flow: FlowSolution
    predictions: dict[str, Any]
    gd: GDSolution | None
    errors: dict[str, dict[str, float]]
    wall_times: dict[str, float]
    loss_fall: float
    path: str | None = None
    warnings: list[str] = dataclasses.field(default_factory=list)


def load_inputs(cfg: SolveConfig) -> tuple[Dataset, MLP]:
    """Data (built-in or file) and the network (seeded or from a weights file), checked against each other."""
    dtype = DTYPES[cfg.dtype]
    data = load_problem(cfg.data, n=cfg.n or DEFAULT_N, d=cfg.d or DEFAULT_D, seed=cfg.data_seed,
                        n_test=DEFAULT_N_TEST if cfg.n_test is None else cfg.n_test,
                        digits_per_class=cfg.digits_per_class, normalization=cfg.normalization)
    if cfg.weights is None:
        net = init_mlp(cfg.seed, data.d, cfg.width or DEFAULT_WIDTH, cfg.depth or DEFAULT_DEPTH,
                       cfg.activation, sigma_w=cfg.sigma_w, sigma_a=cfg.sigma_a, beta=cfg.beta, dtype=dtype,
                       param=cfg.param)
    else:
        net = mlp_from_arrays(read_npz(cfg.weights, "weights"), cfg.activation, beta=cfg.beta, dtype=dtype,
                              source=str(cfg.weights))
        if cfg.param != "ntk":  # the file holds theta; the parametrization sets the per-layer learning rates
            net = dataclasses.replace(net, lrs=preset(cfg.param, net.depth).lrs(net.width))
        if net.in_dim != data.d:
            raise DataError(f"shape mismatch: weights file {cfg.weights!r} has W1 of shape "
                            f"({net.width}, {net.in_dim}), so inputs must have d = {net.in_dim}, but the data "
                            f"({data.source}) has d = {data.d}")
    return data, net


def plan_run(cfg: SolveConfig, data: Dataset, net: MLP) -> SolvePlan:
    """The memory plan of :func:`run_solve` for these inputs (raises MemoryBudgetError if over budget)."""
    n_test = 0 if data.X_test is None else int(data.X_test.shape[0])
    return plan_solve(n=data.n, n_test=n_test, p=cfg.p, width=net.width, depth=net.depth, in_dim=net.in_dim,
                      dtype=DTYPES[cfg.dtype], num_times=cfg.num_times, memory_budget=cfg.memory_budget,
                      chunk=cfg.chunk, matrix_free=cfg.matrix_free, dg=cfg.use_dg, nth_solver=cfg.nth_solver,
                      flow_solver=cfg.flow_solver)


def dry_run(cfg: SolveConfig) -> str:
    """What ``nth solve --dry-run`` prints: sizes and the memory plan of every stage; nothing is computed.

    Raises MemoryBudgetError (with the itemized plan) exactly when the real run would refuse.
    """
    cfg.validate()
    cfg = cfg.for_dtype()
    data, net = load_inputs(cfg)
    plan = plan_run(cfg, data, net)
    head = (f"nth solve --p {cfg.p}: width {net.width}, depth {net.depth}, {net.num_params} parameters, n = "
            f"{data.n}, d = {data.d}, {0 if data.X_test is None else data.X_test.shape[0]} test inputs, {cfg.dtype}, device {jax.devices()[0].platform} x {len(jax.local_devices())}"
            + (", K^(p) matrix-free" if cfg.matrix_free else "") + f", {cfg.param} parametrization")
    return head + "\n" + plan.describe()


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t = time.perf_counter()
    out = jax.block_until_ready(fn())
    return out, time.perf_counter() - t


def infinite_kernels(cfg: SolveConfig, depth: int, X, Xt) -> tuple[Array, Array | None]:
    """Kbar^(2)(X, X) and Kbar^(2)(X_test, X) of the configured network (nth.infinite), in the dtype of X.

    Kbar uses ``cfg.sigma_w``/``cfg.sigma_a`` as the weights' distribution (also with a weights file).
    """
    kw = dict(depth=depth, activation=cfg.activation, sigma_w=cfg.sigma_w, sigma_a=cfg.sigma_a, beta=cfg.beta,
              param=cfg.param, order=cfg.quadrature_order)
    Kbar = limiting_kernels(X, **kw).ntk.astype(X.dtype)
    return Kbar, None if Xt is None else limiting_kernels(Xt, X, **kw).ntk.astype(X.dtype)


def infinite_prediction(cfg: SolveConfig, kbar: tuple[Array, Array | None], y, f0, ft0, ts) -> NTHSolution:
    """The m = inf row: kernel gradient descent with the limiting NTK Kbar^(2) (TP2b; MATH.md section 5), started
    from the network's own f(0), i.e. the p = 2 dynamics with K^(2)(0) -> Kbar^(2) (and Kbar(x, X) at test
    inputs); ``kbar`` from :func:`infinite_kernels`.

    Its error against true gradient flow falls only like m^(-1/2) (K^(2)(0) - Kbar^(2) = O(1/sqrt(m))), while
    p = 2 with the finite K^(2)(0) falls like 1/m.
    """
    Kbar, Kbar_test = kbar
    return truncated_nth({2: Kbar}, f0, y, ts, p=2, test_kernels=None if Kbar_test is None else {2: Kbar_test},
                         f0_test=None if Kbar_test is None else ft0, rtol=cfg.rtol, atol=cfg.atol,
                         max_steps=cfg.max_steps, solver=cfg.nth_solver)


def _errors(pred, flow: FlowSolution, gd: GDSolution | None) -> dict[str, float]:
    """Max over saved times of the output, kernel and test-output errors against the references."""
    e = {"max_f_error": float(f_error(pred.f, flow.f).max()), "max_K2_error": float(k2_error(pred.K2, flow.K2).max())}
    if flow.f_test is not None and pred.f_test is not None:
        e["max_test_error"] = float(f_error(pred.f_test, flow.f_test).max())
    if gd is not None:
        e["max_f_error_gd"] = float(f_error(pred.f, gd.f).max())
    return e


def run_solve(
    cfg: SolveConfig,
    out: str | os.PathLike | None = None,
    *,
    force: bool = False,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> SolveResult:
    """Run kernels, the truncated NTH for every level q = 2..p, the DG correction (p >= 4), true gradient
    flow and, with ``lr``/``steps``, gradient descent; write ``out``.

    Every check that can fail on user input (configuration, files, output path, memory budget) runs
    before the expensive stages, and the file is written atomically at the end.
    """
    say = log or (lambda s: None)
    cfg.validate()
    if cfg.adjustments():
        say(cfg.adjustments())
        cfg = cfg.for_dtype()
    if out is not None:
        store.check_output_path(out, force)
    data, net = load_inputs(cfg)
    dtype = DTYPES[cfg.dtype]
    X, y = jnp.asarray(data.X, dtype=dtype), jnp.asarray(data.y, dtype=dtype)
    Xt = None if data.X_test is None or data.X_test.shape[0] == 0 else jnp.asarray(data.X_test, dtype=dtype)
    plan = plan_run(cfg, data, net).kernels  # every stage is planned (and refused) before any work
    resolved = dataclasses.asdict(cfg) | {"inf": cfg.use_inf, "width": net.width, "depth": net.depth, "n": data.n, "d": data.d,
                                           "n_test": 0 if Xt is None else int(Xt.shape[0]), "dg": cfg.use_dg,
                                           "num_params": net.num_params, "kernel_chunk": plan.chunk,
                                           "normalization_applied": data.normalization}
    wall: dict[str, float] = {}
    abc = preset(cfg.param, net.depth)
    resolved["tp4"] = abc.table_row()
    say(f"network: width {net.width}, depth {net.depth}, {cfg.activation}, {net.num_params} parameters, "
        f"{cfg.param} parametrization (r = {abc.r}, {abc.regime()}); "
        f"data: n = {data.n}, d = {data.d}, {0 if Xt is None else Xt.shape[0]} test points ({data.source}); "
        f"device: {jax.devices()[0].platform}")
    say(f"[1/4] kernels K^(2)..K^({cfg.p}) by forward mode (batches of {plan.chunk} direction tuples"
        + (f"; K^({cfg.p}) matrix-free)" if cfg.matrix_free else ")"))
    ks, wall["kernels"] = _timed(lambda: kernels(net, X, cfg.p, memory_budget=plan.budget, chunk=plan.chunk,
                                                 progress=progress, matrix_free=cfg.matrix_free,
                                                 devices=cfg.devices))
    kt = None
    if Xt is not None:
        kt, wall["test_kernels"] = _timed(lambda: kernels(net, X, cfg.p, first=Xt, memory_budget=plan.budget,
                                                          chunk=plan.chunk, progress=progress,
                                                          matrix_free=cfg.matrix_free, devices=cfg.devices))
    f0 = net(X)
    ft0 = None if Xt is None else net(Xt)
    gd = None
    if cfg.lr is not None:
        steps = np.unique(np.round(np.linspace(0, cfg.steps, cfg.num_times)).astype(np.int64))
        ts = jnp.asarray(cfg.lr * steps, dtype=dtype)
        t_max = cfg.lr * cfg.steps
        say(f"[+] gradient descent: lr {cfg.lr:g} (stable step about {stable_lr(ks[2]):.3g}), {cfg.steps} steps")
        gd, wall["gradient_descent"] = _timed(lambda: gradient_descent(net, X, y, cfg.lr, steps, X_test=Xt))
    else:
        t_max = cfg.t_max if cfg.t_max is not None else default_horizon(ks[2], f0, y, fall=DEFAULT_LOSS_FALL)
        ts = jnp.linspace(0.0, t_max, cfg.num_times, dtype=dtype)
    resolved["t_max"] = float(t_max)
    say(f"[2/4] true gradient flow to t = {t_max:.4g} ({cfg.flow_solver}, rtol {cfg.rtol:g}, atol {cfg.atol:g})")
    flow, wall["gradient_flow"] = _timed(lambda: gradient_flow(
        net, X, y, ts, X_test=Xt, rtol=cfg.rtol, atol=cfg.atol, max_steps=cfg.max_steps, solver=cfg.flow_solver,
        progress=progress))
    say(f"[3/4] truncated NTH, levels q = 2..{cfg.p} ({cfg.nth_solver})")
    preds: dict[str, Any] = {}
    for q in range(2, cfg.p + 1):
        preds[f"p{q}"], wall[f"nth_p{q}"] = _timed(lambda q=q: truncated_nth(
            ks, f0, y, ts, p=q, test_kernels=kt, f0_test=ft0, rtol=cfg.rtol, atol=cfg.atol,
            max_steps=cfg.max_steps, solver=cfg.nth_solver))
    if cfg.use_dg:
        say(f"[4/4] Dyer & Gur-Ari O(1/m) correction ({cfg.dg_method} form)")
        preds["dg"], wall["dg"] = _timed(lambda: dg_correction(
            ks, f0, y, ts, method=cfg.dg_method, test_kernels=kt, f0_test=ft0, rtol=cfg.rtol, atol=cfg.atol,
            max_steps=cfg.max_steps, solver=cfg.nth_solver))
    if cfg.use_inf:
        say("[+] m = inf: kernel gradient descent with the limiting NTK Kbar^(2) from the network's f(0)")
        preds["inf"], wall["inf"] = _timed(lambda: infinite_prediction(
            cfg, infinite_kernels(cfg, net.depth, X, Xt), y, f0, ft0, ts))
    errs = {label: _errors(pred, flow, gd) for label, pred in preds.items()}
    if gd is not None:
        errs["gd"] = _errors(gd, flow, None)
    loss_fall = float(flow.loss[0] / flow.loss[-1]) if float(flow.loss[-1]) > 0 else float("inf")
    np_k = lambda d: None if d is None else {r: np.asarray(k) for r, k in d.items()  # noqa: E731
                                             if not isinstance(k, KernelOperator)}
    result = SolveResult(config=resolved, data=data, f0=np.asarray(f0), kernels=np_k(ks), test_kernels=np_k(kt),
                         flow=flow, predictions=preds, gd=gd, errors=errs, wall_times=wall, loss_fall=loss_fall,
                         warnings=float32_warnings(errs, net.width) if cfg.dtype == "float32" else [])
    for w_ in result.warnings:
        say("warning: " + w_)
    if out is not None:
        t = time.perf_counter()
        result.path = write_result(result, out, force=force, save_kernels=cfg.save_kernels)
        wall["write"] = time.perf_counter() - t
    return result


def _group(label: str) -> str:
    return f"/{label}" if label in ("dg", "inf") else f"/nth/{label}"


def _wall_key(label: str) -> str:
    return label if label in ("dg", "inf") else f"nth_{label}"


def row_name(label: str) -> str:
    """Table name of a prediction label: p=2.., dg, inf."""
    return label if label in ("dg", "inf") else f"p={label[1:]}"


def result_datasets(result: SolveResult, save_kernels: bool) -> tuple[dict[str, Any], dict[str, dict]]:
    """Map a run onto the HDF5 schema of :mod:`nth.store` (datasets, attributes)."""
    cfg = result.config
    fl = result.flow
    ds: dict[str, Any] = {"/data/X": result.data.X, "/data/y": result.data.y, "/init/f0": result.f0,
                          "/true/t": fl.ts, "/true/f": fl.f, "/true/K2": fl.K2, "/true/loss": fl.loss}
    if fl.f_test is not None:
        ds["/data/X_test"] = result.data.X_test
        ds["/true/f_test"] = fl.f_test
    if save_kernels:
        ds.update({f"/kernels/K{r}": k for r, k in result.kernels.items()})
        if result.test_kernels is not None:
            ds.update({f"/kernels/K{r}_test": k for r, k in result.test_kernels.items()})
    attrs: dict[str, dict] = {
        "/": store.run_attrs(cfg, result.wall_times, jax.devices()[0].platform)
        | ({"warnings": "\n".join(result.warnings)} if result.warnings else {}),
        "/data": {"normalization": result.data.normalization, "source": result.data.source},
        "/true": {"solver": cfg["flow_solver"], "rtol": cfg["rtol"], "atol": cfg["atol"],
                  "num_steps": fl.stats.get("num_steps", -1), "loss_fall": result.loss_fall},
    }
    for label, pred in result.predictions.items():
        g = _group(label)
        ds.update({f"{g}/f": pred.f, f"{g}/K2": pred.K2, f"{g}/loss": pred.loss})
        if pred.f_test is not None:
            ds[f"{g}/f_test"] = pred.f_test
        attrs[g] = dict(result.errors[label])
        if label == "dg":
            ds["/dg/K2_late"] = pred.K2_late
            attrs[g]["method"] = pred.method
        else:
            attrs[g]["num_steps"] = pred.stats.get("num_steps", -1)
    if result.gd is not None:
        gd = result.gd
        ds.update({"/gd/step": gd.steps, "/gd/t": gd.ts, "/gd/f": gd.f, "/gd/K2": gd.K2, "/gd/loss": gd.loss})
        if gd.f_test is not None:
            ds["/gd/f_test"] = gd.f_test
        attrs["/gd"] = dict(result.errors["gd"]) | {"lr": gd.lr}
    return ds, attrs


def write_result(result: SolveResult, out: str | os.PathLike, *, force: bool = False,
                 save_kernels: bool = False) -> str:
    """Write a run to ``out`` atomically (see :func:`nth.store.write_h5`)."""
    ds, attrs = result_datasets(result, save_kernels)
    return store.write_h5(out, ds, attrs, force=force)


def format_table(result: SolveResult) -> str:
    """The per-prediction summary ``nth solve`` prints: errors against true gradient flow (and gradient
    descent), and stage wall times."""
    w = result.wall_times
    test = result.flow.f_test is not None
    gd = result.gd is not None
    head = f"{'level':>7} {'max_t |f-f_true|/sqrt(n)':>26} {'max |K2-K2_true|':>18}"
    head += f" {'test error':>11}" * test + f" {'f vs GD':>10}" * gd + f" {'wall [s]':>9}"
    lines = [head]
    for label, e in result.errors.items():
        if label == "gd":
            continue
        name = row_name(label)
        row = f"{name:>7} {e['max_f_error']:>26.3e} {e['max_K2_error']:>18.3e}"
        row += f" {e.get('max_test_error', float('nan')):>11.3e}" * test
        row += f" {e.get('max_f_error_gd', float('nan')):>10.3e}" * gd
        lines.append(row + f" {w[_wall_key(label)]:>9.2f}")
    if gd:
        e = result.errors["gd"]
        row = f"{'gd':>7} {e['max_f_error']:>26.3e} {e['max_K2_error']:>18.3e}"
        row += f" {e.get('max_test_error', float('nan')):>11.3e}" * test + f" {'':>10}"
        lines.append(row + f" {w['gradient_descent']:>9.2f}")
    lines.append(f"{'true':>7} {'(reference)':>26} {'':>18}" + f" {'':>11}" * test + f" {'':>10}" * gd
                 + f" {w['gradient_flow']:>9.2f}")
    lines.append(f"kernels K^(2)..K^({max(result.kernels)}): {w['kernels']:.2f} s"
                 + (f" (+ {w['test_kernels']:.2f} s at test inputs)" if "test_kernels" in w else "")
                 + (f"; write: {w['write']:.2f} s" if "write" in w else ""))
    lines.append(f"training loss fell {result.loss_fall:.3g}-fold over t in [0, {result.config['t_max']:.4g}] "
                 f"({float(result.flow.loss[0]):.3e} -> {float(result.flow.loss[-1]):.3e})")
    lines += [f"warning: {w}" for w in result.warnings]
    if result.path:
        lines.append(f"wrote {result.path}")
    return "\n".join(lines)


def default_out_path(cfg: SolveConfig) -> str:
    """results/solve_p{p}_m{width}_H{depth}_{activation}_s{seed}_{UTC time}.h5: a new name for every run."""
    width = cfg.width or ("file" if cfg.weights else DEFAULT_WIDTH)
    depth = cfg.depth or ("file" if cfg.weights else DEFAULT_DEPTH)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    return os.path.join("results", f"solve_p{cfg.p}_m{width}_H{depth}_{cfg.activation}_s{cfg.seed}_{stamp}.h5")


def stderr_log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def sweep_errors(cfg: SolveConfig, widths: list[int], seeds: list[int], *, reference_check: bool = False,
                 log: Callable[[str], None] | None = None) -> dict[str, np.ndarray]:
    """Run :func:`run_solve` (no file) for every (width, seed) and collect errors against true gradient flow.

    Returns arrays of shape (W, S): ``"f_<label>"``, ``"K2_<label>"`` and, with test inputs, ``"test_<label>"``
    for every prediction label (p2..p{p}, dg); ``"dg_vs_p4"`` (max_t |f_dg - f_p4|/sqrt(n)) when both exist;
    ``"loss_fall"``; and, with ``reference_check``, ``"ref_diff"``: max_t |f_true - f_true'|/sqrt(n) between
    the flow at the configured tolerances and at 100x tighter ones (MATH.md section 6: must sit 10x below
    the NTH errors it is compared with).
    """
    out: dict[str, np.ndarray] = {}
    shape = (len(widths), len(seeds))

    def put(key, i, j, v):
        out.setdefault(key, np.zeros(shape))[i, j] = v

    for i, m in enumerate(widths):
        for j, s in enumerate(seeds):
            c = dataclasses.replace(cfg, width=m, seed=s)
            res = run_solve(c)
            for label, e in res.errors.items():
                put(f"f_{label}", i, j, e["max_f_error"])
                put(f"K2_{label}", i, j, e["max_K2_error"])
                if "max_test_error" in e:
                    put(f"test_{label}", i, j, e["max_test_error"])
            if "dg" in res.predictions and "p4" in res.predictions:
                put("dg_vs_p4", i, j, f_error(res.predictions["dg"].f, res.predictions["p4"].f).max())
            put("loss_fall", i, j, res.loss_fall)
            if reference_check:
                data, net = load_inputs(c)
                tight = gradient_flow(net, jnp.asarray(data.X), jnp.asarray(data.y), res.flow.ts,
                                      rtol=c.rtol / 100, atol=c.atol / 100, max_steps=c.max_steps,
                                      solver=c.flow_solver)
                put("ref_diff", i, j, f_error(tight.f, res.flow.f).max())
            if log:
                log(f"width {m} seed {s}: " + ", ".join(f"{label} {e['max_f_error']:.2e}"
                                                          for label, e in res.errors.items()))
    return out
