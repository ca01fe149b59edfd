"""The infinite-width side: the limiting NNGP kernel and NTK Kbar^(2) of exactly nth's MLP (MATH.md section 5).

For the network of MATH.md section 1 (h^(1) = W^(1) x, x^(l) = sigma(h^(l))/sqrt(m), f = a^T x^(H), weights
N(0, sigma_w^2), a ~ N(0, sigma_a^2)) the pre-activations of every layer become, as m -> inf, centred Gaussian
processes with covariance Sigma^(l) (Neal; TP2b):

    Sigma^(1)(x, x')   = sigma_w^2 <x, x'>
    Sigma^(l+1)(x, x') = sigma_w^2 E[sigma(u) sigma(v)],   (u, v) ~ N(0, [[S(x,x), S(x,x')], [S(x,x'), S(x',x')]])
    NNGP of f          = sigma_a^2 E[sigma(u) sigma(v)] under Sigma^(H).

The NTK follows from grad f layer by layer. The weights' variances sit in their initialization, not in a
multiplier, so the gradient of h^(1) with respect to W^(1) is x itself (no sigma_w) and the gradient with
respect to W^(l+1) is x^(l) (whose Gram matrix tends to E[sigma sigma]). With E_l = E[sigma(u) sigma(v)] and
Ed_l = E[sigma'(u) sigma'(v)] under Sigma^(l), and eta_l the limiting per-layer learning rates (1 in NTK
parametrization; :mod:`nth.param`):

    Theta^(1)   = eta_1 <x, x'>
    Theta^(l+1) = eta_(l+1) E_l + sigma_w^2 Ed_l Theta^(l)
    Kbar^(2)    = eta_a E_H + sigma_a^2 Ed_H Theta^(H)

(the usual Jacot et al. recursion Theta^(l+1) = Sigma^(l+1) + Sigmadot^(l+1) Theta^(l), with sigma_w moved
from the forward pass into the initialization). By TP2b, training in NTK parametrization follows kernel
gradient descent with Kbar^(2) as m -> inf; the finite K^(2)(0) differs from it by O(1/sqrt(m)).

Gaussian expectations: closed forms for ``erf`` (Williams 1997) and ``relu`` (arc-cosine kernel, Cho & Saul
2009; p = 2 only in nth), and 2-D Gauss-Hermite quadrature (probabilists' nodes, ``order`` x ``order``
points per pair after a Cholesky factorization of the 2 x 2 covariance) for every activation.
"""

from __future__ import annotations

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .checks import check_scales
from .errors import ConfigError
from .model import activation_fn, check_activation
from .param import check_param, preset

#: Default Gauss-Hermite order per dimension. At order 64 the erf kernels are about 3e-8 from the closed forms
#: (depth 1-3, sigma_w = 1.3; 6e-3 at order 16), tanh 6e-8 from order 256, sigmoid, gelu and softplus 1e-15.
DEFAULT_ORDER = 64
METHODS = ("auto", "closed", "quadrature")
CLOSED_FORMS = ("erf", "relu")


class LimitingKernels(eqx.Module):
    """The infinite-width NNGP kernel of f and the limiting NTK Kbar^(2), both (k, n)."""

    nngp: Float[Array, "k n"]
    ntk: Float[Array, "k n"]


def _erf_expectations(s11, s12, s22):
    """E[erf(u) erf(v)] = (2/pi) arcsin(2 s12 / sqrt((1 + 2 s11)(1 + 2 s22))) and
    E[erf'(u) erf'(v)] = (4/pi) / sqrt((1 + 2 s11)(1 + 2 s22) - 4 s12^2) (Williams 1997)."""
    p = (1 + 2 * s11) * (1 + 2 * s22)
    E = (2 / jnp.pi) * jnp.arcsin(jnp.clip(2 * s12 / jnp.sqrt(p), -1.0, 1.0))
    Ed = (4 / jnp.pi) / jnp.sqrt(p - 4 * s12**2)
    return E, Ed


def _relu_expectations(s11, s12, s22):
    """Arc-cosine kernels of degree 1 and 0: E[relu relu] = sqrt(s11 s22) (sin t + (pi - t) cos t) / (2 pi),
    E[step step] = (pi - t) / (2 pi), cos t = s12 / sqrt(s11 s22)."""
    norm = jnp.sqrt(s11 * s22)
    t = jnp.arccos(jnp.clip(s12 / norm, -1.0, 1.0))
    E = norm * (jnp.sin(t) + (jnp.pi - t) * jnp.cos(t)) / (2 * jnp.pi)
    Ed = (jnp.pi - t) / (2 * jnp.pi)
    return E, Ed


def hermite_rule(order: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes z and weights w (summing to 1) with sum_i w_i g(z_i) = E[g(Z)], Z ~ N(0, 1), exact for polynomials
    of degree < 2 order (Gauss-Hermite with the probabilists' weight exp(-z^2/2))."""
    z, w = np.polynomial.hermite_e.hermegauss(order)
    return z, w / w.sum()


def _quadrature_expectations(sig, dsig, z, w, s11, s12, s22):
    """E[sigma(u) sigma(v)], E[sigma'(u) sigma'(v)] by the 2-D rule: u = L11 z_i, v = L21 z_i + L22 z_j."""
    L11 = jnp.sqrt(s11)
    L21 = s12 / L11
    L22 = jnp.sqrt(jnp.maximum(s22 - L21**2, 0.0))
    u = L11[..., None] * z  # (..., q)
    v = L21[..., None, None] * z[:, None] + L22[..., None, None] * z[None, :]  # (..., q, q)
    ww = w[:, None] * w[None, :]

    def expect(g):
        return jnp.sum(ww * g(u)[..., :, None] * g(v), axis=(-2, -1))

    return expect(sig), expect(dsig)


def _expectations_fn(activation: str, beta: float, method: str, order: int):
    """(s11, s12, s22) -> (E[sigma(u) sigma(v)], E[sigma'(u) sigma'(v)]) for options already checked by
    :func:`check_options`."""
    if method == "closed" or (method == "auto" and activation in CLOSED_FORMS):
        return _erf_expectations if activation == "erf" else _relu_expectations
    sig = activation_fn(activation, beta)

    def dsig(x):
        return jax.jvp(sig, (x,), (jnp.ones_like(x),))[1]

    z, w = hermite_rule(order)

    def fn(s11, s12, s22):
        zz, ww = jnp.asarray(z, s12.dtype), jnp.asarray(w, s12.dtype)
        # row by row: one row of pairs holds (n, order, order) nodes
        return jax.lax.map(lambda row: _quadrature_expectations(sig, dsig, zz, ww, *row), (s11, s12, s22))

    return fn


def check_options(activation: str, method: str, order: int, beta: float = 1.0) -> None:
    """Refuse a bad activation, method or quadrature order before any work is done."""
    check_activation(activation, 2, beta)
    if method not in METHODS:
        raise ConfigError(f"method = {method!r}; accepted: {', '.join(METHODS)}")
    if not isinstance(order, (int, np.integer)) or not 2 <= order <= 512:
        raise ConfigError(f"quadrature order = {order!r} must be an integer in 2..512 (default {DEFAULT_ORDER})")
    if method == "closed" and activation not in CLOSED_FORMS:
        raise ConfigError(f"no closed-form Gaussian expectations for activation {activation!r} (only for "
                          f"{', '.join(CLOSED_FORMS)}); use method 'quadrature' or 'auto'")


def limiting_kernels(
    X: Float[Array, "k d"],
    X2: Float[Array, "n d"] | None = None,
    *,
    depth: int,
    activation: str = "tanh",
    sigma_w: float = 1.0,
    sigma_a: float = 1.0,
    beta: float = 1.0,
    param: str = "ntk",
    method: str = "auto",
    order: int = DEFAULT_ORDER,
) -> LimitingKernels:
    """NNGP kernel and limiting NTK Kbar^(2)(X, X2) of the depth-``depth`` MLP of MATH.md section 1 (module
    docstring; MATH.md section 5). ``X2`` defaults to X. ``method``: ``"closed"`` (erf, relu), ``"quadrature"``
    (2-D Gauss-Hermite of ``order`` nodes per dimension), or ``"auto"`` (closed when available). ``param``:
    a kernel-regime abc-parametrization (``"ntk"`` or ``"standard"``, whose first layer's learning rate 1/m
    drops out of the limit); feature-learning ones have no limiting kernel that training follows (TP4
    Theorem 3.8) and are refused. Rows of (k, n) are the rows of X, columns those of X2.
    """
    check_options(activation, method, order, beta)
    check_param(param)
    if not isinstance(depth, (int, np.integer)) or depth < 1:
        raise ConfigError(f"depth = {depth!r} must be a positive integer")
    check_scales(sigma_w=sigma_w, sigma_a=sigma_a)
    eta = preset(param, int(depth)).limit_lrs()
    X = jnp.asarray(X, dtype=jnp.float64)
    X2 = X if X2 is None else jnp.asarray(X2, dtype=jnp.float64)
    if X.ndim != 2 or X2.ndim != 2 or X.shape[1] != X2.shape[1]:
        raise ConfigError(f"inputs of shapes {X.shape} and {X2.shape} must be (n, d) and (k, d) with the same d")
    for name, A in (("X", X), ("X2", X2)):
        if not bool(jnp.all(jnp.sum(A**2, axis=1) > 0)):
            raise ConfigError(f"{name} has a zero row: the limiting kernel needs non-zero inputs (normalize them)")
    out = _compiled(activation, float(beta), method, int(order), int(depth), float(sigma_w), float(sigma_a), eta)(X, X2)
    return LimitingKernels(nngp=out[0], ntk=out[1])


@functools.lru_cache(maxsize=64)
def _compiled(activation, beta, method, order, depth, sw, sa, eta):
    """One jit-compiled recursion per option set (a sweep reuses it for every width and seed)."""
    fn = _expectations_fn(activation, beta, method, order)
    return jax.jit(lambda X, X2: _recursion(X, X2, fn, depth, sw, sa, eta))


def _recursion(X, X2, fn, depth, sw, sa, eta) -> tuple[Array, Array]:
    """The layer recursion of the module docstring, carrying diag Sigma of both input sets and the cross block."""
    dot = X @ X2.T
    s11, s22, s12 = sw**2 * jnp.sum(X**2, 1), sw**2 * jnp.sum(X2**2, 1), sw**2 * dot
    theta = eta[0] * dot

    def pairs(a, b, c):  # E, Ed on the cross block, the diagonals broadcast against it
        return fn(jnp.broadcast_to(a[:, None], c.shape), c, jnp.broadcast_to(b[None, :], c.shape))

    def diag(s):  # E[sigma(u)^2] with u ~ N(0, s)
        return fn(s[:, None], s[:, None], s[:, None])[0][:, 0]

    for l in range(1, depth):
        E, Ed = pairs(s11, s22, s12)
        theta = eta[l] * E + sw**2 * Ed * theta
        s11, s22, s12 = sw**2 * diag(s11), sw**2 * diag(s22), sw**2 * E
    E, Ed = pairs(s11, s22, s12)
    return sa**2 * E, eta[-1] * E + sa**2 * Ed * theta
