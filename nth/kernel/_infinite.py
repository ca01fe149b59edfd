"""The infinite-width side: the limiting NNGP kernel and NTK Kbar^(2) of exactly nth's MLP (docs/math.md section 5).

For the network of docs/math.md section 1 (h^(1) = W^(1) x, x^(l) = sigma(h^(l))/sqrt(m), f = a^T x^(H), weights
N(0, sigma_w^2), a ~ N(0, sigma_a^2)) the pre-activations of every layer become, as m -> inf, centred Gaussian
processes with covariance Sigma^(l) (Neal; TP2b):

    Sigma^(1)(x, x')   = sigma_w^2 <x, x'>
    Sigma^(l+1)(x, x') = sigma_w^2 E[sigma(u) sigma(v)],   (u, v) ~ N(0, [[S(x,x), S(x,x')], [S(x,x'), S(x',x')]])
    NNGP of f          = sigma_a^2 E[sigma(u) sigma(v)] under Sigma^(H).

The NTK follows from grad f layer by layer. The weights' variances sit in their initialization, not in a
multiplier, so the gradient of h^(1) with respect to W^(1) is x itself (no sigma_w) and the gradient with
respect to W^(l+1) is x^(l) (whose Gram matrix tends to E[sigma sigma]). With E_l = E[sigma(u) sigma(v)] and
Ed_l = E[sigma'(u) sigma'(v)] under Sigma^(l), and eta_l the limiting per-layer learning rates (1 in NTK
parametrization; :mod:`nth.models._param`):

    Theta^(1)   = eta_1 <x, x'>
    Theta^(l+1) = eta_(l+1) E_l + sigma_w^2 Ed_l Theta^(l)
    Kbar^(2)    = eta_a E_H + sigma_a^2 Ed_H Theta^(H)

(the usual Jacot et al. recursion Theta^(l+1) = Sigma^(l+1) + Sigmadot^(l+1) Theta^(l), with sigma_w moved
from the forward pass into the initialization). By TP2b, training in NTK parametrization follows kernel
gradient descent with Kbar^(2) as m -> inf; the finite K^(2)(0) differs from it by O(1/sqrt(m)).

Gaussian expectations come from the activation object (:mod:`nth.models._activations`): closed forms for
``erf`` and ``relu``, 2-D Gauss-Hermite quadrature for every activation.
"""

from __future__ import annotations

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._precision import enable_float64
from ..checks import check_scales
from ..errors import ConfigError
from ..models import DEFAULT_ORDER, AbstractActivation, activation as make_activation, check_param, preset
from ..models._activations import check_expectation_options

class LimitingKernels(eqx.Module):
    """The infinite-width NNGP kernel of f and the limiting NTK Kbar^(2), both (k, n)."""

    nngp: Float[Array, "k n"]
    ntk: Float[Array, "k n"]


def check_options(activation: str | AbstractActivation, method: str, order: int, beta: float = 1.0) -> None:
    """Refuse a bad activation, method or quadrature order before any work is done."""
    act = make_activation(activation, beta)
    act.check_level(2)
    check_expectation_options(act, method, order)


def limiting_kernels(
    X: Float[Array, "k d"],
    X2: Float[Array, "n d"] | None = None,
    *,
    depth: int,
    activation: str | AbstractActivation = "tanh",
    sigma_w: float = 1.0,
    sigma_a: float = 1.0,
    beta: float = 1.0,
    param: str = "ntk",
    method: str = "auto",
    order: int = DEFAULT_ORDER,
) -> LimitingKernels:
    """NNGP kernel and limiting NTK Kbar^(2)(X, X2) of the depth-``depth`` MLP of docs/math.md section 1 (module
    docstring; docs/math.md section 5). ``X2`` defaults to X. ``method``: ``"closed"`` (erf, relu), ``"quadrature"``
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
    enable_float64()  # the layer recursion runs in float64 (nth._precision)
    X = jnp.asarray(X, dtype=jnp.float64)
    X2 = X if X2 is None else jnp.asarray(X2, dtype=jnp.float64)
    if X.ndim != 2 or X2.ndim != 2 or X.shape[1] != X2.shape[1]:
        raise ConfigError(f"inputs of shapes {X.shape} and {X2.shape} must be (n, d) and (k, d) with the same d")
    for name, A in (("X", X), ("X2", X2)):
        if not bool(jnp.all(jnp.sum(A**2, axis=1) > 0)):
            raise ConfigError(f"{name} has a zero row: the limiting kernel needs non-zero inputs (normalize them)")
    act = make_activation(activation, beta)
    out = _compiled(act, method, int(order), int(depth), float(sigma_w), float(sigma_a), eta)(X, X2)
    return LimitingKernels(nngp=out[0], ntk=out[1])


@functools.lru_cache(maxsize=64)
def _compiled(act, method, order, depth, sw, sa, eta):
    """One jit-compiled recursion per option set (a sweep reuses it for every width and seed)."""

    def fn(s11, s12, s22):
        return act.expectations(s11, s12, s22, method=method, order=order)

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
