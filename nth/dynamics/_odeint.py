"""One way to run a Diffrax solve in nth: adaptive explicit solver, PID controller, readable failures.

The truncated NTH, the DG ODE form and the reference gradient flow all integrate through :func:`integrate`,
configured by one :class:`SolverSettings` object (solver, tolerances, step limit, progress meter). The error
norm is the max norm over the whole state pytree (docs/math.md section 6: an RMS norm is dominated by the
largest leaf and under-resolves the others). Solver failures (max_steps reached, non-finite state) raise
:class:`~nth.errors.SolverError` instead of returning garbage. Several independent problems (seeds) can be
solved together (``batch_axes``): one ``jax.vmap`` of the solve, each problem with its own step size.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
from jaxtyping import Array, Float, PyTree

from ..checks import as_real, is_traced
from ..errors import ConfigError, DataError, SolverError

SOLVERS: dict[str, type[diffrax.AbstractSolver]] = {
    "tsit5": diffrax.Tsit5,
    "dopri5": diffrax.Dopri5,
    "dopri8": diffrax.Dopri8,
}


#: Stage vectors (plus state, error estimate and FSAL copies) an explicit Runge-Kutta step keeps alive.
SOLVER_COPIES = {"tsit5": 10, "dopri5": 10, "dopri8": 17}


def check_tolerances(rtol: float, atol: float, max_steps: int) -> None:
    for name, v in (("rtol", rtol), ("atol", atol)):
        if not (isinstance(v, (int, float, np.floating)) and math.isfinite(v) and v > 0):
            raise ConfigError(f"{name} = {v!r} must be a finite positive number (e.g. 1e-10)")
    if not isinstance(max_steps, (int, np.integer)) or isinstance(max_steps, bool) or max_steps < 1:
        raise ConfigError(f"max_steps = {max_steps!r} must be a positive integer")


class SolverSettings(eqx.Module):
    """How an ODE of nth is solved: Diffrax ``solver`` (``"tsit5"``, ``"dopri5"`` or ``"dopri8"``), PID step-size
    control at relative/absolute tolerances ``rtol``/``atol`` on the max norm of the state, at most
    ``max_steps`` steps, and a tqdm progress meter when ``progress``. Checked when made."""

    solver: str = "tsit5"
    rtol: float = 1e-10
    atol: float = 1e-12
    max_steps: int = 100_000
    progress: bool = False

    def __check_init__(self):
        if self.solver not in SOLVERS:
            raise ConfigError(f"solver {self.solver!r} is not known; accepted: {', '.join(SOLVERS)}")
        check_tolerances(self.rtol, self.atol, self.max_steps)

    def describe(self) -> str:
        return f"{self.solver}, rtol {self.rtol:g}, atol {self.atol:g}"


#: The reference gradient flow's default: an 8th-order solver suits the tight tolerances a yardstick needs.
FLOW_SOLVER = SolverSettings(solver="dopri8")
NTH_SOLVER = SolverSettings(solver="tsit5")


def check_times(ts, where: str = "") -> np.ndarray:
    """Validate the save times ``ts``: a non-empty, real, finite, non-decreasing 1-D array starting at t >= 0 and
    ending after 0. A ConfigError names ``where`` (the calling function) and 'ts'; returns them as float64."""
    at = f"{where}: " if where else ""
    if is_traced(ts):
        raise ConfigError(f"{at}'ts' (the save times) must be concrete: the solve is adaptive and runs outside "
                          "jax.jit; pass them as a NumPy or JAX array, not a traced value")
    try:
        ts = as_real("ts", ts, where=where, what="save times")
    except DataError as e:
        raise ConfigError(str(e)) from None
    ts = np.asarray(ts, dtype=np.float64)
    if ts.ndim != 1 or ts.size == 0:
        raise ConfigError(f"{at}'ts' (the save times) must be a non-empty 1-D array; got shape {ts.shape}")
    bad = ~np.isfinite(ts)
    if bad.any():
        i = int(np.argmax(bad))
        raise ConfigError(f"{at}'ts' has {int(bad.sum())} non-finite value(s), first at index ({i},) ({ts[i]}); "
                          "save times must be finite")
    if ts[0] < 0:
        raise ConfigError(f"{at}'ts' must start at t >= 0 (the solve starts at t = 0); got ts[0] = {ts[0]:g}")
    down = np.diff(ts) < 0
    if down.any():
        i = int(np.argmax(down)) + 1
        raise ConfigError(f"{at}'ts' must be non-decreasing; got ts[{i}] = {ts[i]:g} < ts[{i - 1}] = {ts[i - 1]:g}")
    if ts[-1] <= 0:
        raise ConfigError(f"{at}the last save time must be > 0; got t_max = {ts[-1]}")
    return ts


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


@eqx.filter_jit
def _solve_one(rhs, y0, args, ts, rtol, atol, solver, max_steps, save_fn, progress_meter):
    return _solve(rhs, y0, args, ts, rtol, atol, solver, max_steps, save_fn, progress_meter)


@eqx.filter_jit
def _solve_many(rhs, y0, args, args_axes, ts, rtol, atol, solver, max_steps, save_fn):
    def one(y, a):
        return _solve(rhs, y, a, ts, rtol, atol, solver, max_steps, save_fn, diffrax.NoProgressMeter())

    return eqx.filter_vmap(one, in_axes=(0, args_axes))(y0, args)


def integrate(
    rhs: Callable[[Any, PyTree, Any], PyTree],
    y0: PyTree,
    args: Any,
    ts: Float[Array, " T"],
    settings: SolverSettings,
    *,
    save_fn: Callable[[Any, PyTree, Any], PyTree],
    what: str = "ODE",
    advice: str = "",
    batch_axes: Any = None,
    labels: list[str] | None = None,
) -> tuple[PyTree, list[dict[str, int]] | dict[str, int]]:
    """Integrate dy/dt = rhs(t, y, args) from t = 0 and return ``save_fn(t, y, args)`` at ``ts``, and solver stats.

    ``rhs`` and ``save_fn`` should be module-level functions and data passed through ``args`` (not closed
    over), so that one compiled solve serves every call with the same shapes (docs/math.md section 6).

    With ``batch_axes`` (a prefix tree of 0 / None over ``args``, as in ``jax.vmap``), ``y0`` carries a leading
    axis of B independent problems on every leaf and so do the results; stats are then a list of B dicts and
    each failure names its ``labels`` entry. A batch of one is solved unbatched (same numbers, progress meter).
    """
    ts = check_times(ts)
    dtype = jax.tree_util.tree_leaves(y0)[0].dtype
    tsj = jnp.asarray(ts, dtype=dtype)
    opts = (settings.rtol, settings.atol, SOLVERS[settings.solver](), int(settings.max_steps), save_fn)
    if batch_axes is None:
        meter = diffrax.TqdmProgressMeter() if settings.progress else diffrax.NoProgressMeter()
        sol = _solve_one(rhs, y0, args, tsj, *opts, meter)
        stats = {k: int(v) for k, v in sol.stats.items() if np.ndim(v) == 0}
        _check_solution(sol.result, sol.ts, sol.ys, stats, ts, settings, what, advice)
        return sol.ys, stats
    B = jax.tree_util.tree_leaves(y0)[0].shape[0]
    if B == 1:
        first = lambda x: x[0]  # noqa: E731
        one_args = jax.tree_util.tree_map(lambda ax, a: a if ax is None else jax.tree_util.tree_map(first, a),
                                          batch_axes, args, is_leaf=lambda x: x is None)
        ys, stats = integrate(rhs, jax.tree_util.tree_map(first, y0), one_args, ts, settings, save_fn=save_fn,
                              what=what if labels is None else f"{what} [{labels[0]}]", advice=advice)
        return jax.tree_util.tree_map(lambda x: x[None], ys), [stats]
    sol = _solve_many(rhs, y0, args, batch_axes, tsj, *opts)
    stats = [{k: int(v[i]) for k, v in sol.stats.items() if np.ndim(v) == 1} for i in range(B)]
    for i in range(B):
        pick = lambda x: x[i]  # noqa: E731
        name = what if labels is None else f"{what} [{labels[i]}]"
        _check_solution(jax.tree_util.tree_map(pick, sol.result), sol.ts[i], jax.tree_util.tree_map(pick, sol.ys),
                        stats[i], ts, settings, name, advice)
    return sol.ys, stats


def _check_solution(result, saved_ts, ys, stats, ts, settings: SolverSettings, what, advice) -> None:
    """Raise a readable SolverError for a failed solve (max_steps, non-finite values); else nothing."""
    if result != diffrax.RESULTS.successful:
        msg = diffrax.RESULTS[result]
        saved = np.asarray(saved_ts)
        saved = saved[np.isfinite(saved)]
        reached = float(saved.max()) if saved.size else 0.0
        hint = (f"raise max_steps (now {settings.max_steps}), loosen rtol/atol (now {settings.rtol:g}/"
                f"{settings.atol:g}), or shorten t_max"
                if result == diffrax.RESULTS.max_steps_reached else
                "check the inputs for extreme values, or tighten rtol/atol")
        raise SolverError(f"{what} solve failed before t = {ts[-1]:g} (last saved t = {reached:g}, "
                          f"{stats.get('num_steps', '?')} steps): {msg.strip()} Hint: {hint}.{advice}")
    bad = [jnp.size(x) - int(jnp.isfinite(x).sum()) for x in jax.tree_util.tree_leaves(ys)]
    if any(bad):
        raise SolverError(f"{what} solve produced {sum(bad)} non-finite value(s) (NaN or inf); the dynamics "
                          "diverged. Check inputs, weights and the time horizon, or tighten rtol/atol." + advice)
