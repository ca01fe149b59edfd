"""The initial-value problem every prediction starts from, checked in one place (docs/math.md sections 2 and 10).

A problem is the kernels K^(r)(0) over samples (s = (a, i), input a, output i, flattened input first: N = n k
samples for n inputs with k outputs each), the outputs f(0) at the training inputs (shape (n,) or (n, k), the
model's own), the targets y in the loss's form, the loss, and optionally the same at test inputs (the first
slot of every kernel at a test input, HY Eq. 22) and the tensors of the discrete-time hierarchy (section 7).
:func:`check_problem` checks all of it against each other, names the odd argument out, and returns a
:class:`Problem` whose arrays are flat over samples; every dynamics function (:func:`nth.truncated_nth`,
:func:`nth.dg_correction`, :func:`nth.discrete_nth`, :func:`nth.hy_p3_reduced`) goes through it.

The dynamics see the loss only through :class:`Objective`: chi(f) (the loss gradient in function space, which
replaces the residual f - y of the mse case everywhere), the action of its Hessian H_l, and the loss value.
"""

from __future__ import annotations

from collections.abc import Mapping

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from ..checks import check_all_finite, check_array, format_shape, match_sizes
from ..errors import ConfigError, DataError
from ..kernel import GD_TENSORS, KernelOperator
from ..losses import MSE, AbstractLoss, loss_from_spec
from ..models import num_outputs


class Objective(eqx.Module):
    """The loss of a problem as the dynamics see it, on outputs flat over samples (N = n k): chi, H_l v, L."""

    loss: AbstractLoss
    y: Array
    out_shape: tuple[int, ...] = eqx.field(static=True)

    def _shaped(self, f: Array) -> Array:
        return f.reshape((self.y.shape[0],) + self.out_shape)

    def chi(self, f: Float[Array, " N"]) -> Float[Array, " N"]:
        """chi_s = d l(f_a, y_a) / d f_s (docs/math.md section 10; mse: f - y)."""
        return self.loss.chi(self._shaped(f), self.y).reshape(-1)

    def hvp(self, f: Float[Array, " N"], v: Float[Array, " N"]) -> Float[Array, " N"]:
        """(H_l(f_a) v_a) over samples: the per-input loss Hessian at f applied to v."""
        return self.loss.hvp(self._shaped(f), self.y, self._shaped(v)).reshape(-1)

    def value(self, f: Float[Array, " N"]) -> Float[Array, ""]:
        """L = (1/n) sum_a l(f_a, y_a)."""
        return self.loss.value(self._shaped(f), self.y)


class Problem(eqx.Module):
    """A checked initial-value problem (module docstring). Arrays are flat over samples, after a leading seed
    axis when ``stacked``: ``kernels[r]`` (N,)*r, ``f0`` (N,), ``test_kernels[r]`` (N1,) + (N,)*(r-1),
    ``f0_test`` (N1,), ``tensors`` the discrete-time tensors over samples; ``y`` the targets in the loss's form
    (no seed axis: shared); ``out_shape`` the model's per-input output shape (() or (k,))."""

    kernels: dict[int, Array | KernelOperator]
    f0: Array
    y: Array
    loss: AbstractLoss
    test_kernels: dict[int, Array | KernelOperator] | None
    f0_test: Array | None
    tensors: dict[str, Array] | None
    test_tensors: dict[str, Array] | None
    out_shape: tuple[int, ...] = eqx.field(static=True)
    stacked: bool = eqx.field(static=True, default=False)

    @property
    def n(self) -> int:
        """Training inputs."""
        return int(self.y.shape[0])

    @property
    def k(self) -> int:
        """Outputs per input."""
        return num_outputs(self.out_shape)

    @property
    def objective(self) -> Objective:
        return Objective(self.loss, self.y, self.out_shape)

    @property
    def is_mse(self) -> bool:
        return isinstance(self.loss, MSE)

    def shaped(self, f: Array, inputs: int | None = None) -> Array:
        """Outputs flat over samples (..., N) in the model's own shape (..., n[, k]) (``inputs``: their count,
        default the training inputs)."""
        return f.reshape(f.shape[:-1] + (self.n if inputs is None else inputs,) + self.out_shape)

    @property
    def n_test(self) -> int | None:
        return None if self.f0_test is None else self.f0_test.shape[-1] // self.k


def _entry(where: str, name: str, K, finite: bool = True):
    """A kernel argument: a matrix-free operator as is, else a real array (static checks; values if ``finite``)."""
    if isinstance(K, KernelOperator):
        return K
    return check_array(name, K, where=where, finite=finite, what="kernel entries")


def _dense(where: str, name: str, kernels: Mapping, levels: tuple[int, ...], matrix_free_top: bool,
           dense_reason: str) -> None:
    """Only the top level (p >= 3) may be matrix-free, and only where ``matrix_free_top``: a lower level evolves
    and needs its dense value."""
    top = max(levels)
    for r in levels:
        if isinstance(kernels[r], KernelOperator) and (not matrix_free_top or r != top or r == 2):
            if dense_reason:
                raise ConfigError(f"{where}: '{name}[{r}]' is matrix-free; {dense_reason}")
            raise ConfigError(f"{where}: '{name}[{r}]' is matrix-free, but only the top level K^(p) with p >= 3 can "
                              f"be (here p = {top}): a lower level evolves and needs its dense value")


def _lead(K2, stacked: bool, where: str) -> tuple[int, ...]:
    """() or, with ``stacked``, (B,): the leading seed axis every kernel and f0 carry (read from K^(2))."""
    if not stacked:
        return ()
    shape = tuple(K2.shape)
    if len(shape) != 3:
        raise DataError(f"{where}: 'kernels[2]' has shape {format_shape(shape)}; with stacked=True expected "
                        "(B, n, n): a leading seed axis, then n x n")
    return shape[:1]


def _out_shape(f0, lead: tuple[int, ...], where: str) -> tuple[int, ...]:
    """The per-input output shape of f0 = lead + (n,) + out_shape: () or (k,)."""
    out = tuple(f0.shape[len(lead) + 1:])
    if len(out) > 1:
        raise DataError(f"{where}: 'f0' has shape {format_shape(f0.shape)}; expected "
                        f"{format_shape(lead + ('n',))} (one output per input) or {format_shape(lead + ('n', 'k'))}"
                        " (k outputs)")
    return out


def check_problem(
    kernels: Mapping[int, Array],
    f0,
    y,
    *,
    levels: tuple[int, ...],
    where: str,
    loss: AbstractLoss | str = MSE(),
    test_kernels: Mapping[int, Array] | None = None,
    f0_test=None,
    stacked: bool = False,
    matrix_free_top: bool = False,
    dense_reason: str = "",
    tensors: Mapping[str, Array] | None = None,
    test_tensors: Mapping[str, Array] | None = None,
    tensor_names: tuple[str, ...] = (),
    test_hint: str = "",
) -> Problem:
    """Check a problem's arguments against each other (module docstring; docs/math.md sections 2, 7 and 10: slots
    over samples, chi of the loss) and return it as a :class:`Problem`.

    ``levels`` are the kernels K^(r) needed (the caller has checked that ``kernels`` holds them); the top one may
    be a matrix-free :class:`~nth.KernelOperator` only with ``matrix_free_top`` (else ``dense_reason`` says
    why not). Sizes: the n inputs most of f0, y and the kernels agree on (the odd one is named), each kernel's
    slots over the N = n k samples of n inputs with k outputs (k from f0's shape: (n,) or (n, k)). Values: real
    and finite, targets valid for ``loss``. With ``test_kernels`` and ``f0_test`` (both or neither) the same for
    the test inputs; ``tensor_names`` are the discrete-time tensors needed from ``tensors`` (and
    ``test_tensors`` with test inputs). Everything comes back in K^(2)'s dtype (float64 unless it is float32).
    """
    loss = loss_from_spec(loss)
    Ks = {r: _entry(where, f"kernels[{r}]", kernels[r], finite=False) for r in levels}
    _dense(where, "kernels", Ks, levels, matrix_free_top, dense_reason)
    f0 = check_array("f0", f0, where=where, finite=False, what="outputs")
    y = check_array("y", y, where=where, finite=False, what="targets")
    lead = _lead(Ks[2], stacked, where)
    out_shape = _out_shape(f0, lead, where)
    k = num_outputs(out_shape)
    hint = (f" (stacked=True: f0 and every kernel carry a leading seed axis of size B = {lead[0]}; y is shared)"
            if stacked else "")
    target = lambda n: loss.target_shape(n, out_shape, tuple(y.shape))  # noqa: E731
    entries = [("kernels[2]", Ks[2].shape, -1, lambda n: lead + (n * k,) * 2, k), ("y", y.shape, 0, target),
               ("f0", f0.shape, -1 - len(out_shape), lambda n: lead + (n,) + out_shape)]
    entries += [(f"kernels[{r}]", Ks[r].shape, -1, lambda n, r=r: lead + (n * k,) * r, k) for r in levels if r > 2]
    n = match_sizes(where, entries, hint=hint)
    check_all_finite("f0", f0, where=where, what="outputs")
    y = loss.targets(y, n, out_shape, where=where)
    for r in levels:
        if not isinstance(Ks[r], KernelOperator):
            check_all_finite(f"kernels[{r}]", Ks[r], where=where, what="kernel entries")
    dtype = Ks[2].dtype if jnp.issubdtype(Ks[2].dtype, jnp.inexact) else jnp.result_type(float)
    cast = lambda K: K if isinstance(K, KernelOperator) else jnp.asarray(K, dtype=dtype)  # noqa: E731
    if jnp.issubdtype(y.dtype, jnp.inexact):
        y = jnp.asarray(y, dtype=dtype)
    N = n * k
    T = None
    if tensor_names:
        T = _tensors(where, "tensors", tensors, tensor_names, lambda s: (N,) * s, f" (n = {N})", dtype)
    test = None
    if test_kernels is not None or f0_test is not None:
        test = _test(where, test_kernels, f0_test, levels, lead, n, out_shape, stacked, matrix_free_top,
                     dense_reason, test_hint, cast, dtype)
    Tt = None
    if tensor_names and test is None and test_tensors is not None:
        raise ConfigError(f"{where}: 'test_tensors' was given without 'f0_test' and 'test_kernels'; test-point "
                          "predictions need all three (first slot at the test inputs)")
    if test is not None and tensor_names:
        if test_tensors is None:
            raise ConfigError(f"{where}: test-point predictions need f0_test, test_kernels and test_tensors together "
                              "(first slot at the test inputs)")
        n1 = test[1].shape[-1]
        Tt = _tensors(where, "test_tensors", test_tensors, tensor_names, lambda s: (n1,) + (N,) * (s - 1),
                      f" (k = {n1}, n = {N})", dtype)
    return Problem(kernels={r: cast(Ks[r]) for r in levels}, f0=jnp.asarray(f0, dtype=dtype).reshape(lead + (N,)),
                   y=y, loss=loss, test_kernels=None if test is None else test[0],
                   f0_test=None if test is None else test[1], tensors=T, test_tensors=Tt, out_shape=out_shape,
                   stacked=stacked)


def _slots(name: str) -> int:
    """The sample slots of the discrete-time tensor ``name``: its direction slots and head axes (GD_TENSORS)."""
    groups, head = GD_TENSORS[name]
    return sum(len(g) for g in groups) + head


def _tensors(where, name, table, names, shape, why, dtype) -> dict[str, Array]:
    if not isinstance(table, Mapping) or any(s not in table for s in names):
        got = sorted(table) if isinstance(table, Mapping) else type(table).__name__
        raise ConfigError(f"{where}: '{name}' must hold {list(names)} (nth.gd_tensors(net, X)); got {got}")
    return {s: check_array(f"{name}[{s!r}]", table[s], where=where, shape=shape(_slots(s)), why=why,
                           what="tensor entries", dtype=dtype) for s in names}


def _test(where, test_kernels, f0_test, levels, lead, n, out_shape, stacked, matrix_free_top, dense_reason,
          test_hint, cast, dtype):
    """The test kernels K^(r)(x, X^(r-1)) and f0_test (flat over samples), checked against each other (the test
    inputs most of them agree on), against the n training inputs and the seed axis ``lead``; real, finite."""
    if test_kernels is None or f0_test is None:
        given, missing = ("test_kernels", "f0_test") if f0_test is None else ("f0_test", "test_kernels")
        raise ConfigError(f"{where}: '{given}' was given without '{missing}'; test-point predictions need both "
                          "test_kernels (nth.kernels(..., first=X_test)) and f0_test (the network's outputs at "
                          "X_test)")
    p = max(levels)
    if not isinstance(test_kernels, Mapping) or any(r not in test_kernels for r in levels):
        got = sorted(test_kernels) if isinstance(test_kernels, Mapping) else type(test_kernels).__name__
        need = f"r = 2..{p}" if tuple(levels) == tuple(range(2, p + 1)) else f"r = {', '.join(map(str, levels))}"
        raise ConfigError(f"{where}: 'test_kernels' must map r -> K^(r)(x, X^(r-1)) for {need} (nth.kernels("
                          f"net, X, p={p}, first=X_test)){test_hint}; got {got}")
    Kt = {r: _entry(where, f"test_kernels[{r}]", test_kernels[r], finite=False) for r in levels}
    _dense(where, "test_kernels", Kt, levels, matrix_free_top, dense_reason)
    f0_test = check_array("f0_test", f0_test, where=where, finite=False, what="outputs")
    k = num_outputs(out_shape)
    N = n * k
    i = len(lead)
    hint = f" (stacked=True: f0_test and every test kernel carry a leading seed axis of size B = {lead[0]})" \
        if stacked else f" (n = {n} training inputs)"
    entries = [(f"test_kernels[{r}]", Kt[r].shape, i, lambda m, r=r: lead + (m * k,) + (N,) * (r - 1), k)
               for r in levels]
    entries.append(("f0_test", f0_test.shape, -1 - len(out_shape), lambda m: lead + (m,) + out_shape))
    m = match_sizes(where, entries, symbol="k", hint=hint)
    check_all_finite("f0_test", f0_test, where=where, what="outputs")
    for r in levels:
        if not isinstance(Kt[r], KernelOperator):
            check_all_finite(f"test_kernels[{r}]", Kt[r], where=where, what="kernel entries")
    return {r: cast(Kt[r]) for r in levels}, jnp.asarray(f0_test, dtype=dtype).reshape(lead + (m * k,))
