"""Activations as objects: the function, its smoothness, and its Gaussian expectations in one place.

Every activation is an :class:`AbstractActivation` (an Equinox module without array leaves, stored as a
static field of a model). It knows

- ``__call__`` and :meth:`~AbstractActivation.derivative` (sigma', itself differentiable to any order);
- ``smooth``: whether its higher derivatives exist, so that K^(3), K^(4), ... computed by autodiff are the
  hierarchy of the network (HY Assumption 2.1; docs/math.md section 1). ReLU is accepted for p = 2 only;
- :meth:`~AbstractActivation.expectations`: E[sigma(u) sigma(v)] and E[sigma'(u) sigma'(v)] for (u, v) centred
  Gaussian with covariance [[s11, s12], [s12, s22]], the two integrals the infinite-width recursion needs
  (docs/math.md section 5): a closed form where one exists (erf: Williams 1997; relu: the arc-cosine kernels
  of Cho & Saul 2009), 2-D Gauss-Hermite quadrature otherwise (and on request for every activation).
"""

from __future__ import annotations

import abc
import functools
import math
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.scipy.special as jsp
import numpy as np
from jaxtyping import Array, Float

from ..errors import ConfigError

#: Default Gauss-Hermite order per dimension, set by tanh at variance 4 (sigma_w = 2 on unit-norm inputs):
#: tanh(sqrt(s) z) has poles at z = +-i pi / (2 sqrt(s)), so the error falls only like exp(-c sqrt(order)) and
#: faster the smaller the variance. Against an independent reference (nested trapezoidal rules,
#: tests/test_quadrature.py), over variances s11, s22 in [0.25, 4] and every correlation, order 320 is within
#: 2e-9 for tanh (E[tanh' tanh'] 1.9e-9 at variance 4, 5e-11 at 3; E[tanh tanh] 4e-11) and within 1e-12 for
#: sigmoid, gelu, softplus (beta <= 1.5) and erf (measured <= 1e-13); order 64 was 9e-4 off for tanh at
#: variance 4 (2e-5 at 2, 1e-7 at 1). Past variance 4 the error grows (tanh 2e-6 at variance 8; 2e-8 at
#: MAX_ORDER); softplus of sharpness beta at variance s is softplus at variance beta^2 s. Cost: the order-320
#: rule keeps 130 nodes (NEGLIGIBLE_WEIGHT), 130^2 per kernel entry per layer: limiting_kernels takes 3.6x
#: order 64's time on 16 inputs, 4.4x on 128.
DEFAULT_ORDER = 320
#: Quadrature orders accepted (the Golub-Welsch rule is finite at every order; cost grows like order).
MAX_ORDER = 512
#: Nodes of weight below this are left out of the 2-D rule (hermite_rule's ``drop_below``). They weigh less than
#: MAX_ORDER * 1e-30 together, on integrands bounded by ~1 (tanh, sigmoid, erf, their derivatives) or growing
#: like |u v| (gelu, softplus; |u| < 45 sqrt(s) on the nodes), so they change no expectation by more than 1e-20
#: at variances below 100; and they are most of a high-order rule (order 512 keeps 164, 320 130, 64 54 nodes).
NEGLIGIBLE_WEIGHT = 1e-30
#: Quadrature nodes (pairs x q^2) evaluated per step of the expectations' loop (1 MiB per float64 array).
CHUNK_NODES = 2**17
EXPECTATION_METHODS = ("auto", "closed", "quadrature")


@functools.lru_cache(maxsize=32)
def hermite_rule(order: int, drop_below: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Nodes z and weights w (summing to 1) with sum_i w_i g(z_i) = E[g(Z)], Z ~ N(0, 1), exact for polynomials
    of degree < 2 order (Gauss-Hermite with the probabilists' weight exp(-z^2/2)), as read-only arrays; nodes
    whose weight is below ``drop_below`` are left out (the rule the expectations use drops those below
    :data:`NEGLIGIBLE_WEIGHT`).

    Golub-Welsch: the nodes are the eigenvalues of the symmetric tridiagonal Jacobi matrix of the probabilists'
    Hermite polynomials (zero diagonal, off-diagonal sqrt(1), ..., sqrt(order - 1)) and the weights the squared
    first components of its unit eigenvectors. Nothing overflows at any order (numpy's ``hermegauss`` evaluates
    the polynomials themselves and returns nan weights from order 371 up). The weights are accurate to ~1e-16
    absolute and ~1e-4 relative down to 1e-25; smaller ones (1e-430 at the ends of the order-512 rule) are not
    resolved and may underflow to 0. Cached: the eigendecomposition is O(order^3) (0.1 s at order 512)."""
    z, w = _golub_welsch(int(order))
    if drop_below > 0:
        keep = w >= drop_below
        z, w = z[keep], w[keep] / w[keep].sum()
        z.setflags(write=False)
        w.setflags(write=False)
    return z, w


@functools.lru_cache(maxsize=16)
def _golub_welsch(n: int) -> tuple[np.ndarray, np.ndarray]:
    off = np.sqrt(np.arange(1.0, n))
    z, V = np.linalg.eigh(np.diag(off, 1) + np.diag(off, -1))
    w = V[0] ** 2
    z, w = (z - z[::-1]) / 2, (w + w[::-1]) / 2  # exactly symmetric about 0
    w = w / w.sum()
    z.setflags(write=False)
    w.setflags(write=False)
    return z, w


def _quadrature(sig, dsig, z, w, s11, s12, s22):
    """E[sigma(u) sigma(v)], E[sigma'(u) sigma'(v)] by the 2-D rule: u = L11 z_i, v = L21 z_i + L22 z_j
    (Cholesky factor of the 2 x 2 covariance)."""
    L11 = jnp.sqrt(s11)
    L21 = s12 / L11
    L22 = jnp.sqrt(jnp.maximum(s22 - L21**2, 0.0))
    u = L11[..., None] * z  # (..., q)
    v = L21[..., None, None] * z[:, None] + L22[..., None, None] * z[None, :]  # (..., q, q)
    ww = w[:, None] * w[None, :]

    def expect(g):
        return jnp.sum(ww * g(u)[..., :, None] * g(v), axis=(-2, -1))

    return expect(sig), expect(dsig)


class AbstractActivation(eqx.Module):
    """An elementwise activation sigma (module docstring). Subclasses are final."""

    name: ClassVar[str]
    smooth: ClassVar[bool] = True

    @abc.abstractmethod
    def __call__(self, x: Array) -> Array:
        raise NotImplementedError

    def derivative(self, x: Array) -> Array:
        """sigma'(x) elementwise, itself differentiable to any order (a JVP of sigma)."""
        return jax.jvp(self, (x,), (jnp.ones_like(x),))[1]

    def closed_form(self, s11: Array, s12: Array, s22: Array) -> tuple[Array, Array] | None:
        """(E[sigma(u) sigma(v)], E[sigma'(u) sigma'(v)]) in closed form, or None if there is none."""
        return None

    @property
    def has_closed_form(self) -> bool:
        return type(self).closed_form is not AbstractActivation.closed_form

    def check_level(self, p: int) -> None:
        """Refuse a hierarchy level p this activation cannot give meaning to (docs/math.md section 1)."""
        if not self.smooth and p >= 3:
            raise ConfigError(
                f"activation {self.name!r} cannot be used with p = {p}: its higher derivatives vanish almost "
                f"everywhere, so K^(3), K^(4), ... of such a net are not given by autodiff (HY Assumption 2.1 "
                f"asks for a smooth activation). Use p = 2 with {self.name}, or one of "
                f"{', '.join(n for n, c in ACTIVATIONS.items() if c.smooth)}.")

    def expectations(self, s11: Float[Array, "*b"], s12: Float[Array, "*b"], s22: Float[Array, "*b"], *,
                     method: str = "auto", order: int = DEFAULT_ORDER) -> tuple[Array, Array]:
        """E[sigma(u) sigma(v)] and E[sigma'(u) sigma'(v)], (u, v) ~ N(0, [[s11, s12], [s12, s22]]) elementwise
        over the batch shape (docs/math.md section 5). ``method``: ``"closed"``, ``"quadrature"`` (``order``
        x ``order`` Gauss-Hermite nodes, less those of weight below NEGLIGIBLE_WEIGHT; accuracy: DEFAULT_ORDER's
        comment) or ``"auto"`` (closed when available)."""
        check_expectation_options(self, method, order)
        if method != "quadrature" and self.has_closed_form:
            return self.closed_form(s11, s12, s22)
        z, w = hermite_rule(order, NEGLIGIBLE_WEIGHT)
        zz, ww = jnp.asarray(z, s12.dtype), jnp.asarray(w, s12.dtype)
        # a bounded number of nodes per step, whatever the batch: sigma(v) on (pairs, q, q) nodes is materialized
        # (both expectations read it), and a working set past the CPU cache was 5x slower per node. The pairs
        # are padded (with s11 = s22 = 1, s12 = 0) to whole steps, so that one loop body is compiled.
        pairs = math.prod(s12.shape)
        batch = max(1, min(pairs, CHUNK_NODES // z.size**2))
        steps = -(-pairs // batch)
        flat = tuple(jnp.concatenate([jnp.reshape(jnp.broadcast_to(s, s12.shape), (-1,)),
                                      jnp.full(steps * batch - pairs, fill, s12.dtype)]).reshape(steps, batch)
                     for s, fill in ((s11, 1.0), (s12, 0.0), (s22, 1.0)))
        E, Ed = jax.lax.map(lambda s: _quadrature(self, self.derivative, zz, ww, *s), flat)
        return E.reshape(-1)[:pairs].reshape(s12.shape), Ed.reshape(-1)[:pairs].reshape(s12.shape)


class Tanh(AbstractActivation):
    name: ClassVar[str] = "tanh"

    def __call__(self, x):
        return jnp.tanh(x)


class Sigmoid(AbstractActivation):
    name: ClassVar[str] = "sigmoid"

    def __call__(self, x):
        return jax.nn.sigmoid(x)


class Erf(AbstractActivation):
    """The error function, with the closed-form arcsine kernels of Williams (1997)."""

    name: ClassVar[str] = "erf"

    def __call__(self, x):
        return jsp.erf(x)

    def closed_form(self, s11, s12, s22):
        """E[erf(u) erf(v)] = (2/pi) arcsin(2 s12 / sqrt((1 + 2 s11)(1 + 2 s22))) and
        E[erf'(u) erf'(v)] = (4/pi) / sqrt((1 + 2 s11)(1 + 2 s22) - 4 s12^2)."""
        p = (1 + 2 * s11) * (1 + 2 * s22)
        E = (2 / jnp.pi) * jnp.arcsin(jnp.clip(2 * s12 / jnp.sqrt(p), -1.0, 1.0))
        Ed = (4 / jnp.pi) / jnp.sqrt(p - 4 * s12**2)
        return E, Ed


class Gelu(AbstractActivation):
    """The exact (erf-based) GELU, which is smooth."""

    name: ClassVar[str] = "gelu"

    def __call__(self, x):
        return jax.nn.gelu(x, approximate=False)


class Softplus(AbstractActivation):
    """log(1 + exp(beta x)) / beta: softplus of sharpness ``beta``."""

    name: ClassVar[str] = "softplus"
    beta: float = 1.0

    def __check_init__(self):
        if not (isinstance(self.beta, (int, float)) and math.isfinite(self.beta) and self.beta > 0):
            raise ConfigError(f"softplus sharpness beta = {self.beta!r} must be a finite positive number")

    def __call__(self, x):
        return jax.nn.softplus(self.beta * x) / self.beta


class Relu(AbstractActivation):
    """max(x, 0): not smooth (p = 2 only), with the closed-form arc-cosine kernels."""

    name: ClassVar[str] = "relu"
    smooth: ClassVar[bool] = False

    def __call__(self, x):
        return jax.nn.relu(x)

    def closed_form(self, s11, s12, s22):
        """Arc-cosine kernels of degree 1 and 0: E[relu relu] = sqrt(s11 s22)(sin t + (pi - t) cos t)/(2 pi),
        E[step step] = (pi - t)/(2 pi), with cos t = s12 / sqrt(s11 s22)."""
        norm = jnp.sqrt(s11 * s22)
        t = jnp.arccos(jnp.clip(s12 / norm, -1.0, 1.0))
        E = norm * (jnp.sin(t) + (jnp.pi - t) * jnp.cos(t)) / (2 * jnp.pi)
        Ed = (jnp.pi - t) / (2 * jnp.pi)
        return E, Ed


class Linear(AbstractActivation):
    """The identity: a deep linear network (DG Theorem 1), whose higher derivatives are exactly zero in each
    layer's own weights (the network is multilinear in its layers)."""

    name: ClassVar[str] = "linear"

    def __call__(self, x):
        return x

    def closed_form(self, s11, s12, s22):
        """E[u v] = s12 and E[1 * 1] = 1."""
        return s12, jnp.ones_like(s12)


#: Every activation nth accepts, by name (relu only for the frozen kernel, p = 2).
ACTIVATIONS: dict[str, type[AbstractActivation]] = {
    c.name: c for c in (Tanh, Sigmoid, Erf, Gelu, Softplus, Relu, Linear)}
SMOOTH_ACTIVATIONS = tuple(n for n, c in ACTIVATIONS.items() if c.smooth)


def activation(name: str | AbstractActivation, beta: float = 1.0) -> AbstractActivation:
    """The activation called ``name`` (``beta`` is the softplus sharpness); an activation object is returned as is."""
    if isinstance(name, AbstractActivation):
        return name
    if name not in ACTIVATIONS:
        raise ConfigError(f"activation {name!r} is not known; accepted: {', '.join(ACTIVATIONS)}")
    if name == "softplus":
        return Softplus(beta=float(beta) if isinstance(beta, (int, float)) else beta)
    return ACTIVATIONS[name]()


def check_expectation_options(act: AbstractActivation, method: str, order: int) -> None:
    """Refuse a bad expectation method or quadrature order before any work is done."""
    if method not in EXPECTATION_METHODS:
        raise ConfigError(f"method = {method!r}; accepted: {', '.join(EXPECTATION_METHODS)}")
    if not isinstance(order, (int, np.integer)) or isinstance(order, bool) or not 2 <= order <= MAX_ORDER:
        raise ConfigError(f"quadrature order = {order!r} must be an integer in 2..{MAX_ORDER} "
                          f"(default {DEFAULT_ORDER})")
    if method == "closed" and not act.has_closed_form:
        raise ConfigError(f"no closed-form Gaussian expectations for activation {act.name!r} (only for "
                          f"{', '.join(n for n, c in ACTIVATIONS.items() if c().has_closed_form)}); use method "
                          "'quadrature' or 'auto'")
