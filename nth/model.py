"""The finite-width network: an MLP in NTK parametrization (MATH.md section 1, HY Eqs. 1-2).

    x^(0) = x,   x^(l) = sigma(W^(l) x^(l-1)) / sqrt(m),  l = 1..H,   f(x; theta) = a^T x^(H)

``W^(1)`` is (m, d), ``W^(l)`` (l >= 2) is (m, m), ``a`` is (m,). At initialization every weight entry is
iid N(0, sigma_w^2) and every entry of ``a`` is N(0, sigma_a^2). The parameters theta are the module's
array leaves (``Ws`` and ``a``); the activation is static.

Other abc-parametrizations (TP4 Table 1, :mod:`nth.param`) are the same network with per-layer learning
rates eta_l (static ``lrs``) and per-layer initial scales: gradient flow is d theta_l/dt = -eta_l grad_l L and
every kernel uses the weighted inner product <u, v>_eta = sum_l eta_l <u_l, v_l>. ``lrs = None`` is eta = 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.scipy.special as jsp
import numpy as np
from jaxtyping import Array, Float

from .checks import check_finite, check_scales
from .errors import ConfigError, DataError
from .param import check_param, preset

#: Activations that are smooth (HY Assumption 2.1) and therefore have a meaningful hierarchy.
SMOOTH_ACTIVATIONS = ("tanh", "sigmoid", "erf", "gelu", "softplus")
#: Every activation nth accepts; relu only for the frozen kernel (p = 2).
ACTIVATIONS = SMOOTH_ACTIVATIONS + ("relu",)


def activation_fn(name: str, beta: float = 1.0) -> Callable[[Array], Array]:
    """The elementwise activation called ``name``.

    ``softplus`` is the softplus of sharpness ``beta``, log(1 + exp(beta x)) / beta; ``gelu`` is the exact
    (erf-based) GELU, which is smooth; ``erf`` is the plain error function.
    """
    if name == "tanh":
        return jnp.tanh
    if name == "sigmoid":
        return jax.nn.sigmoid
    if name == "erf":
        return jsp.erf
    if name == "gelu":
        return lambda x: jax.nn.gelu(x, approximate=False)
    if name == "softplus":
        return lambda x: jax.nn.softplus(beta * x) / beta
    if name == "relu":
        return jax.nn.relu
    raise ConfigError(f"activation {name!r} is not known; accepted: {', '.join(ACTIVATIONS)}")


def check_activation(name: str, p: int, beta: float = 1.0) -> None:
    """Refuse activations whose hierarchy at level ``p`` would be meaningless (MATH.md section 1).

    ReLU has zero second and higher derivatives almost everywhere, so K^(3), K^(4), ... computed by
    autodiff are not the hierarchy of a ReLU network: it is accepted for p = 2 only.
    """
    activation_fn(name, beta)
    if name == "relu" and p >= 3:
        raise ConfigError(
            f"activation 'relu' cannot be used with p = {p}: its higher derivatives vanish almost "
            "everywhere, so K^(3), K^(4), ... of a ReLU net are not given by autodiff (HY Assumption 2.1 "
            f"asks for a smooth activation). Use p = 2 with relu, or one of {', '.join(SMOOTH_ACTIVATIONS)}."
        )
    if name == "softplus" and not (math.isfinite(beta) and beta > 0):
        raise ConfigError(f"softplus sharpness beta = {beta!r} must be a finite positive number")


class MLP(eqx.Module):
    """Scalar-output MLP in NTK parametrization (HY Eqs. 1-2; MATH.md section 1).

    The array leaves ``Ws`` (tuple of H weight matrices) and ``a`` are the trainable parameters theta; a
    pytree of the same structure is a parameter-space tangent (e.g. grad_theta f).
    """

    Ws: tuple[Float[Array, "m _"], ...]
    a: Float[Array, " m"]
    activation: str = eqx.field(static=True, default="tanh")
    beta: float = eqx.field(static=True, default=1.0)
    lrs: tuple[float, ...] | None = eqx.field(static=True, default=None)

    def lr(self, l: int) -> float:
        """eta_l of layer l = 0..H (W^(1)..W^(H), then ``a`` at l = H; also l = -1): 1 unless ``lrs`` is set."""
        return 1.0 if self.lrs is None else self.lrs[l]

    @property
    def width(self) -> int:
        return int(self.a.shape[0])

    @property
    def depth(self) -> int:
        return len(self.Ws)

    @property
    def in_dim(self) -> int:
        return int(self.Ws[0].shape[1])

    @property
    def num_params(self) -> int:
        return sum(int(np.prod(W.shape)) for W in self.Ws) + self.width

    def sigma(self, h: Array) -> Array:
        return activation_fn(self.activation, self.beta)(h)

    def sigma_prime(self, h: Array) -> Array:
        """Elementwise derivative of the activation, itself differentiable to any order."""
        return jax.jvp(self.sigma, (h,), (jnp.ones_like(h),))[1]

    def features(self, X: Float[Array, "n d"]) -> tuple[list[Array], list[Array]]:
        """Pre-activations h^(l) = W^(l) x^(l-1) and layer outputs x^(0..H), batched over rows of X."""
        m = self.width
        xs, hs = [X], []
        for W in self.Ws:
            h = xs[-1] @ W.T
            hs.append(h)
            xs.append(self.sigma(h) / jnp.sqrt(m).astype(h.dtype))
        return hs, xs

    def __call__(self, X: Float[Array, "n d"]) -> Float[Array, " n"]:
        """f(x; theta) = a^T x^(H) for every row x of X (HY Eq. 1)."""
        _, xs = self.features(X)
        return xs[-1] @ self.a


def init_mlp(
    seed: int,
    in_dim: int,
    width: int,
    depth: int,
    activation: str = "tanh",
    *,
    sigma_w: float = 1.0,
    sigma_a: float = 1.0,
    beta: float = 1.0,
    dtype=jnp.float64,
    param: str = "ntk",
) -> MLP:
    """Gaussian initialization of MATH.md section 1: W^(l)_ij ~ N(0, sigma_w^2), a_i ~ N(0, sigma_a^2).

    The draws are made in float64 and cast to ``dtype``: the float32 network of a seed is the float64 one
    rounded, so float32 and float64 runs are directly comparable. ``param`` selects an abc-parametrization
    (:mod:`nth.param`; default ``"ntk"``): its per-layer learning rates are stored as ``lrs`` and its initial
    standard deviations are sigma_l m^(g_l) (the same draws, rescaled per layer; e.g. muP's output layer has
    standard deviation sigma_a / sqrt(m)).
    """
    for name, val, lo in (("width", width, 1), ("depth", depth, 1), ("input dimension d", in_dim, 1)):
        if not isinstance(val, (int, np.integer)) or val < lo:
            raise ConfigError(f"{name} = {val!r} must be an integer >= {lo}")
    check_scales(sigma_w=sigma_w, sigma_a=sigma_a)
    activation_fn(activation, beta)
    check_param(param)
    abc = preset(param, depth)
    scales = abc.init_scales(width)
    keys = jax.random.split(jax.random.PRNGKey(seed), depth + 1)
    shapes = [(width, in_dim)] + [(width, width)] * (depth - 1)
    # drawn in float64 and cast, so that a seed gives the same network in every dtype
    draw = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
    Ws = tuple((sigma_w * g * jax.random.normal(k, s, dtype=draw)).astype(dtype)
               for k, s, g in zip(keys[:-1], shapes, scales))
    a = (sigma_a * scales[-1] * jax.random.normal(keys[-1], (width,), dtype=draw)).astype(dtype)
    lrs = None if param == "ntk" else abc.lrs(width)
    return MLP(Ws=Ws, a=a, activation=activation, beta=float(beta), lrs=lrs)


def mlp_from_arrays(arrays: dict[str, np.ndarray], activation: str = "tanh", *, beta: float = 1.0,
                    dtype=jnp.float64, source: str = "weights") -> MLP:
    """Build an MLP from user arrays ``W1`` (m, d), ``W2`` ... ``WH`` (m, m) and ``a`` (m,).

    Width and depth are read from the arrays; shapes and finiteness are validated.
    """
    if "a" not in arrays or "W1" not in arrays:
        raise DataError(f"{source} must hold arrays 'W1' (m x d), optionally 'W2'..'WH' (m x m), and 'a' (m,);"
                        f" found {sorted(arrays)}")
    H = 1
    while f"W{H + 1}" in arrays:
        H += 1
    extra = sorted(set(arrays) - {"a"} - {f"W{l}" for l in range(1, H + 1)})
    if extra:
        raise DataError(f"{source} holds unexpected arrays {extra}; expected W1..W{H} and a (layers must be "
                        "numbered consecutively from 1)")
    a = np.asarray(arrays["a"])
    if a.ndim != 1 or a.shape[0] < 1:
        raise DataError(f"{source}: 'a' has shape {a.shape}; expected (m,) with m >= 1")
    m = a.shape[0]
    Ws = []
    for l in range(1, H + 1):
        W = np.asarray(arrays[f"W{l}"])
        want = (m, W.shape[1] if (l == 1 and W.ndim == 2) else m)
        if W.ndim != 2 or W.shape != want or W.shape[1] < 1:
            raise DataError(f"{source}: 'W{l}' has shape {W.shape}; expected {want} (W1 is m x d, W2..WH are "
                            f"m x m, with m = {m} from 'a')")
        Ws.append(W)
    for name, arr in [(f"W{l}", W) for l, W in enumerate(Ws, 1)] + [("a", a)]:
        check_finite(name, arr, source, "weights")
    activation_fn(activation, beta)
    return MLP(Ws=tuple(jnp.asarray(W, dtype=dtype) for W in Ws), a=jnp.asarray(a, dtype=dtype),
               activation=activation, beta=float(beta))


def grad_f(net: MLP, x: Float[Array, " d"]) -> MLP:
    """grad_theta f(x; theta): the parameter-space gradient of one output (a pytree shaped like ``net``)."""
    return jax.grad(lambda nt: nt(x[None, :])[0])(net)


def scale_by_lrs(net: MLP, g: MLP) -> MLP:
    """eta . g: a parameter-space gradient turned into the flow's direction, d theta_l/dt = -eta_l grad_l L
    (MATH.md section 2 under the abc-parametrizations of :mod:`nth.param`, TP4 Table 1).

    The identity when ``net.lrs`` is None (NTK parametrization).
    """
    if net.lrs is None:
        return g
    return eqx.tree_at(lambda t: (t.Ws, t.a), g, (tuple(net.lr(l) * W for l, W in enumerate(g.Ws)),
                                                   net.lr(-1) * g.a))


def flow_direction(net: MLP, x: Float[Array, " d"]) -> MLP:
    """eta . grad_theta f(x): the direction K^(r+1)(.., b) differentiates K^(r) along (MATH.md section 2 with
    the weighted inner product of :mod:`nth.param`)."""
    return scale_by_lrs(net, grad_f(net, x))


def _layer_factors(net: MLP, X: Float[Array, "n d"]) -> tuple[list[Array], list[Array]]:
    """Per-layer factors of grad f: layer inputs x^(l-1) and backpropagated vectors delta^(l) = df/dh^(l)."""
    hs, xs = net.features(X)
    scale = jnp.sqrt(net.width).astype(X.dtype)
    deltas = [net.a[None, :] * net.sigma_prime(hs[-1]) / scale]
    for l in range(net.depth - 1, 0, -1):
        deltas.insert(0, (deltas[0] @ net.Ws[l]) * net.sigma_prime(hs[l - 1]) / scale)
    return xs, deltas


def ntk(net: MLP, X: Float[Array, "n d"], X2: Float[Array, "k d"] | None = None) -> Float[Array, "n k"]:
    """The empirical NTK K^(2)(a, b) = <grad f_a, grad f_b>_eta as the sum of per-layer terms (HY Eq. 7).

    With delta^(l) = df/dh^(l) (the backpropagated vector), grad_{W^(l)} f = delta^(l) x^(l-1)^T and
    grad_a f = x^(H), so K^(2) = x^(H) x^(H)^T + sum_l (delta^(l) delta^(l)^T) * (x^(l-1) x^(l-1)^T)
    (elementwise product), each layer weighted by its learning rate eta_l (``net.lrs``; 1 in NTK
    parametrization): the Jacobian is never formed. With ``X2`` it is the cross kernel between the
    rows of X (first slot) and of X2 (second slot), e.g. K^(2)(x_test, X) of HY Eq. 22. Differentiable to
    any order in theta.
    """
    xs, deltas = _layer_factors(net, X)
    xs2, deltas2 = (xs, deltas) if X2 is None else _layer_factors(net, X2)
    K = net.lr(-1) * (xs[-1] @ xs2[-1].T)
    for l in range(net.depth):
        K = K + net.lr(l) * (deltas[l] @ deltas2[l].T) * (xs[l] @ xs2[l].T)
    return K
