"""Memory plan of a whole ``nth solve`` run, stage by stage, before anything is allocated.

Every estimate is a formula in (n, k test inputs, m, H, d, p, dtype, batch size, number of saved times);
nothing is measured. Stages run one after the other while the kernels stay resident, so the predicted
peak is the kernels plus the largest stage:

- kernels: every stored K^(r) (training and test inputs) plus one batch of direction tuples
  (:func:`nth.kernels.plan_kernels`);
- gradient flow: the Diffrax state (a parameter-sized displacement) times the solver's stage count, the
  batched forward/backward pass, and the saved trajectory (f, K^(2), loss at every saved time);
- truncated NTH: the state (f, K^(2)..K^(p-1), test rows) times the stage count, and the saved trajectory;
- DG: the eigenbasis copies of K^(3) and K^(4).
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from .errors import MemoryBudgetError
from .kernels import KernelPlan, format_bytes, kernel_bytes, num_params, plan_kernels

#: Stage vectors (plus state, error estimate and FSAL copies) an explicit Runge-Kutta step keeps alive.
SOLVER_COPIES = {"tsit5": 10, "dopri5": 10, "dopri8": 17}


@dataclasses.dataclass(frozen=True)
class SolvePlan:
    """Predicted bytes per stage (``stages``), what stays resident (``resident``), and the budget."""

    kernels: KernelPlan
    test_kernels: KernelPlan | None
    resident: int
    stages: dict[str, int]
    budget: int

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
                     f"(kernel batch: {self.kernels.chunk} direction tuples)")
        return "\n".join(lines)


def plan_solve(*, n: int, n_test: int, p: int, width: int, depth: int, in_dim: int, dtype=jnp.float64,
               num_times: int = 41, memory_budget: int | None = None, chunk: int | None = None,
               matrix_free: bool = False, dg: bool = False, nth_solver: str = "tsit5",
               flow_solver: str = "dopri8") -> SolvePlan:
    """Plan every stage of a run; raise :class:`~nth.errors.MemoryBudgetError` if the peak exceeds the budget."""
    kp = plan_kernels(n, p, width=width, depth=depth, in_dim=in_dim, dtype=dtype, memory_budget=memory_budget,
                      chunk=chunk, matrix_free=matrix_free)
    tp = None
    if n_test:
        tp = plan_kernels(n, p, width=width, depth=depth, in_dim=in_dim, dtype=dtype, memory_budget=kp.budget,
                          chunk=kp.chunk, first_rows=n_test, matrix_free=matrix_free)
    it = jnp.dtype(dtype).itemsize
    P = num_params(width, depth, in_dim)
    stored = sum(kp.kernel_bytes.values()) + (0 if tp is None else sum(tp.kernel_bytes.values()))
    resident = stored + P * it
    saved = num_times * (n + n_test + n * n + 1) * it
    top = p - 1
    nth_state = (n + n_test) * it + sum(kernel_bytes(n, r, dtype) for r in range(2, top + 1))
    if n_test:
        nth_state += sum(kernel_bytes(n, r, dtype, n_test) for r in range(2, top + 1))
    stages = {
        "kernels": max(kp.work_bytes, 0 if tp is None else tp.work_bytes),
        "gradient flow": SOLVER_COPIES[flow_solver] * P * it + 6 * (n + n_test) * width * (depth + 1) * it
        + 3 * P * it + saved,
        "truncated NTH": SOLVER_COPIES[nth_solver] * nth_state + saved
        + (kp.work_bytes if matrix_free else 0),
    }
    if dg:
        stages["DG correction"] = 2 * (kernel_bytes(n, 3, dtype) + kernel_bytes(n, 4, dtype)) + saved
    plan = SolvePlan(kernels=kp, test_kernels=tp, resident=resident, stages=stages, budget=kp.budget)
    if plan.peak > plan.budget:
        raise MemoryBudgetError(
            f"this run needs about {format_bytes(plan.peak)}, over the memory budget of "
            f"{format_bytes(plan.budget)}.\n{plan.describe()}\nReduce n or the width, lower p, apply the top "
            "level matrix-free (--matrix-free), use float32, or raise the budget (--memory-budget).")
    return plan
