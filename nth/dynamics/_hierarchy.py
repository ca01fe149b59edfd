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

from ..checks import check_all_finite, check_array, format_shape, match_sizes
from ..errors import ConfigError, DataError
from ..kernel import KernelOperator
from ._odeint import NTH_SOLVER, SolverSettings, check_times, integrate


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


def _lead(kernels: Mapping[int, Array], stacked: bool, where: str) -> tuple[int, ...]:
    """() or, with ``stacked``, (B,): the leading seed axis every kernel and f0 carry (read from K^(2))."""
    if not stacked:
        return ()
    shape = tuple(kernels[2].shape)
    if len(shape) != 3:
        raise DataError(f"{where}: 'kernels[2]' has shape {format_shape(shape)}; with stacked=True expected "
                        "(B, n, n): a leading seed axis, then n x n")
    return shape[:1]


def _entry(where: str, name: str, K, finite: bool = True):
    """A kernel argument: a matrix-free operator as is, else a real array (static checks; values if ``finite``)."""
    if isinstance(K, KernelOperator):
        return K
    return check_array(name, K, where=where, finite=finite, what="kernel entries")


def _dense_below_top(where: str, name: str, kernels: Mapping[int, Array], p: int) -> None:
    """Only the top level K^(p), p >= 3, may be matrix-free: a lower level evolves and needs its dense value."""
    for r in range(2, p + 1):
        if isinstance(kernels[r], KernelOperator) and (r != p or r == 2):
            raise ConfigError(f"{where}: '{name}[{r}]' is matrix-free, but only the top level K^(p) with p >= 3 can "
                              f"be (here p = {p}): a lower level evolves and needs its dense value")


def _check_inputs(kernels: Mapping[int, Array], f0, y, p: int | None, stacked: bool = False,
                  where: str = "truncated_nth") -> tuple[int, Array, Array]:
    """p, f0 and y checked against the kernels (and converted to K^(2)'s dtype); kernels[2..p] checked in place:
    shapes (the n most of f0, y, K^(2)..K^(p) agree on; the odd one is named), real finite entries."""
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
    _dense_below_top(where, "kernels", kernels, p)
    Ks = {r: _entry(where, f"kernels[{r}]", kernels[r], finite=False) for r in range(2, p + 1)}
    f0 = check_array("f0", f0, where=where, finite=False, what="outputs")
    y = check_array("y", y, where=where, finite=False, what="targets")
    lead = _lead(Ks, stacked, where)
    hint = (f" (stacked=True: f0 and every kernel carry a leading seed axis of size B = {lead[0]}; y is shared)"
            if stacked else "")
    entries = [("kernels[2]", Ks[2].shape, -1, lambda n: lead + (n, n)), ("y", y.shape, -1, lambda n: (n,)),
               ("f0", f0.shape, -1, lambda n: lead + (n,))]
    entries += [(f"kernels[{r}]", Ks[r].shape, -1, lambda n, r=r: lead + (n,) * r) for r in range(3, p + 1)]
    match_sizes(where, entries, hint=hint)
    check_all_finite("f0", f0, where=where, what="outputs")
    check_all_finite("y", y, where=where, what="targets")
    for r in range(2, p + 1):
        if not isinstance(Ks[r], KernelOperator):
            check_all_finite(f"kernels[{r}]", Ks[r], where=where, what="kernel entries")
    dtype = Ks[2].dtype if jnp.issubdtype(Ks[2].dtype, jnp.inexact) else jnp.result_type(float)
    return int(p), jnp.asarray(f0, dtype=dtype), jnp.asarray(y, dtype=dtype)


def _top(K, dtype):
    return K if isinstance(K, KernelOperator) else jnp.asarray(K, dtype=dtype)


def _check_test_inputs(test_kernels, f0_test, p: int, n: int, dtype, stacked: bool = False,
                       lead: tuple[int, ...] = (), where: str = "truncated_nth") -> tuple[tuple[Array, ...], Array]:
    """The test kernels K^(r)(x, X^(r-1)), r = 2..p, and f0_test, checked against each other (the k test points
    most of them agree on), against n and the seed axis ``lead``; real and finite."""
    if test_kernels is None or f0_test is None:
        given, missing = ("test_kernels", "f0_test") if f0_test is None else ("f0_test", "test_kernels")
        raise ConfigError(f"{where}: '{given}' was given without '{missing}'; test-point predictions need both "
                          "test_kernels (nth.kernels(..., first=X_test)) and f0_test (the network's outputs at "
                          "X_test)")
    if not isinstance(test_kernels, Mapping) or any(r not in test_kernels for r in range(2, p + 1)):
        got = sorted(test_kernels) if isinstance(test_kernels, Mapping) else type(test_kernels).__name__
        raise ConfigError(f"{where}: 'test_kernels' must map r -> K^(r)(x, X^(r-1)) for r = 2..{p} (nth.kernels("
                          f"net, X, p={p}, first=X_test)); got {got}")
    _dense_below_top(where, "test_kernels", test_kernels, p)
    Kt = {r: _entry(where, f"test_kernels[{r}]", test_kernels[r], finite=False) for r in range(2, p + 1)}
    f0_test = check_array("f0_test", f0_test, where=where, finite=False, what="outputs")
    i = len(lead)
    hint = f" (stacked=True: f0_test and every test kernel carry a leading seed axis of size B = {lead[0]})" \
        if stacked else f" (n = {n} training inputs)"
    entries = [(f"test_kernels[{r}]", Kt[r].shape, i, lambda k, r=r: lead + (k,) + (n,) * (r - 1))
               for r in range(2, p + 1)]
    match_sizes(where, entries + [("f0_test", f0_test.shape, -1, lambda k: lead + (k,))], symbol="k", hint=hint)
    check_all_finite("f0_test", f0_test, where=where, what="outputs")
    for r in range(2, p + 1):
        if not isinstance(Kt[r], KernelOperator):
            check_all_finite(f"test_kernels[{r}]", Kt[r], where=where, what="kernel entries")
    return tuple(_top(Kt[r], dtype) for r in range(2, p + 1)), jnp.asarray(f0_test, dtype=dtype)


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
    where = "truncated_nth"
    ts = check_times(ts, where)
    p, f0, y = _check_inputs(kernels, f0, y, p, stacked, where)
    lead = f0.shape[:1] if stacked else ()
    if labels is not None and stacked and len(labels) != lead[0]:
        raise ConfigError(f"{where}: 'labels' has {len(labels)} entries; expected one per seed (B = {lead[0]})")
    state = (f0,) + tuple(jnp.asarray(kernels[r], dtype=f0.dtype) for r in range(2, p))
    Kp = _top(kernels[p], f0.dtype)
    Kp_test = None
    if test_kernels is not None or f0_test is not None:
        Kt, ft0 = _check_test_inputs(test_kernels, f0_test, p, y.shape[0], f0.dtype, stacked, lead, where)
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
    ts = check_times(ts, "hy_p3_reduced")
    _, f0, y = _check_inputs(kernels, f0, y, 3, where="hy_p3_reduced")
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
