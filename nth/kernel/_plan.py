"""Memory plan of a kernel computation, predicted from sizes before anything is allocated.

The stored kernels are exact (n^r entries each, or k n^(r-1) with k test inputs in the first slot); one batch
of direction tuples is predicted by the kernel implementation (:meth:`work_bytes`). The plan also chooses the
batch size (direction tuples per compiled call) and refuses, with the ways out, a computation over budget.
Works on an abstract model (``eqx.filter_eval_shape`` of its constructor): nothing is allocated.
"""

from __future__ import annotations

import os

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..errors import ConfigError, MemoryBudgetError
from ..models import AbstractModel, as_model, num_params
from ..models._base import model_dtype
from ._impl import implementation as choose_implementation


def format_bytes(b: float) -> str:
    """1536 -> '1.5 KiB'; sizes beyond 1024 EiB in powers of ten ('2.3e+24 B')."""
    x = float(b)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if abs(x) < 1024:
            return f"{x:.1f} {unit}" if unit != "B" else f"{int(x)} B"
        x /= 1024
    return f"{float(b):.2g} B"


def kernel_bytes(n: int, r: int, dtype=jnp.float64, first_rows: int | None = None) -> int:
    """Bytes of one dense K^(r) over n samples: n^r entries, or k n^(r-1) with k samples in the first slot."""
    return (n if first_rows is None else first_rows) * n ** (r - 1) * jnp.dtype(dtype).itemsize


def default_memory_budget() -> int:
    """Default budget: 75% of the accelerator's memory, or half of physical RAM on the CPU."""
    dev = jax.devices()[0]
    if dev.platform != "cpu":
        try:
            limit = dev.memory_stats().get("bytes_limit")
            if limit:
                return int(0.75 * limit)
        except Exception:  # memory_stats is optional for backends
            pass
    try:
        return int(0.5 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 4 * 1024**3


#: Upper bound on the direction tuples of one compiled batch, per platform: on a CPU larger batches only add
#: memory traffic (the structured MLP kernels at n = 16, m = 512 gain nothing beyond 16); an accelerator wants
#: wide batches. Implementations may bound it further (the generic engine takes one tuple per call on a CPU).
MAX_BATCH = {"cpu": 16}
MAX_BATCH_ACCELERATOR = 256


def max_batch() -> int:
    return MAX_BATCH.get(jax.devices()[0].platform, MAX_BATCH_ACCELERATOR)


class KernelPlan(eqx.Module):
    """Predicted memory of a kernel computation, and the batch size chosen to fit the budget.

    ``kernel_bytes`` maps r to the bytes of the dense K^(r) that will be stored (the top level is absent when
    it is applied matrix-free); ``work_bytes`` is the peak of one batch of direction tuples; ``models`` is the
    number of models (seeds) computed together.
    """

    n: int
    p: int
    itemsize: int
    num_params: int
    chunk: int
    kernel_bytes: dict[int, int]
    work_bytes: int
    budget: int
    implementation: str
    matrix_free: bool = False
    models: int = 1

    @property
    def total_bytes(self) -> int:
        return self.models * (sum(self.kernel_bytes.values()) + self.work_bytes + self.num_params * self.itemsize)

    def describe(self) -> str:
        rows = [f"  K^({r}): {format_bytes(b)}" for r, b in self.kernel_bytes.items()]
        if self.matrix_free:
            rows.append(f"  K^({self.p}): not stored (matrix-free: contracted with the residual in the ODE)")
        rows.append(f"  weights: {format_bytes(self.num_params * self.itemsize)}")
        rows.append(f"  work per batch ({self.chunk} direction tuples, {self.implementation}): "
                    f"{format_bytes(self.work_bytes)}")
        if self.models > 1:
            rows.append(f"  times {self.models} models computed together")
        rows.append(f"  total {format_bytes(self.total_bytes)} of budget {format_bytes(self.budget)}")
        return "\n".join(rows)


def plan_kernels(model: AbstractModel, n: int, p: int, *, implementation="auto", memory_budget: int | None = None,
                 chunk: int | None = None, first_rows: int | None = None, matrix_free: bool = False,
                 models: int = 1, in_shape: tuple[int, ...] | None = None, outputs: int = 1) -> KernelPlan:
    """Predict the bytes of every K^(r), r = 2..p, the weights and one batch of work; refuse if over budget.

    n training inputs (and ``first_rows`` test inputs in the first slot) with ``outputs`` outputs each: every
    slot runs over samples, N = n x outputs of them (docs/math.md section 10).

    ``model`` may be abstract (shapes only). The batch size, if not given, is the largest power of two up to
    :func:`max_batch` (and the implementation's own bound) whose work fits in a quarter of the budget.
    With ``matrix_free``, K^(p) is not stored.
    ``models`` counts models (seeds) computed together; ``in_shape`` (one input's shape) is needed only for a
    model that does not state its own. Raises :class:`~nth.errors.MemoryBudgetError` with the
    itemized plan and the ways out.
    """
    if not isinstance(p, (int, np.integer)) or isinstance(p, bool) or p < 2:
        raise ConfigError(f"p = {p!r} must be an integer >= 2 (p = 2 is the frozen NTK)")
    if matrix_free and p < 3:
        raise ConfigError(f"matrix-free needs p >= 3 (at p = {p} the top kernel is K^(2) itself)")
    budget = default_memory_budget() if memory_budget is None else int(memory_budget)
    if budget <= 0:
        raise ConfigError(f"memory budget = {memory_budget!r} must be a positive number of bytes")
    model = as_model(model)
    impl = choose_implementation(model, implementation)
    dtype = model_dtype(model)
    itemsize = jnp.dtype(dtype).itemsize
    top = p - 1 if matrix_free else p
    N = n * outputs
    kb = {r: kernel_bytes(N, r, dtype, None if first_rows is None else first_rows * outputs) for r in range(2, top + 1)}
    tuples = N ** (p - 1 - impl.level(p - 1)) if matrix_free else N ** (p - impl.level(p))
    k = n if first_rows is None else first_rows

    def work(b):
        return models * impl.work_bytes(model, p, b, n, k, matrix_free, in_shape, outputs)

    if chunk is None:
        chunk, cap = 1, min(max_batch(), impl.max_batch(model, in_shape) or max_batch(), tuples)
        while chunk * 2 <= cap and work(chunk * 2) <= budget // 4:
            chunk *= 2
    elif not isinstance(chunk, (int, np.integer)) or chunk < 1:
        raise ConfigError(f"chunk = {chunk!r} must be a positive integer (direction tuples per batch)")
    chunk = max(1, min(int(chunk), tuples))
    plan = KernelPlan(n=n, p=p, itemsize=itemsize, num_params=num_params(model), chunk=chunk, kernel_bytes=kb,
                      work_bytes=impl.work_bytes(model, p, chunk, n, k, matrix_free, in_shape, outputs), budget=budget,
                      implementation=impl.name, matrix_free=matrix_free, models=models)
    if plan.total_bytes > budget:
        way_out = ("" if matrix_free or p < 3 else
                   f" apply K^({p}) matrix-free (--matrix-free / matrix_free=True: memory then grows like "
                   f"n^{p - 1}),")
        weights = plan.num_params * itemsize
        first = (f"Reduce the width: the weights alone need {format_bytes(models * weights)}. Otherwise reduce"
                 if models * weights > budget else
                 f"Reduce the width or a cnn's input size (one batch of work needs {format_bytes(plan.work_bytes)}), "
                 "or reduce" if plan.work_bytes > sum(kb.values()) else "Reduce")
        raise MemoryBudgetError(
            f"kernels up to K^({p}) at n = {n}{f' ({N} samples)' if outputs > 1 else ''} need about {format_bytes(plan.total_bytes)}, over the memory "
            f"budget of {format_bytes(budget)}:\n{plan.describe()}\n"
            f"{first} the number of training points n (K^({p}) grows like n^{p}),{way_out} lower p, use float32 "
            "(--dtype float32)" + (", batch fewer seeds" if models > 1 else "")
            + ", or raise the budget (--memory-budget / memory_budget=).")
    return plan
