"""A residual network of width m in NTK parametrization (docs/math.md section 9).

For inputs x in R^d (normalized to the unit sphere) and L residual blocks of width m:

    z^(0) = W^(0) x,                                                     W^(0) of shape (m, d)
    z^(l) = z^(l-1) + (1/sqrt(L)) V^(l) sigma(U^(l) z^(l-1) / sqrt(m)) / sqrt(m),   U^(l), V^(l) of shape (m, m)
    f(x)  = a . sigma(z^(L)) / sqrt(m)                 (a of shape (m,); (m, k) for k outputs, docs/math.md section 10)

Every weight entry is N(0, sigma_w^2) and a ~ N(0, sigma_a^2). Every matrix acting on an m-vector is divided
by sqrt(m), so z^(l) has O(1) entries at any width and the 1/sqrt(L) branch scale keeps it O(1) at any depth.
Served by the generic kernel engine.
"""

from __future__ import annotations

import math
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ..checks import check_scales
from .._precision import enable_float64
from ..errors import ConfigError
from ._activations import AbstractActivation, Tanh, activation as make_activation
from ._base import AbstractModel, check_call


class ResNet(AbstractModel):
    """Residual network of the module docstring: ``W0`` (m, d), blocks ``Us``, ``Vs`` (m, m) and readout ``a``."""

    W0: Float[Array, "m d"]
    Us: tuple[Array, ...]
    Vs: tuple[Array, ...]
    a: Float[Array, "m *k"]
    activation: AbstractActivation = eqx.field(static=True, default=Tanh())

    @property
    def width(self) -> int:
        return int(self.a.shape[0])

    @property
    def depth(self) -> int:
        return len(self.Us)

    @property
    def in_shape(self) -> tuple[int, ...]:
        return (int(self.W0.shape[1]),)

    @property
    def outputs(self) -> int:
        """k, the outputs per input (1 for ``a`` of shape (m,))."""
        return 1 if self.a.ndim == 1 else int(self.a.shape[1])

    def __call__(self, X: Float[Array, "n d"]) -> Float[Array, "n *k"]:
        """f(x) of the module docstring for every row x of X."""
        X = check_call(self, X, (self.W0.shape[-1],), "the columns of W0")
        s = 1.0 / math.sqrt(self.width)
        branch = 1.0 / math.sqrt(self.depth)
        z = X @ self.W0.T
        for U, V in zip(self.Us, self.Vs):
            z = z + branch * (self.activation((z @ U.T) * s) @ V.T) * s
        return self.activation(z) @ self.a * s

    def describe(self) -> dict[str, Any]:
        return {"arch": "resnet", "width": self.width, "depth": self.depth, "outputs": self.outputs,
                "in_shape": list(self.in_shape),
                "activation": self.activation.name}


def init_resnet(seed: int, in_dim: int, width: int, depth: int, activation: str | AbstractActivation = "tanh", *,
                sigma_w: float = 1.0, sigma_a: float = 1.0, beta: float = 1.0, dtype=jnp.float64,
                outputs: int = 1) -> ResNet:
    """Gaussian initialization of the ResNet (module docstring), drawn in float64 and cast to ``dtype``;
    ``outputs`` = k > 1 gives k outputs per input."""
    for name, val in (("width", width), ("depth", depth), ("input dimension d", in_dim), ("outputs", outputs)):
        if not isinstance(val, int) or isinstance(val, bool) or val < 1:
            raise ConfigError(f"{name} = {val!r} must be an integer >= 1")
    check_scales(sigma_w=sigma_w, sigma_a=sigma_a)
    act = make_activation(activation, beta)
    keys = jax.random.split(jax.random.PRNGKey(seed), 2 * depth + 2)
    enable_float64()  # the weights are drawn in float64 whatever the dtype (nth._precision)
    draw = jnp.float64

    def normal(key, shape, scale):
        return (scale * jax.random.normal(key, shape, dtype=draw)).astype(dtype)

    return ResNet(W0=normal(keys[0], (width, in_dim), sigma_w),
                  Us=tuple(normal(keys[1 + l], (width, width), sigma_w) for l in range(depth)),
                  Vs=tuple(normal(keys[1 + depth + l], (width, width), sigma_w) for l in range(depth)),
                  a=normal(keys[-1], (width,) if outputs == 1 else (width, outputs), sigma_a), activation=act)
