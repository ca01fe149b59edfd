"""The truncated neural tangent hierarchy (HY Eq. 15; MATH.md section 2).

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

from .errors import ConfigError
from .odeint import integrate


class NTHSolution(eqx.Module):
    """Trajectory of the truncated NTH at level ``p``: f(t) (T, n), K^(2)(t) (T, n, n), loss(t) (T,).

    ``K`` holds every evolved K^(r)(t), r = 2..p-1, with shape (T,) + (n,)*r, when requested.
    """

    p: int = eqx.field(static=True)
    ts: Float[Array, " T"]
    f: Float[Array, "T n"]
    K2: Float[Array, "T n n"]
    loss: Float[Array, " T"]
    K: dict[int, Array] | None
    stats: dict[str, int] = eqx.field(static=True)


def _nth_rhs(t, state, args):
    """HY Eq. 15: state = (f, K^(2), ..., K^(p-1)); args = (y, K^(p)(0))."""
    y, Kp = args
    f, Ks = state[0], state[1:]
    delta = f - y
    Kall = Ks + (Kp,)
    return tuple(-(K @ delta) / f.shape[0] for K in Kall)


def _save_f_K2(t, state, args):
    y, Kp = args
    f, Ks = state[0], state[1:]
    K2 = Ks[0] if Ks else Kp
    return f, K2, 0.5 * jnp.mean((f - y) ** 2)


def _save_all(t, state, args):
    return _save_f_K2(t, state, args), state[1:]


def _check_inputs(kernels: Mapping[int, Array], f0, y, p: int | None) -> tuple[int, Array, Array]:
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
    n = K2.shape[0]
    f0 = jnp.asarray(f0, dtype=K2.dtype)
    y = jnp.asarray(y, dtype=K2.dtype)
    if f0.shape != (n,) or y.shape != (n,):
        raise ConfigError(f"f0 {f0.shape} and y {y.shape} must both have shape ({n},) to match K^(2) {K2.shape}")
    for r in range(2, p + 1):
        if kernels[r].shape != (n,) * r:
            raise ConfigError(f"K^({r}) has shape {kernels[r].shape}; expected {(n,) * r}")
    return int(p), f0, y


def truncated_nth(
    kernels: Mapping[int, Float[Array, "..."]],
    f0: Float[Array, " n"],
    y: Float[Array, " n"],
    ts: Float[Array, " T"],
    *,
    p: int | None = None,
    rtol: float = 1e-10,
    atol: float = 1e-12,
    max_steps: int = 100_000,
    solver: str = "tsit5",
    save_all: bool = False,
    progress: bool = False,
) -> NTHSolution:
    """Solve the truncated NTH at level ``p`` (HY Eq. 15) from t = 0, saving at times ``ts``.

    ``kernels`` maps r -> K^(r)(0) (from :func:`nth.kernels`); K^(p) is frozen, K^(2)..K^(p-1) evolve.
    ``p`` defaults to the highest level available. Diffrax adaptive ``solver`` (default Tsit5) with a PID
    controller on the max norm of the state; ``rtol``, ``atol``, ``max_steps`` as in Diffrax. Returns f(t),
    K^(2)(t) and the loss (1/2n)|f - y|^2 at ``ts``, and every K^(r)(t) when ``save_all``. Solver
    failures raise :class:`~nth.errors.SolverError`.
    """
    p, f0, y = _check_inputs(kernels, f0, y, p)
    Ks = tuple(jnp.asarray(kernels[r], dtype=f0.dtype) for r in range(2, p))
    Kp = jnp.asarray(kernels[p], dtype=f0.dtype)
    ys, stats = integrate(_nth_rhs, (f0,) + Ks, (y, Kp), ts, save_fn=_save_all if save_all else _save_f_K2,
                          rtol=rtol, atol=atol, max_steps=max_steps, solver=solver, progress=progress,
                          what=f"truncated NTH (p = {p})",
                          advice=" At small width a truncated hierarchy can itself diverge over long horizons "
                          "(the evolved K^(2)(t) loses positive definiteness); a larger width or a shorter t_max "
                          "avoids it." if p > 2 else "")
    if save_all:
        (f, K2, loss), Kt = ys
        K = {r: Kt[i] for i, r in enumerate(range(2, p))}
    else:
        f, K2, loss = ys
        K = None
    if p == 2:  # K^(2) is frozen: broadcast it over time
        K2 = jnp.broadcast_to(Kp, (len(ts),) + Kp.shape)
    return NTHSolution(p=p, ts=jnp.asarray(ts, dtype=f0.dtype), f=f, K2=K2, loss=loss, K=K, stats=stats)


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
