from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ..checks import as_real, check_all_finite, check_scales
from .._precision import enable_float64, float64_if_asked
from ..errors import ConfigError, DataError
from . import _mlp_structured as structured
from ._activations import AbstractActivation, Tanh, activation as make_activation
from ._base import AbstractModel, Direction, check_call
from ._param import check_param, preset


class MLP(AbstractModel):
    """MLP in NTK parametrization (HY Eqs. 1-2; docs/math.md section 1) with one output (``a`` of shape (m,),
    outputs (n,)) or k outputs (``a`` of shape (m, k), outputs (n, k); docs/math.md section 10).

    The array leaves ``Ws`` (tuple of H weight matrices) and ``a`` are the trainable parameters theta; a
    pytree of the same structure is a parameter-space tangent (e.g. grad_theta f).
    """

    has_structured_path = True

    Ws: tuple[Float[Array, "m _"], ...]
    a: Float[Array, "m *k"]
    activation: AbstractActivation = eqx.field(static=True, default=Tanh())
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
    def outputs(self) -> int:
        """k, the outputs per input (1 for ``a`` of shape (m,))."""
        return 1 if self.a.ndim == 1 else int(self.a.shape[1])

    @property
    def in_dim(self) -> int:
        return int(self.Ws[0].shape[1])

    @property
    def in_shape(self) -> tuple[int, ...]:
        return (self.in_dim,)

    def sigma(self, h: Array) -> Array:
        return self.activation(h)

    def sigma_prime(self, h: Array) -> Array:
        """Elementwise derivative of the activation, itself differentiable to any order."""
        return self.activation.derivative(h)

    def features(self, X: Float[Array, "n d"]) -> tuple[list[Array], list[Array]]:
        """Pre-activations h^(l) = W^(l) x^(l-1) and layer outputs x^(0..H), batched over rows of X."""
        m = self.width
        xs, hs = [X], []
        for W in self.Ws:
            h = xs[-1] @ W.T
            hs.append(h)
            xs.append(self.sigma(h) / jnp.sqrt(m).astype(h.dtype))
        return hs, xs

    def __call__(self, X: Float[Array, "n d"]) -> Float[Array, "n *k"]:
        """f(x; theta) = a^T x^(H) for every row x of X (HY Eq. 1); X of shape (n, d) with d the columns of W1;
        outputs (n,), or (n, k) for ``a`` of shape (m, k)."""
        X = check_call(self, X, (self.Ws[0].shape[-1],), "the columns of W1")
        _, xs = self.features(X)
        return xs[-1] @ self.a

    def apply_learning_rates(self, g):
        """eta . g with eta_l per layer (TP4 Table 1 through nth's mapping, docs/math.md section 5)."""
        if self.lrs is None:
            return g
        return eqx.tree_at(lambda t: (t.Ws, t.a), g, (tuple(self.lr(l) * W for l, W in enumerate(g.Ws)),
                                                       self.lr(-1) * g.a))

    def structured_ntk(self, X1: Array, X: Array | None, directions: tuple[Direction, ...]) -> Array:
        """The rank-one path of :mod:`nth.models._mlp_structured` (HY Eq. 7 per layer)."""
        return structured.directional_ntk(self, X1, X, directions)

    def structured_work_bytes(self, r: int, batch: int, n: int, k: int, contracted: bool, outputs: int = 1) -> int:
        """Per tuple, each of the 2^(r-2) tangent components of the nested JVPs carries the layer factors of
        the (k + n) inputs (pre-activations, layer outputs and backpropagated vectors: 3 H + 1 arrays of width m
        per row, the H backpropagated ones once per output) and the Gram matrices over samples (3 per layer);
        a contracted last slot adds the factors of its n direction inputs. XLA's own memory analysis of the
        compiled batch stays below this (tests/test_plan.py)."""
        rows = k + n + (n if contracted else 0)
        per_component = (rows * self.width * ((2 + outputs) * self.depth + 1)
                         + 3 * (self.depth + 1) * k * n * outputs**2)
        return batch * 2 ** max(r - 2, 0) * per_component * jnp.dtype(self.a.dtype).itemsize

    def describe(self) -> dict[str, Any]:
        return {"arch": "mlp", "width": self.width, "depth": self.depth, "in_shape": list(self.in_shape),
                "activation": self.activation.name, "outputs": self.outputs, **({"beta": self.activation.beta}
                                                       if hasattr(self.activation, "beta") else {}),
                "lrs": None if self.lrs is None else list(self.lrs)}


#: Initial weight distributions: iid N(0, 1) (docs/math.md section 1) or uniform on {-1, +1} (DG Table 2), each
#: times the layer's scale.
INITS = ("gaussian", "rademacher")


def init_mlp(
    seed: int,
    in_dim: int,
    width: int,
    depth: int,
    activation: str | AbstractActivation = "tanh",
    *,
    sigma_w: float = 1.0,
    sigma_a: float = 1.0,
    beta: float = 1.0,
    dtype=jnp.float64,
    param: str = "ntk",
    init: str = "gaussian",
    outputs: int = 1,
) -> MLP:
    """Gaussian initialization of docs/math.md section 1: W^(l)_ij ~ N(0, sigma_w^2), a_i ~ N(0, sigma_a^2).

    ``outputs`` = k > 1 gives k outputs per input (``a`` of shape (m, k), outputs (n, k); docs/math.md section
    10); the default, one output, has ``a`` of shape (m,) and outputs (n,).

    The draws are made in float64 and cast to ``dtype``: the float32 network of a seed is the float64 one
    rounded, so float32 and float64 runs are directly comparable. ``param`` selects an abc-parametrization
    (:mod:`nth.models._param`; default ``"ntk"``): its per-layer learning rates are stored as ``lrs`` and its initial
    standard deviations are sigma_l m^(g_l) (the same draws, rescaled per layer; e.g. muP's output layer has
    standard deviation sigma_a / sqrt(m)). ``init="rademacher"`` draws every entry uniformly from {-1, +1}
    times the same scale (DG Table 2) instead of from N(0, 1).
    """
    for name, val, lo in (("width", width, 1), ("depth", depth, 1), ("input dimension d", in_dim, 1),
                          ("outputs", outputs, 1)):
        if not isinstance(val, (int, np.integer)) or val < lo:
            raise ConfigError(f"{name} = {val!r} must be an integer >= {lo}")
    check_scales(sigma_w=sigma_w, sigma_a=sigma_a)
    act = make_activation(activation, beta)
    check_param(param)
    check_init(init)
    abc = preset(param, depth)
    lrs = None if param == "ntk" else abc.lrs(width)
    return draw_mlp(jax.random.PRNGKey(seed), in_dim, width, depth, act, sigma_w=sigma_w, sigma_a=sigma_a,
                    dtype=dtype, scales=abc.init_scales(width), lrs=lrs, init=init, outputs=int(outputs))


def check_init(init: str) -> None:
    if init not in INITS:
        raise ConfigError(f"init = {init!r} is not known; accepted: {', '.join(INITS)}")


def draw_mlp(key, in_dim: int, width: int, depth: int, activation: AbstractActivation, *, sigma_w: float = 1.0,
             sigma_a: float = 1.0, dtype=jnp.float64, scales: tuple[float, ...] | None = None,
             lrs: tuple[float, ...] | None = None, init: str = "gaussian", outputs: int = 1) -> MLP:
    """The network of :func:`init_mlp` (docs/math.md section 1; ``init="rademacher"``: DG Table 2) from a JAX key,
    on checked arguments: traceable, so a batch of initializations is one vmapped call (the Monte Carlo of
    docs/math.md section 8.1)."""
    scales = scales if scales is not None else (1.0,) * (depth + 1)
    keys = jax.random.split(key, depth + 1)
    shapes = [(width, in_dim)] + [(width, width)] * (depth - 1)
    # drawn in float64 and cast, so that a seed gives the same network in every dtype
    enable_float64()  # the weights are drawn in float64 whatever the dtype (nth._precision)
    draw = jnp.float64

    def sample(k, shape):
        if init == "rademacher":
            return jax.random.rademacher(k, shape, dtype=draw)
        return jax.random.normal(k, shape, dtype=draw)

    Ws = tuple((sigma_w * g * sample(k, s)).astype(dtype) for k, s, g in zip(keys[:-1], shapes, scales))
    a = (sigma_a * scales[-1] * sample(keys[-1], (width,) if outputs == 1 else (width, outputs))).astype(dtype)
    return MLP(Ws=Ws, a=a, activation=activation, lrs=lrs)


def mlp_from_arrays(arrays: dict[str, np.ndarray], activation: str | AbstractActivation = "tanh", *, beta: float = 1.0,
                    dtype=jnp.float64, source: str = "weights") -> MLP:
    """Build an MLP from user arrays ``W1`` (m, d), ``W2`` ... ``WH`` (m, m) and ``a`` (m,) (one output) or (m, k)
    (k outputs).

    Width and depth are read from the arrays; shapes and finiteness are validated.
    """
    float64_if_asked(dtype)
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
    if a.ndim not in (1, 2) or a.shape[0] < 1 or (a.ndim == 2 and a.shape[1] < 1):
        raise DataError(f"{source}: 'a' has shape {a.shape}; expected (m,) (one output) or (m, k) (k outputs) with "
                        "m >= 1")
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
        check_all_finite(name, as_real(name, arr, where=source, what="weights"), where=source, what="weights")
    return MLP(Ws=tuple(jnp.asarray(W, dtype=dtype) for W in Ws), a=jnp.asarray(a, dtype=dtype),
               activation=make_activation(activation, beta))


