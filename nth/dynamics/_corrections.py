"""Dyer & Gur-Ari's first-order 1/width corrections to the frozen-NTK dynamics (docs/math.md section 4).

In our convention (loss averaged over n, DG's Theta = K^(2)/n), with K = K^(2)(0), K3 = K^(3)(0),
K4 = K^(4)(0) and Delta0(t) = expm(-tK/n) Delta(0):

    Theta1(t) = -(1/n)   int_0^t sum_b K3(.,.,b) Delta0_b(t') dt'
              + (1/n^2) int_0^t dt' int_0^t' dt'' sum_{b,c} K4(.,.,b,c) Delta0_b(t') Delta0_c(t'')   (DG Eq. 11)
    Delta(t)  = Delta0(t) - (1/n) expm(-tK/n) int_0^t expm(t'K/n) Theta1(t') Delta0(t') dt'        (DG Eq. 12)

so that K^(2)(t) ~ K + Theta1(t) and f(t) ~ y + Delta(t) to O(1/m). Two independent implementations:

* ``method="closed"``: sums of exponentials in the eigenbasis of K/n (DG Eq. 101 for Theta1; the same
  algebra carried through Eq. 12 for Delta and through HY Eq. 22 for test points), in NumPy float64;
* ``method="ode"``: the equivalent linear system for (Delta0, R0 = int Delta0, Theta1, Delta1) integrated
  with Diffrax:  Delta0' = -K Delta0/n,  R0' = Delta0,  Theta1' = -K3[Delta0]/n + K4[Delta0, R0]/n^2,
  Delta1' = -K Delta1/n - Theta1 Delta0/n.

The late-time kernel K + Theta1(inf) is DG Eq. 104; at late times Delta(t) -> expm(-t (K + Theta1(inf))/n)
Delta(0) (DG Eq. 105).
"""

from __future__ import annotations

from collections.abc import Mapping

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ..checks import check_all_finite, check_array, match_sizes
from ..errors import ConfigError
from ..kernel import KernelOperator
from ._odeint import NTH_SOLVER, SolverSettings, check_times, integrate

METHODS = ("closed", "ode")


class DGSolution(eqx.Module):
    """DG-corrected trajectory: f(t) (T, n), K^(2)(t) = K + Theta1(t) (T, n, n), loss (T,), the late-time
    kernel K + Theta1(inf) (n, n) of DG Eq. 104, and test outputs f_test (T, k) when test kernels were given."""

    method: str = eqx.field(static=True)
    ts: Float[Array, " T"]
    f: Float[Array, "T n"]
    K2: Float[Array, "T n n"]
    loss: Float[Array, " T"]
    K2_late: Float[Array, "n n"]
    f_test: Float[Array, "T k"] | None


# ---- stable scalar functions of a rate a >= 0 (or a difference of rates) and a time t ----------------


def _phi(a, t):
    """phi(a, t) = int_0^t exp(-a s) ds = (1 - exp(-a t))/a, stable at a t -> 0 (and for a < 0)."""
    a, t = np.broadcast_arrays(np.asarray(a, dtype=np.float64), np.asarray(t, dtype=np.float64))
    x = a * t
    small = np.abs(x) < 1e-4
    safe = np.where(small, 1.0, a)
    return np.where(small, t * (1 - x / 2 + x * x / 6), -np.expm1(-x) / safe)


def _psi(a, t):
    """psi(a, t) = int_0^t s exp(-a s) ds = (1 - exp(-a t)(1 + a t))/a^2 = -d phi/da, stable at a t -> 0."""
    a, t = np.broadcast_arrays(np.asarray(a, dtype=np.float64), np.asarray(t, dtype=np.float64))
    x = a * t
    small = np.abs(x) < 1e-3
    safe = np.where(small, 1.0, a)
    return np.where(small, t * t * (0.5 - x / 3 + x * x / 8), (-np.expm1(-x) - x * np.exp(-x)) / safe**2)


def _dexp(a, b, t):
    """(exp(-a t) - exp(-b t))/(b - a) = int_0^t exp(-a s) exp(-b (t - s)) ds, symmetric, -> t exp(-a t)."""
    lo = np.minimum(a, b)
    return np.exp(-lo * t) * _phi(np.abs(b - a), t)


def _dphi(a, b, t):
    """(phi(a, t) - phi(b, t))/(b - a) = int_0^t exp(-a s) phi(b - a, s) ds, symmetric, -> psi((a+b)/2, t)."""
    a, b = np.broadcast_arrays(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))
    h = b - a
    near = np.abs(h) * t < 1e-4
    safe = np.where(near, 1.0, h)
    return np.where(near, _psi(0.5 * (a + b), t), (_phi(a, t) - _phi(b, t)) / safe)


# ---- the closed form -------------------------------------------------------------------------------


def _modes(K3e, K4e, c, lam, n):
    """Theta1 in the eigenbasis as a sum of exponentials: rates mu (M,), coefficients (M, ...) with
    Theta1(t) = sum_m coef[m] exp(-mu_m t); mode 0 (mu = 0) is Theta1(inf) (DG Eq. 104).

    K3e[..., i] and K4e[..., i, j] are K3, K4 with their last slots in the eigenbasis (earlier slots in any
    basis). From DG Eq. 101: Theta1 = sum_i A_i phi(lam_i) + sum_ij B_ij (phi(lam_i) - phi(lam_i+lam_j))/lam_j.
    """
    A = -(K3e * c) / n  # (..., i)
    B = (K4e * np.outer(c, c)) / n**2  # (..., i, j)
    li, lj = lam[:, None], lam[None, :]
    late = (A / lam).sum(-1) + (B / (li * (li + lj))).sum((-2, -1))
    per_i = -A / lam - (B / (li * lj)).sum(-1)
    per_ij = B / (lj * (li + lj))
    lead = A.shape[:-1]
    coef = np.concatenate([late[None], np.moveaxis(per_i, -1, 0), np.moveaxis(per_ij.reshape(lead + (-1,)), -1, 0)])
    mu = np.concatenate([[0.0], lam, (li + lj).ravel()])
    return mu, coef


def eigenbasis(K: Float[np.ndarray, "n n"]) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues lambda_i and eigenvectors of K/n (DG Eq. 101); ConfigError unless K is positive definite, which
    the closed form needs (run engines call this right after the kernels, before any long solve)."""
    K = np.asarray(K, dtype=np.float64)
    n = K.shape[0]
    lam, V = np.linalg.eigh((K + K.T) / (2 * n))
    if lam.min() <= 1e-12 * lam.max():
        raise ConfigError(f"the closed-form DG correction needs K^(2)(0) positive definite; its smallest eigenvalue "
                          f"is {lam.min() * n:.3e}. Use the ODE form (--dg-method ode, method='ode') or remove "
                          "duplicate inputs.")
    return lam, V


def _closed(K, K3, K4, delta0, ts, test):
    n = K.shape[0]
    lam, V = eigenbasis(K)
    c = V.T @ delta0
    K3e = np.einsum("abc,ak,bl,ci->kli", K3, V, V, V, optimize=True)
    K4e = np.einsum("abcd,ak,bl,ci,dj->klij", K4, V, V, V, V, optimize=True)
    mu, coef = _modes(K3e, K4e, c, lam, n)  # coef (M, k, l)
    nu = mu[:, None] + lam[None, :]  # (M, l): rate of Theta1 mode m times Delta0 component l
    Mc = coef * c[None, None, :]  # (M, k, l)
    T = len(ts)
    f = np.empty((T, n))
    K2 = np.empty((T, n, n))
    f_test = None
    if test is not None:
        Kx, K3x, K4x, fx0 = test
        mux, coefx = _modes(np.einsum("xbc,bl,ci->xli", K3x, V, V, optimize=True),
                            np.einsum("xbcd,bl,ci,dj->xlij", K4x, V, V, V, optimize=True), c, lam, n)
        Mcx = coefx * c[None, None, :]  # (M, x, l)
        KxV = Kx @ V
        f_test = np.empty((T, Kx.shape[0]))
    for s, t in enumerate(ts):
        e = np.exp(-mu * t)
        theta1 = np.tensordot(e, coef, axes=1)  # (k, l) eigenbasis
        d0 = c * np.exp(-lam * t)
        # Delta1_k = -(1/n) sum_{m,l} Mc[m,k,l] (exp(-lam_k t) - exp(-nu t))/(nu - lam_k)       (DG Eq. 12)
        d1 = -np.einsum("mkl,mkl->k", Mc, _dexp(lam[None, :, None], nu[:, None, :], t)) / n
        f[s] = V @ (d0 + d1)
        K2[s] = K + V @ theta1 @ V.T
        if test is not None:
            # f(x,t) = f(x,0) - (1/n) K(x,.) int (Delta0 + Delta1) - (1/n) int Theta1(x,.) Delta0   (HY Eq. 22)
            int_d0 = c * _phi(lam, t)
            int_d1 = -np.einsum("mkl,mkl->k", Mc, _dphi(lam[None, :, None], nu[:, None, :], t)) / n
            int_th = np.einsum("mxl,ml->x", Mcx, _phi(mux[:, None] + lam[None, :], t))
            f_test[s] = fx0 - (KxV @ (int_d0 + int_d1) + int_th) / n
    return f, K2, K + V @ coef[0] @ V.T, f_test


# ---- the ODE form ----------------------------------------------------------------------------------


def _dg_rhs(t, state, args):
    """Linear system equivalent to DG Eqs. 11-12 (and HY Eq. 22 for test points)."""
    (K, K3, K4), test = args
    d0, R0, th, d1 = state[:4]
    n = d0.shape[0]
    out = (-(K @ d0) / n, d0, -(K3 @ d0) / n + ((K4 @ R0) @ d0) / n**2, -(K @ d1) / n - (th @ d0) / n)
    if test is not None:
        Kx, K3x, K4x = test
        thx = state[4]
        out = out + (-(K3x @ d0) / n + ((K4x @ R0) @ d0) / n**2, -(Kx @ (d0 + d1) + thx @ d0) / n)
    return out


def _dg_save(t, state, args):
    fx = state[5] if len(state) > 4 else state[0]
    return state[0] + state[3], state[2], fx


def _ode(K, K3, K4, delta0, ts, test, solver):
    n = K.shape[0]
    z = jnp.zeros(n, dtype=K.dtype)
    state = (jnp.asarray(delta0), z, jnp.zeros((n, n), dtype=K.dtype), z)
    test_args = None
    if test is not None:
        Kx, K3x, K4x, fx0 = test
        state = state + (jnp.zeros_like(Kx), jnp.asarray(fx0))
        test_args = (Kx, K3x, K4x)
    (delta, theta1, fx), _ = integrate(_dg_rhs, state, ((K, K3, K4), test_args), ts, solver, save_fn=_dg_save,
                                       what="DG correction ODE")
    return delta, K[None] + theta1, None if test is None else fx


def _dense(where: str, name: str, K):
    """A dense kernel argument (static checks only; values are checked once all shapes agree)."""
    if isinstance(K, KernelOperator):
        raise ConfigError(f"{where}: '{name}' is matrix-free; the DG correction needs dense K^(2), K^(3) and K^(4) "
                          "(nth.kernels(net, X, p=4) without matrix_free)")
    return check_array(name, K, where=where, finite=False, what="kernel entries")


def dg_correction(
    kernels: Mapping[int, Float[Array, "..."]],
    f0: Float[Array, " n"],
    y: Float[Array, " n"],
    ts: Float[Array, " T"],
    *,
    method: str = "closed",
    test_kernels: Mapping[int, Float[Array, "..."]] | None = None,
    f0_test: Float[Array, " k"] | None = None,
    solver: SolverSettings = NTH_SOLVER,
) -> DGSolution:
    """f(t) and K^(2)(t) to first order in 1/width (DG Eqs. 11-12, 101, 104; docs/math.md section 4).

    ``kernels`` must hold K^(2), K^(3), K^(4) at t = 0 (``nth.kernels(net, X, p=4)``). ``method`` is
    ``"closed"`` (eigendecomposition of K/n; needs K positive definite) or ``"ode"`` (Diffrax, configured by
    ``solver``, a :class:`~nth.SolverSettings`). With ``test_kernels`` (r -> K^(r)(x, X^(r-1)), r = 2, 3, 4)
    and ``f0_test``, also the corrected outputs at test inputs.
    """
    where = "dg_correction"
    if method not in METHODS:
        raise ConfigError(f"{where}: method = {method!r}; accepted: {', '.join(METHODS)}")
    if not isinstance(kernels, Mapping):
        raise ConfigError(f"{where}: 'kernels' must map r -> K^(r) for r = 2, 3, 4 (nth.kernels(net, X, p=4)); got "
                          f"{type(kernels).__name__}")
    missing = [r for r in (2, 3, 4) if r not in kernels]
    if missing:
        raise ConfigError(f"{where}: the DG correction needs K^(2), K^(3) and K^(4); missing r = {missing}. "
                          "Compute them with nth.kernels(net, X, p=4).")
    ts = check_times(ts, where)
    Ks = {r: _dense(where, f"kernels[{r}]", kernels[r]) for r in (2, 3, 4)}
    f0 = check_array("f0", f0, where=where, finite=False, what="outputs")
    y = check_array("y", y, where=where, finite=False, what="targets")
    n = match_sizes(where, [("kernels[2]", Ks[2].shape, -1, lambda n: (n, n)), ("y", y.shape, -1, lambda n: (n,)),
                            ("f0", f0.shape, -1, lambda n: (n,)),
                            ("kernels[3]", Ks[3].shape, -1, lambda n: (n,) * 3),
                            ("kernels[4]", Ks[4].shape, -1, lambda n: (n,) * 4)])
    test = None
    if test_kernels is not None or f0_test is not None:
        if test_kernels is None or f0_test is None:
            given, absent = ("test_kernels", "f0_test") if f0_test is None else ("f0_test", "test_kernels")
            raise ConfigError(f"{where}: '{given}' was given without '{absent}'; test-point DG predictions need "
                              "test_kernels with r = 2, 3, 4 (nth.kernels(net, X, p=4, first=X_test)) and f0_test")
        if not isinstance(test_kernels, Mapping) or any(r not in test_kernels for r in (2, 3, 4)):
            got = sorted(test_kernels) if isinstance(test_kernels, Mapping) else type(test_kernels).__name__
            raise ConfigError(f"{where}: test-point DG predictions need test_kernels with r = 2, 3, 4 and f0_test; "
                              f"'test_kernels' holds {got}")
        Kt = {r: _dense(where, f"test_kernels[{r}]", test_kernels[r]) for r in (2, 3, 4)}
        fx0 = check_array("f0_test", f0_test, where=where, finite=False, what="outputs")
        match_sizes(where, [(f"test_kernels[{r}]", Kt[r].shape, 0, lambda k, r=r: (k,) + (n,) * (r - 1))
                            for r in (2, 3, 4)] + [("f0_test", fx0.shape, -1, lambda k: (k,))],
                    symbol="k", hint=f" (n = {n} training inputs)")
        test = tuple(Kt[r] for r in (2, 3, 4)) + (fx0,)
    values = [("f0", f0, "outputs"), ("y", y, "targets")] + [(f"kernels[{r}]", Ks[r], "kernel entries")
                                                             for r in (2, 3, 4)]
    if test is not None:
        values += [(f"test_kernels[{r}]", Kt[r], "kernel entries") for r in (2, 3, 4)] + [("f0_test", fx0, "outputs")]
    for name, a, what in values:  # every shape agrees: now the values, one isfinite(x).all() each
        check_all_finite(name, a, where=where, what=what)
    dtype = Ks[2].dtype if jnp.issubdtype(Ks[2].dtype, jnp.inexact) else jnp.result_type(float)
    K, K3, K4 = (np.asarray(Ks[r], dtype=np.float64) for r in (2, 3, 4))
    y = np.asarray(y, dtype=np.float64)
    delta0 = np.asarray(f0, dtype=np.float64) - y
    if test is not None:
        test = tuple(np.asarray(a, dtype=np.float64) for a in test)
    late_only = None
    if method == "ode":
        try:
            late_only = _closed(K, K3, K4, delta0, ts[:1], None)[2]
        except ConfigError:  # Theta1(inf) (DG Eq. 104) does not exist for a singular K
            late_only = np.full((n, n), np.nan)
    if method == "closed":
        f_res, K2, K2_late, f_test = _closed(K, K3, K4, delta0, ts, test)
        f = f_res + y[None, :]
    else:
        jt = None if test is None else tuple(jnp.asarray(a, dtype=dtype) for a in test)
        delta, K2, f_test = _ode(*(jnp.asarray(a, dtype=dtype) for a in (K, K3, K4, delta0)), ts, jt, solver)
        f, K2_late = np.asarray(delta) + y[None, :], late_only
    loss = 0.5 * np.mean((np.asarray(f) - y[None, :]) ** 2, axis=1)
    return DGSolution(method=method, ts=jnp.asarray(ts), f=jnp.asarray(f), K2=jnp.asarray(K2), loss=jnp.asarray(loss),
                      K2_late=jnp.asarray(K2_late), f_test=None if f_test is None else jnp.asarray(f_test))
