"""Kernel implementations: how D^j K^(s)(X1, X, ..)[g_1, .., g_j] is computed for one tuple of directions (s = 2,
or up to :attr:`~AbstractKernelImplementation.closed_level` for an implementation that computes levels whole).

Four named implementations, chosen automatically and forceable by name (``implementation=`` in
:func:`nth.kernels`), cross-tested against each other and against brute-force Jacobians
(tests/test_kernels.py, tests/test_architectures.py, tests/test_factored.py), as neural-tangents keeps its
three:

- ``"structured"``: the model's own fast path (:meth:`~nth.models.AbstractModel.structured_ntk`). For the MLP,
  every direction grad f_b is rank one per layer and is applied through its factors, so no m x m tangent is
  formed (:mod:`nth.models._mlp_structured`). The default for models that have one.
- ``"factored"``: any model; the default for every other. The same idea found in the model's own program: the
  weight gradient of every matrix product or convolution is its activation rows times its backward signal, so
  K^(2) is formed from those factors without a parameter Jacobian, and steps along directions move such
  weights through their factors where that is cheaper (docs/math.md section 2, "Factored kernels of any
  model"; :mod:`nth.kernel._factored`).
- ``"contraction"``: any model, forced by name. K^(2), K^(3), K^(4) in closed form from
  the per-sample gradients, Hessian-vector products and forward-mode third derivatives of the outputs,
  contracted over the parameters by matrix products (docs/math.md section 2, "Closed forms for any model");
  nothing is formed per direction tuple (:mod:`nth.kernel._contraction`).
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
from . import _factored as factored
from ._contraction import CLOSED_LEVEL, directional_kernel as contracted_kernel


class AbstractKernelImplementation(eqx.Module):
    """One way to compute the directional derivatives of K^(2) (module docstring). Implementations are final."""

    name: ClassVar[str]
    #: A few words for option help (``nth solve --kernel-impl``).
    summary: ClassVar[str]
    #: The highest level r whose K^(r)(X1, X, ..) comes whole from one call (:meth:`directional_kernel`); the
    #: slots beyond it are direction tuples of the engine's loop.
    closed_level: ClassVar[int] = 2

    def level(self, r: int) -> int:
        """The level computed whole when K^(r) is asked for: its last r - level slots are direction tuples."""
        return min(r, self.closed_level)

    def directional_kernel(self, model: AbstractModel, X1: Array, X: Array | None, level: int,
                           directions: tuple[Direction, ...]) -> Array:
        """D^j K^(level)(X1, X, ..)[g_1, .., g_j] over samples, shape (n1 k, n k, (n k,) * (level - 2)); level 2
        is :meth:`directional_ntk`."""
        if level != 2:
            raise ValueError(f"the {self.name!r} kernel implementation computes level 2 whole, not {level}")
        return self.directional_ntk(model, X1, X, directions)

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

    def max_batch(self, model: AbstractModel, in_shape: tuple[int, ...] | None = None) -> int | None:
        """An upper bound of its own on the direction tuples of one compiled batch for ``model``, or None."""
        return None


class Structured(AbstractKernelImplementation):
    """The model's structured fast path (the MLP's rank-one factors)."""

    name: ClassVar[str] = "structured"
    summary: ClassVar[str] = "the mlp's rank-one path"

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
    summary: ClassVar[str] = "nested JVPs through the model's forward pass"

    def max_batch(self, model, in_shape=None):
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


#: Primitives that only move entries (views, gathers of windows, padding): XLA fuses them into their consumer
#: instead of storing their outputs. A convolution evaluated as a patch product (nth.models._patches) is pad,
#: window slices, a stack and reshapes before its product; the patches the product reads are counted with its
#: site (the rows S C of :meth:`Factored.work_bytes`).
_MOVES = frozenset({"reshape", "transpose", "slice", "pad", "concatenate", "squeeze", "broadcast_in_dim",
                    "convert_element_type", "copy"})


def forward_entries(model: AbstractModel, in_shape: tuple[int, ...] | None = None) -> tuple[int, int]:
    """Entries of the intermediate values of the forward pass, counted from the traced program (shapes only;
    works on an abstract model from ``eqx.filter_eval_shape``): (per input, independent of the batch). The
    program is traced for batches of one and two inputs; what grows with the batch is per input (activations),
    the rest (e.g. transposed weights) is paid once."""

    def entries(rows: int) -> int:
        return sum(math.prod(getattr(v.aval, "shape", ())) for eqn in _equations(model, in_shape, rows)
                   if eqn.primitive.name not in _MOVES for v in eqn.outvars)

    one, two = entries(1), entries(2)
    return two - one, max(2 * one - two, 0)


def _equations(model: AbstractModel, in_shape: tuple[int, ...] | None, rows: int) -> list:
    """Every equation of the model's forward program on ``rows`` inputs, inner programs included (shapes only)."""
    # every array (or its shape) is an argument of the traced program, trained or not (e.g. an integer index leaf)
    arrays, static = eqx.partition(model, factored.is_array)
    shape = model.in_shape if in_shape is None else in_shape
    if shape is None:
        raise ConfigError(f"{type(model).__name__} does not state its input shape; pass in_shape "
                          "(nth.as_model(module, in_shape=...))")

    def walk(jp) -> list:
        out = []
        for eqn in jp.eqns:
            out.append(eqn)
            for sub in jax_core.jaxprs_in_params(eqn.params):
                out += walk(sub)
        return out

    x = jax.ShapeDtypeStruct((rows,) + tuple(shape), model_dtype(model))
    return walk(jax.make_jaxpr(lambda a, z: eqx.combine(a, static)(z))(arrays, x).jaxpr)


def has_convolution(model: AbstractModel, in_shape: tuple[int, ...] | None = None) -> bool:
    """Whether the model's forward program convolves (shapes only)."""
    return any(eqn.primitive.name == "conv_general_dilated" for eqn in _equations(model, in_shape, 1))


class Contraction(AbstractKernelImplementation):
    """Any model: K^(2), K^(3), K^(4) in closed form from derivative tensors of the outputs contracted over the
    parameters, higher levels differentiated from K^(4) (:mod:`nth.kernel._contraction`)."""

    name: ClassVar[str] = "contraction"
    summary: ClassVar[str] = "closed forms from derivative tensors"
    closed_level: ClassVar[int] = CLOSED_LEVEL

    #: The most pairs of directions whose third derivatives go through the model together.
    max_pairs: ClassVar[int] = 64

    def directional_ntk(self, model, X1, X, directions):
        return self.directional_kernel(model, X1, X, 2, directions)

    def directional_kernel(self, model, X1, X, level, directions):
        k = math.prod(jax.eval_shape(model, X1[:1]).shape)  # outputs per input
        n1, n = X1.shape[0] * k, (X1 if X is None else X).shape[0] * k
        return contracted_kernel(model, X1, X, level, directions,
                                 self.pair_batch(model, n, n1, X is None, tuple(X1.shape[1:])))

    def pair_batch(self, model: AbstractModel, N: int, N1: int, sym: bool, in_shape: tuple[int, ...]) -> int:
        """Pairs of directions per batch of K^(4)'s third derivatives: as many as keep their forward tangents
        (four copies of the activations of every input of Z for each of the N + N1 directions) within the
        bytes of the Hessian rows G (N_Z N rows of P), at most :attr:`max_pairs`."""
        shapes = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype) if eqx.is_array(a) else a,
                                        model)
        A, _ = forward_entries(shapes, in_shape)
        NZ = N if sym else N + N1
        per_pair = (N + (0 if sym else N1)) * NZ * A * 4
        return int(max(1, min(self.max_pairs, (NZ * N * num_params(shapes)) // max(per_pair, 1))))

    def work_bytes(self, model, r, batch, n, k, contracted, in_shape=None, outputs=1):
        """Per tuple and tangent component (2^j for j nested directions): the per-sample rows J of the (k + n)
        x outputs samples Z (P entries each) and their intermediates (four copies); at level 3 and above
        the Hessian rows G (N_Z N + N N1 of them) and one Hessian-vector product's intermediates (four
        copies of J); at level 4 as much again for a batch of third derivatives (:meth:`pair_batch`); the
        activations of every input twice, and the batch-independent intermediates."""
        P = num_params(model)
        A, C = forward_entries(model, in_shape)
        N, N1 = n * outputs, k * outputs
        NZ = N + N1
        level = self.level(r - (1 if contracted else 0))
        rows = NZ * (5 + (4 if level >= 3 else 0))
        if level >= 3:
            rows += NZ * N + (NZ * N + N * N1 if level >= 4 else 0)
        per_component = rows * P + 2 * NZ * A + 2 * C
        nested = r - level
        return batch * 2 ** nested * per_component * jnp.dtype(model_dtype(model)).itemsize


class Factored(AbstractKernelImplementation):
    """Any model: K^(2) from the factors of its linear maps (activation rows and backward signals), steps applied
    through them where cheaper, nested JVPs for the directions (:mod:`nth.kernel._factored`)."""

    name: ClassVar[str] = "factored"
    summary: ClassVar[str] = "factors of the linear maps of any model"
    #: How steps move the linear maps' weights: by cost (None), all in factored form (True) or all in place
    #: (False); the forced forms are for cross-tests (:func:`nth.kernel._factored.factored_sites`).
    steps: bool | None = eqx.field(static=True, default=None)

    def max_batch(self, model, in_shape=None):
        """One tuple per compiled call on a CPU for a model that convolves: a convolution's weight is moved in
        place and differs between tuples, and its patch products then gain nothing from batching tuples on a
        CPU (K^(2)..K^(4) of a width-128 cnn on 8 digits: 12.5 s in batches of 8, 10.9 s one tuple per call).
        A model of matrix products batches well (the width-512 MLP's K^(4): 1.4 s in batches of 16, 2.2 s one
        tuple per call)."""
        cpu = jax.devices()[0].platform == "cpu"
        return 1 if cpu and has_convolution(model, in_shape) else None

    def directional_ntk(self, model, X1, X, directions):
        return factored.directional_ntk(model, _eta_leaves(model), X1, X, directions, self.steps)

    def work_bytes(self, model, r, batch, n, k, contracted, in_shape=None, outputs=1):
        """Per tuple and tangent component (2^(r-2) of them), for the k + n inputs of the kernel and the n of a
        contracted last slot: the forward pass's intermediates kept for one backward pass per output (2 + outputs
        copies), every linear map's rows and backward signals (S C + outputs S O per input), its block of K^(2)
        (position pairs or per-input weight gradients, as computed), the per-input gradients of the dense leaves,
        one copy of the weights per step and their gradient, and the batch-independent intermediates twice."""
        A, C = forward_entries(model, in_shape)  # refuses a model that states no input shape, in one line
        shape = model.in_shape if in_shape is None else in_shape
        dtype = model_dtype(model)
        prog = factored.trace(model, tuple(shape), dtype)
        P = num_params(model)
        rows = k + n + (n if contracted else 0)
        leaves = factored.array_leaves(model)[0]
        dense = sum(math.prod(leaves[i].shape) for i in prog.dense)
        sites = sum(rows * (st.S * st.C + outputs * st.S * st.O) + factored.gram_entries(st, k, n, outputs)
                    for st in prog.sites.values())
        per_component = rows * (2 + outputs) * A + sites + rows * outputs * dense + (max(r - 2, 0) + 1) * P + 2 * C
        return batch * 2 ** max(r - 2, 0) * per_component * jnp.dtype(dtype).itemsize


IMPLEMENTATIONS: dict[str, AbstractKernelImplementation] = {
    i.name: i for i in (Structured(), Factored(), Contraction(), NestedJVP())}


def implementation(model: AbstractModel, name: str | AbstractKernelImplementation = "auto"
                   ) -> AbstractKernelImplementation:
    """The implementation ``name`` for ``model``: ``"auto"`` is ``"structured"`` when the model has a structured
    path and ``"factored"`` otherwise (the fastest measured on every other architecture, results/BENCHMARKS.md);
    a forced one the model cannot use is refused."""
    if isinstance(name, AbstractKernelImplementation):
        impl = name
    elif name == "auto":
        impl = IMPLEMENTATIONS["structured" if model.has_structured_path else "factored"]
    elif name in IMPLEMENTATIONS:
        impl = IMPLEMENTATIONS[name]
    else:
        raise ConfigError(f"kernel implementation {name!r} is not known; accepted: auto, "
                          f"{', '.join(IMPLEMENTATIONS)}")
    if not impl.supports(model):
        raise ConfigError(f"kernel implementation {impl.name!r} needs a model with a structured path; "
                          f"{type(model).__name__} has none (use 'jvp' or 'auto')")
    return impl
