"""The truncated neural tangent hierarchy (HY Eq. 15; docs/math.md section 2).

With residual Delta = f - y and the 1/n-averaged loss, the exact hierarchy reads

    d/dt f_a            = -(1/n) sum_b K^(2)(a, b) Delta_b
    d/dt K^(r)(a1..ar)  = -(1/n) sum_b K^(r+1)(a1..ar, b) Delta_b        (r >= 2)

and the truncation at level p keeps r = 2..p-1 and freezes K^(p) at its t = 0 value. p = 2 is the
frozen-NTK (linearized) dynamics Delta(t) = expm(-t K^(2)(0)/n) Delta(0).
"""

from __future__ import annotations

from collections.abc import Mapping

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ..errors import ConfigError
from ..kernel import KernelOperator
from ._odeint import NTH_SOLVER, SolverSettings, integrate


class NTHSolution(eqx.Module):
    """Trajectory of the truncated NTH at level ``p``: f(t) (T, n), K^(2)(t) (T, n, n), loss(t) (T,).

    ``K`` holds every evolved K^(r)(t), r = 2..p-1, with shape (T,) + (n,)*r, when requested; ``f_test``
    (T, k) the predicted outputs at test inputs (HY Eq. 22), when test kernels were given.
    """

    p: int = eqx.field(static=True)
    ts: Float[Array, " T"]
    f: Float[Array, "T n"]
    K2: Float[Array, "T n n"]
    loss: Float[Array, " T"]
    K: dict[int, Array] | None
    f_test: Float[Array, "T k"] | None
    stats: dict[str, int] | list[dict[str, int]] = eqx.field(static=True)


def _split(state, args):
    """state = (f, K^(2)..K^(p-1)) [+ (f_test, K^(2)(x,.)..K^(p-1)(x,.))]; args = (y, K^(p), K^(p)(x,.) | None)."""
    y, Kp, Kp_test = args
    half = len(state) if Kp_test is None else len(state) // 2
    return y, (state[:half], Kp), (None if Kp_test is None else (state[half:], Kp_test))


def contract(K, delta: Array) -> Array:
    """K[Delta]: sum over the last slot, for a dense K^(r) or a matrix-free :class:`~nth.KernelOperator`."""
    return K(delta) if isinstance(K, KernelOperator) else K @ delta


def _nth_rhs(t, state, args):
    """HY Eq. 15 (and Eq. 22 for test inputs): d/dt K^(r) = -(1/n) K^(r+1)[Delta], K^(p) frozen."""
    y, (train, Kp), test = _split(state, args)
    delta = train[0] - y
    n = delta.shape[0]
    out = tuple(-contract(K, delta) / n for K in train[1:] + (Kp,))
    if test is not None:
        out = out + tuple(-contract(K, delta) / n for K in test[0][1:] + (test[1],))
    return out


def _save(t, state, args):
    y, (train, Kp), test = _split(state, args)
    f = train[0]
    K2 = train[1] if len(train) > 1 else Kp
    return f, K2, 0.5 * jnp.mean((f - y) ** 2), (f if test is None else test[0][0])


def _save_all(t, state, args):
    y, (train, Kp), test = _split(state, args)
    return _save(t, state, args), train[1:]


def _check_inputs(kernels: Mapping[int, Array], f0, y, p: int | None, stacked: bool = False
                  ) -> tuple[int, Array, Array]:
    if not kernels or 2 not in kernels:
        raise ConfigError("kernels must map r -> K^(r) and include r = 2 (as returned by nth.kernels)")
    avail = max(kernels)
    p = avail if p is None else p
    if not isinstance(p, (int, np.integer)) or p < 2:
        raise ConfigError(f"p = {p!r} must be an integer >= 2")
    if p > avail or any(r not in kernels for r in range(2, p + 1)):
        raise ConfigError(f"level p = {p} needs K^(2)..K^({p}); kernels hold r = {sorted(kernels)}. "
                          f"Compute them with nth.kernels(net, X, p={p}).")
    K2 = jnp.asarray(kernels[2])
    lead = K2.shape[:1] if stacked else ()
    n = K2.shape[-1]
    f0 = jnp.asarray(f0, dtype=K2.dtype)
    y = jnp.asarray(y, dtype=K2.dtype)
    if f0.shape != lead + (n,) or y.shape != (n,):
        raise ConfigError(f"f0 {f0.shape} and y {y.shape} must have shapes {lead + (n,)} and ({n},) to match "
                          f"K^(2) {K2.shape}")
    for r in range(2, p + 1):
        if kernels[r].shape != lead + (n,) * r:
            raise ConfigError(f"K^({r}) has shape {kernels[r].shape}; expected {lead + (n,) * r}")
        if isinstance(kernels[r], KernelOperator) and r != p:
            raise ConfigError(f"K^({r}) is matrix-free but only the top level (p = {p}) can be: a lower level "
                              "evolves and needs its dense value")
    return int(p), f0, y


def _top(K, dtype):
    return K if isinstance(K, KernelOperator) else jnp.asarray(K, dtype=dtype)


def _check_test_inputs(test_kernels, f0_test, p: int, n: int, dtype, stacked: bool = False
                       ) -> tuple[tuple[Array, ...], Array]:
    if test_kernels is None or f0_test is None:
        raise ConfigError("test-point predictions need both test_kernels (nth.kernels(..., first=X_test)) and "
                          "f0_test (the network's outputs at X_test)")
    f0_test = jnp.asarray(f0_test, dtype=dtype)
    lead = f0_test.shape[:1] if stacked else ()
    k = f0_test.shape[-1] if f0_test.ndim == 1 + stacked else -1
    for r in range(2, p + 1):
        want = lead + (k,) + (n,) * (r - 1)
        if r not in test_kernels or test_kernels[r].shape != want:
            got = None if r not in test_kernels else test_kernels[r].shape
            raise ConfigError(f"test kernel K^({r})(x, X^{r - 1}) has shape {got}; expected {want}"
                              f" for f0_test of shape {f0_test.shape}")
    return tuple(_top(test_kernels[r], dtype) for r in range(2, p + 1)), f0_test


def truncated_nth(
    kernels: Mapping[int, Float[Array, "..."]],
    f0: Float[Array, " n"],
    y: Float[Array, " n"],
    ts: Float[Array, " T"],
    *,
    p: int | None = None,
    test_kernels: Mapping[int, Float[Array, "..."]] | None = None,
    f0_test: Float[Array, " k"] | None = None,
    solver: SolverSettings = NTH_SOLVER,
    save_all: bool = False,
    stacked: bool = False,
    labels: list[str] | None = None,
) -> NTHSolution:
    """Solve the truncated NTH at level ``p`` (HY Eq. 15) from t = 0, saving at times ``ts``.

    ``kernels`` maps r -> K^(r)(0) (from :func:`nth.kernels`); K^(p) is frozen, K^(2)..K^(p-1) evolve. K^(p) may
    be a matrix-free :class:`~nth.KernelOperator` (``nth.kernels(..., matrix_free=True)``): it is then never
    stored and contracted with the residual by a JVP at the initial weights in every right-hand side.
    ``p`` defaults to the highest level available. With ``test_kernels`` (r -> K^(r)(x, X^(r-1)) at test
    inputs x, from ``nth.kernels(..., first=X_test)``) and ``f0_test``, the test outputs are evolved jointly,
    driven by the training residuals (HY Eq. 22). Diffrax adaptive ``solver`` (default Tsit5) with a PID
    controller on the max norm of the state (``solver``: :class:`~nth.SolverSettings`, default Tsit5 at rtol
    1e-10, atol 1e-12). Returns f(t), K^(2)(t) and the loss (1/2n)|f - y|^2 at ``ts``, and every K^(r)(t)
    when ``save_all``. With ``stacked`` every kernel and f0 carry a leading seed axis (y, ts shared) and the
    seeds are solved together. Solver failures raise :class:`~nth.errors.SolverError`.
    """
    p, f0, y = _check_inputs(kernels, f0, y, p, stacked)
    state = (f0,) + tuple(jnp.asarray(kernels[r], dtype=f0.dtype) for r in range(2, p))
    Kp = _top(kernels[p], f0.dtype)
    Kp_test = None
    if test_kernels is not None or f0_test is not None:
        Kt, ft0 = _check_test_inputs(test_kernels, f0_test, p, y.shape[0], f0.dtype, stacked)
        state, Kp_test = state + (ft0,) + Kt[:-1], Kt[-1]
    ys, stats = integrate(_nth_rhs, state, (y, Kp, Kp_test), ts, solver, save_fn=_save_all if save_all else _save,
                          batch_axes=(None, 0, None if Kp_test is None else 0) if stacked else None, labels=labels,
                          what=f"truncated NTH (p = {p})",
                          advice=" At small width a truncated hierarchy can itself diverge over long horizons "
                          "(the evolved K^(2)(t) loses positive definiteness); a larger width or a shorter t_max "
                          "avoids it." if p > 2 else "")
    (f, K2, loss, f_test), Kt = ys if save_all else (ys, None)
    K = None if Kt is None else {r: Kt[i] for i, r in enumerate(range(2, p))}
    if p == 2:  # K^(2) is frozen: broadcast it over time
        K2 = jnp.broadcast_to(Kp[:, None] if stacked else Kp, Kp.shape[:stacked] + (len(ts),) + Kp.shape[stacked:])
    return NTHSolution(p=p, ts=jnp.asarray(ts, dtype=f0.dtype), f=f, K2=K2, loss=loss, K=K,
                       f_test=None if Kp_test is None else f_test, stats=stats)


def _hy_p3_rhs(t, state, args):
    delta, R = state
    K, K3 = args
    n = delta.shape[0]
    return -(K @ delta) / n + ((K3 @ R) @ delta) / n**2, delta


def _save_delta(t, state, args):
    return (state[0],)


def hy_p3_reduced(
    kernels: Mapping[int, Float[Array, "..."]],
    f0: Float[Array, " n"],
    y: Float[Array, " n"],
    ts: Float[Array, " T"],
    *,
    solver: SolverSettings = NTH_SOLVER,
) -> Float[Array, "T n"]:
    """The p = 3 truncation in closed variables (HY Section 4 item 3; docs/math.md section 2): f(t) at ``ts``.

    With R(t) = int_0^t Delta, K^(2)(t) = K^(2)(0) - (1/n) K^(3)(0)[R], hence
        d Delta_a/dt = -(1/n) sum_b K^(2)(0)(a,b) Delta_b + (1/n^2) sum_{b,c} K^(3)(0)(a,b,c) Delta_b R_c,
        dR/dt = Delta.
    An n + n dimensional system: an independent check of :func:`truncated_nth` at p = 3.
    """
    _, f0, y = _check_inputs(kernels, f0, y, 3)
    args = (jnp.asarray(kernels[2], dtype=f0.dtype), jnp.asarray(kernels[3], dtype=f0.dtype))
    (delta,), _ = integrate(_hy_p3_rhs, (f0 - y, jnp.zeros_like(f0)), args, ts, solver, save_fn=_save_delta,
                            what="HY p = 3 reduced system")
    return delta + y[None, :]


def linearized_closed_form(K2: Float[Array, "n n"], f0: Float[Array, " n"], y: Float[Array, " n"],
                           ts: Float[Array, " T"]) -> Float[Array, "T n"]:
    """p = 2 in closed form: f(t) = y + expm(-t K^(2)(0)/n) (f0 - y), by the eigendecomposition of K/n."""
    K2 = np.asarray(K2, dtype=np.float64)
    n = K2.shape[0]
    lam, V = np.linalg.eigh((K2 + K2.T) / (2 * n))
    c = V.T @ (np.asarray(f0) - np.asarray(y))
    ts = np.asarray(ts, dtype=np.float64)
    return np.asarray(y)[None, :] + (np.exp(-np.outer(ts, lam)) * c[None, :]) @ V.T


def default_horizon(K2: Float[Array, "n n"], f0: Float[Array, " n"], y: Float[Array, " n"],
                    fall: float = 1000.0, t_cap: float = 1e6) -> float:
    """Time at which the frozen-NTK (p = 2) loss has fallen by the factor ``fall`` from its t = 0 value.

    Used as the default horizon so that training has visibly converged. Capped at ``t_cap`` (for residuals
    that live in directions of tiny eigenvalues); returns the cap if the fall is never reached.
    """
    K2 = np.asarray(K2, dtype=np.float64)
    n = K2.shape[0]
    lam, V = np.linalg.eigh((K2 + K2.T) / (2 * n))
    c2 = (V.T @ (np.asarray(f0) - np.asarray(y))) ** 2
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
