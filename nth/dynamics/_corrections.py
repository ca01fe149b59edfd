"""Dyer & Gur-Ari's first-order 1/width corrections to the frozen-NTK dynamics (docs/math.md sections 4 and 10).

For the mse loss, in our convention (loss averaged over n, DG's Theta = K^(2)/n), with K = K^(2)(0), K3 = K^(3)(0),
K4 = K^(4)(0) and Delta0(t) = expm(-tK/n) Delta(0):

    Theta1(t) = -(1/n)   int_0^t sum_b K3(.,.,b) Delta0_b(t') dt'
              + (1/n^2) int_0^t dt' int_0^t' dt'' sum_{b,c} K4(.,.,b,c) Delta0_b(t') Delta0_c(t'')   (DG Eq. 11)
    Delta(t)  = Delta0(t) - (1/n) expm(-tK/n) int_0^t expm(t'K/n) Theta1(t') Delta0(t') dt'        (DG Eq. 12)

so that K^(2)(t) ~ K + Theta1(t) and f(t) ~ y + Delta(t) to O(1/m). Two independent implementations:

* ``method="closed"``: sums of exponentials in the eigenbasis of K/n (DG Eq. 101 for Theta1; the same
  algebra carried through Eq. 12 for Delta and through HY Eq. 22 for test points), in NumPy float64;
* ``method="ode"``: the O(1/m) system of docs/math.md section 10, for any loss (DG Eqs. 87-91 truncated at
  s = 4), integrated with Diffrax; with chi0 = chi(f0), H0 the per-input loss Hessian along f0 and
  R = int_0^t chi0:  f0' = -K chi0/n,  R' = chi0,  Theta1' = -K3[chi0]/n + K4[chi0, R]/n^2,
  f1' = -(K H0 f1 + Theta1 chi0)/n, predicting f0 + f1. For mse (chi0 = Delta0, H0 = I) it is the closed
  form's system, so the two are a test of each other; other losses have only this form.

The late-time kernel K + Theta1(inf) is DG Eq. 104; at late times Delta(t) -> expm(-t (K + Theta1(inf))/n)
Delta(0) (DG Eq. 105).
"""

from __future__ import annotations

from collections.abc import Mapping

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ..errors import ConfigError
from ..losses import MSE, AbstractLoss
from ._odeint import NTH_SOLVER, SolverSettings, check_times, integrate
from ._problem import Problem, check_problem

METHODS = ("auto", "closed", "ode")


class DGSolution(eqx.Module):
    """DG-corrected trajectory: f(t) (T, n[, k]), K^(2)(t) = K + Theta1(t) (T, N, N) over samples, loss (T,),
    the late-time kernel K + Theta1(inf) (N, N) of DG Eq. 104 (mse only, else None), and test outputs f_test
    (T, n_test[, k]) when test kernels were given."""

    method: str = eqx.field(static=True)
    ts: Float[Array, " T"]
    f: Float[Array, "T n *k"]
    K2: Float[Array, "T N N"]
    loss: Float[Array, " T"]
    K2_late: Float[Array, "N N"] | None
    f_test: Float[Array, "T n_test *k"] | None


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


def eigenbasis(K: Float[np.ndarray, "N N"], n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues lambda_i and eigenvectors of K/n (DG Eq. 101) for n training inputs (default: one sample per
    input, n = K.shape[0]); ConfigError unless K is positive definite, which the closed form needs (run engines
    call this right after the kernels, before any long solve)."""
    K = np.asarray(K, dtype=np.float64)
    n = K.shape[0] if n is None else n
    lam, V = np.linalg.eigh((K + K.T) / (2 * n))
    if lam.min() <= 1e-12 * lam.max():
        raise ConfigError(f"the closed-form DG correction needs K^(2)(0) positive definite; its smallest eigenvalue "
                          f"is {lam.min() * n:.3e}. Use the ODE form (--dg-method ode, method='ode') or remove "
                          "duplicate inputs.")
    return lam, V


def _closed(K, K3, K4, delta0, ts, test, n):
    """The closed form for n training inputs (K and the residual delta0 over their samples)."""
    lam, V = eigenbasis(K, n)
    c = V.T @ delta0
    K3e = np.einsum("abc,ak,bl,ci->kli", K3, V, V, V, optimize=True)
    K4e = np.einsum("abcd,ak,bl,ci,dj->klij", K4, V, V, V, V, optimize=True)
    mu, coef = _modes(K3e, K4e, c, lam, n)  # coef (M, k, l)
    nu = mu[:, None] + lam[None, :]  # (M, l): rate of Theta1 mode m times Delta0 component l
    Mc = coef * c[None, None, :]  # (M, k, l)
    T, N = len(ts), K.shape[0]
    f = np.empty((T, N))
    K2 = np.empty((T, N, N))
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
    """The O(1/m) system of docs/math.md section 10 for any loss (DG Eqs. 87-91 truncated at s = 4; HY Eq. 22 for
    test points), with R = int_0^t chi0 standing for Xi1 = -(1/n) K4[R]:
        f0' = -K chi0/n,  R' = chi0,  Th1' = -K3[chi0]/n + K4[chi0, R]/n^2,  f1' = -(K H0 f1 + Th1 chi0)/n."""
    objective, (K, K3, K4), test = args
    f0, R, th, f1 = state[:4]
    n = objective.y.shape[0]
    chi0 = objective.chi(f0)
    Hf1 = objective.hvp(f0, f1)
    out = (-(K @ chi0) / n, chi0, -(K3 @ chi0) / n + ((K4 @ R) @ chi0) / n**2, -(K @ Hf1 + th @ chi0) / n)
    if test is not None:
        Kx, K3x, K4x = test
        thx = state[4]
        out = out + (-(K3x @ chi0) / n + ((K4x @ R) @ chi0) / n**2, -(Kx @ (chi0 + Hf1) + thx @ chi0) / n)
    return out


def _dg_save(t, state, args):
    fx = state[5] if len(state) > 4 else state[0]
    return state[0] + state[3], state[2], fx


def _ode(prob: Problem, ts, solver):
    K, K3, K4 = (prob.kernels[r] for r in (2, 3, 4))
    N = K.shape[0]
    z = jnp.zeros(N, dtype=K.dtype)
    state = (prob.f0, z, jnp.zeros((N, N), dtype=K.dtype), z)
    test_args = None
    if prob.f0_test is not None:
        Kx, K3x, K4x = (prob.test_kernels[r] for r in (2, 3, 4))
        state = state + (jnp.zeros_like(Kx), prob.f0_test)
        test_args = (Kx, K3x, K4x)
    (f, theta1, fx), _ = integrate(_dg_rhs, state, (prob.objective, (K, K3, K4), test_args), ts, solver,
                                   save_fn=_dg_save, what="DG correction ODE")
    return f, K[None] + theta1, None if test_args is None else fx


def dg_correction(
    kernels: Mapping[int, Float[Array, "..."]],
    f0: Float[Array, "n *k"],
    y: Array,
    ts: Float[Array, " T"],
    *,
    loss: AbstractLoss | str = MSE(),
    method: str = "auto",
    test_kernels: Mapping[int, Float[Array, "..."]] | None = None,
    f0_test: Float[Array, "n_test *k"] | None = None,
    solver: SolverSettings = NTH_SOLVER,
) -> DGSolution:
    """f(t) and K^(2)(t) to first order in 1/width (DG Eqs. 11-12, 87-91, 101, 104; docs/math.md sections 4 and
    10).

    ``kernels`` must hold K^(2), K^(3), K^(4) at t = 0 over samples (``nth.kernels(net, X, p=4)``); ``f0`` has the
    model's output shape and ``y`` the targets of ``loss`` (default mse). ``method``: ``"closed"`` (the mse
    loss only: sums of exponentials in the eigenbasis of K/n; needs K positive definite), ``"ode"`` (the
    four-equation system of section 10 for any loss, with Diffrax configured by ``solver``, a
    :class:`~nth.SolverSettings`), or ``"auto"`` (closed for mse, the ODE otherwise). With ``test_kernels``
    (r -> K^(r)(x, X^(r-1)), r = 2, 3, 4) and ``f0_test``, also the corrected outputs at test inputs. The
    late-time kernel K + Theta1(inf) of DG Eq. 104 exists for mse (NaN where K is singular) and is None for
    other losses.
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
    prob = check_problem(kernels, f0, y, levels=(2, 3, 4), where=where, loss=loss, test_kernels=test_kernels,
                         f0_test=f0_test, dense_reason="the DG correction needs dense K^(2), K^(3) and K^(4) "
                         "(nth.kernels(net, X, p=4) without matrix_free)")
    if method == "closed" and not prob.is_mse:
        raise ConfigError(f"{where}: the closed form (DG Eq. 101) exists for the mse loss only; the {prob.loss.describe()} "
                          "loss takes method='ode' (or 'auto')")
    method = ("closed" if prob.is_mse else "ode") if method == "auto" else method
    K, K3, K4 = (np.asarray(prob.kernels[r], dtype=np.float64) for r in (2, 3, 4))
    N = K.shape[0]
    late = None
    if prob.is_mse:
        y = np.asarray(prob.y, dtype=np.float64).reshape(-1)
        delta0 = np.asarray(prob.f0, dtype=np.float64) - y
        try:
            late = _closed(K, K3, K4, delta0, ts[:1], None, prob.n)[2]
        except ConfigError:  # Theta1(inf) (DG Eq. 104) does not exist for a singular K
            if method == "closed":
                raise
            late = np.full((N, N), np.nan)
    if method == "closed":
        test = None
        if prob.f0_test is not None:
            test = tuple(np.asarray(prob.test_kernels[r], dtype=np.float64) for r in (2, 3, 4)) + \
                (np.asarray(prob.f0_test, dtype=np.float64),)
        f_res, K2, _, f_test = _closed(K, K3, K4, delta0, ts, test, prob.n)
        f = f_res + y[None, :]
    else:
        f, K2, f_test = _ode(prob, ts, solver)
    f = jnp.asarray(f, dtype=prob.f0.dtype)
    loss_t = jax.vmap(prob.objective.value)(f)
    return DGSolution(method=method, ts=jnp.asarray(ts), f=prob.shaped(f), K2=jnp.asarray(K2), loss=loss_t,
                      K2_late=None if late is None else jnp.asarray(late),
                      f_test=None if f_test is None else prob.shaped(jnp.asarray(f_test), prob.n_test))
