"""The tensors of the discrete-time hierarchy (gradient descent at a finite learning rate; docs/math.md
section 7), for any model, by nested JVPs through its forward pass.

With v_b = eta . grad f_b (the flow direction of input b) and D^k F[u, ..] the k-th derivative of F with the
directions u, .. held fixed:

    O11(a, b, c)       = D^2 f_a [v_b, v_c]                 symmetric in b, c
    O111(a, b, c, e)   = D^3 f_a [v_b, v_c, v_e]            symmetric in b, c, e
    M(a1, a2, b, c)    = D^2 K^(2)(a1, a2) [v_b, v_c]       directions fixed
    P(a, b, c, e)      = D O11(a, b, c) [v_e]               O11's directions moving with theta (like K^(r+1))

A gradient-descent step g = -h sum_b Delta_b v_b (h = lr / n) moves f_a by -h K^(2)[Delta] + (h^2/2)
O11[Delta, Delta] - (h^3/6) O111[Delta, Delta, Delta] + ..., and the discrete O(1/m) system
(:func:`nth.dynamics.discrete_nth`) evolves K^(2), K^(3) and O11 with M, K^(4) and P. The first slot may hold
test inputs (``first``), as for the kernels (HY Eq. 22). Each tensor is one :class:`~nth.kernel._engine.TensorSpec`
and goes through the kernel engine's one loop (batches, devices, several seeds, progress).
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from ..checks import check_tree_finite
from ..errors import ConfigError, MemoryBudgetError
from ..models import AbstractModel, as_model, check_inputs as check_model_inputs, combine, flow_direction
from ..models import grouped_derivative, move_along, num_outputs, output_shape, partition, sample_direction
from ..models._base import first_model, model_dtype
from ._engine import TensorSpec, tensor
from ._impl import IMPLEMENTATIONS, jacobian_ntk
from ._plan import default_memory_budget, format_bytes, plan_kernels

#: name -> (direction groups as slot positions, head axes: 1 for a derivative of f, 2 for one of K^(2)).
GD_TENSORS: dict[str, tuple[tuple[tuple[int, ...], ...], int]] = {
    "O11": (((0, 1),), 1),
    "O111": (((0, 1, 2),), 1),
    "M": (((0, 1),), 2),
    "P": (((0, 1), (2,)), 1),
}


class _GDTuple(eqx.Module):
    """One direction tuple of the tensor ``name`` (module docstring), by nested JVPs."""

    name: str = eqx.field(static=True)

    def __call__(self, model: AbstractModel, X1: Array, X: Array, sym: bool, idx: Array,
                 out_shape: tuple[int, ...]) -> Array:
        groups, head = GD_TENSORS[self.name]
        params, static = partition(model)
        dirs = [sample_direction(X, i, out_shape) for i in idx]

        def move(p, group, steps):
            m = combine(p, static)
            return move_along(p, [flow_direction(m, d) for d in group], steps)

        if head == 1:
            evaluate = lambda p: combine(p, static)(X1).reshape(-1)  # noqa: E731  (the outputs over samples)
        else:
            evaluate = lambda p: jacobian_ntk(combine(p, static), X1, None if sym else X)  # noqa: E731
        return grouped_derivative(params, move, evaluate, [[dirs[j] for j in g] for g in groups],
                                  model_dtype(model))


def gd_spec(name: str) -> TensorSpec:
    """The :class:`~nth.kernel._engine.TensorSpec` of the discrete-time tensor ``name`` (O11, O111, M, P)."""
    if name not in GD_TENSORS:
        raise ConfigError(f"discrete-time tensor {name!r} is not known; accepted: {', '.join(GD_TENSORS)}")
    groups, head = GD_TENSORS[name]
    return TensorSpec(name, sum(len(g) for g in groups), head, _GDTuple(name))


def gd_tensor_bytes(n: int, k: int | None, dtype) -> dict[str, int]:
    """Bytes of each discrete-time tensor over n samples with ``k`` samples in the first slot (n when None)."""
    k = n if k is None else k
    it = jnp.dtype(dtype).itemsize
    return {name: k * n ** (sum(len(g) for g in groups) + head - 1) * it for name, (groups, head) in GD_TENSORS.items()}


def gd_tensors(model: AbstractModel, X: Float[Array, "n *in"], *, first: Float[Array, "k *in"] | None = None,
               names: tuple[str, ...] = tuple(GD_TENSORS), memory_budget: int | None = None, chunk: int | None = None,
               progress: bool = False, devices=None, stacked: bool = False) -> dict[str, Array]:
    """The discrete-time tensors ``names`` at the weights of ``model`` (module docstring; docs/math.md sections 7
    and 10), over samples: O11 of shape (N1, N, N), O111, M and P of shape (N1, N, N, N) (N = n k samples of the
    n training inputs with k outputs each; N1 = N, or the samples of ``first``; M's second slot is a training
    sample). Before anything is allocated their bytes and one batch of work are predicted
    and a :class:`~nth.errors.MemoryBudgetError` is raised over ``memory_budget``. ``chunk``, ``devices``,
    ``progress`` and ``stacked`` as for :func:`nth.kernels`.
    """
    model = as_model(model)
    B, one = first_model(model, "gd_tensors") if stacked else (1, model)
    X = check_model_inputs(one, X, where="gd_tensors")
    X1 = None if first is None else check_model_inputs(one, first, "first", where="gd_tensors")
    check_tree_finite("model", model, where="gd_tensors", what="weights")
    one.check_level(5)  # third derivatives of f, and derivatives of K^(3)-like objects: a smooth activation
    specs = [gd_spec(name) for name in names]
    n, k = X.shape[0], None if X1 is None else X1.shape[0]
    outputs = num_outputs(output_shape(one, X.shape[1:], X.dtype))
    # one batch of M's work (a second derivative of K^(2)) bounds every tensor's; K^(4)'s plan gives it
    sizes = {s: b * B for s, b in gd_tensor_bytes(n * outputs, None if k is None else k * outputs,
                                                   model_dtype(one)).items() if s in names}
    jvp, in_shape = IMPLEMENTATIONS["jvp"], tuple(X.shape[1:])
    try:
        plan = plan_kernels(one, n, 4, implementation=jvp, memory_budget=memory_budget, chunk=chunk, first_rows=k,
                            models=B, in_shape=in_shape, outputs=outputs)
        work, budget = plan.work_bytes * B, plan.budget
    except MemoryBudgetError:  # even one batch of work does not fit: say so for these tensors
        plan, work = None, jvp.work_bytes(one, 4, 1, n, k or n, False, in_shape, outputs) * B
        budget = default_memory_budget() if memory_budget is None else int(memory_budget)
    total = sum(sizes.values()) + work
    if plan is None or total > budget:
        raise MemoryBudgetError(
            f"the discrete-time tensors at n = {n} need about {format_bytes(total)}, over the memory budget of "
            f"{format_bytes(budget)}: " + ", ".join(f"{s} {format_bytes(b)}" for s, b in sizes.items())
            + f", work per batch {format_bytes(work)}. Reduce n (they grow like n^4), the width, or "
            "raise the budget (--memory-budget / memory_budget=).")
    return {s.label: tensor(model, X, s, first=X1, chunk=plan.chunk, progress=progress, devices=devices,
                            stacked=stacked) for s in specs}
