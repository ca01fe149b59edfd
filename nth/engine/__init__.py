"""The run engine: one configuration (:class:`SolveConfig`) through every stage, for one seed or several seeds
of one width together, with the memory plan of every stage checked first (docs/math.md sections 2-6)."""

from ._corr import CORR_ACTIVATIONS as CORR_ACTIVATIONS, CorrConfig as CorrConfig, check_plan as check_corr_plan, correlation_values as correlation_values
from ._corr import plan_batch as plan_batch, sample as sample_draws, summarize as summarize_corr
from ._config import DTYPES as DTYPES, ProblemSpec as ProblemSpec, SolveConfig as SolveConfig
from ._config import SolverSpec as SolverSpec, SpectrumSpec as SpectrumSpec, TrainingSpec as TrainingSpec
from ._plan import SolvePlan as SolvePlan, plan_solve as plan_solve
from ._rows import AbstractRow as AbstractRow, ROWS as ROWS, RowInputs as RowInputs, row as row, rows_for as rows_for
from ._result import Measures as Measures, Prediction as Prediction, SolveResult as SolveResult
from ._result import float32_floor as float32_floor, float32_warnings as float32_warnings
from ._run import (
    build_model as build_model,
    dry_run as dry_run,
    load_data as load_data,
    run_targets as run_targets,
    plan_run as plan_run,
    solve as solve,
    solve_seeds as solve_seeds,
    spectrum_at_init as spectrum_at_init,
    sweep_errors as sweep_errors,
)
from ._spectrum import spectra_along as spectra_along, spectrum_of as spectrum_of
