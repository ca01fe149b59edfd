"""K^(2), K^(3) and K^(4) of any model in closed form, from derivative tensors of its outputs contracted over the
parameters (docs/math.md section 2, "Closed forms for any model").

In the coordinates phi = theta / sqrt(eta) the learning rates are the identity, <u, v>_eta = u . v, and with
J_s = sqrt(eta) grad f_s (one row per sample s; docs/math.md section 10), H_x the Hessian of f_x and D^3 f_x its
third derivative (all in phi):

    G(x, y)            = H_x J_y                                  a parameter-space vector per pair of samples
    K^(2)(a1, a2)      = J_a1 . J_a2                                                         (HY Eq. 7)
    K^(3)(a1, a2, b)   = G(a1, b) . J_a2 + G(a2, b) . J_a1                                  (HY Eq. 10)
    K^(4)(a1, a2, b, c) = D^3 f_a1[J_b, J_c, J_a2] + D^3 f_a2[J_b, J_c, J_a1]
                         + G(b, c) . (G(a1, a2) + G(a2, a1)) + G(a1, b) . G(a2, c) + G(a2, b) . G(a1, c)

with v_y = sqrt(eta) J_y the direction in theta. K^(4) is D K^(3)[v_c] with every direction moving
(D J_b[v_c] = G(b, c)). Nothing is formed per tuple of directions: J (N rows) once, G (N^2 rows, one
Hessian-vector product per direction) once, the Gram products of G in one matrix product, and the third
derivatives once per pair b <= c (symmetric in b, c): D^2 f[v_b, v_c] of every output, linearized and applied
to all directions w at once (forward mode through the model's batched call). The rows J and G are per
sample: inputs go through the model one at a time (the kernels are defined per input), so a row never
pays for a whole batch's backward pass. Higher levels are mixed partial
derivatives of K^(4) along the later slots' directions (:func:`nth.models.nested_derivative`), and a
contracted last slot (the matrix-free top level) is one such direction.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float

from ..models import AbstractModel, Direction, combine, nested_derivative, partition

#: The highest level computed in closed form; K^(r) beyond it is differentiated from it.
CLOSED_LEVEL = 4


class FlatModel(NamedTuple):
    """A model on one flat parameter vector: theta, sqrt(eta) per entry, and f of a batch of inputs, flat over
    samples (input-major)."""

    theta: Array
    sqrt_eta: Array
    f: Callable[[Array, Array], Array]

    def f1(self, theta: Array, x: Array) -> Float[Array, " k"]:
        """f of one input x, shape (k,)."""
        return self.f(theta, x[None])

    def rows(self, theta: Array, Z: Array) -> Float[Array, "NZ P"]:
        """sqrt(eta) grad f_s(theta) for every sample s of the inputs Z (input-major, docs/math.md section 10)."""
        J = jax.vmap(lambda x: jax.jacrev(self.f1)(theta, x))(Z)
        return (J * self.sqrt_eta).reshape(-1, self.theta.shape[0])

    def direction(self, theta: Array, d: Direction) -> Array:
        """eta . grad_theta sum_(q,i) c_(q,i) f_i(X_q) at ``theta``, flat: :func:`nth.models.flow_direction` on
        the flat parameter vector the closed forms differentiate (docs/math.md sections 2 and 10)."""
        g = jax.grad(lambda t: jnp.sum(d.c.reshape(d.X.shape[0], -1) * jax.vmap(lambda x: self.f1(t, x))(d.X)))(theta)
        return self.sqrt_eta**2 * g


def flat_model(model: AbstractModel) -> FlatModel:
    """``model`` on its flattened parameters (every leaf one dtype, :func:`~nth.models.model_dtype`)."""
    params, static = partition(model)
    theta, unravel = ravel_pytree(params)
    ones = jax.tree_util.tree_map(jnp.ones_like, params)
    eta = ravel_pytree(model.apply_learning_rates(ones))[0]

    def f(t: Array, Z: Array) -> Array:
        return combine(unravel(t), static)(Z).reshape(-1)

    return FlatModel(theta, jnp.sqrt(eta).astype(theta.dtype), f)


def _hessian_rows(fm: FlatModel, theta: Array, Z: Array, V: Array) -> Float[Array, "NZ NV P"]:
    """G(x, y) = H_x J_y (docs/math.md section 2, "Closed forms for any model") for the samples x of Z and the
    theta-space directions v_y = sqrt(eta) J_y (rows of V): one Hessian-vector product of the per-sample rows
    per direction."""
    G = jax.lax.map(lambda v: jax.jvp(lambda t: fm.rows(t, Z), (theta,), (v,))[1], V)
    return jnp.swapaxes(G, 0, 1)


def _third_terms(fm: FlatModel, theta: Array, Z: Array, V: Array, V1: Array, n1: int, sym: bool,
                 pair_batch: int) -> Float[Array, "N1 N N N"]:
    """D^3 f_a1[J_b, J_c, J_a2] + D^3 f_a2[J_b, J_c, J_a1] as [a1, a2, b, c]. For each pair b <= c (symmetric in
    b, c, so the other half is a copy) the second derivative D^2 f[v_b, v_c] of the outputs at every input of Z
    is linearized once and applied to the directions of the training samples (and of the first slot's, V1):
    forward mode through the model's own batched call, the tangent weights of all directions in one product;
    ``pair_batch`` pairs at once."""
    N = V.shape[0]
    bs, cs = jnp.triu_indices(N)
    W = V if sym else jnp.concatenate([V, V1])

    def pair(bc):
        vb, vc = V[bc[0]], V[bc[1]]
        _, lin = jax.linearize(lambda t: jax.jvp(lambda u: jax.jvp(lambda w: fm.f(w, Z), (u,), (vb,))[1],
                                                 (t,), (vc,))[1], theta)
        T = jax.vmap(lin)(W)  # [w, x] = D^3 f_x[v_b, v_c, v_w]
        if sym:
            return T.T + T
        return T[:N, :n1].T + T[N:, n1:]

    T = jax.lax.map(pair, jnp.stack([bs, cs], axis=1), batch_size=min(pair_batch, bs.shape[0]))  # (pairs, N1, N)
    full = jnp.zeros((N, N) + T.shape[1:], T.dtype).at[bs, cs].set(T).at[cs, bs].set(T)
    return jnp.moveaxis(full, (0, 1), (2, 3))


def closed_form(fm: FlatModel, theta: Array, X1: Array, X: Array | None, level: int, pair_batch: int = 1) -> Array:
    """K^(level)(X1, X, X, ..) at ``theta`` over samples (module docstring; X = None: X1 in both slots),
    shape (N1, N, N, ..) with level axes; the third derivatives of K^(4) ``pair_batch`` pairs at once."""
    sym = X is None
    X = X1 if sym else X
    Z = X if sym else jnp.concatenate([X1, X])
    JZ = fm.rows(theta, Z)
    k = JZ.shape[0] // Z.shape[0]  # outputs per input
    N, n1 = X.shape[0] * k, X1.shape[0] * k
    J1, J = (JZ, JZ) if sym else (JZ[:n1], JZ[n1:])
    if level == 2:
        return J1 @ J.T
    V = J * fm.sqrt_eta  # the flow directions of the training samples, in theta
    GZ = _hessian_rows(fm, theta, Z, V)  # (NZ, N, P): H_z J_y
    G1X, GXX = (GZ, GZ) if sym else (GZ[:n1], GZ[n1:])
    # K^(3)(a1, a2, b) = G(a1, b) . J_a2 + G(a2, b) . J_a1
    K3 = jnp.einsum("abp,cp->acb", G1X, J) + jnp.einsum("cbp,ap->acb", GXX, J1)
    if level == 3:
        return K3
    P = JZ.shape[1]
    GX1 = GXX if sym else _hessian_rows(fm, theta, X, J1 * fm.sqrt_eta)  # (N, N1, P): H_x J_a1
    A = GXX.reshape(N * N, P)
    M1 = (A @ G1X.reshape(n1 * N, P).T).reshape(N, N, n1, N)  # [b, c, a1, a2] = G(b, c) . G(a1, a2)
    M3 = M1 if sym else (A @ GX1.reshape(N * n1, P).T).reshape(N, N, N, n1)  # [b, c, a2, a1] = G(b,c).G(a2,a1)
    gram = (jnp.einsum("bcxy->xybc", M1) + jnp.einsum("ycxb->xybc", M1) + jnp.einsum("bcyx->xybc", M3)
            + jnp.einsum("ybxc->xybc", M1))
    return gram + _third_terms(fm, theta, Z, V, J1 * fm.sqrt_eta, n1, sym, pair_batch)


def directional_kernel(model: AbstractModel, X1: Float[Array, "n1 *in"], X: Float[Array, "n *in"] | None,
                       level: int, directions: tuple[Direction, ...], pair_batch: int = 1) -> Array:
    """D^j K^(level)(X1, X, ..)[g_1, .., g_j]: the closed form (level <= 4) differentiated along the directions
    of the later slots, nested as the hierarchy nests them (the last one's step at theta, each earlier one
    evaluated at the weights already moved; HY Eq. 10). Shape (N1, N, N^(level - 2)...)."""
    if not 2 <= level <= CLOSED_LEVEL:
        raise ValueError(f"closed forms exist for levels 2..{CLOSED_LEVEL}; got {level}")
    fm = flat_model(model)

    def move(theta, d, eps):
        return theta + eps * fm.direction(theta, d)

    return nested_derivative(fm.theta, move, lambda t: closed_form(fm, t, X1, X, level, pair_batch), directions,
                             fm.theta.dtype)
