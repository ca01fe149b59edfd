"""The truncated neural tangent hierarchy (HY Eq. 15; docs/math.md sections 2 and 10).

With the loss L = (1/n) sum_a l(f_a, y_a) and its gradient in function space chi_s = d l / d f_s (one entry
per sample s = (a, i); mse: the residual f - y), the exact hierarchy reads

    d/dt f_s            = -(1/n) sum_s' K^(2)(s, s') chi_s'
    d/dt K^(r)(s1..sr)  = -(1/n) sum_s' K^(r+1)(s1..sr, s') chi_s'        (r >= 2)

and the truncation at level p keeps r = 2..p-1 and freezes K^(p) at its t = 0 value. p = 2 is the
frozen-NTK dynamics; for mse it is linear, Delta(t) = expm(-t K^(2)(0)/n) Delta(0) (the closed form below).
"""

from __future__ import annotations

from collections.abc import Mapping

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ..errors import ConfigError
from ..kernel import KernelOperator
from ..losses import MSE, AbstractLoss, loss_from_spec
from ._odeint import NTH_SOLVER, SolverSettings, check_times, integrate
from ._problem import Problem, check_problem


class NTHSolution(eqx.Module):
    """Trajectory of the truncated NTH at level ``p``: f(t) (T, n) or (T, n, k) (the model's output shape),
    K^(2)(t) (T, N, N) over the N = n k samples, loss(t) (T,).

    ``K`` holds every evolved K^(r)(t), r = 2..p-1, with shape (T,) + (N,)*r, when requested; ``f_test``
    (T, n_test[, k]) the predicted outputs at test inputs (HY Eq. 22), when test kernels were given.
    """

    p: int = eqx.field(static=True)
    ts: Float[Array, " T"]
    f: Float[Array, "T n *k"]
    K2: Float[Array, "T N N"]
    loss: Float[Array, " T"]
    K: dict[int, Array] | None
    f_test: Float[Array, "T n_test *k"] | None
    stats: dict[str, int] | list[dict[str, int]] = eqx.field(static=True)


def _split(state, args):
    """state = (f, K^(2)..K^(p-1)) [+ (f_test, K^(2)(x,.)..K^(p-1)(x,.))]; args = (objective, K^(p), K^(p)(x,.))."""
    objective, Kp, Kp_test = args
    half = len(state) if Kp_test is None else len(state) // 2
    return objective, (state[:half], Kp), (None if Kp_test is None else (state[half:], Kp_test))


def contract(K, v: Array) -> Array:
    """K[v]: sum over the last slot, for a dense K^(r) or a matrix-free :class:`~nth.KernelOperator`."""
    return K(v) if isinstance(K, KernelOperator) else K @ v


def _nth_rhs(t, state, args):
    """HY Eq. 15 with the loss gradient chi for the residual (docs/math.md section 10), and Eq. 22 for test
    inputs: d/dt K^(r) = -(1/n) K^(r+1)[chi], K^(p) frozen."""
    objective, (train, Kp), test = _split(state, args)
    chi = objective.chi(train[0])
    n = objective.y.shape[0]
    out = tuple(-contract(K, chi) / n for K in train[1:] + (Kp,))
    if test is not None:
        out = out + tuple(-contract(K, chi) / n for K in test[0][1:] + (test[1],))
    return out


def _save(t, state, args):
    objective, (train, Kp), test = _split(state, args)
    f = train[0]
    K2 = train[1] if len(train) > 1 else Kp
    return f, K2, objective.value(f), (f if test is None else test[0][0])


def _save_all(t, state, args):
    objective, (train, Kp), test = _split(state, args)
    return _save(t, state, args), train[1:]


def _levels(kernels, p, where: str) -> int:
    """p checked against the kernels given: an integer >= 2 (default: the highest level given), every K^(2)..K^(p)
    present."""
    if not isinstance(kernels, Mapping) or 2 not in kernels:
        got = sorted(kernels) if isinstance(kernels, Mapping) else type(kernels).__name__
        raise ConfigError(f"{where}: 'kernels' must map r -> K^(r) and include r = 2 (as returned by nth.kernels); "
                          f"got {got}")
    avail = max(kernels)
    p = avail if p is None else p
    if not isinstance(p, (int, np.integer)) or isinstance(p, bool) or p < 2:
        raise ConfigError(f"{where}: p = {p!r} must be an integer >= 2")
    if p > avail or any(r not in kernels for r in range(2, p + 1)):
        raise ConfigError(f"{where}: level p = {p} needs K^(2)..K^({p}); kernels hold r = {sorted(kernels)}. "
                          f"Compute them with nth.kernels(net, X, p={p}).")
    return int(p)


def truncated_nth(
    kernels: Mapping[int, Float[Array, "..."]],
    f0: Float[Array, "n *k"],
    y: Array,
    ts: Float[Array, " T"],
    *,
    p: int | None = None,
    loss: AbstractLoss | str = MSE(),
    test_kernels: Mapping[int, Float[Array, "..."]] | None = None,
    f0_test: Float[Array, "n_test *k"] | None = None,
    solver: SolverSettings = NTH_SOLVER,
    save_all: bool = False,
    stacked: bool = False,
    labels: list[str] | None = None,
) -> NTHSolution:
    """Solve the truncated NTH at level ``p`` (HY Eq. 15; docs/math.md sections 2 and 10) from t = 0, saving at
    times ``ts``.

    ``kernels`` maps r -> K^(r)(0) over samples (from :func:`nth.kernels`); K^(p) is frozen, K^(2)..K^(p-1)
    evolve, each driven by the loss gradient chi in function space: d/dt K^(r) = -(1/n) K^(r+1)[chi]. ``loss``
    (default mse, chi = f - y) is a :class:`~nth.losses.AbstractLoss` or its name (``"cross-entropy"``, ...);
    ``f0`` has the model's output shape, (n,) or (n, k), and ``y`` the loss's targets (integer labels for
    cross-entropy). K^(p) may be a matrix-free :class:`~nth.KernelOperator` (``nth.kernels(...,
    matrix_free=True)``): it is then never stored and contracted with chi by a JVP at the initial weights in
    every right-hand side. ``p`` defaults to the highest level available. With ``test_kernels`` (r -> K^(r)(x,
    X^(r-1)) at test inputs x, from ``nth.kernels(..., first=X_test)``) and ``f0_test``, the test outputs are
    evolved jointly, driven by the training chi (HY Eq. 22). Diffrax adaptive ``solver`` (default Tsit5) with a
    PID controller on the max norm of the state (``solver``: :class:`~nth.SolverSettings`, default Tsit5 at rtol
    1e-10, atol 1e-12). Returns f(t), K^(2)(t) and the training loss at ``ts``, and every K^(r)(t) when
    ``save_all``. With ``stacked`` every kernel and f0 carry a leading seed axis (y, ts shared) and the seeds are
    solved together. Solver failures raise :class:`~nth.errors.SolverError`.
    """
    where = "truncated_nth"
    ts = check_times(ts, where)
    p = _levels(kernels, p, where)
    prob = check_problem(kernels, f0, y, levels=tuple(range(2, p + 1)), where=where, loss=loss,
                         test_kernels=test_kernels, f0_test=f0_test, stacked=stacked, matrix_free_top=True)
    lead = prob.f0.shape[:1] if stacked else ()
    if labels is not None and stacked and len(labels) != lead[0]:
        raise ConfigError(f"{where}: 'labels' has {len(labels)} entries; expected one per seed (B = {lead[0]})")
    state = (prob.f0,) + tuple(prob.kernels[r] for r in range(2, p))
    Kp = prob.kernels[p]
    Kp_test = None
    if prob.f0_test is not None:
        state, Kp_test = state + (prob.f0_test,) + tuple(prob.test_kernels[r] for r in range(2, p)), \
            prob.test_kernels[p]
    ys, stats = integrate(_nth_rhs, state, (prob.objective, Kp, Kp_test), ts, solver,
                          save_fn=_save_all if save_all else _save,
                          batch_axes=(None, 0, None if Kp_test is None else 0) if stacked else None, labels=labels,
                          what=f"truncated NTH (p = {p})",
                          advice=" At small width a truncated hierarchy can itself diverge over long horizons "
                          "(the evolved K^(2)(t) loses positive definiteness); a larger width or a shorter t_max "
                          "avoids it." if p > 2 else "")
    (f, K2, L, f_test), Kt = ys if save_all else (ys, None)
    K = None if Kt is None else {r: Kt[i] for i, r in enumerate(range(2, p))}
    if p == 2:  # K^(2) is frozen: broadcast it over time
        K2 = jnp.broadcast_to(Kp[:, None] if stacked else Kp, Kp.shape[:stacked] + (len(ts),) + Kp.shape[stacked:])
    return NTHSolution(p=p, ts=jnp.asarray(ts, dtype=prob.f0.dtype), f=prob.shaped(f), K2=K2, loss=L, K=K,
                       f_test=None if Kp_test is None else prob.shaped(f_test, prob.n_test), stats=stats)


def _hy_p3_rhs(t, state, args):
    f, R = state
    objective, K, K3 = args
    chi = objective.chi(f)
    n = objective.y.shape[0]
    return -(K @ chi) / n + ((K3 @ R) @ chi) / n**2, chi


def _save_f(t, state, args):
    return (state[0],)


def hy_p3_reduced(
    kernels: Mapping[int, Float[Array, "..."]],
    f0: Float[Array, "n *k"],
    y: Array,
    ts: Float[Array, " T"],
    *,
    loss: AbstractLoss | str = MSE(),
    solver: SolverSettings = NTH_SOLVER,
) -> Float[Array, "T n *k"]:
    """The p = 3 truncation in closed variables (HY Section 4 item 3; docs/math.md sections 2 and 10): f(t) at
    ``ts``, in f0's shape.

    With R(t) = int_0^t chi, K^(2)(t) = K^(2)(0) - (1/n) K^(3)(0)[R], hence
        d f_s/dt = -(1/n) sum_s' K^(2)(0)(s,s') chi_s' + (1/n^2) sum_{s',c} K^(3)(0)(s,s',c) chi_s' R_c,
        dR/dt = chi
    (chi = f - y for mse). An N + N dimensional system: an independent check of :func:`truncated_nth` at p = 3.
    """
    where = "hy_p3_reduced"
    ts = check_times(ts, where)
    prob = check_problem(kernels, f0, y, levels=(2, 3), where=where, loss=loss,
                         dense_reason="the reduced system needs dense K^(2) and K^(3)")
    args = (prob.objective, prob.kernels[2], prob.kernels[3])
    (f,), _ = integrate(_hy_p3_rhs, (prob.f0, jnp.zeros_like(prob.f0)), args, ts, solver, save_fn=_save_f,
                        what="HY p = 3 reduced system")
    return prob.shaped(f)


def linearized_closed_form(K2: Float[Array, "N N"], f0: Float[Array, "n *k"], y: Float[Array, "n *k"],
                           ts: Float[Array, " T"]) -> Float[Array, "T n *k"]:
    """p = 2 for the mse loss in closed form: f(t) = y + expm(-t K^(2)(0)/n) (f0 - y), by the eigendecomposition of
    K/n (n inputs; K^(2) over their samples, f0 and y of the model's output shape). Other losses have no closed
    form (docs/math.md section 10): :func:`truncated_nth` with ``p=2`` integrates them."""
    ts = check_times(ts, "linearized_closed_form")
    prob = check_problem({2: K2}, f0, y, levels=(2,), where="linearized_closed_form")
    K2 = np.asarray(prob.kernels[2], dtype=np.float64)
    y = np.asarray(prob.y, dtype=np.float64).reshape(-1)
    lam, V = np.linalg.eigh((K2 + K2.T) / (2 * prob.n))
    c = V.T @ (np.asarray(prob.f0, dtype=np.float64) - y)
    return prob.shaped(y[None] + (np.exp(-np.outer(ts, lam)) * c[None, :]) @ V.T)


def default_horizon(K2: Float[Array, "N N"], f0: Float[Array, "n *k"], y: Array, fall: float = 1000.0,
                    t_cap: float = 1e6, *, loss: AbstractLoss | str = MSE()) -> float:
    """Time at which the frozen-NTK (p = 2) training loss has fallen by the factor ``fall`` from its t = 0 value
    (docs/math.md sections 2 and 10).

    Used as the default horizon so that training has visibly converged. For mse the p = 2 residual is a sum of
    decaying eigenmodes and the time is found by bisection to machine precision (the fast path); any other
    loss has no closed form (cross-entropy on separable data never reaches a fixed point, its loss falls like
    1/t), so the p = 2 ODE is integrated over horizons growing 4-fold until the loss has fallen ``fall``-fold,
    and the time is interpolated in log-loss between the two saved times around the crossing. Capped at
    ``t_cap`` (for residuals that live in directions of tiny eigenvalues); returns the cap if the fall is never
    reached.
    """
    where = "default_horizon"
    for name, v, lo in (("fall", fall, 1.0), ("t_cap", t_cap, 0.0)):
        if not (isinstance(v, (int, float, np.floating)) and np.isfinite(v) and v > lo):
            raise ConfigError(f"{where}: {name} = {v!r} must be a finite number > {lo:g}")
    prob = check_problem({2: K2}, f0, y, levels=(2,), where=where, loss=loss)
    if not prob.is_mse:
        return _fall_time(prob, fall, t_cap)
    K2 = np.asarray(prob.kernels[2], dtype=np.float64)
    lam, V = np.linalg.eigh((K2 + K2.T) / (2 * prob.n))
    c2 = (V.T @ (np.asarray(prob.f0, dtype=np.float64) - np.asarray(prob.y, dtype=np.float64).reshape(-1))) ** 2
    lam = np.clip(lam, 0.0, None)
    total = c2.sum()
    if total == 0:
        return 1.0

    def ratio(t):
        return total / max(np.sum(c2 * np.exp(-2 * lam * t)), 1e-300)

    lo, hi = 0.0, 1.0
    while ratio(hi) < fall and hi < t_cap:
        lo, hi = hi, hi * 2
    if ratio(hi) < fall:
        return float(t_cap)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if ratio(mid) < fall else (lo, mid)
    return float(hi)


#: Saved times per trial horizon of :func:`default_horizon` for a general loss.
_HORIZON_TIMES = 65


def _fall_time(prob: Problem, fall: float, t_cap: float) -> float:
    """:func:`default_horizon` for a loss without a closed form: integrate p = 2 (see there)."""
    L0 = float(prob.objective.value(prob.f0))
    if not L0 > 0:
        raise ConfigError(f"default_horizon: the {prob.loss.describe()} loss is {L0:g} at t = 0; a fall factor needs "
                          "a positive loss (give the horizon instead)")
    hi = min(1.0, t_cap)
    f0, y = prob.shaped(prob.f0), prob.y
    while True:
        ts = np.linspace(0.0, hi, _HORIZON_TIMES)
        L = np.asarray(truncated_nth({2: prob.kernels[2]}, f0, y, ts, p=2, loss=prob.loss).loss, dtype=np.float64)
        target = np.log(L[0] / fall)
        logL = np.log(np.maximum(L, 1e-300))
        below = np.flatnonzero(logL <= target)
        if below.size:
            i = int(below[0])
            w = (logL[i - 1] - target) / (logL[i - 1] - logL[i])
            return float(ts[i - 1] + w * (ts[i] - ts[i - 1]))
        if hi >= t_cap:
            return float(t_cap)
        hi = min(4 * hi, t_cap)
