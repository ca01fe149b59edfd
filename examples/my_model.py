"""Your own model in nth: an Equinox module and a ``make_model(width, key)`` that builds it.

Run it with

    nth solve --model examples/my_model.py:make_model --p 4 --width 512

or from Python with examples/own_model.py (``nth.SolveConfig(model="examples/my_model.py:make_model")``).

nth needs only that ``model(X)`` maps a batch of inputs X of shape (n, ...) to outputs of shape (n,), and that
the trained parameters are the module's floating-point array leaves. To see the hierarchy converge as the
width grows, put the model in NTK parametrization: weights drawn N(0, 1) and every layer divided by the square
root of its fan-in, so that the kernels have finite limits and K^(3), K^(4) shrink like 1/width.

This one has biases (nth's built-in MLP has none) and mixes eqx.nn.Linear layers with a hand-written readout.
"""

import equinox as eqx
import jax
import jax.numpy as jnp

#: Input dimension: that of nth's built-in problem (--d 8). make_model receives only the width and a key.
IN_DIM = 8


class BiasedNet(eqx.Module):
    """x -> softplus(W1 x / sqrt(d) + b1) -> softplus(W2 h / sqrt(m) + b2) -> v . h / sqrt(m)."""

    hidden: list[eqx.nn.Linear]
    v: jax.Array

    def __call__(self, X):
        h = X
        for layer in self.hidden:
            fan_in = layer.in_features
            h = jax.nn.softplus(h @ layer.weight.T / jnp.sqrt(fan_in) + layer.bias)
        return h @ self.v / jnp.sqrt(self.v.shape[0])


def make_model(width: int, key) -> BiasedNet:
    """A two-hidden-layer network of this width on inputs of dimension IN_DIM = 8 (nth's default problem), all
    parameters N(0, 1) (NTK parametrization). The key decides the initial weights (nth passes PRNGKey(seed))."""
    k1, k2, k3, k4, k5 = jax.random.split(key, 5)

    def linear(k_w, k_b, fan_in, fan_out):
        layer = eqx.nn.Linear(fan_in, fan_out, key=k_w)
        layer = eqx.tree_at(lambda l: l.weight, layer, jax.random.normal(k_w, (fan_out, fan_in)))
        return eqx.tree_at(lambda l: l.bias, layer, 0.1 * jax.random.normal(k_b, (fan_out,)))

    return BiasedNet(hidden=[linear(k1, k2, IN_DIM, width), linear(k3, k4, width, width)],
                     v=jax.random.normal(k5, (width,)))
