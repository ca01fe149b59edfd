"""Kernel implementations: how D^j K^(2)(X1, X)[g_3, .., g_(j+2)] is computed for one tuple of directions.

Two named implementations, chosen automatically and forceable by name (``implementation=`` in
:func:`nth.kernels`). On the MLP, which has both, they are cross-tested against each other and the naive
baseline (tests/test_kernels.py); every other model is tested against brute-force Jacobians
(tests/test_architectures.py):

- ``"structured"``: the model's own fast path (:meth:`~nth.models.AbstractModel.structured_ntk`). For the MLP,
  every direction grad f_b is rank one per layer and is applied through its factors, so no m x m tangent is
  formed (:mod:`nth.models._mlp_structured`). The default for models that have one.
- ``"jvp"``: any model, by nested JVPs through its own forward pass. K^(2)(X1, X) = J1 diag(eta) J^T from the
  Jacobians of the outputs in the parameters (reverse mode), and K^(r)(., ., b_3..b_r) its mixed partial
  derivative in r - 2 scalar steps along eta . grad f_(b_s), each direction evaluated at the weights
  already moved by the later ones (docs/math.md sections 2 and 9; :mod:`nth.models._derivatives`).

Each also predicts the peak bytes of one batch of direction tuples (:meth:`work_bytes`), which the memory
plan uses before anything is allocated.
"""

from __future__ import annotations

import abc
import math
from typing import ClassVar

import equinox as eqx
import jax
import jax.extend.core as jax_core
import jax.numpy as jnp
from jaxtyping import Array, Float

from ..errors import ConfigError
from ..models import (AbstractModel, Direction, combine, flow_direction, nested_derivative, num_params, partition,
                      sym_gram)
from ..models._base import model_dtype


class AbstractKernelImplementation(eqx.Module):
    """One way to compute the directional derivatives of K^(2) (module docstring). Implementations are final."""

    name: ClassVar[str]

    @abc.abstractmethod
    def directional_ntk(self, model: AbstractModel, X1: Array, X: Array | None,
                        directions: tuple[Direction, ...]) -> Array:
        """D^j K^(2)(X1, X)[g_1, .., g_j] over samples (X = None: X1 in both slots, symmetric), shape (n1 k, n k)
        for k outputs per input."""

    @abc.abstractmethod
    def work_bytes(self, model: AbstractModel, r: int, batch: int, n: int, k: int, contracted: bool,
                   in_shape: tuple[int, ...] | None = None, outputs: int = 1) -> int:
        """Predicted peak bytes of one batch of ``batch`` direction tuples of K^(r) with k first-slot inputs and n
        training inputs, each with ``outputs`` outputs; a ``contracted`` last slot (matrix-free) carries n more
        direction inputs; ``in_shape`` is the shape of one input (default: the model's own). From shapes
        alone."""

    def supports(self, model: AbstractModel) -> bool:
        return True

    def max_batch(self) -> int | None:
        """An upper bound of its own on the direction tuples of one compiled batch, or None."""
        return None


class Structured(AbstractKernelImplementation):
    """The model's structured fast path (the MLP's rank-one factors)."""

    name: ClassVar[str] = "structured"

    def supports(self, model):
        return model.has_structured_path

    def directional_ntk(self, model, X1, X, directions):
        return model.structured_ntk(X1, X, directions)

    def work_bytes(self, model, r, batch, n, k, contracted, in_shape=None, outputs=1):
        """The model's own prediction (:meth:`~nth.models.AbstractModel.structured_work_bytes`)."""
        return model.structured_work_bytes(r, batch, n, k, contracted, outputs)


def _eta_leaves(model: AbstractModel) -> list:
    """eta per parameter leaf (scalars), in the order of the parameter tree's leaves."""
    params, _ = partition(model)
    ones = jax.tree_util.tree_map(lambda x: jnp.ones((), x.dtype), params)
    return jax.tree_util.tree_leaves(model.apply_learning_rates(ones))


def jacobian_ntk(model: AbstractModel, X1: Float[Array, "n1 *in"], X: Float[Array, "n *in"] | None
                 ) -> Float[Array, "N1 N"]:
    """K^(2)(X1, X) = J1 diag(eta) J^T over samples from the parameter Jacobians (reverse mode; one row per
    output of every input); X = None is symmetric and uses :func:`~nth.models.sym_gram` per leaf (docs/math.md
    sections 9 and 10)."""
    params, static = partition(model)
    eta = _eta_leaves(model)

    def jac(Z):
        rows = math.prod(jax.eval_shape(combine(params, static), Z).shape)
        J = jax.jacrev(lambda p: combine(p, static)(Z))(params)
        return [leaf.reshape(rows, -1) for leaf in jax.tree_util.tree_leaves(J)]

    J1 = jac(X1)
    if X is None:
        return sum(e * sym_gram(A) for e, A in zip(eta, J1))
    J = jac(X)
    return sum(e * (A @ B.T) for e, A, B in zip(eta, J1, J))


class NestedJVP(AbstractKernelImplementation):
    """Any model: nested JVPs through its own forward pass (module docstring)."""

    name: ClassVar[str] = "jvp"

    def max_batch(self) -> int | None:
        """One tuple per compiled call on a CPU. Every tuple moves the weights, so vmapping tuples turns a
        convolution into a grouped convolution with one group per tuple, and XLA's CPU backend runs that far
        slower than the same convolutions one call at a time (K^(4) of a width-32 CNN on 8 digits: 33 s in
        vmapped batches of 4, 14 s looped inside one call with lax.map, 1.9 s one tuple per call)."""
        return 1 if jax.devices()[0].platform == "cpu" else None

    def directional_ntk(self, model, X1, X, directions):
        params, static = partition(model)

        def move(p, direction, eps):
            g = flow_direction(combine(p, static), direction)
            return jax.tree_util.tree_map(lambda a, b: a + eps * b, p, g)

        return nested_derivative(params, move, lambda p: jacobian_ntk(combine(p, static), X1, X), directions,
                                 model_dtype(model))

    def work_bytes(self, model, r, batch, n, k, contracted, in_shape=None, outputs=1):
        """Per tuple and tangent component (2^(r-2) of them): the Jacobians of the (k + n) x outputs rows (P
        entries each), the moved weights (one parameter vector per step) and twice the forward pass (activations
        of every input, what reverse mode keeps, and the batch-independent intermediates); a contracted last slot
        adds n inputs of activations."""
        P = num_params(model)
        A, C = forward_entries(model, in_shape)
        rows = k + n
        per_component = rows * outputs * P + max(r - 2, 1) * P + 2 * (rows + (n if contracted else 0)) * A + 2 * C
        return batch * 2 ** max(r - 2, 0) * per_component * jnp.dtype(model_dtype(model)).itemsize


def forward_entries(model: AbstractModel, in_shape: tuple[int, ...] | None = None) -> tuple[int, int]:
    """Entries of the intermediate values of the forward pass, counted from the traced program (shapes only;
    works on an abstract model from ``eqx.filter_eval_shape``): (per input, independent of the batch). The
    program is traced for batches of one and two inputs; what grows with the batch is per input (activations),
    the rest (e.g. transposed weights) is paid once."""
    # every array (or its shape) is an argument of the traced program, trained or not (e.g. an integer index leaf)
    arrays, static = eqx.partition(model, lambda x: eqx.is_array(x) or isinstance(x, jax.ShapeDtypeStruct))
    shape = model.in_shape if in_shape is None else in_shape
    if shape is None:
        raise ConfigError(f"{type(model).__name__} does not state its input shape; pass in_shape "
                          "(nth.as_model(module, in_shape=...))")

    def count(jp) -> int:
        total = 0
        for eqn in jp.eqns:
            total += sum(math.prod(getattr(v.aval, "shape", ())) for v in eqn.outvars)
            for sub in jax_core.jaxprs_in_params(eqn.params):
                total += count(sub)
        return total

    def entries(rows: int) -> int:
        x = jax.ShapeDtypeStruct((rows,) + tuple(shape), model_dtype(model))
        return count(jax.make_jaxpr(lambda a, z: eqx.combine(a, static)(z))(arrays, x).jaxpr)

    one, two = entries(1), entries(2)
    return two - one, max(2 * one - two, 0)


IMPLEMENTATIONS: dict[str, AbstractKernelImplementation] = {i.name: i for i in (Structured(), NestedJVP())}


def implementation(model: AbstractModel, name: str | AbstractKernelImplementation = "auto"
                   ) -> AbstractKernelImplementation:
    """The implementation ``name`` for ``model``: ``"auto"`` is ``"structured"`` when the model has a structured
    path and ``"jvp"`` otherwise; a forced one the model cannot use is refused."""
    if isinstance(name, AbstractKernelImplementation):
        impl = name
    elif name == "auto":
        impl = IMPLEMENTATIONS["structured" if model.has_structured_path else "jvp"]
    elif name in IMPLEMENTATIONS:
        impl = IMPLEMENTATIONS[name]
    else:
        raise ConfigError(f"kernel implementation {name!r} is not known; accepted: auto, "
                          f"{', '.join(IMPLEMENTATIONS)}")
    if not impl.supports(model):
        raise ConfigError(f"kernel implementation {impl.name!r} needs a model with a structured path; "
                          f"{type(model).__name__} has none (use 'jvp' or 'auto')")
    return impl
