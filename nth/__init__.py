"""nth: the neural tangent hierarchy (Huang & Yau) for finite-width networks, checked against true training.

Importing nth leaves JAX's precision alone. float64, which every correctness comparison in this field needs, is
turned on (``jax_enable_x64``, for the whole process) by :func:`enable_float64`, by the ``nth`` command, and by
the calls asked for it: the built-in models' constructors and a run with ``dtype="float64"``, their defaults
(:mod:`nth._precision`). float32 stays available per run (``dtype=``).

Data flows models -> kernels -> dynamics -> engine -> io -> cli / plot (docs/math.md is the mathematical
reference the code cites).
"""

__version__ = "0.2.0"

from ._precision import enable_float64 as enable_float64  # noqa: E402
from .compare import f_error as f_error, fit_slope as fit_slope  # noqa: E402
from .compare import geometric_mean as geometric_mean, k2_error as k2_error, slope_with_ci as slope_with_ci  # noqa: E402
from .data import Dataset as Dataset, default_problem as default_problem  # noqa: E402
from .data import load_npz as load_npz, make_dataset as make_dataset  # noqa: E402
from .dynamics import (  # noqa: E402
    DGSolution as DGSolution,
    FlowSolution as FlowSolution,
    GDSolution as GDSolution,
    NTHSolution as NTHSolution,
    Problem as Problem,
    SolverSettings as SolverSettings,
    default_horizon as default_horizon,
    dg_correction as dg_correction,
    batch_schedule as batch_schedule,
    discrete_nth as discrete_nth,
    gradient_descent as gradient_descent,
    check_problem as check_problem,
    gradient_flow as gradient_flow,
    hy_p3_reduced as hy_p3_reduced,
    linearized_closed_form as linearized_closed_form,
    training_loss as training_loss,
    stable_lr as stable_lr,
    truncated_nth as truncated_nth,
)
from . import losses as losses  # noqa: E402
from .losses import AbstractLoss as AbstractLoss, CrossEntropy as CrossEntropy, Logistic as Logistic  # noqa: E402
from .losses import MSE as MSE, UserLoss as UserLoss, loss_from_spec as loss_from_spec  # noqa: E402
from .engine import CorrConfig as CorrConfig, SolveConfig as SolveConfig, SolveResult as SolveResult  # noqa: E402
from .engine import Measures as Measures, Prediction as Prediction  # noqa: E402
from .engine import ProblemSpec as ProblemSpec, SolverSpec as SolverSpec, TrainingSpec as TrainingSpec  # noqa: E402
from .engine import SpectrumSpec as SpectrumSpec  # noqa: E402
from .engine import solve as solve, solve_seeds as solve_seeds  # noqa: E402
from .engine import AbstractRow as AbstractRow, ROWS as ROWS, row as row, rows_for as rows_for  # noqa: E402
from .errors import (  # noqa: E402
    ConfigError as ConfigError,
    DamagedFileError as DamagedFileError,
    DataError as DataError,
    MemoryBudgetError as MemoryBudgetError,
    NTHError as NTHError,
    OutputExistsError as OutputExistsError,
    OutputWriteError as OutputWriteError,
    SolverError as SolverError,
    WriterBusyError as WriterBusyError,
)
from .io import SweepConfig as SweepConfig, load_sweep as load_sweep, read_h5 as read_h5  # noqa: E402
from .io import run_solve as run_solve, run_sweep as run_sweep, write_h5 as write_h5  # noqa: E402
from .io import write_result as write_result  # noqa: E402
from .io import load_corr as load_corr, run_corr as run_corr  # noqa: E402
from .kernel import (  # noqa: E402
    IMPLEMENTATIONS as IMPLEMENTATIONS,
    KernelOperator as KernelOperator,
    CorrelationFunction as CorrelationFunction,
    KernelPlan as KernelPlan,
    correlation_value as correlation_value,
    LimitingKernels as LimitingKernels,
    gd_tensors as gd_tensors,
    kernel_fn as kernel_fn,
    kernels as kernels,
    kernels_and_test as kernels_and_test,
    limiting_kernels as limiting_kernels,
    ntk as ntk,
    parse_correlation as parse_correlation,
    plan_kernels as plan_kernels,
    Spectrum as Spectrum,
    hessian_operators as hessian_operators,
    lanczos_top as lanczos_top,
    separated_top as separated_top,
    spectrum as spectrum,
)
from .models import (  # noqa: E402
    ABC as ABC,
    ACTIVATIONS as ACTIVATIONS,
    ARCHS as ARCHS,
    CNN as CNN,
    MLP as MLP,
    PRESETS as PRESETS,
    AbstractActivation as AbstractActivation,
    AbstractModel as AbstractModel,
    ModelSpec as ModelSpec,
    ResNet as ResNet,
    Applied as Applied,
    Wrapped as Wrapped,
    activation as activation,
    as_model as as_model,
    cast_model as cast_model,
    flow_direction as flow_direction,
    grad_f as grad_f,
    init_cnn as init_cnn,
    init_mlp as init_mlp,
    init_resnet as init_resnet,
    mlp_from_arrays as mlp_from_arrays,
    num_params as num_params,
    partition as partition,
    preset as preset,
)
