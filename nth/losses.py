"""Losses: the per-input loss l(f_a, y_a), its gradient chi in function space and the action of its Hessian H_l
(docs/math.md section 10).

Training minimizes L(theta) = (1/n) sum_a l(f_a, y_a) over the n training inputs, where f_a is the model's
output at input a (a scalar, or k outputs) and y_a its target. Every equation of the hierarchy sees the loss
only through

    chi_s = d l(f_a, y_a) / d f_(a,i)             (one entry per sample s = (a, i); mse: the residual f - y)
    H_l   = d^2 l / d f_a^2                       (k x k per input; the O(1/m) correction uses H_l v)

so a loss is one object with those three things and the check of its targets. Outputs F carry the model's own
shape, (n,) or (n, k); targets Y the loss's own ((n,) integer labels for cross-entropy, F's shape for mse).

- :class:`MSE`: l = (1/2) |f - y|^2, chi = f - y, H_l = I (docs/math.md section 2 is this case).
- :class:`Logistic`: one output, labels 0/1: l = log(1 + e^f) - y f, chi = sigmoid(f) - y, H_l = s (1 - s).
- :class:`CrossEntropy`: k >= 2 outputs, integer labels: l = logsumexp(f) - f_y, chi = softmax(f) - e_y,
  H_l = diag(q) - q q^T with q = softmax(f).
- :class:`UserLoss`: any smooth ``fn(f_a, y_a) -> scalar`` (``FILE.py:fn`` or ``package.module:fn``); chi and
  H_l by autodiff.

:func:`loss_from_spec` turns a name or a ``FILE.py:fn`` into a loss; the name is recorded in every file.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .checks import _at, as_real, check_all_finite, format_shape, is_traced
from .errors import ConfigError, DataError


class AbstractLoss(eqx.Module):
    """A smooth per-input loss l(f_a, y_a) (module docstring). Implementations are final.

    ``per_input`` is the one abstract method; :meth:`chi`, :meth:`hvp` and :meth:`hessian` default to autodiff of
    it (the built-in losses give them in closed form), :meth:`value` is the mean over inputs, and
    :meth:`targets` checks the targets against the outputs' shape.
    """

    name: ClassVar[str]
    #: Whether the targets are class labels (read from the data's labels where it has them).
    takes_labels: ClassVar[bool] = False
    #: The default horizon of a run is where the frozen-kernel (p = 2) loss has fallen this many times
    #: (docs/math.md section 10): a classifier's loss on separable data never levels off (f grows like log t),
    #: so its horizon is a choice, 100-fold; mse's residual decays exponentially, 1000-fold.
    horizon_fall: ClassVar[float] = 100.0

    @abc.abstractmethod
    def per_input(self, f_a: Float[Array, "*k"], y_a: Array) -> Float[Array, ""]:
        """l(f_a, y_a) for one input: f_a of the model's per-input output shape (() or (k,))."""

    def value(self, F: Float[Array, "n *k"], Y: Array) -> Float[Array, ""]:
        """L = (1/n) sum_a l(f_a, y_a) (docs/math.md section 10)."""
        return jnp.mean(jax.vmap(self.per_input)(F, Y))

    def chi(self, F: Float[Array, "n *k"], Y: Array) -> Float[Array, "n *k"]:
        """chi_(a,i) = d l(f_a, y_a) / d f_(a,i): the loss gradient in function space, shaped like F."""
        return jax.vmap(jax.grad(self.per_input))(F, Y)

    def hvp(self, F: Float[Array, "n *k"], Y: Array, V: Float[Array, "n *k"]) -> Float[Array, "n *k"]:
        """H_l(f_a) v_a for every input a: the action of the per-input Hessian, shaped like F."""
        return jax.jvp(lambda G: self.chi(G, Y), (F,), (V,))[1]

    def hessian(self, F: Float[Array, "n *k"], Y: Array) -> Float[Array, "n k k"]:
        """H_l(f_a) = d^2 l / d f_a^2 as a k x k matrix per input (k = 1 for one output)."""
        n = F.shape[0]
        flat = lambda f, y: self.per_input(f.reshape(F.shape[1:]), y)  # noqa: E731
        return jax.vmap(jax.hessian(flat))(F.reshape(n, -1), Y)

    def gauss_newton(self, K: Float[Array, "N N"], F: Float[Array, "n *k"], Y: Array) -> Float[Array, "N N"]:
        """G = (1/n) H0^(1/2) K H0^(1/2) over the N = n k samples, H0 the block-diagonal per-input Hessians at the
        outputs F: the nonzero eigenvalues of the Gauss-Newton matrix (1/n) J^T H0 J, with K = J J^T
        (docs/math.md sections 10 and 11). H0^(1/2) from each block's eigendecomposition (positive semi-definite
        for a convex loss; negative eigenvalues of a user loss's block are clipped to 0). mse: K / n."""
        n = F.shape[0]
        w, V = jnp.linalg.eigh(self.hessian(F, Y))
        R = jnp.einsum("aij,aj,akj->aik", V, jnp.sqrt(jnp.clip(w, 0.0, None)), V)  # (n, k, k)
        k = R.shape[1]
        G = jnp.einsum("aij,ajbl,bml->aibm", R, K.reshape(n, k, n, k), R)
        return G.reshape(n * k, n * k) / n

    def check_outputs(self, out_shape: tuple[int, ...], where: str = "") -> None:
        """Refuse a per-input output shape this loss has no meaning for (ConfigError); any shape by default."""

    def target_shape(self, n: int, out_shape: tuple[int, ...], given: tuple[int, ...]) -> tuple[int, ...]:
        """The shape the targets of n inputs must have (``given``: the shape passed, for losses that take any
        trailing shape). Default: shaped like the outputs, (n,) + out_shape."""
        return (n,) + tuple(out_shape)

    def targets(self, y: Any, n: int, out_shape: tuple[int, ...], *, where: str = "", dtype=None) -> Array:
        """``y`` checked as the targets of n inputs with outputs of per-input shape ``out_shape``, as an array of
        ``dtype`` (DataError naming the bad value otherwise). Default: real, finite, shaped like the outputs."""
        self.check_outputs(out_shape, where)
        y = as_real("y", y, where=where, what="targets")
        want = (n,) + tuple(out_shape)
        if tuple(y.shape) != want:
            raise DataError(f"{_at(where)}'y' has shape {format_shape(y.shape)}; the {self.name} loss takes targets "
                            f"shaped like the outputs, {format_shape(want)}")
        check_all_finite("y", y, where=where, what="targets")
        return jnp.asarray(y, dtype=dtype)

    def describe(self) -> str:
        """The loss as a files and tables name it (``mse``, ``logistic``, ``cross-entropy``, or ``FILE.py:fn``)."""
        return self.name

    def raw_targets(self, y: Any, labels: Any | None) -> Any:
        """The targets this loss trains on, from a dataset's targets ``y`` and its class ``labels`` (or None):
        the labels for a loss that :attr:`takes_labels` (where the data have them), ``y`` otherwise."""
        return labels if self.takes_labels and labels is not None else y


def _labels(y: Any, n: int, classes: int, loss: str, where: str) -> Array:
    """Integer labels 0..classes-1 of n inputs, shape (n,) (integral floats accepted); DataError otherwise."""
    y = as_real("y", y, where=where, what="labels")
    if tuple(y.shape) != (n,):
        raise DataError(f"{_at(where)}'y' has shape {format_shape(y.shape)}; the {loss} loss takes one integer "
                        f"label per input, shape ({n},)")
    if not is_traced(y):
        v = np.asarray(y)
        bad = ~np.isfinite(v) | (v != np.round(v)) | (v < 0) | (v > classes - 1) if v.dtype.kind == "f" else \
            (v < 0) | (v > classes - 1)
        if bad.any():
            i = int(np.argmax(bad))
            one = int(bad.sum()) == 1
            raise DataError(f"{_at(where)}'y' has {int(bad.sum())} entr{'y that is not a label' if one else 'ies that are not labels'} "
                            f"in 0..{classes - 1}, first at index ({i},) ({v[i].item()}); the {loss} loss takes "
                            f"integer labels of {classes} classes")
    return jnp.asarray(y, dtype=jnp.int32)


class MSE(AbstractLoss):
    """l = (1/2) |f_a - y_a|^2: chi = f - y, H_l = I (docs/math.md sections 2 and 10)."""

    name: ClassVar[str] = "mse"
    horizon_fall: ClassVar[float] = 1000.0

    def per_input(self, f_a, y_a):
        return 0.5 * jnp.sum((f_a - y_a) ** 2)

    def value(self, F, Y):
        d2 = (F - Y) ** 2
        return 0.5 * (jnp.mean(d2) if F.ndim == 1 else jnp.sum(d2) / F.shape[0])

    def chi(self, F, Y):
        return F - Y

    def hvp(self, F, Y, V):
        return V


class Logistic(AbstractLoss):
    """One output, labels 0/1: l = log(1 + e^f) - y f, chi = sigmoid(f) - y, H_l = sigmoid(f)(1 - sigmoid(f))
    (docs/math.md section 10)."""

    name: ClassVar[str] = "logistic"
    takes_labels: ClassVar[bool] = True

    def per_input(self, f_a, y_a):
        return jnp.sum(jax.nn.softplus(f_a) - y_a * f_a)

    def chi(self, F, Y):
        return jax.nn.sigmoid(F) - Y

    def hvp(self, F, Y, V):
        s = jax.nn.sigmoid(F)
        return s * (1 - s) * V

    def check_outputs(self, out_shape, where=""):
        if tuple(out_shape) not in ((), (1,)):
            raise ConfigError(f"{_at(where)}the logistic loss takes one output per input; this model has "
                              f"{int(np.prod(out_shape))} (use cross-entropy for several classes)")

    def target_shape(self, n, out_shape, given):
        shaped = (n,) + tuple(out_shape)  # labels (n,), or already shaped like outputs (n, 1)
        return shaped if tuple(given) == shaped else (n,)

    def targets(self, y, n, out_shape, *, where="", dtype=None):
        self.check_outputs(out_shape, where)
        if out_shape and tuple(np.shape(y)) == (n,) + tuple(out_shape):
            y = jnp.reshape(jnp.asarray(y), (n,))
        labels = _labels(y, n, 2, self.name, where)
        return labels.reshape((n,) + tuple(out_shape)).astype(dtype or jnp.result_type(float))


class CrossEntropy(AbstractLoss):
    """k >= 2 outputs (class scores), integer labels: l = logsumexp(f) - f_y, chi = softmax(f) - e_y,
    H_l = diag(q) - q q^T with q = softmax(f) (docs/math.md section 10)."""

    name: ClassVar[str] = "cross-entropy"
    takes_labels: ClassVar[bool] = True

    def per_input(self, f_a, y_a):
        return jax.nn.logsumexp(f_a) - f_a[y_a]

    def chi(self, F, Y):
        return jax.nn.softmax(F, axis=-1) - jax.nn.one_hot(Y, F.shape[-1], dtype=F.dtype)

    def hvp(self, F, Y, V):
        q = jax.nn.softmax(F, axis=-1)
        return q * V - q * jnp.sum(q * V, axis=-1, keepdims=True)

    def check_outputs(self, out_shape, where=""):
        if len(out_shape) != 1 or out_shape[0] < 2:
            got = "one output" if tuple(out_shape) in ((), (1,)) else f"outputs of shape {format_shape(out_shape)}"
            raise ConfigError(f"{_at(where)}the cross-entropy loss takes k >= 2 class scores per input, outputs of "
                              f"shape (n, k); this model has {got} (use the logistic loss for one output, or "
                              "--outputs K)")

    def target_shape(self, n, out_shape, given):
        return (n,)

    def targets(self, y, n, out_shape, *, where="", dtype=None):
        self.check_outputs(out_shape, where)
        return _labels(y, n, out_shape[0], self.name, where)


class UserLoss(AbstractLoss):
    """The user's own smooth per-input loss ``fn(f_a, y_a) -> scalar`` (``source`` names it in files): chi and
    H_l by autodiff (docs/math.md section 10); targets shaped (n, ...) with any trailing shape."""

    name: ClassVar[str] = "user"
    fn: Callable[[Array, Array], Array] = eqx.field(static=True)
    source: str = eqx.field(static=True, default="user loss")

    def per_input(self, f_a, y_a):
        return self.fn(f_a, y_a)

    def target_shape(self, n, out_shape, given):
        return (n,) + tuple(given[1:])

    def targets(self, y, n, out_shape, *, where="", dtype=None):
        y = as_real("y", y, where=where, what="targets")
        if y.ndim < 1 or y.shape[0] != n:
            raise DataError(f"{_at(where)}'y' has shape {format_shape(y.shape)}; expected one target per input, "
                            f"({n}, ...)")
        check_all_finite("y", y, where=where, what="targets")
        y = jnp.asarray(y, dtype=dtype if jnp.issubdtype(y.dtype, jnp.inexact) else None)
        f = jax.ShapeDtypeStruct(tuple(out_shape), dtype or jnp.result_type(float))
        try:
            out = jax.eval_shape(self.fn, f, jax.ShapeDtypeStruct(y.shape[1:], y.dtype))
        except Exception as e:  # the user's function cannot take one input's outputs and target
            raise ConfigError(f"{_at(where)}loss {self.source!r}: fn(f_a, y_a) with f_a of shape "
                              f"{format_shape(out_shape)} and y_a of shape {format_shape(y.shape[1:])} raised "
                              f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
        if getattr(out, "shape", None) != ():
            raise ConfigError(f"{_at(where)}loss {self.source!r}: fn(f_a, y_a) must return a scalar; it returns "
                              f"shape {format_shape(getattr(out, 'shape', ()))}")
        return y

    def describe(self) -> str:
        return self.source


def decisions(F: Float[Array, "*T n *k"], out_shape: tuple[int, ...]) -> Array:
    """The class each output decides (docs/math.md section 10): argmax over k >= 2 outputs, and f > 0 (class 1)
    for one output (a logit, or a -1/+1 target fitted by mse)."""
    F = jnp.asarray(F)
    return jnp.argmax(F, axis=-1) if tuple(out_shape) and out_shape[0] > 1 else \
        (F.reshape(F.shape[:F.ndim - len(out_shape)]) > 0).astype(jnp.int32)


#: The built-in losses by name.
LOSSES: dict[str, AbstractLoss] = {loss.name: loss for loss in (MSE(), Logistic(), CrossEntropy())}


def loss_from_spec(spec: str | AbstractLoss) -> AbstractLoss:
    """A loss from its name (``mse``, ``logistic``, ``cross-entropy``), a ``FILE.py:fn`` or ``package.module:fn``
    naming the user's per-input ``fn(f_a, y_a) -> scalar``, or a loss object itself."""
    if isinstance(spec, AbstractLoss):
        return spec
    if not isinstance(spec, str) or not spec:
        raise ConfigError(f"loss = {spec!r}; accepted: {', '.join(LOSSES)}, FILE.py:fn or package.module:fn")
    if spec in LOSSES:
        return LOSSES[spec]
    if ":" not in spec:
        raise ConfigError(f"loss = {spec!r} is not known; accepted: {', '.join(LOSSES)}, FILE.py:fn or "
                          "package.module:fn (your own per-input loss fn(f_a, y_a) -> scalar)")
    from .models import load_factory

    return UserLoss(fn=load_factory(spec, what="loss"), source=spec)
