"""One way to run a Diffrax solve in nth: adaptive explicit solver, PID controller, readable failures.

Both the truncated NTH (``hierarchy``) and the reference gradient flow (``gradflow``) integrate through
:func:`integrate`. The error norm is the max norm over the whole state pytree (MATH.md section 6: an RMS
norm is dominated by the largest leaf and under-resolves the others). Solver failures (max_steps reached,
non-finite state) raise :class:`~nth.errors.SolverError` instead of returning garbage.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
from jaxtyping import Array, Float, PyTree

from .errors import ConfigError, SolverError

SOLVERS: dict[str, type[diffrax.AbstractSolver]] = {
    "tsit5": diffrax.Tsit5,
    "dopri5": diffrax.Dopri5,
    "dopri8": diffrax.Dopri8,
}


def check_times(ts) -> np.ndarray:
    """Validate the save times: a non-empty, finite, non-decreasing 1-D array starting at t >= 0."""
    ts = np.asarray(ts, dtype=np.float64)
    if ts.ndim != 1 or ts.size == 0:
        raise ConfigError(f"save times must be a non-empty 1-D array; got shape {ts.shape}")
    if not np.isfinite(ts).all() or ts[0] < 0 or (np.diff(ts) < 0).any():
        raise ConfigError(f"save times must be finite, >= 0 and non-decreasing; got {ts[:5]}...")
    if ts[-1] <= 0:
        raise ConfigError(f"the last save time must be > 0; got t_max = {ts[-1]}")
    return ts


def check_tolerances(rtol: float, atol: float, max_steps: int) -> None:
    for name, v in (("rtol", rtol), ("atol", atol)):
        if not (np.isfinite(v) and v > 0):
            raise ConfigError(f"{name} = {v!r} must be a finite positive number (e.g. 1e-10)")
    if not isinstance(max_steps, (int, np.integer)) or max_steps < 1:
        raise ConfigError(f"max_steps = {max_steps!r} must be a positive integer")


@eqx.filter_jit
def _solve(rhs, y0, args, ts, rtol, atol, solver, max_steps, save_fn, progress_meter):
    return diffrax.diffeqsolve(
        diffrax.ODETerm(rhs),
        solver,
        t0=0.0,
        t1=ts[-1],
        dt0=None,
        y0=y0,
        args=args,
        saveat=diffrax.SaveAt(ts=ts, fn=save_fn),
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol, norm=optx.max_norm),
        max_steps=max_steps,
        throw=False,
        progress_meter=progress_meter,
    )


def _check_options(ts, rtol, atol, max_steps, solver) -> np.ndarray:
    ts = check_times(ts)
    check_tolerances(rtol, atol, max_steps)
    if solver not in SOLVERS:
        raise ConfigError(f"solver {solver!r} is not known; accepted: {', '.join(SOLVERS)}")
    return ts


def integrate(
    rhs: Callable[[Any, PyTree, Any], PyTree],
    y0: PyTree,
    args: Any,
    ts: Float[Array, " T"],
    *,
    save_fn: Callable[[Any, PyTree, Any], PyTree],
    rtol: float,
    atol: float,
    max_steps: int,
    solver: str = "tsit5",
    progress: bool = False,
    what: str = "ODE",
    advice: str = "",
) -> tuple[PyTree, dict[str, int]]:
    """Integrate dy/dt = rhs(t, y, args) from t = 0 and return ``save_fn(t, y, args)`` at ``ts``.

    ``rhs`` and ``save_fn`` should be module-level functions and data passed through ``args`` (not closed
    over), so that one compiled solve serves every call with the same shapes (MATH.md section 6).
    """
    ts = _check_options(ts, rtol, atol, max_steps, solver)
    meter = diffrax.TqdmProgressMeter() if progress else diffrax.NoProgressMeter()
    dtype = jax.tree_util.tree_leaves(y0)[0].dtype
    sol = _solve(rhs, y0, args, jnp.asarray(ts, dtype=dtype), rtol, atol, SOLVERS[solver](), int(max_steps),
                 save_fn, meter)
    stats = {k: int(v) for k, v in sol.stats.items() if np.ndim(v) == 0}
    _check_solution(sol.result, sol.ts, sol.ys, stats, ts, rtol, atol, max_steps, what, advice)
    return sol.ys, stats


def _check_solution(result, saved_ts, ys, stats, ts, rtol, atol, max_steps, what, advice) -> None:
    """Raise a readable SolverError for a failed solve (max_steps, non-finite values); else nothing."""
    if result != diffrax.RESULTS.successful:
        msg = diffrax.RESULTS[result]
        saved = np.asarray(saved_ts)
        saved = saved[np.isfinite(saved)]
        reached = float(saved.max()) if saved.size else 0.0
        hint = (f"raise max_steps (now {max_steps}), loosen rtol/atol (now {rtol:g}/{atol:g}), or shorten t_max"
                if result == diffrax.RESULTS.max_steps_reached else
                "check the inputs for extreme values, or tighten rtol/atol")
        raise SolverError(f"{what} solve failed before t = {ts[-1]:g} (last saved t = {reached:g}, "
                          f"{stats.get('num_steps', '?')} steps): {msg.strip()} Hint: {hint}.{advice}")
    bad = [jnp.size(x) - int(jnp.isfinite(x).sum()) for x in jax.tree_util.tree_leaves(ys)]
    if any(bad):
        raise SolverError(f"{what} solve produced {sum(bad)} non-finite value(s) (NaN or inf); the dynamics "
                          "diverged. Check inputs, weights and the time horizon, or tighten rtol/atol." + advice)


def integrate_batched(
    rhs: Callable[[Any, PyTree, Any], PyTree],
    y0: PyTree,
    args: Any,
    args_axes: Any,
    ts: Float[Array, " T"],
    *,
    save_fn: Callable[[Any, PyTree, Any], PyTree],
    rtol: float,
    atol: float,
    max_steps: int,
    solver: str = "tsit5",
    what: str = "ODE",
    advice: str = "",
    labels: list[str] | None = None,
) -> tuple[PyTree, list[dict[str, int]]]:
    """:func:`integrate` for B independent problems at once: ``y0`` has a leading batch axis on every leaf,
    ``args`` on the leaves that ``args_axes`` (a prefix tree of 0 / None, as in ``jax.vmap``) marks 0.

    One ``jax.vmap`` of the solve: every problem keeps its own adaptive step size, and the loop runs until
    the slowest is done. Arrays sharded along the batch axis (``jax.sharding``) run on their devices in
    parallel. Each problem's failure is reported with its ``labels`` entry.
    """
    ts = _check_options(ts, rtol, atol, max_steps, solver)
    dtype = jax.tree_util.tree_leaves(y0)[0].dtype
    tsj = jnp.asarray(ts, dtype=dtype)
    sol = _solve_batched(rhs, y0, args, args_axes, tsj, rtol, atol, SOLVERS[solver](), int(max_steps), save_fn)
    B = jax.tree_util.tree_leaves(y0)[0].shape[0]
    stats = [{k: int(v[i]) for k, v in sol.stats.items() if np.ndim(v) == 1} for i in range(B)]
    for i in range(B):
        pick = lambda x: x[i]  # noqa: E731
        name = what if labels is None else f"{what} [{labels[i]}]"
        _check_solution(jax.tree_util.tree_map(pick, sol.result), sol.ts[i], jax.tree_util.tree_map(pick, sol.ys),
                        stats[i], ts, rtol, atol, max_steps, name, advice)
    return sol.ys, stats


@eqx.filter_jit
def _solve_batched(rhs, y0, args, args_axes, ts, rtol, atol, solver, max_steps, save_fn):
    def one(y, a):
        return _solve.__wrapped__(rhs, y, a, ts, rtol, atol, solver, max_steps, save_fn, diffrax.NoProgressMeter())

    return jax.vmap(one, in_axes=(0, args_axes))(y0, args)

