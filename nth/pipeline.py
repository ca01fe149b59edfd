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

from . import store
from .compare import f_error, k2_error
from .data import NORMALIZATIONS, Dataset, default_problem, load_npz, read_npz
from .errors import ConfigError, DataError
from .gradflow import FlowSolution, gradient_flow
from .hierarchy import NTHSolution, default_horizon, truncated_nth
from .kernels import kernels, plan_kernels
from .model import MLP, check_activation, init_mlp, mlp_from_arrays
from .odeint import SOLVERS, check_tolerances

DTYPES = {"float64": jnp.float64, "float32": jnp.float32}
DEFAULT_WIDTH, DEFAULT_DEPTH, DEFAULT_N, DEFAULT_D = 1024, 2, 16, 8
#: The default horizon is where the frozen-NTK loss has fallen this much (the true loss then falls > 100x).
DEFAULT_LOSS_FALL = 1000.0


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

    def validate(self) -> None:
        """Check every field before any work is done; raise ConfigError naming the bad value."""
        if not isinstance(self.p, int) or self.p < 2:
            raise ConfigError(f"p = {self.p!r} must be an integer >= 2 (p = 2 is the frozen NTK)")
        check_activation(self.activation, self.p, self.beta)
        for name in ("width", "depth", "n", "d"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 1):
                raise ConfigError(f"{name} = {v!r} must be a positive integer")
        if self.weights is not None and (self.width is not None or self.depth is not None):
            raise ConfigError("width and depth are read from the weights file; do not pass --width/--depth "
                              "together with --weights")
        if self.data is not None and (self.n is not None or self.d is not None):
            raise ConfigError("n and d are read from the data file; do not pass --n/--d together with --data")
        for name in ("sigma_w", "sigma_a"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ConfigError(f"{name} = {v!r} must be a finite positive number")
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


@dataclasses.dataclass
class SolveResult:
    """What a run produced: inputs, kernels, the reference, every NTH level, errors and wall times."""

    config: dict[str, Any]
    data: Dataset
    f0: np.ndarray
    kernels: dict[int, np.ndarray]
    flow: FlowSolution
    nth: dict[int, NTHSolution]
    errors: dict[int, dict[str, float]]
    wall_times: dict[str, float]
    loss_fall: float
    path: str | None = None


def load_inputs(cfg: SolveConfig) -> tuple[Dataset, MLP]:
    """Data (built-in or file) and the network (seeded or from a weights file), checked against each other."""
    dtype = DTYPES[cfg.dtype]
    if cfg.data is None:
        data = default_problem(cfg.n or DEFAULT_N, cfg.d or DEFAULT_D, seed=cfg.data_seed)
    else:
        data = load_npz(cfg.data, normalization=cfg.normalization)
    if cfg.weights is None:
        net = init_mlp(cfg.seed, data.d, cfg.width or DEFAULT_WIDTH, cfg.depth or DEFAULT_DEPTH,
                       cfg.activation, sigma_w=cfg.sigma_w, sigma_a=cfg.sigma_a, beta=cfg.beta, dtype=dtype)
    else:
        net = mlp_from_arrays(read_npz(cfg.weights, "weights"), cfg.activation, beta=cfg.beta, dtype=dtype,
                              source=str(cfg.weights))
        if net.in_dim != data.d:
            raise DataError(f"shape mismatch: weights file {cfg.weights!r} has W1 of shape "
                            f"({net.width}, {net.in_dim}), so inputs must have d = {net.in_dim}, but the data "
                            f"({data.source}) has d = {data.d}")
    return data, net


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t = time.perf_counter()
    out = jax.block_until_ready(fn())
    return out, time.perf_counter() - t


def run_solve(
    cfg: SolveConfig,
    out: str | os.PathLike | None = None,
    *,
    force: bool = False,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> SolveResult:
    """Run kernels, the truncated NTH for every level q = 2..p, and true gradient flow; write ``out``.

    Every check that can fail on user input (configuration, files, output path, memory budget) runs
    before the expensive stages, and the file is written atomically at the end.
    """
    say = log or (lambda s: None)
    cfg.validate()
    if out is not None:
        store.check_output_path(out, force)
    data, net = load_inputs(cfg)
    dtype = DTYPES[cfg.dtype]
    X, y = jnp.asarray(data.X, dtype=dtype), jnp.asarray(data.y, dtype=dtype)
    plan = plan_kernels(data.n, cfg.p, net.num_params, dtype, cfg.memory_budget)
    resolved = dataclasses.asdict(cfg) | {"width": net.width, "depth": net.depth, "n": data.n, "d": data.d,
                                           "num_params": net.num_params, "kernel_chunk": plan.chunk,
                                           "normalization_applied": data.normalization}
    wall: dict[str, float] = {}
    say(f"network: width {net.width}, depth {net.depth}, {cfg.activation}, {net.num_params} parameters; "
        f"data: n = {data.n}, d = {data.d} ({data.source}); device: {jax.devices()[0].platform}")
    say(f"[1/3] kernels K^(2)..K^({cfg.p}) by forward-mode JVPs")
    ks, wall["kernels"] = _timed(lambda: kernels(net, X, cfg.p, memory_budget=plan.budget, chunk=plan.chunk,
                                                 progress=progress))
    f0 = net(X)
    t_max = cfg.t_max if cfg.t_max is not None else default_horizon(ks[2], f0, y, fall=DEFAULT_LOSS_FALL)
    resolved["t_max"] = float(t_max)
    ts = jnp.linspace(0.0, t_max, cfg.num_times, dtype=dtype)
    say(f"[2/3] true gradient flow to t = {t_max:.4g} ({cfg.flow_solver}, rtol {cfg.rtol:g}, atol {cfg.atol:g})")
    flow, wall["gradient_flow"] = _timed(lambda: gradient_flow(
        net, X, y, ts, rtol=cfg.rtol, atol=cfg.atol, max_steps=cfg.max_steps, solver=cfg.flow_solver,
        progress=progress))
    say(f"[3/3] truncated NTH, levels q = 2..{cfg.p} ({cfg.nth_solver})")
    sols: dict[int, NTHSolution] = {}
    errs: dict[int, dict[str, float]] = {}
    for q in range(2, cfg.p + 1):
        sols[q], wall[f"nth_p{q}"] = _timed(lambda q=q: truncated_nth(
            ks, f0, y, ts, p=q, rtol=cfg.rtol, atol=cfg.atol, max_steps=cfg.max_steps, solver=cfg.nth_solver))
        errs[q] = {"max_f_error": float(f_error(sols[q].f, flow.f).max()),
                   "max_K2_error": float(k2_error(sols[q].K2, flow.K2).max())}
    loss_fall = float(flow.loss[0] / flow.loss[-1]) if float(flow.loss[-1]) > 0 else float("inf")
    result = SolveResult(config=resolved, data=data, f0=np.asarray(f0),
                         kernels={r: np.asarray(k) for r, k in ks.items()}, flow=flow, nth=sols, errors=errs,
                         wall_times=wall, loss_fall=loss_fall)
    if out is not None:
        t = time.perf_counter()
        result.path = write_result(result, out, force=force, save_kernels=cfg.save_kernels)
        wall["write"] = time.perf_counter() - t
    return result


def result_datasets(result: SolveResult, save_kernels: bool) -> tuple[dict[str, Any], dict[str, dict]]:
    """Map a run onto the HDF5 schema of :mod:`nth.store` (datasets, attributes)."""
    cfg = result.config
    ds: dict[str, Any] = {"/data/X": result.data.X, "/data/y": result.data.y, "/init/f0": result.f0,
                          "/true/t": result.flow.ts, "/true/f": result.flow.f, "/true/K2": result.flow.K2,
                          "/true/loss": result.flow.loss}
    if result.data.X_test is not None:
        ds["/data/X_test"] = result.data.X_test
    if save_kernels:
        ds.update({f"/kernels/K{r}": k for r, k in result.kernels.items()})
    attrs: dict[str, dict] = {
        "/": store.run_attrs(cfg, result.wall_times, jax.devices()[0].platform),
        "/data": {"normalization": result.data.normalization, "source": result.data.source},
        "/true": {"solver": cfg["flow_solver"], "rtol": cfg["rtol"], "atol": cfg["atol"],
                  "num_steps": result.flow.stats.get("num_steps", -1), "loss_fall": result.loss_fall},
    }
    for q, sol in result.nth.items():
        ds.update({f"/nth/p{q}/f": sol.f, f"/nth/p{q}/K2": sol.K2, f"/nth/p{q}/loss": sol.loss})
        attrs[f"/nth/p{q}"] = result.errors[q] | {"num_steps": sol.stats.get("num_steps", -1)}
    return ds, attrs


def write_result(result: SolveResult, out: str | os.PathLike, *, force: bool = False,
                 save_kernels: bool = False) -> str:
    """Write a run to ``out`` atomically (see :func:`nth.store.write_h5`)."""
    ds, attrs = result_datasets(result, save_kernels)
    return store.write_h5(out, ds, attrs, force=force)


def format_table(result: SolveResult) -> str:
    """The per-level summary ``nth solve`` prints: errors against true gradient flow and stage wall times."""
    w = result.wall_times
    lines = [f"{'level':>7} {'max_t |f-f_true|/sqrt(n)':>26} {'max |K2-K2_true|':>18} {'wall [s]':>9}"]
    for q, e in result.errors.items():
        lines.append(f"{'p=' + str(q):>7} {e['max_f_error']:>26.3e} {e['max_K2_error']:>18.3e} "
                     f"{w[f'nth_p{q}']:>9.2f}")
    lines.append(f"{'true':>7} {'(reference)':>26} {'':>18} {w['gradient_flow']:>9.2f}")
    lines.append(f"kernels K^(2)..K^({max(result.kernels)}): {w['kernels']:.2f} s"
                 + (f"; write: {w['write']:.2f} s" if "write" in w else ""))
    lines.append(f"training loss fell {result.loss_fall:.3g}-fold over t in [0, {result.config['t_max']:.4g}] "
                 f"({float(result.flow.loss[0]):.3e} -> {float(result.flow.loss[-1]):.3e})")
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

    Returns ``{"f_p{q}": (W, S), "K2_p{q}": (W, S), "loss_fall": (W, S)}`` and, with ``reference_check``,
    ``"ref_diff"`` (W, S): max_t |f_true - f_true'|/sqrt(n) between the flow at the configured tolerances and
    at 100x tighter ones (MATH.md section 6: must sit 10x below the NTH errors it is compared with).
    """
    out: dict[str, np.ndarray] = {}
    shape = (len(widths), len(seeds))
    for i, m in enumerate(widths):
        for j, s in enumerate(seeds):
            c = dataclasses.replace(cfg, width=m, seed=s)
            res = run_solve(c)
            for q, e in res.errors.items():
                out.setdefault(f"f_p{q}", np.zeros(shape))[i, j] = e["max_f_error"]
                out.setdefault(f"K2_p{q}", np.zeros(shape))[i, j] = e["max_K2_error"]
            out.setdefault("loss_fall", np.zeros(shape))[i, j] = res.loss_fall
            if reference_check:
                data, net = load_inputs(c)
                tight = gradient_flow(net, jnp.asarray(data.X), jnp.asarray(data.y), res.flow.ts,
                                      rtol=c.rtol / 100, atol=c.atol / 100, max_steps=c.max_steps,
                                      solver=c.flow_solver)
                out.setdefault("ref_diff", np.zeros(shape))[i, j] = f_error(tight.f, res.flow.f).max()
            if log:
                log(f"width {m} seed {s}: " + ", ".join(f"p={q} {e['max_f_error']:.2e}"
                                                          for q, e in res.errors.items()))
    return out
