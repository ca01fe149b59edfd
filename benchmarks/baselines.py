"""Reference implementations of K^(r) that the benchmark suite (benchmarks/bench.py) times nth's kernel
implementations against, and the equality tests compare with. Not part of the package.

(a) :func:`naive_kernels`: what hand-written NTH code does. The parameters are flattened into one vector
    theta (P entries); K^(2) = J J^T from the full Jacobian J = jax.jacrev(f)(theta) (n x P), and every
    higher level by jax.jacfwd: K^(r+1)(..., b) = d/ds_b K^(r)(theta + J(theta)^T s) at s = 0, i.e. the forward
    Jacobian of the flattened K^(r) along the rows of J (the directional derivatives along grad f_b), with the
    Jacobian recomputed inside every level. The outermost level runs one last-slot index at a time.
(b) :func:`nested_jvp_kernels`: nth's first implementation. K^(2) from per-layer factors, higher levels by
    nested jax.jvp along the dense parameter pytree grad f_b (m x m tangents per direction).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

import nth
from nth.models import MLP, Direction, flow_direction


def _flat(net: MLP):
    params, static = eqx.partition(net, eqx.is_array)
    theta, unravel = ravel_pytree(params)
    return theta, lambda th: eqx.combine(unravel(th), static)


def _naive_level(net: MLP, X, r: int):
    """theta -> K^(r)(theta) on the flattened parameters, and theta0 (baseline (a)).

    With per-layer learning rates eta (``net.lrs``), K^(2) = J diag(eta) J^T and the directions are the rows
    of J diag(eta) (docs/math.md section 2 with the weighted inner product of :mod:`nth.models._param`).
    """
    theta0, build = _flat(net)
    eta, _ = _flat(net.apply_learning_rates(jax.tree_util.tree_map(jnp.ones_like, net)))

    def jac(th):
        return jax.jacrev(lambda t: build(t)(X))(th) * eta  # (n, P): rows eta . grad f_b

    fn = lambda th: (lambda J: (J / eta) @ J.T)(jac(th))  # noqa: E731
    for _ in range(3, r + 1):
        fn = (lambda prev: lambda th: jax.jacfwd(lambda s: prev(th + jac(th).T @ s))(
            jnp.zeros(X.shape[0], th.dtype)))(fn)
    return fn, theta0, jac


@eqx.filter_jit
def naive_kernel(net: MLP, X, r: int):
    """Baseline (a): the whole K^(r) in one call (nested jax.jacfwd over the flattened parameters)."""
    fn, theta0, _ = _naive_level(net, X, r)
    return fn(theta0)


@eqx.filter_jit
def naive_column(net: MLP, X, r: int, b):
    """Baseline (a): K^(r)(..., b), the outer level one last-slot index at a time: d/ds K^(r-1)(th + s grad f_b)."""
    inner, theta0, jac = _naive_level(net, X, r - 1)
    one = jnp.ones((), theta0.dtype)
    return jax.jvp(lambda s: inner(theta0 + s * jac(theta0)[b]), (0.0 * one,), (one,))[1]


def naive_kernels(net: MLP, X, p: int) -> dict[int, jax.Array]:
    """Baseline (a): K^(2)..K^(p) by the full flattened Jacobian and nested jax.jacfwd (module docstring).

    K^(2) and K^(3) in one call each; every higher level one last-slot column at a time (its memory is
    n times that of K^(r-1)'s Jacobian otherwise).
    """
    out = {r: naive_kernel(net, X, r) for r in range(2, min(p, 3) + 1)}
    for r in range(4, p + 1):
        out[r] = jnp.stack([naive_column(net, X, r, b) for b in range(X.shape[0])], axis=-1)
    return out


def _direction(net: MLP, xb):
    """eta . grad f(xb) as a dense parameter pytree (an MLP-shaped tangent)."""
    return flow_direction(net, Direction(xb[None], jnp.ones((1,), xb.dtype)))


def _dense_ntk(net: MLP, X1, X):
    """K^(2) from per-layer factors (HY Eq. 7), differentiated along dense tangents by the previous implementation."""
    return nth.ntk(net, X1, X)


def _nest(prev, chunk: int):
    def level(net: MLP, X1, X):
        def one(xb):
            return jax.jvp(lambda nt: prev(nt, X1, X), (net,), (_direction(net, xb),))[1]

        return jnp.moveaxis(jax.lax.map(one, X, batch_size=chunk), 0, -1)

    return level


@eqx.filter_jit
def _top_chunk(net: MLP, X1, X, Xb, r: int, chunk: int):
    prev = _dense_ntk
    for _ in range(r - 3):
        prev = _nest(prev, chunk)
    out = jax.vmap(lambda xb: jax.jvp(lambda nt: prev(nt, X1, X), (net,), (_direction(net, xb),))[1])(Xb)
    return jnp.moveaxis(out, 0, -1)


def nested_jvp_kernels(net: MLP, X, p: int, chunk: int = 4) -> dict[int, jax.Array]:
    """Baseline (b): nested jax.jvp along dense grad f_b pytrees, outer slot in chunks (nth 0.1)."""
    out = {2: eqx.filter_jit(_dense_ntk)(net, X, X)}
    n = X.shape[0]
    for r in range(3, p + 1):
        parts = []
        for s in range(0, n, chunk):
            Xb = X[s : s + chunk]
            if Xb.shape[0] < chunk:
                Xb = jnp.concatenate([Xb, jnp.broadcast_to(X[:1], (chunk - Xb.shape[0], X.shape[1]))])
            parts.append(_top_chunk(net, X, X, Xb, r, chunk)[..., : min(chunk, n - s)])
        out[r] = jnp.concatenate(parts, axis=-1)
    return out
