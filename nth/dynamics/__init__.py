"""Dynamics: the truncated NTH (HY Eq. 15), the Dyer & Gur-Ari O(1/m) corrections, the discrete-time hierarchy
of gradient descent at a finite learning rate, and the references (true gradient flow and gradient descent), all through one Diffrax wrapper configured by :class:`SolverSettings`
(docs/math.md sections 2, 4, 6)."""

from ._batches import batch_schedule as batch_schedule, check_batches as check_batches
from ._corrections import METHODS as DG_METHODS, DGSolution as DGSolution, dg_correction as dg_correction
from ._corrections import eigenbasis as eigenbasis
from ._discrete import discrete_nth as discrete_nth
from ._hierarchy import (
    NTHSolution as NTHSolution,
    default_horizon as default_horizon,
    hy_p3_reduced as hy_p3_reduced,
    linearized_closed_form as linearized_closed_form,
    truncated_nth as truncated_nth,
)
from ._mup_limit import LIMIT_METHODS as LIMIT_METHODS, LimitSolution as LimitSolution, Nodes as Nodes
from ._mup_limit import UnitRates as UnitRates, check_limit_options as check_limit_options
from ._mup_limit import limit_rates as limit_rates, linear_limit as linear_limit, mup_limit as mup_limit
from ._mup_limit import LimitPlan as LimitPlan, plan_limit as plan_limit
from ._mup_limit import unit_flow as unit_flow, units_of as units_of
from ._problem import Objective as Objective, Problem as Problem, check_problem as check_problem
from ._odeint import (
    FLOW_SOLVER as FLOW_SOLVER,
    NTH_SOLVER as NTH_SOLVER,
    SOLVERS as SOLVERS,
    SOLVER_COPIES as SOLVER_COPIES,
    SolverSettings as SolverSettings,
    check_times as check_times,
    integrate as integrate,
)
from ._references import (
    FlowSolution as FlowSolution,
    GDSolution as GDSolution,
    gradient_descent as gradient_descent,
    gradient_flow as gradient_flow,
    training_loss as training_loss,
    stable_lr as stable_lr,
)

__all__ = ["DG_METHODS", "LIMIT_METHODS"]
