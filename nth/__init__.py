"""nth: the neural tangent hierarchy (Huang & Yau) for finite-width networks, checked against true training.

Importing nth enables JAX's 64-bit mode (``jax_enable_x64``): every correctness comparison in this field
needs float64, and float32 stays available per run (``dtype=``).
"""

import jax

jax.config.update("jax_enable_x64", True)

__version__ = "0.1.0"

from .corrections import DGSolution, dg_correction  # noqa: E402
from .compare import f_error, fit_slope, geometric_mean, k2_error  # noqa: E402
from .data import Dataset, default_problem, load_npz, make_dataset  # noqa: E402
from .errors import (  # noqa: E402
    ConfigError,
    DataError,
    MemoryBudgetError,
    NTHError,
    OutputExistsError,
    SolverError,
)
from .gradflow import FlowSolution, GDSolution, gradient_descent, gradient_flow, loss, stable_lr  # noqa: E402
from .hierarchy import (  # noqa: E402
    NTHSolution,
    default_horizon,
    hy_p3_reduced,
    linearized_closed_form,
    truncated_nth,
)
from .infinite import LimitingKernels, limiting_kernels  # noqa: E402
from .kernels import KernelOperator, KernelPlan, kernel, kernel_fn, kernels, plan_kernels  # noqa: E402
from .model import ACTIVATIONS, MLP, flow_direction, grad_f, init_mlp, mlp_from_arrays, ntk, scale_by_lrs  # noqa: E402
from .param import ABC, PRESETS, preset  # noqa: E402
from .pipeline import SolveConfig, SolveResult, run_solve, write_result  # noqa: E402
from .store import read_h5, write_h5  # noqa: E402

__all__ = [
    "ABC", "LimitingKernels", "PRESETS", "flow_direction", "limiting_kernels", "preset", "scale_by_lrs",
    "ACTIVATIONS", "MLP", "ConfigError", "DGSolution", "DataError", "Dataset", "FlowSolution", "GDSolution",
    "KernelOperator", "KernelPlan", "dg_correction", "gradient_descent", "hy_p3_reduced", "stable_lr",
    "MemoryBudgetError", "NTHError", "NTHSolution", "OutputExistsError", "SolveConfig", "SolveResult",
    "SolverError", "default_horizon", "default_problem", "f_error", "fit_slope", "geometric_mean", "grad_f",
    "gradient_flow", "init_mlp", "k2_error", "kernel", "kernel_fn", "kernels", "linearized_closed_form",
    "load_npz", "loss", "make_dataset", "mlp_from_arrays", "ntk", "plan_kernels", "read_h5", "run_solve",
    "truncated_nth", "write_h5", "write_result",
]
