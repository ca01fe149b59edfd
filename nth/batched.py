"""Many seeds of one width in one computation: ``nth sweep --batch-seeds`` (and the library call below).

The S networks of a width have identical shapes, so their weights are stacked along a leading seed axis
and every stage runs once for all of them under ``jax.vmap``: the kernels K^(2)..K^(p) (structured, as in
:mod:`nth.kernels`), the true gradient flow and every truncated NTH level (one vmapped Diffrax solve each,
every seed with its own adaptive step size; the loop runs until the slowest seed is done). With several
devices the seed axis is sharded across them (``jax.sharding``), so the seeds run in parallel, one group
per device; seeds are padded to a multiple of the device count and the padding dropped.

The results are :class:`~nth.pipeline.SolveResult` objects, one per seed, holding the same numbers as
:func:`~nth.pipeline.run_solve` for that seed (to rounding: batched matrix products may sum in a different
order). The DG closed form (an eigendecomposition per seed) runs per seed.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .corrections import dg_correction
from .errors import ConfigError, MemoryBudgetError
from .gradflow import FlowSolution, _flow_rhs, _save_flow
from .hierarchy import NTHSolution, _nth_rhs, _save
from .kernels import _mesh, format_bytes, kernel_fn
from .odeint import integrate_batched
from .pipeline import (DTYPES, SolveConfig, SolveResult, _errors, _timed, float32_warnings, infinite_kernels,
                       infinite_prediction, load_inputs, plan_run)


def _stack(trees):
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *trees)


@functools.lru_cache(maxsize=None)
def _kernels_fn(p: int, chunk: int, test: bool):
    fns = [kernel_fn(r, chunk) for r in range(2, p + 1)]

    def one(net, X1, X):
        return tuple(fn(net, X1, X) for fn in fns)

    def train(net, X):
        return one(net, X, X)

    return eqx.filter_jit(eqx.filter_vmap(one if test else train, in_axes=(0, None, None) if test else (0, None)))


@eqx.filter_jit
def _outputs(stacked, X):
    return eqx.filter_vmap(lambda nt: nt(X))(stacked)


def run_solve_seeds(cfg: SolveConfig, seeds: list[int], *, devices=None,
                    log: Callable[[str], None] | None = None) -> list[SolveResult]:
    """:func:`~nth.pipeline.run_solve` (without a file) for every seed in ``seeds`` at once (module docstring).

    Needs a fixed horizon ``cfg.t_max`` (the seeds share their save times), seeded weights (no weights
    file) and gradient flow (no ``lr``). ``devices``: None for every local device, an int count, or a list.
    Memory: the per-seed plan of :func:`~nth.pipeline.plan_run` times the seeds per device must fit the budget.
    """
    say = log or (lambda s: None)
    cfg.validate()
    cfg = cfg.for_dtype()
    if cfg.t_max is None or cfg.weights is not None or cfg.lr is not None:
        raise ConfigError("batched seeds need a fixed t_max, seeded weights (no --weights) and gradient flow "
                          "(no --lr); use nth.run_solve for one run")
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds = {seeds!r} must be a non-empty list of distinct integers")
    wall: dict[str, float] = {}
    loaded = [load_inputs(dataclasses.replace(cfg, seed=s)) for s in seeds]
    data, nets = loaded[0][0], [net for _, net in loaded]
    mesh = _mesh(devices)
    nd = 1 if mesh is None else mesh.devices.size
    B = -(-len(seeds) // nd) * nd
    nets = nets + [nets[-1]] * (B - len(seeds))
    plan = plan_run(cfg, data, nets[0])
    per_device = B // nd
    if plan.peak * per_device > plan.budget:
        raise MemoryBudgetError(f"{per_device} seeds per device need about {format_bytes(plan.peak * per_device)}, "
                                f"over the budget of {format_bytes(plan.budget)} (one seed: "
                                f"{format_bytes(plan.peak)}). Batch fewer seeds, use more devices, or raise "
                                "--memory-budget.")
    dtype = DTYPES[cfg.dtype]
    X, y = jnp.asarray(data.X, dtype), jnp.asarray(data.y, dtype)
    Xt = None if data.X_test is None or data.X_test.shape[0] == 0 else jnp.asarray(data.X_test, dtype)
    stacked = _stack(nets)
    if mesh is not None:
        P = jax.sharding.PartitionSpec
        stacked = jax.device_put(stacked, jax.sharding.NamedSharding(mesh, P("tuples")))
        X, y, Xt = jax.device_put((X, y, Xt), jax.sharding.NamedSharding(mesh, P()))
    labels = [f"seed {s}" for s in seeds] + ["padding"] * (B - len(seeds))
    ts = jnp.linspace(0.0, cfg.t_max, cfg.num_times, dtype=dtype)
    tol = dict(rtol=cfg.rtol, atol=cfg.atol, max_steps=cfg.max_steps)

    def timed(key, fn):  # wall time per seed
        out, wall[key] = _timed(fn)
        wall[key] /= len(seeds)
        return out

    say(f"{len(seeds)} seeds at width {nets[0].width} in one batch ({nd} device(s))")
    ks = timed("kernels", lambda: _kernels_fn(cfg.p, plan.kernels.chunk, False)(stacked, X))
    ks = {r: ks[r - 2] for r in range(2, cfg.p + 1)}
    kt = None
    if Xt is not None:
        kt = timed("test_kernels", lambda: _kernels_fn(cfg.p, plan.kernels.chunk, True)(stacked, Xt, X))
        kt = {r: kt[r - 2] for r in range(2, cfg.p + 1)}
    f0 = _outputs(stacked, X)
    ft0 = None if Xt is None else _outputs(stacked, Xt)
    u0 = jax.tree_util.tree_map(jnp.zeros_like, stacked)
    (ff, fK2, fL, fft), fstats = timed("gradient_flow", lambda: integrate_batched(
        _flow_rhs, u0, (stacked, X, y, Xt), (0, None, None, None), ts, save_fn=_save_flow,
        solver=cfg.flow_solver, what="true gradient flow", labels=labels, **tol))
    preds: dict[str, list] = {}
    for q in range(2, cfg.p + 1):
        state = (f0,) + tuple(ks[r] for r in range(2, q))
        args = (y, ks[q], None if kt is None else kt[q])
        if kt is not None:
            state = state + (ft0,) + tuple(kt[r] for r in range(2, q))
        (f, K2, L, ftest), stats = timed(f"nth_p{q}", lambda: integrate_batched(
            _nth_rhs, state, args, (None, 0, None if kt is None else 0), ts, save_fn=_save, solver=cfg.nth_solver,
            what=f"truncated NTH (p = {q})", labels=labels, **tol))
        if q == 2:
            K2 = jnp.broadcast_to(ks[2][:, None], (B, len(ts)) + ks[2].shape[1:])
        preds[f"p{q}"] = [NTHSolution(p=q, ts=ts, f=f[i], K2=K2[i], loss=L[i], K=None,
                                      f_test=None if kt is None else ftest[i], stats=stats[i]) for i in range(B)]
    kbar = infinite_kernels(cfg, nets[0].depth, X, Xt) if cfg.use_inf else None  # shared by every seed
    results = []
    for i, s in enumerate(seeds):
        flow = FlowSolution(ts=ts, f=ff[i], K2=fK2[i], loss=fL[i], params=None,
                            f_test=None if Xt is None else fft[i], stats=fstats[i])
        pr = {label: sols[i] for label, sols in preds.items()}
        w = dict(wall)
        if cfg.use_dg:
            t = time.perf_counter()
            pr["dg"] = dg_correction({r: ks[r][i] for r in (2, 3, 4)}, f0[i], y, ts, method=cfg.dg_method,
                                     test_kernels=None if kt is None else {r: kt[r][i] for r in (2, 3, 4)},
                                     f0_test=None if Xt is None else ft0[i], rtol=cfg.rtol, atol=cfg.atol,
                                     max_steps=cfg.max_steps, solver=cfg.nth_solver)
            w["dg"] = time.perf_counter() - t
        if cfg.use_inf:
            t = time.perf_counter()
            pr["inf"] = infinite_prediction(cfg, kbar, y, f0[i], None if Xt is None else ft0[i], ts)
            w["inf"] = time.perf_counter() - t
        errs = {label: _errors(pred, flow, None) for label, pred in pr.items()}
        loss_fall = float(flow.loss[0] / flow.loss[-1]) if float(flow.loss[-1]) > 0 else float("inf")
        resolved = dataclasses.asdict(cfg) | {"seed": s, "inf": cfg.use_inf, "width": nets[0].width, "depth": nets[0].depth,
                                               "n": data.n, "d": data.d, "batched_seeds": len(seeds)}
        results.append(SolveResult(config=resolved, data=data, f0=np.asarray(f0[i]),
                                   kernels={r: np.asarray(k[i]) for r, k in ks.items()},
                                   test_kernels=None if kt is None else {r: np.asarray(k[i]) for r, k in kt.items()},
                                   flow=flow, predictions=pr, gd=None, errors=errs, wall_times=w,
                                   loss_fall=loss_fall,
                                   warnings=float32_warnings(errs, nets[0].width) if cfg.dtype == "float32" else []))
    return results
