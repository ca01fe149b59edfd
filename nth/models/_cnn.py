"""A convolutional network in NTK parametrization (docs/math.md section 9): width = channels.

For inputs with C_0 channels, D = 1 or 2 spatial dimensions and P entries in all (normalized to the unit
sphere), L convolution layers of m channels, kernel size k, stride 1 and zero 'SAME' padding:

    h^(1) = sqrt(P) conv(W^(1), x) / sqrt(C_0 k^D),     W^(1) of shape (m, C_0, k, .., k)
    h^(l) = conv(W^(l), x^(l-1)) / sqrt(m k^D),          W^(l) of shape (m, m, k, .., k),  l = 2..L
    x^(l) = sigma(h^(l))
    f(x)  = <a, x^(L)> / sqrt(m S)                        (a of shape (m, *spatial): a dense readout)

(with k outputs, ``a`` has shape (m, *spatial, k) and f(x)_i = <a[..., i], x^(L)> / sqrt(m S); docs/math.md
section 10)

with S spatial positions. Every weight entry is N(0, sigma_w^2) and a ~ N(0, sigma_a^2): each layer is divided
by the square root of its fan-in, so the NTK has a finite limit as m -> inf and K^(3), K^(4) are expected at
O(1/m) (DG Conjecture 1). sqrt(P) gives the entries of a unit-norm input size O(1). The readout sees every
position: a global-average-pooling readout makes the NTK of non-negative images (the digits) nearly rank one
(eigenvalues of K/n from 1e-5 to 0.13 at width 32), so training along all but one direction would take
t ~ 10^5.

Input shapes (one example): (d,) is a 1-channel signal of length d, (H, W) a 1-channel image, (C, H, W) a
C-channel image. Each convolution is evaluated as a product of patches (:mod:`nth.models._patches`, docs/math.md
section 9); the factored kernel implementation serves this model (:mod:`nth.kernel._factored`).
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
from ._patches import conv_same

def _layout(in_shape: tuple[int, ...]) -> tuple[int, tuple[int, ...]]:
    """(C_0, spatial shape) of one input (module docstring)."""
    if len(in_shape) in (1, 2):
        return 1, tuple(in_shape)
    if len(in_shape) == 3:
        return in_shape[0], tuple(in_shape[1:])
    raise ConfigError(f"a cnn takes inputs of shape (d,), (H, W) or (C, H, W) per example; got {in_shape}")


class CNN(AbstractModel):
    """Convolutional network of the module docstring; ``Ws`` are the convolution kernels, ``a`` the readout."""

    Ws: tuple[Array, ...]
    a: Float[Array, "m *spatial_k"]
    in_shape_: tuple[int, ...] = eqx.field(static=True)
    activation: AbstractActivation = eqx.field(static=True, default=Tanh())

    @property
    def width(self) -> int:
        return int(self.a.shape[0])

    @property
    def depth(self) -> int:
        return len(self.Ws)

    @property
    def outputs(self) -> int:
        """k, the outputs per input (1 for ``a`` of shape (m, *spatial))."""
        return 1 if self.a.ndim == len(_layout(self.in_shape_)[1]) + 1 else int(self.a.shape[-1])

    @property
    def kernel_size(self) -> int:
        return int(self.Ws[0].shape[-1])

    @property
    def in_shape(self) -> tuple[int, ...]:
        return self.in_shape_

    def __call__(self, X: Float[Array, "n *in_shape"]) -> Float[Array, "n *k"]:
        """f(x) of the module docstring for every example x of X."""
        X = check_call(self, X, self.in_shape_)
        c0, spatial = _layout(self.in_shape_)
        D, k, m = len(spatial), self.kernel_size, self.width
        h = X.reshape((X.shape[0], c0) + spatial)
        scale = math.sqrt(math.prod(self.in_shape_) / (c0 * k**D))
        for l, W in enumerate(self.Ws):
            h = conv_same(h, W)  # the convolution as a product of patches (nth.models._patches)
            h = self.activation(h * (scale if l == 0 else 1.0 / math.sqrt(m * k**D)))
        flat = h.reshape(h.shape[0], -1)  # (n, m S), channel-major like a
        k = self.outputs
        a = self.a.reshape(-1) if k == 1 and self.a.ndim == len(spatial) + 1 else self.a.reshape(-1, k)
        return flat @ a / math.sqrt(flat.shape[1])

    def describe(self) -> dict[str, Any]:
        return {"arch": "cnn", "width": self.width, "depth": self.depth, "kernel_size": self.kernel_size,
                "outputs": self.outputs, "in_shape": list(self.in_shape_), "activation": self.activation.name}


def init_cnn(seed: int, in_shape: tuple[int, ...], width: int, depth: int,
             activation: str | AbstractActivation = "tanh", *, kernel_size: int = 3, sigma_w: float = 1.0,
             sigma_a: float = 1.0, beta: float = 1.0, dtype=jnp.float64, outputs: int = 1) -> CNN:
    """Gaussian initialization of the CNN (module docstring): weights N(0, sigma_w^2), readout N(0, sigma_a^2),
    drawn in float64 and cast to ``dtype``; ``outputs`` = k > 1 gives k outputs per input."""
    for name, val in (("width", width), ("depth", depth), ("kernel_size", kernel_size), ("outputs", outputs)):
        if not isinstance(val, int) or isinstance(val, bool) or val < 1:
            raise ConfigError(f"{name} = {val!r} must be an integer >= 1")
    if kernel_size % 2 == 0:
        raise ConfigError(f"kernel_size = {kernel_size} must be odd ('SAME' padding keeps the spatial shape)")
    check_scales(sigma_w=sigma_w, sigma_a=sigma_a)
    act = make_activation(activation, beta)
    in_shape = tuple(int(s) for s in in_shape)
    c0, spatial = _layout(in_shape)
    k = (kernel_size,) * len(spatial)
    shapes = [(width, c0) + k] + [(width, width) + k] * (depth - 1)
    keys = jax.random.split(jax.random.PRNGKey(seed), depth + 1)
    enable_float64()  # the weights are drawn in float64 whatever the dtype (nth._precision)
    draw = jnp.float64
    Ws = tuple((sigma_w * jax.random.normal(key, s, dtype=draw)).astype(dtype) for key, s in zip(keys[:-1], shapes))
    readout = (width,) + spatial + (() if outputs == 1 else (outputs,))
    a = (sigma_a * jax.random.normal(keys[-1], readout, dtype=draw)).astype(dtype)
    return CNN(Ws=Ws, a=a, in_shape_=in_shape, activation=act)
