"""Parameter-space directions grad f as per-layer rank-one factors, and passes at weights moved along them.

The gradient of one output is rank one in every layer (HY Eq. 7; docs/math.md section 1):

    grad_{W^(l)} f(x) = delta^(l)(x) x^(l-1)(x)^T,        grad_a f(x) = x^(H)(x),

so a weighted sum of output gradients, g = sum_q c_q eta . grad f(x_q), is W^(l)-rank <= q (eta_l: the
per-layer learning rates of an abc-parametrization, :mod:`nth.models._param`; 1 in NTK parametrization). A :class:`Term` holds
such a direction by its factors (x^(l-1), delta^(l) at the q inputs) and a scalar step ``eps``; the weights
theta + sum_j eps_j g_j are never formed. A matrix product with them costs

    Z (W + sum_j eps_j D_j^T diag(c_j) Z_j)^T = Z W^T + sum_j eps_j ((Z Z_j^T) * c_j) D_j

i.e. the base product plus O(N q m) per term, instead of a dense m x m tangent per direction. Everything
here is ordinary JAX code, differentiable in ``eps`` (and in theta) to any order: the kernels module takes
mixed partial derivatives in the steps to get K^(3), K^(4), ... (docs/math.md section 2).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp
from jaxtyping import Array, Float

from ._base import Direction
from ._derivatives import nested_derivative, sym_gram

#: The MLP of :mod:`nth.models._mlp` (which imports this module for its structured path).
MLP = Any


class Term(NamedTuple):
    """A step eps along a direction, stored as its per-layer factors at the weights where it was taken.

    ``xs[l]`` is x^(l) of the q inputs (l = 0..H, ``xs[0]`` the inputs), ``ds[l]`` is delta^(l+1) (l = 0..H-1).
    With k outputs, grad f_i(x) = delta_i^(l)(x) x^(l-1)(x)^T shares the factor x^(l-1)(x) between outputs, so
    the direction sum_(q,i) c_(q,i) grad f_i(x_q) keeps rank <= q: ``ds[l]`` is then sum_i c_(q,i) delta_i^(l)(x_q)
    and ``w`` is None; with one output ``w`` = c weighs the rows. ``c`` moves the output layer.
    """

    eps: Array
    xs: tuple[Array, ...]
    ds: tuple[Array, ...]
    c: Array
    w: Array | None


def _matmul(Z: Array, W: Array, terms: tuple[Term, ...], l: int, lr: float) -> Array:
    """Z W^(l+1)^T at the moved weights W^(l+1) + eta_(l+1) sum_j eps_j ds_j[l]^T diag(c_j) xs_j[l]."""
    out = Z @ W.T
    for t in terms:
        G = Z @ t.xs[l].T
        out = out + (lr * t.eps) * (G if t.w is None else G * t.w) @ t.ds[l]
    return out


def _rmatmul(D: Array, W: Array, terms: tuple[Term, ...], l: int, lr: float) -> Array:
    """D W^(l+1) at the moved weights (the backward pass)."""
    out = D @ W
    for t in terms:
        G = D @ t.ds[l].T
        out = out + (lr * t.eps) * (G if t.w is None else G * t.w) @ t.xs[l]
    return out


def moved_output_weights(net: MLP, terms: tuple[Term, ...]) -> Array:
    """a + eta_a sum_j eps_j sum_q c_jq x^(H)(x_jq): the output layer at the moved weights (column i moved by
    the coefficients c_(q,i) of output i with k outputs)."""
    a = net.a
    for t in terms:
        a = a + (net.lr(-1) * t.eps) * (t.c @ t.xs[-1] if t.c.ndim == 1 else t.xs[-1].T @ t.c)
    return a


def factors(net: MLP, terms: tuple[Term, ...], X: Float[Array, "n d"]) -> tuple[tuple[Array, ...], tuple[Array, ...]]:
    """Layer outputs x^(0..H) and backpropagated vectors delta^(1..H) of the rows of X, at the moved weights.

    delta^(H) = a * sigma'(h^(H)) / sqrt(m) and delta^(l) = (delta^(l+1) W^(l+1)) * sigma'(h^(l)) / sqrt(m), so
    grad_{W^(l)} f = delta^(l) x^(l-1)^T (HY Eq. 7). With k outputs (``a`` of shape (m, k)) every delta^(l) has
    one row per input and output, shape (n, k, m).
    """
    scale = jnp.sqrt(net.width).astype(X.dtype)
    xs, hs = [X], []
    for l, W in enumerate(net.Ws):
        h = _matmul(xs[-1], W, terms, l, net.lr(l))
        hs.append(h)
        xs.append(net.sigma(h) / scale)
    a = moved_output_weights(net, terms)
    vector = a.ndim == 2
    slope = (lambda h: net.sigma_prime(h)[:, None, :]) if vector else net.sigma_prime  # noqa: E731
    ds = [(a.T[None] if vector else a[None, :]) * slope(hs[-1]) / scale]
    for l in range(net.depth - 1, 0, -1):
        ds.insert(0, _rmatmul(ds[0], net.Ws[l], terms, l, net.lr(l)) * slope(hs[l - 1]) / scale)
    return tuple(xs), tuple(ds)


def term(net: MLP, terms: tuple[Term, ...], direction: Direction, eps: Array) -> Term:
    """The step ``eps`` along ``direction`` evaluated at the weights already moved by ``terms``."""
    xs, ds = factors(net, terms, direction.X)
    if net.a.ndim == 1:
        return Term(eps=eps, xs=xs, ds=ds, c=direction.c, w=direction.c)
    return Term(eps=eps, xs=xs, ds=tuple(jnp.einsum("qk,qkm->qm", direction.c, d) for d in ds), c=direction.c, w=None)


def _samples(G: Array, k: int) -> Array:
    """An input-by-input Gram matrix repeated over the k x k output pairs (sample (a, i) is row a k + i)."""
    return G if k == 1 else jnp.kron(G, jnp.ones((k, k), G.dtype))


def _rows(D: Array) -> Array:
    """Backpropagated vectors (n, k, m) of k outputs as one row per sample (n k, m); (n, m) as is."""
    return D if D.ndim == 2 else D.reshape(-1, D.shape[-1])


def ntk_at(net: MLP, terms: tuple[Term, ...], X1: Float[Array, "n1 d"], X: Float[Array, "n d"] | None) -> Array:
    """K^(2)(X1, X) over samples at the moved weights from per-layer factors (HY Eq. 7); X = None means X1
    (symmetric).

    K^(2) = eta_a x^(H) x^(H)^T + sum_l eta_l (delta^(l) delta^(l)^T) * (x^(l-1) x^(l-1)^T): the Jacobian is
    never formed. With k outputs, K^(2)((a,i), (b,j)) = eta_a x^(H)_a . x^(H)_b delta_ij + sum_l eta_l
    (delta_i^(l)(x_a) . delta_j^(l)(x_b)) (x^(l-1)_a . x^(l-1)_b) (docs/math.md section 10).
    In the symmetric case every Gram matrix and its derivatives use :func:`sym_gram` (symmetry of K^(r) in
    its first two slots, docs/math.md section 3).
    """
    k = 1 if net.a.ndim == 1 else net.a.shape[1]
    eye = jnp.eye(k, dtype=net.a.dtype)
    readout = (lambda G: G) if k == 1 else (lambda G: jnp.kron(G, eye))  # noqa: E731
    xs1, ds1 = factors(net, terms, X1)
    if X is None:
        K = net.lr(-1) * readout(sym_gram(xs1[-1]))
        for l in range(net.depth):
            K = K + net.lr(l) * sym_gram(_rows(ds1[l])) * _samples(sym_gram(xs1[l]), k)
        return K
    xs, ds = factors(net, terms, X)
    K = net.lr(-1) * readout(xs1[-1] @ xs[-1].T)
    for l in range(net.depth):
        K = K + net.lr(l) * (_rows(ds1[l]) @ _rows(ds[l]).T) * _samples(xs1[l] @ xs[l].T, k)
    return K


def directional_ntk(net: MLP, X1: Float[Array, "k d"], X: Float[Array, "n d"] | None,
                    directions: tuple[Direction, ...]) -> Float[Array, "k n"]:
    """D^j K^(2)(X1, X)[g_3, ..., g_(j+2)] along the given directions, nested as the hierarchy nests them.

    With directions g_3..g_r (slot order), this is K^(r)(X1, X, b_3, ..., b_r) for single-input directions
    g_s = grad f(x_(b_s)) (HY Eq. 10: K^(s+1)(.., b) = <grad K^(s)(..), grad f_b>, where the inner directions are
    themselves functions of theta). The last slot's step is taken at theta, each earlier slot's direction is
    evaluated at the weights already moved by the later ones, and the mixed partial derivative in all steps
    is taken at 0. With a weighted direction sum_q c_q grad f(x_q) in the last slot, the result is K^(r)
    contracted with c in that slot (the matrix-free top level).
    """
    return nested_derivative((), lambda terms, d, eps: terms + (term(net, terms, d, eps),),
                             lambda terms: ntk_at(net, terms, X1, X), directions, net.a.dtype)
