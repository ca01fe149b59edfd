"""Memory plan of a whole run, stage by stage, before anything is allocated.

Every estimate is a formula in the sizes (n, k test inputs, the model's parameter count and forward-pass
size, p, dtype, batch size, number of saved times, seeds computed together); the model may be abstract
(``eqx.filter_eval_shape`` of its constructor), so nothing is allocated. Stages run one after the other while
the kernels stay resident, so the predicted peak is the kernels plus the largest stage:

- kernels: every stored K^(r) (training and test inputs) plus one batch of direction tuples
  (:func:`nth.kernel.plan_kernels`);
- gradient descent (with ``gradient_descent``): the forward/backward pass of the batch of inputs, the weights,
  their gradient and update, and the saved trajectory (f, K^(2), loss at every saved step);
- gradient flow (unless ``flow`` is False): the same, and the Diffrax state (a parameter-sized displacement)
  times the solver's stage count;
- truncated NTH: the state (f, K^(2)..K^(p-1), test rows) times the stage count, and the saved trajectory;
- DG: the eigenbasis copies of K^(3) and K^(4);
- the discrete-time hierarchy (gradient descent at a finite learning rate, with ``discrete``): the tensors
  O11, O111, M, P (docs/math.md section 7) and one direction tuple of their nested JVPs;
- spectra (``spectra``): the weights at every saved time (resident from the reference's stage on), the first
  Lanczos basis for the ``top`` eigenvalues (it grows within what the budget leaves, ``lanczos_budget``,
  :func:`nth.kernel.lanczos_top`), and the vectors and passes of a Hessian-vector product (docs/math.md
  section 11).
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from ..dynamics import SOLVER_COPIES
from ..errors import ConfigError, MemoryBudgetError
from ..kernel import IMPLEMENTATIONS, KernelPlan, forward_entries, format_bytes, kernel_bytes, plan_kernels
from ..kernel._gd import gd_tensor_bytes
from ..kernel._spectrum import LANCZOS_BLOCK, lanczos_bytes
from ..models import AbstractModel, as_model, num_outputs, num_params, output_shape
from ..models._base import model_dtype


@dataclasses.dataclass(frozen=True)
class SolvePlan:
    """Predicted bytes per stage (``stages``), what stays resident (``resident``), and the budget; every figure
    covers all ``models`` (seeds) computed together. With spectra, ``lanczos_budget`` is what the Lanczos basis
    may grow to (:func:`nth.kernel.lanczos_top`): the budget less what is resident and the rest of that stage."""

    kernels: KernelPlan
    test_kernels: KernelPlan | None
    resident: int
    stages: dict[str, int]
    budget: int
    models: int = 1
    lanczos_budget: int | None = None

    @property
    def peak(self) -> int:
        return self.resident + max(self.stages.values())

    def describe(self) -> str:
        lines = ["memory plan (predicted, nothing allocated yet):", "kernels at the training inputs:",
                 self.kernels.describe()]
        if self.test_kernels is not None:
            lines += ["kernels at the test inputs:", self.test_kernels.describe()]
        lines.append(f"resident while solving (kernels, weights): {format_bytes(self.resident)}")
        lines += [f"  stage {name}: {format_bytes(b)}" for name, b in self.stages.items()]
        lines.append(f"predicted peak {format_bytes(self.peak)} of budget {format_bytes(self.budget)} "
                     f"(kernel batch: {self.kernels.chunk} direction tuples"
                     + (f"; {self.models} seeds together)" if self.models > 1 else ")"))
        return "\n".join(lines)


def plan_solve(model: AbstractModel, *, n: int, n_test: int, p: int, num_times: int = 41,
               memory_budget: int | None = None, chunk: int | None = None, matrix_free: bool = False,
               dg: bool = False, nth_solver: str = "tsit5", flow_solver: str = "dopri8",
               implementation="auto", models: int = 1, in_shape: tuple[int, ...] | None = None,
               discrete: bool = False, spectra: bool = False, top: int = 4, gradient_descent: bool = False,
               flow: bool = True) -> SolvePlan:
    """Plan every stage of a run of ``model`` (abstract or concrete; with ``gradient_descent``, its training,
    and the true flow unless ``flow`` is False); raise
    :class:`~nth.errors.MemoryBudgetError` with the itemized plan if the peak exceeds the budget."""
    model = as_model(model)
    for name, solver in (("nth_solver", nth_solver), ("flow_solver", flow_solver)):
        if solver not in SOLVER_COPIES:
            raise ConfigError(f"{name} = {solver!r}; accepted: {', '.join(SOLVER_COPIES)}")
    dtype = model_dtype(model)
    k = num_outputs(output_shape(model, in_shape if in_shape is not None else model.in_shape, dtype))
    kw = dict(implementation=implementation, matrix_free=matrix_free, models=models, in_shape=in_shape, outputs=k)
    kp = plan_kernels(model, n, p, memory_budget=memory_budget, chunk=chunk, **kw)
    tp = None
    if n_test:
        tp = plan_kernels(model, n, p, memory_budget=kp.budget, chunk=kp.chunk, first_rows=n_test, **kw)
    it = jnp.dtype(dtype).itemsize
    P = num_params(model)
    A, C = forward_entries(model, in_shape)
    stored = sum(kp.kernel_bytes.values()) + (0 if tp is None else sum(tp.kernel_bytes.values()))
    resident = models * (stored + P * it)
    if spectra:
        resident += models * num_times * P * it
    n_in, n, n_test = n, n * k, n_test * k  # from here on, samples: every slot and output of the state
    saved = num_times * (n + n_test + n * n + 1) * it
    nth_state = (n + n_test) * it + sum(kernel_bytes(n, r, dtype) for r in range(2, p))
    if n_test:
        nth_state += sum(kernel_bytes(n, r, dtype, n_test) for r in range(2, p))
    passes = 6 * ((n_in + n_test // k) * A + C) * it + 3 * P * it + saved  # a gradient at every input, outputs kept
    stages = {"kernels": max(kp.work_bytes, 0 if tp is None else tp.work_bytes)}
    if gradient_descent:
        stages["gradient descent"] = passes
    if flow:
        stages["gradient flow"] = SOLVER_COPIES[flow_solver] * P * it + passes
    stages["truncated NTH"] = SOLVER_COPIES[nth_solver] * nth_state + saved + (kp.work_bytes if matrix_free else 0)
    if dg:
        stages["DG correction"] = 2 * (kernel_bytes(n, 3, dtype) + kernel_bytes(n, 4, dtype)) + saved
    if discrete:  # the tensors O11, O111, M, P (training and test rows) and one batch of their work
        tensors = sum(gd_tensor_bytes(n, None, dtype).values()) + (sum(gd_tensor_bytes(n, n_test, dtype).values())
                                                                   if n_test else 0)
        work = IMPLEMENTATIONS["jvp"].work_bytes(model, 4, 1, n_in, n_test // k or n_in, False, in_shape, k)
        stages["discrete-time hierarchy"] = tensors + work + 2 * saved
    if spectra:  # the vectors and passes of a Hessian-vector product, and the first block of the Lanczos basis
        hvp = 8 * P * it + 6 * (n_in * A + C) * it
        stages["spectra"] = hvp + lanczos_bytes(P, min(P, LANCZOS_BLOCK), it)
    stages = {k: models * v for k, v in stages.items()}
    plan = SolvePlan(kernels=kp, test_kernels=tp, resident=resident, stages=stages, budget=kp.budget, models=models,
                     lanczos_budget=kp.budget - resident - hvp if spectra else None)
    if plan.peak > plan.budget:
        raise MemoryBudgetError(
            f"this run needs about {format_bytes(plan.peak)}, over the memory budget of "
            f"{format_bytes(plan.budget)}.\n{plan.describe()}\nReduce n or the width, lower p, apply the top "
            "level matrix-free (--matrix-free), use float32, " + ("batch fewer seeds, " if models > 1 else "")
            + "or raise the budget (--memory-budget).")
    return plan
