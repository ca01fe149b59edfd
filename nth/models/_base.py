"""The model interface every stage of nth works with (docs/math.md sections 2 and 9).

The hierarchy, the Dyer & Gur-Ari corrections and the true-flow reference use only f(x; theta) and its
derivatives, so a model is anything that maps a batch of inputs to outputs:

- ``model(X)``: outputs of shape (n,) (one output per input) or (n, k) (k outputs, e.g. class scores) for inputs X
  of shape (n, *in_shape). Every kernel runs over *samples* s = (a, i), input a and output i, flattened input
  first (s = a k + i; docs/math.md section 10): with one output a sample is an input;
- its trained parameters theta: the inexact-array leaves of the module (:func:`partition`);
- per-parameter-group learning rates eta (a parametrization, e.g. TP4's abc-parametrizations for the MLP):
  :meth:`AbstractModel.apply_learning_rates` maps a parameter-shaped tree g to eta . g (identity by default).
  Gradient flow is d theta/dt = -eta . grad L and every kernel uses <u, v>_eta = sum eta <u, v>;
- its ``width`` (the m of the 1/m expansion), and ``describe()`` (architecture and options, for files);
- optionally a structured fast path for the kernels (:meth:`AbstractModel.structured_ntk`), used instead of
  generic nested JVPs when ``has_structured_path`` is True (the MLP's rank-one path).

A plain Equinox module (the user's own model), a function with its parameters, ``(apply_fn, params)`` with
``apply_fn(params, X)`` as neural-tangents and Flax take them (Flax Linen: ``(module.apply, variables)``), or a
Flax NNX module is adapted by :func:`as_model`.
"""

from __future__ import annotations

import abc
import math
import sys
from typing import Any, ClassVar, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PyTree

from ..checks import as_real, check_all_finite, format_shape
from ..errors import ConfigError, DataError
from ._activations import AbstractActivation


class Direction(NamedTuple):
    """g = sum_(q,i) c_(q,i) eta . grad_theta f_i(X_q): a parameter-space direction given by inputs and coefficients
    shaped like the model's outputs at them, (q,) or (q, k)."""

    X: Array
    c: Float[Array, " q *k"]


def output_shape(model: AbstractModel, in_shape: tuple[int, ...], dtype, stacked: bool = False) -> tuple[int, ...]:
    """The per-input output shape of ``model``: () for outputs (n,), (k,) for outputs (n, k). Traced, not computed
    (``stacked``: the model's arrays carry a leading seed axis). A DataError for any other output shape."""
    if in_shape is None:
        raise ConfigError(f"{type(model).__name__} does not state its input shape; pass in_shape "
                          "(nth.as_model(module, in_shape=...))")
    x = jax.ShapeDtypeStruct((1,) + tuple(in_shape), dtype)
    # every array (or its shape: an abstract model from eqx.filter_eval_shape) is an argument of the traced call
    arrays, static = eqx.partition(model, lambda a: eqx.is_array(a) or isinstance(a, jax.ShapeDtypeStruct))
    call = lambda a, z: eqx.combine(a, static)(z)  # noqa: E731
    shape = tuple(jax.eval_shape(jax.vmap(call, in_axes=(0, None)) if stacked else call, arrays, x).shape)
    shape = shape[1 + stacked:]
    if len(shape) > 1:
        raise DataError(f"{type(model).__name__} returns outputs of shape (n, {', '.join(map(str, shape))}); nth "
                        "takes one output per input, (n,), or k outputs, (n, k)")
    return shape


def num_outputs(out_shape: tuple[int, ...]) -> int:
    """k, the outputs per input, of a per-input output shape () or (k,)."""
    return int(math.prod(out_shape))


def sample_direction(X: Array, s: Array, out_shape: tuple[int, ...]) -> Direction:
    """The direction eta . grad f_s of one sample s = a k + i (input a, output i; docs/math.md section 10)."""
    if not out_shape:
        return Direction(X[s][None], jnp.ones((1,), X.dtype))
    k = out_shape[0]
    return Direction(X[s // k][None], jax.nn.one_hot(s % k, k, dtype=X.dtype)[None])


class AbstractModel(eqx.Module):
    """A model f(x; theta) on a batch of inputs, with one or k outputs per input (module docstring).
    Implementations are final."""

    has_structured_path: ClassVar[bool] = False

    @abc.abstractmethod
    def __call__(self, X: Float[Array, "n *in_shape"]) -> Float[Array, "n *k"]:
        """f(x; theta) for every row x of X: shape (n,) or (n, k)."""
        raise NotImplementedError

    @property
    @abc.abstractmethod
    def width(self) -> int | None:
        """The width m of the 1/m expansion (hidden units, channels, block width), or None if unknown."""
        raise NotImplementedError

    @property
    def in_shape(self) -> tuple[int, ...] | None:
        """Shape of one input, or None if the model does not say (then only a trial call checks inputs)."""
        return None

    def check_level(self, p: int) -> None:
        """Refuse a hierarchy level p the model cannot give meaning to (a non-smooth activation at p >= 3,
        docs/math.md section 1)."""
        act = getattr(self, "activation", None)
        if isinstance(act, AbstractActivation):
            act.check_level(p)

    def apply_learning_rates(self, g: PyTree) -> PyTree:
        """eta . g for a tree g shaped like the model (leaves may carry leading axes): identity unless a
        parametrization gives per-group learning rates (docs/math.md sections 2 and 5)."""
        return g

    def structured_ntk(self, X1: Array, X: Array | None, directions: tuple[Direction, ...]) -> Array:
        """D^j K^(2)(X1, X)[g_3, .., g_(j+2)] over samples by the model's own structured path (see nth.kernel)."""
        raise NotImplementedError(f"{type(self).__name__} has no structured kernel path")

    def structured_work_bytes(self, r: int, batch: int, n: int, k: int, contracted: bool, outputs: int = 1) -> int:
        """Predicted peak bytes of one batch of ``batch`` direction tuples of K^(r) on the structured path (k
        first-slot inputs, n training inputs, ``outputs`` outputs each; a ``contracted`` last slot carries n more
        direction inputs)."""
        raise NotImplementedError(f"{type(self).__name__} has no structured kernel path")

    def describe(self) -> dict[str, Any]:
        """Architecture and options as plain values (recorded in every results file)."""
        return {"arch": type(self).__name__.lower(), "width": self.width}


class Wrapped(AbstractModel):
    """The user's own Equinox module as an nth model: ``module(X)`` maps (n, ...) inputs to (n,) or (n, k) outputs
    and its inexact-array leaves are the trained parameters (every parameter learns at rate 1)."""

    module: eqx.Module
    model_width: int | None = eqx.field(static=True, default=None)
    source: str = eqx.field(static=True, default="user model")
    input_shape: tuple[int, ...] | None = eqx.field(static=True, default=None)

    def __call__(self, X):
        return self.module(X)

    @property
    def width(self) -> int | None:
        return self.model_width

    @property
    def in_shape(self) -> tuple[int, ...] | None:
        return self.input_shape

    def describe(self) -> dict[str, Any]:
        name = self.module.name if isinstance(self.module, Applied) else type(self.module).__name__
        return {"arch": "model", "source": self.source, "class": name, "width": self.model_width}


class Applied(eqx.Module):
    """A function with its parameters as a module: ``apply_fn(params, X)``, the parameters a pytree whose
    inexact-array leaves are trained (neural-tangents' ``(apply_fn, params)``; Flax Linen's
    ``(module.apply, variables)``, whose every floating collection is then trained)."""

    params: PyTree
    apply_fn: Any = eqx.field(static=True)
    #: What computes the outputs, for the records: the function's qualified name, the class of a bound method's
    #: owner (Flax Linen's ``module.apply``), or the class of a Flax NNX module.
    name: str = eqx.field(static=True, default="")

    def __post_init__(self):
        if not self.name:
            fn, owner = self.apply_fn, getattr(self.apply_fn, "__self__", None)
            self.name = (f"{type(owner).__name__}.{fn.__name__}" if owner is not None
                         else getattr(fn, "__qualname__", type(fn).__name__))

    def __call__(self, X):
        return self.apply_fn(self.params, X)


class _NNXApply(NamedTuple):
    """apply_fn of a Flax NNX module split into its graph and state: merge them and call."""

    graphdef: Any

    def __call__(self, state, X):
        from flax import nnx

        return nnx.merge(self.graphdef, state)(X)


def _nnx_applied(model: Any) -> Applied | None:
    """A Flax NNX module as :class:`Applied` (its state's floating leaves are trained, named by its class), or None
    for anything else (flax is not imported unless the caller already did)."""
    nnx = sys.modules.get("flax.nnx")
    if nnx is None or not isinstance(model, nnx.Module):
        return None
    graphdef, state = nnx.split(model)
    return Applied(params=state, apply_fn=_NNXApply(graphdef), name=type(model).__name__)


def as_model(model: Any, *, width: int | None = None, source: str = "user model",
             in_shape: tuple[int, ...] | None = None) -> AbstractModel:
    """``model`` itself if it implements :class:`AbstractModel`, else a plain Equinox module, a pair
    ``(apply_fn, params)`` (:class:`Applied`) or a Flax NNX module (split into its graph and state) wrapped as one
    (``width`` and ``in_shape``, the shape of one input, recorded when given)."""
    if isinstance(model, AbstractModel):
        return model
    model = _nnx_applied(model) or model
    if isinstance(model, tuple) and len(model) == 2 and callable(model[0]) and not callable(model[1]):
        model = Applied(params=model[1], apply_fn=model[0])
    if not isinstance(model, eqx.Module) or not callable(model):
        raise ConfigError(f"{source}: expected an Equinox module (eqx.Module) whose call maps inputs (n, ...) to "
                          f"outputs (n,) or (n, k), or a pair (apply_fn, params) with apply_fn(params, X) doing so; "
                          f"got {type(model).__name__}")
    if width is None:
        width = getattr(model, "width", None)
        width = width if isinstance(width, int) else None
    return Wrapped(module=model, model_width=width, source=source,
                   input_shape=None if in_shape is None else tuple(int(s) for s in in_shape))


def is_param(x: Any) -> bool:
    """A trained parameter: an inexact array, or its shape alone (a model from ``eqx.filter_eval_shape``)."""
    return eqx.is_inexact_array(x) or (isinstance(x, jax.ShapeDtypeStruct) and jnp.issubdtype(x.dtype, jnp.inexact))


def partition(model: AbstractModel) -> tuple[PyTree, PyTree]:
    """(theta, static): the trained parameters (inexact-array leaves; None elsewhere) and everything else."""
    return eqx.partition(model, is_param)


def combine(params: PyTree, static: PyTree) -> AbstractModel:
    return eqx.combine(params, static)


def param_leaves(model: AbstractModel) -> list[Array]:
    return jax.tree_util.tree_leaves(partition(model)[0])


def num_params(model: AbstractModel) -> int:
    """Number of trained scalars (the P of the parameter space)."""
    return sum(math.prod(x.shape) for x in param_leaves(model))


def model_dtype(model: AbstractModel):
    """The floating dtype of the model's parameters (they must all share it)."""
    leaves = param_leaves(model)
    if not leaves:
        raise ConfigError(f"{type(model).__name__} has no trained parameters (no inexact-array leaves)")
    dtypes = {x.dtype for x in leaves}
    if len(dtypes) > 1:
        raise ConfigError(f"{type(model).__name__}'s parameters mix dtypes {sorted(map(str, dtypes))}; cast them "
                          "to one (nth.cast_model)")
    return leaves[0].dtype


def cast_model(model: AbstractModel, dtype) -> AbstractModel:
    """The model with every trained parameter cast to ``dtype``."""
    params, static = partition(model)
    return combine(jax.tree_util.tree_map(lambda x: x.astype(dtype), params), static)


def flow_direction(model: AbstractModel, direction: Direction) -> PyTree:
    """eta . grad_theta (sum_(q,i) c_(q,i) f_i(X_q; theta)): the parameter-space direction K^(r+1)(.., s)
    differentiates K^(r) along (docs/math.md sections 2 and 10), as a tree shaped like the parameters.
    Differentiable in theta."""
    params, static = partition(model)
    g = jax.grad(lambda p: jnp.sum(direction.c * combine(p, static)(direction.X)))(params)
    return model.apply_learning_rates(g)


def grad_f(model: AbstractModel, x: Float[Array, "*in"], i: int | None = None) -> PyTree:
    """grad_theta f_i(x; theta) of one input x (shape ``in_shape``) and, for a model with k outputs, its output
    ``i``: a tree shaped like the parameters."""
    params, static = partition(model)
    shape = output_shape(model, x.shape, x.dtype)
    if (i is None) != (not shape):
        raise ConfigError(f"grad_f: this {type(model).__name__} has {num_outputs(shape)} output(s) per input; "
                          + ("give the output i" if i is None else "it takes no output index i"))
    return jax.grad(lambda p: combine(p, static)(x[None])[0] if i is None else combine(p, static)(x[None])[0, i])(params)


def check_inputs(model: AbstractModel, X: Float[Array, "n *in"], name: str = "X", *, where: str = "",
                 finite: bool = True) -> Float[Array, "n *in"]:
    """X as an array of the model's dtype, checked against its ``in_shape`` (rows first): a DataError naming
    ``where`` (the calling function) and ``name`` for complex or non-numeric entries, a wrong shape, and (when
    ``finite`` and X is concrete, not traced) NaN or inf."""
    X = as_real(name, X, where=where, what="inputs")
    shape = model.in_shape
    at = f"{where}: " if where else ""
    if X.ndim < 1 or X.shape[0] < 1:
        raise DataError(f"{at}'{name}' has shape {format_shape(X.shape)}; expected (n, ...) with at least one row")
    if shape is not None and tuple(X.shape[1:]) != tuple(shape):
        raise DataError(f"{at}'{name}' has shape {format_shape(X.shape)}; expected "
                        f"{format_shape(('n',) + tuple(shape))} to match the {type(model).__name__}'s input shape "
                        f"{format_shape(tuple(shape))}")
    if finite:
        check_all_finite(name, X, where=where, what="inputs")
    return jnp.asarray(X, dtype=model_dtype(model))


def check_call(model: AbstractModel, X: Any, in_shape: tuple[int, ...], origin: str = "") -> Array:
    """The inputs of ``model(X)``, checked against the model's input shape ``in_shape`` (``origin`` says where
    it comes from, e.g. "the columns of W1"): shapes and dtype only (static, so also inside jit/vmap/grad and
    on every call the kernels make); NaN is not looked for here. X comes back as an array, dtype unchanged."""
    name = type(model).__name__
    X = as_real("X", X, where=name, what="inputs")
    in_shape = tuple(int(s) for s in in_shape)
    if X.ndim != 1 + len(in_shape) or tuple(X.shape[1:]) != in_shape:
        single = " (one input x goes in as X = x[None])" if tuple(X.shape) == in_shape else ""
        raise DataError(f"{name}: 'X' has shape {format_shape(X.shape)}; expected {format_shape(('n',) + in_shape)}: "
                        f"this {name} takes inputs of shape {format_shape(in_shape)}"
                        f"{f' ({origin})' if origin else ''}{single}")
    return X


def first_model(model: AbstractModel, where: str = "") -> tuple[int, AbstractModel]:
    """(B, the first model) of ``stacked`` models: every array leaf must carry the same leading seed axis."""
    leaves = [x for x in jax.tree_util.tree_leaves(model) if eqx.is_array(x)]
    sizes = sorted({x.shape[0] if x.ndim else 0 for x in leaves})
    if not leaves or len(sizes) != 1 or sizes[0] < 1:
        at = f"{where}: " if where else ""
        raise ConfigError(f"{at}with stacked=True every array of 'model' must carry a leading seed axis of one "
                          f"size B >= 1; got leading sizes {sizes}")
    return sizes[0], jax.tree_util.tree_map(lambda a: a[0] if eqx.is_array(a) else a, model)
