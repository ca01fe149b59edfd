"""The predictions of a run, one object per row (docs/math.md sections 2-7 and 10).

A row knows everything the rest of nth asks of a prediction: its label (the key of results and of the scalar
names in files, ``max_f_error_<label>``), its name in tables and figures, its HDF5 group, its reference (true
gradient flow or gradient descent), the width exponent theory predicts for its error against either
reference, when a run has it, how it is solved, and what it writes beside its trajectory. The engine, the
schema, sweeps, figures, ``nth width-for`` and the scripts read rows from :data:`ROWS` and never dispatch on
label strings (they look a label, a group or a reference up here), so a new prediction is one class here and
one entry in :data:`ROWS`.

Rows are solved from a :class:`RowInputs`, the checked problem of a run. A row that is ``batched`` is solved
once for all seeds of a stacked run (each Diffrax solve with its own step size) and picked per seed; the others
are solved per seed.
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import re
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import equinox as eqx
import jax
import numpy as np
from jaxtyping import Array

from ..dynamics import dg_correction, discrete_nth, eigenbasis, limit_rates, mup_limit, plan_limit, truncated_nth
from ..errors import ConfigError
from ..kernel import gd_tensors
from ..losses import AbstractLoss
from ..models import activation

REFERENCES = ("flow", "gd")


@dataclasses.dataclass(frozen=True)
class RowInputs:
    """What every row is solved from: the checked problem of a run (kernels over samples at t = 0, outputs at
    t = 0, targets, loss, test-input kernels and outputs; stacked over seeds or one seed), the saved times
    (and, with a learning rate, the steps and, under SGD, the batch of every step), and the run's settings (``cfg``,
    a SolveConfig)."""

    cfg: Any
    loss: AbstractLoss
    y: Array
    ts: Array
    kernels: dict[int, Any]
    test_kernels: dict[int, Any] | None
    f0: Array
    f0_test: Array | None
    out_shape: tuple[int, ...]
    stacked: bool = False
    labels: list[str] | None = None
    steps: np.ndarray | None = None
    batches: np.ndarray | None = None
    model: Any = None
    X: Array | None = None
    X_test: Array | None = None
    kbar: tuple[Array, Array | None] | None = None
    plan: Any = None
    devices: Any = None
    progress: bool = False
    say: Callable[[str], None] = lambda s: None

    def pick(self, i: int, kernels, test_kernels) -> "RowInputs":
        """One seed's inputs (``kernels``, ``test_kernels``: its dense kernels)."""
        take = lambda x: None if x is None else x[i]  # noqa: E731
        return dataclasses.replace(self, kernels=kernels, test_kernels=test_kernels, f0=take(self.f0),
                                   f0_test=take(self.f0_test), stacked=False, labels=None)


class AbstractRow(eqx.Module):
    """One prediction of a run (module docstring). Implementations are final."""

    #: "flow": predicts true gradient flow; "gd": predicts gradient descent's steps.
    reference: ClassVar[str] = "flow"
    #: Solved once for all seeds of a stacked run.
    batched: ClassVar[bool] = False

    @property
    @abc.abstractmethod
    def label(self) -> str:
        """The key of results and of scalar names in files (``p4``, ``dg``, ``discrete_o1m``)."""

    @property
    @abc.abstractmethod
    def name(self) -> str:
        """The name in tables (``p=4``, ``dg``, ``d-o1m``)."""

    @property
    @abc.abstractmethod
    def title(self) -> str:
        """The name in figure legends."""

    @property
    def group(self) -> str:
        """The HDF5 group of the row in a run (:mod:`nth.io._schema`)."""
        return self.label

    @property
    def wall(self) -> str:
        """The key of the row's wall time."""
        return self.label

    @property
    @abc.abstractmethod
    def law(self) -> float:
        """The exponent s of the error law c m^s theory predicts against the row's own reference, at a fixed
        horizon (docs/math.md sections 3, 5, 7)."""

    def exponent(self, reference: str = "flow") -> float:
        """The predicted exponent against ``reference`` ("flow" or "gd"): :attr:`law` against the row's own;
        0 against the other, whose O(lr) distance from it no width removes (docs/math.md section 7)."""
        if reference not in REFERENCES:
            raise ConfigError(f"reference = {reference!r} must be 'flow' or 'gd'")
        return self.law if reference == self.reference else 0.0

    @classmethod
    def parse(cls, label: str) -> "AbstractRow | None":
        """The row of this kind with ``label``, or None (default: a kind with one row and a fixed label)."""
        return cls() if label == cls.label else None

    @classmethod
    @abc.abstractmethod
    def for_run(cls, cfg) -> list["AbstractRow"]:
        """The rows of this kind a run of ``cfg`` predicts (cheap: from the configuration alone)."""

    def prepare(self, inputs: RowInputs) -> None:
        """Checks that can refuse the row from the kernels, run before the long solves (default none)."""

    @abc.abstractmethod
    def solve(self, inputs: RowInputs) -> Any:
        """The row's trajectory (an NTHSolution, DGSolution or GDSolution)."""

    def attrs(self, sol) -> dict[str, Any]:
        """Attributes the row writes on its group beside its errors (default: the Diffrax step count)."""
        return {"num_steps": sol.stats.get("num_steps", -1)}

    def datasets(self, sol) -> dict[str, Any]:
        """Arrays the row writes in its group beside t, f, f_test, K2 and loss."""
        return {}

    def pick(self, sol, i: int):
        """Seed ``i`` of a batched solution."""
        return sol

    @property
    def position(self) -> int:
        """The row's place among the rows of its kind (levels by q)."""
        return 0


def pick_seed(sol, i: int):
    """Seed ``i`` of a solution solved for stacked seeds (its arrays carry a leading seed axis; times shared)."""
    one = jax.tree_util.tree_map(lambda x: x[i] if eqx.is_array(x) else x, sol)
    return dataclasses.replace(one, ts=sol.ts, stats=sol.stats[i])


class Level(AbstractRow):
    """The truncated NTH at level q: K^(q) frozen (HY Eq. 15; docs/math.md sections 2 and 10). Its error against
    the flow falls like m^(-floor(q/2)) (freezing K^(q) drops a drift driven by K^(q+1); DG Eq. 89)."""

    q: int
    batched: ClassVar[bool] = True

    @property
    def label(self) -> str:
        return f"p{self.q}"

    @property
    def name(self) -> str:
        return f"p={self.q}"

    @property
    def title(self) -> str:
        return f"p = {self.q}"

    @property
    def group(self) -> str:
        return f"nth/p{self.q}"

    @property
    def wall(self) -> str:
        return f"nth_p{self.q}"

    @property
    def law(self):
        return -float(self.q // 2)

    @classmethod
    def parse(cls, label):
        m = re.fullmatch(r"p(\d+)", label)
        return cls(q=int(m.group(1))) if m and int(m.group(1)) >= 2 else None

    @classmethod
    def for_run(cls, cfg):
        return [cls(q=q) for q in range(2, cfg.p + 1)]

    def solve(self, inputs):
        return truncated_nth(inputs.kernels, inputs.f0, inputs.y, inputs.ts, p=self.q, loss=inputs.loss,
                             test_kernels=inputs.test_kernels, f0_test=inputs.f0_test,
                             solver=inputs.cfg.nth_settings, stacked=inputs.stacked, labels=inputs.labels)

    @property
    def position(self):
        return self.q

    def pick(self, sol, i):
        return pick_seed(sol, i)


class DG(AbstractRow):
    """Dyer & Gur-Ari's O(1/m) correction (DG Eqs. 11-12, 87-91; docs/math.md sections 4 and 10): error m^-2."""

    label: ClassVar[str] = "dg"
    name: ClassVar[str] = "dg"
    title: ClassVar[str] = "DG"
    law: ClassVar[float] = -2.0

    @classmethod
    def for_run(cls, cfg):
        return [cls()] if cfg.use_dg else []

    def prepare(self, inputs):
        if inputs.cfg.resolved_dg_method == "closed":  # refuse a singular K^(2) now, not after the long solves
            K2 = inputs.kernels[2]
            for K in (K2 if inputs.stacked else K2[None]):
                eigenbasis(K)

    def solve(self, inputs):
        kt = inputs.test_kernels
        return dg_correction(inputs.kernels, inputs.f0, inputs.y, inputs.ts, loss=inputs.loss,
                             method=inputs.cfg.resolved_dg_method, solver=inputs.cfg.nth_settings,
                             test_kernels=None if kt is None else {r: kt[r] for r in (2, 3, 4)}, f0_test=inputs.f0_test)

    def attrs(self, sol):
        return {"method": sol.method}

    def datasets(self, sol):
        return {} if sol.K2_late is None else {"K2_late": sol.K2_late}


class Infinite(AbstractRow):
    """The m = inf row: kernel gradient descent with the limiting NTK Kbar^(2) (times the identity on outputs)
    from the network's own f(0) (TP2b; docs/math.md sections 5 and 10). K^(2)(0) - Kbar^(2) = O(m^-1/2) (HY Eq.
    11 at r = 2), so its error falls only like m^-1/2."""

    label: ClassVar[str] = "inf"
    name: ClassVar[str] = "inf"
    title: ClassVar[str] = "m = inf (kernel GD, Kbar)"
    law: ClassVar[float] = -0.5

    @classmethod
    def for_run(cls, cfg):
        return [cls()] if cfg.use_inf else []

    def solve(self, inputs):
        Kbar, Kbar_test = inputs.kbar
        return truncated_nth({2: Kbar}, inputs.f0, inputs.y, inputs.ts, p=2, loss=inputs.loss,
                             test_kernels=None if Kbar_test is None else {2: Kbar_test},
                             f0_test=None if Kbar_test is None else inputs.f0_test, solver=inputs.cfg.nth_settings)


class Discrete(AbstractRow):
    """The discrete-time hierarchy's prediction of gradient descent at the run's learning rate (docs/math.md
    section 7): ``order`` "p2" (the frozen kernel; error against gradient descent m^-1) or "o1m" (the O(1/m)
    system with the tensors O11, O111, M, P; m^-2). Against the flow their O(lr) distance stays (exponent 0)."""

    order: str
    reference: ClassVar[str] = "gd"
    ORDERS: ClassVar[dict[str, tuple[float, str]]] = {"p2": (-1.0, "discrete p = 2 (frozen kernel)"),
                                                      "o1m": (-2.0, "discrete O(1/m)")}

    @property
    def label(self):
        return f"discrete_{self.order}"

    @property
    def name(self):
        return f"d-{self.order}"

    @property
    def title(self):
        return self.ORDERS[self.order][1]

    @property
    def group(self):
        return f"discrete/{self.order}"

    @property
    def law(self):
        return self.ORDERS[self.order][0]

    @classmethod
    def parse(cls, label):
        m = re.fullmatch(r"discrete_(\w+)", label)
        return cls(order=m.group(1)) if m and m.group(1) in cls.ORDERS else None

    @classmethod
    def for_run(cls, cfg):
        if not cfg.gradient_descent:
            return []
        return [cls(order="p2")] + ([cls(order="o1m")] if cfg.use_discrete_o1m else [])

    def solve(self, inputs):
        kw = dict(loss=inputs.loss, order=self.order, test_kernels=inputs.test_kernels, f0_test=inputs.f0_test)
        if self.order == "o1m":
            inputs.say("[+] discrete-time hierarchy: tensors O11, O111, M, P by nested JVPs, then the O(1/m) system")
            tkw = dict(memory_budget=inputs.plan.budget, progress=inputs.progress, devices=inputs.devices)
            kw["tensors"] = gd_tensors(inputs.model, inputs.X, **tkw)  # the row's wall time includes them
            if inputs.X_test is not None:
                kw["test_tensors"] = gd_tensors(inputs.model, inputs.X, first=inputs.X_test, **tkw)
        return discrete_nth(inputs.kernels, inputs.f0, inputs.y, inputs.cfg.lr, inputs.steps, batches=inputs.batches,
                            **kw)

    def attrs(self, sol):
        return {"lr": sol.lr}

    @property
    def position(self):
        return list(self.ORDERS).index(self.order)


class MupLimit(AbstractRow):
    """The infinite-width limit of a one-hidden-layer net under muP (or mean-field) parametrization: its units
    pushed forward by their own dynamics, driven by the limiting outputs (TP4 Theorem 6.1; docs/math.md section
    12). ``on`` "flow": the limit of gradient flow; "gd": of gradient descent (forward Euler of the unit ODE at
    the run's learning rate, on its batches under SGD). A finite net's distance to it falls like m^(-1/2) (its
    f(0) alone is O(m^(-1/2))). The limit depends on no seed and no width, only on the data, the saved times
    (a fixed ``t_max``: the default horizon is each run's own) and the options: a process solves it once for all
    the runs that share them (the wall time of the others is then about 0)."""

    on: str
    batched: ClassVar[bool] = True
    law: ClassVar[float] = -0.5
    LABELS: ClassVar[dict[str, str]] = {"flow": "mup_inf", "gd": "discrete_mup_inf"}

    @property
    def reference(self) -> str:  # type: ignore[override]
        return self.on

    @property
    def label(self):
        return self.LABELS[self.on]

    @property
    def name(self):
        return "mup-inf" if self.on == "flow" else "d-mup-inf"

    @property
    def title(self):
        return "muP limit (m = inf)" if self.on == "flow" else "muP limit of gradient descent (m = inf)"

    @property
    def group(self):
        return "mup_inf" if self.on == "flow" else "discrete/mup_inf"

    @classmethod
    def parse(cls, label):
        return next((cls(on=on) for on, lab in cls.LABELS.items() if lab == label), None)

    @classmethod
    def for_run(cls, cfg):
        if not cfg.use_mup_inf:
            return []
        return ([cls(on="flow")] if cfg.flow or not cfg.gradient_descent else []) + (
            [cls(on="gd")] if cfg.gradient_descent else [])

    def prepare(self, inputs):  # the expectation's nodes and bytes, refused before the long stages
        cfg = inputs.cfg
        plan_limit(inputs.X, tuple(inputs.out_shape), 0 if inputs.X_test is None else inputs.X_test.shape[0],
                   method=cfg.limit_method, points=cfg.limit_points, h=cfg.limit_h, solver=cfg.nth_solver,
                   memory_budget=cfg.memory_budget)

    def solve(self, inputs):
        cfg = inputs.cfg
        gd = self.on == "gd"
        args = (inputs.X, inputs.y, inputs.ts, limit_rates(cfg.param, cfg.sigma_w, cfg.sigma_a))
        kw = dict(activation=activation(cfg.activation, cfg.beta), loss=inputs.loss, out_shape=tuple(inputs.out_shape),
                  X_test=inputs.X_test, method=cfg.limit_method, points=cfg.limit_points, h=cfg.limit_h,
                  lr=cfg.lr if gd else None, steps=inputs.steps if gd else None,
                  batches=inputs.batches if gd else None, solver=cfg.nth_settings, memory_budget=cfg.memory_budget)
        key = _limit_key(args, kw)
        if key not in _LIMITS:  # the limit depends on no seed and no width: a sweep solves it once
            inputs.say(f"[+] {self.name}: the muP limit of {'gradient descent' if gd else 'gradient flow'} "
                       f"({cfg.limit_method} expectation)")
            while len(_LIMITS) >= 4:
                _LIMITS.pop(next(iter(_LIMITS)))
            _LIMITS[key] = mup_limit(*args, **kw)
        return _LIMITS[key]

    def attrs(self, sol):
        return {"method": sol.method, "points": sol.points, "replicates": sol.replicates, "limit_error": sol.error,
                "num_steps": sol.stats.get("num_steps", -1)}

    @property
    def position(self):
        return list(self.LABELS).index(self.on)


#: Limits already solved in this process, by :func:`_limit_key` (the last four).
_LIMITS: dict[str, Any] = {}


def _limit_key(args, kw) -> str:
    """A digest of everything :func:`nth.dynamics.mup_limit` reads: its arrays' bytes, shapes and dtypes, and the
    other arguments' reprs."""
    leaves, tree = jax.tree_util.tree_flatten((args, kw))
    h = hashlib.sha256(repr(tree).encode())  # the structure names every module's class and static fields
    for x in leaves:
        if eqx.is_array(x) or isinstance(x, np.ndarray):
            a = np.asarray(x)
            h.update(f"{a.dtype}{a.shape}".encode() + a.tobytes())
        else:
            h.update(repr(x).encode())
    return h.hexdigest()


#: Every kind of row, in the order of tables and files. A new prediction is a class above and an entry here.
ROWS: tuple[type[AbstractRow], ...] = (Level, Discrete, DG, Infinite, MupLimit)


def rows_for(cfg) -> list[AbstractRow]:
    """The rows a run of ``cfg`` predicts, in table order."""
    return [row for kind in ROWS for row in kind.for_run(cfg)]


def every_row(p: int) -> list[AbstractRow]:
    """Every row a run truncated at ``p`` may predict under some parametrization and training (the labels a sweep
    file of that p may hold), in table order."""
    from ._config import SolveConfig

    runs = (SolveConfig(p=p, lr=1.0, steps=1, dg=p >= 4, infinite=True, param="ntk"),  # kernel regime, both references
            SolveConfig(p=p, lr=1.0, steps=1, depth=1, param="mup", mup_inf=True))  # the muP limit's rows
    return ordered_rows({r.label: r for cfg in runs for r in rows_for(cfg)}.values())


def ordered_rows(rows: Iterable[AbstractRow]) -> list[AbstractRow]:
    """``rows`` in table order (kinds as in :data:`ROWS`, levels by q)."""
    rank = {kind: i for i, kind in enumerate(ROWS)}
    return sorted(rows, key=lambda r: (rank[type(r)], r.position))


def row(label: str) -> AbstractRow:
    """The row of ``label`` (ConfigError for a label no row has)."""
    for kind in ROWS:
        found = kind.parse(label)
        if found is not None:
            return found
    raise ConfigError(f"{label!r} is not a prediction; predictions are p2, p3, ..., discrete_p2, discrete_o1m, dg, inf, "
                      "mup_inf, discrete_mup_inf")


def find_row(label: str) -> AbstractRow | None:
    """The row of ``label``, or None."""
    try:
        return row(label)
    except ConfigError:
        return None


def ordered(labels: Iterable[str]) -> list[str]:
    """The prediction labels among ``labels``, in table order (levels by q)."""
    found = [find_row(lab) for lab in labels]
    return [r.label for r in ordered_rows(r for r in found if r is not None)]


def labels_in(scalars: Iterable[str], prefix: str) -> list[str]:
    """The prediction labels of the keys ``prefix + label`` (``max_f_error_p4``, ...), in table order."""
    return ordered(k[len(prefix):] for k in scalars if k.startswith(prefix))
