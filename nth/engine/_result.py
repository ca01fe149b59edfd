"""What a run produced: :class:`SolveResult`, one :class:`Prediction` per row, and the :class:`Measures` read of
every trajectory (errors against the references, training loss, accuracies, disagreement rates)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ..compare import f_error, k2_error
from ..data import Dataset
from ..dynamics import FlowSolution, GDSolution
from ..kernel import Spectrum
from ..losses import decisions
from ._config import DEFAULT_WIDTH
from ._rows import AbstractRow

#: The float32 reference's own error, max_t |f_true32 - f_true64| / sqrt(n) ~ A m^B (results/float32_floor.txt:
#: 1.9e-7 at m = 256 to 5.0e-7 at m = 4096, depth 1, n = 8, t = 20, geometric mean of 3 seeds).
FLOAT32_FLOOR_A, FLOAT32_FLOOR_B = 2.8e-8, 0.32
#: A float32 error within this factor of the floor is not resolved.
FLOAT32_MARGIN = 10.0


@dataclasses.dataclass(frozen=True)
class Measures:
    """What is read of one trajectory at its saved times (docs/math.md sections 3 and 10); None where it has no
    meaning (no test inputs, no gradient descent, no classes).

    ``max_f_error``, ``max_K2_error``, ``max_test_error``: max over saved times of |f - f_true| / sqrt(n),
    |K2 - K2_true|_F and the test outputs' error, against the true gradient flow; ``..._gd`` the same against
    gradient descent; ``final_loss`` the training loss at the last saved time; ``accuracy`` and ``test_accuracy``
    of the decided classes against the labels; ``disagreement`` and ``test_disagreement``: the rate at which the
    decided classes differ from those of the network the trajectory predicts.
    """

    max_f_error: float | None = None
    max_K2_error: float | None = None
    max_test_error: float | None = None
    max_f_error_gd: float | None = None
    max_K2_error_gd: float | None = None
    max_test_error_gd: float | None = None
    final_loss: float | None = None
    accuracy: float | None = None
    test_accuracy: float | None = None
    disagreement: float | None = None
    test_disagreement: float | None = None

    def as_dict(self) -> dict[str, float]:
        """The measured values by name (what files and tables record)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    @classmethod
    def of(cls, sol, flow: FlowSolution | None, gd: GDSolution | None, data: Dataset, out_shape: tuple[int, ...],
           classes: bool, reference=None) -> "Measures":
        """The measures of trajectory ``sol``: errors against ``flow`` and ``gd`` (where given), and what a
        classifier's user reads at its last saved time (training loss; with ``classes``, the accuracies where
        the data have labels and, against a ``reference`` trajectory, the disagreement rates)."""
        e: dict[str, float] = {"final_loss": float(sol.loss[-1])}
        for ref, tail in ((flow, ""), (gd, "_gd")):
            if ref is None:
                continue
            e["max_f_error" + tail] = float(f_error(sol.f, ref.f).max())
            e["max_K2_error" + tail] = float(k2_error(sol.K2, ref.K2).max())
            if ref.f_test is not None and sol.f_test is not None:
                e["max_test_error" + tail] = float(f_error(sol.f_test, ref.f_test).max())
        if classes:
            dec = lambda f: np.asarray(decisions(f[-1], out_shape))  # noqa: E731
            if data.labels is not None:
                e["accuracy"] = float(np.mean(dec(sol.f) == data.labels))
                if data.labels_test is not None and sol.f_test is not None:
                    e["test_accuracy"] = float(np.mean(dec(sol.f_test) == data.labels_test))
            if reference is not None:
                e["disagreement"] = float(np.mean(dec(sol.f) != dec(reference.f)))
                if sol.f_test is not None and reference.f_test is not None:
                    e["test_disagreement"] = float(np.mean(dec(sol.f_test) != dec(reference.f_test)))
        return cls(**e)


@dataclasses.dataclass(frozen=True)
class Prediction:
    """One row's prediction in a run: the ``row`` (:mod:`nth.engine._rows`), its trajectory ``solution``
    (NTHSolution, DGSolution or GDSolution) and its :class:`Measures`."""

    row: AbstractRow
    solution: Any
    measures: Measures

    @property
    def label(self) -> str:
        return self.row.label


def float32_floor(width: int) -> float:
    """The error floor float32 puts under an error-vs-width curve at this width (measured fit, see above)."""
    return FLOAT32_FLOOR_A * width**FLOAT32_FLOOR_B


def float32_warnings(measures: dict[str, Measures], width: int | None) -> list[str]:
    """One line per prediction (label: its measures) whose float32 error is within FLOAT32_MARGIN of
    :func:`float32_floor`."""
    floor = float32_floor(width or DEFAULT_WIDTH)
    out = []
    for label, m in measures.items():
        v = m.max_f_error if m.max_f_error is not None else m.max_f_error_gd  # gd: the reference of a run without flow
        if v is not None and v < FLOAT32_MARGIN * floor:
            at = f"m = {width}" if width else f"the default width {DEFAULT_WIDTH}"
            out.append(f"{label}: error {v:.2e} is within {FLOAT32_MARGIN:g}x of the float32 floor ({floor:.1e} at "
                       f"{at}); it measures float32 rounding, not the hierarchy. Use --dtype float64.")
    return out


@dataclasses.dataclass
class SolveResult:
    """What a run produced: inputs, kernels, the references, every prediction with its measures, and wall times.

    ``predictions`` maps each row's label ("p2", ..., "p{p}", "discrete_p2", "discrete_o1m", "dg", "inf") to its
    :class:`Prediction`, in the rows' order; ``flow_measures`` and ``gd_measures`` are the :class:`Measures` of
    the true gradient flow and of gradient descent (against the flow; both None where a run skips the flow,
    ``flow`` False); ``spectra`` the loss Hessian against the NTK
    at the reference's saved times (with ``spectra``; docs/math.md section 11); ``config`` is what the file records.
    """

    config: dict[str, Any]
    data: Dataset
    f0: np.ndarray
    kernels: dict[int, np.ndarray]
    test_kernels: dict[int, np.ndarray] | None
    flow: FlowSolution | None
    flow_measures: Measures | None
    gd: GDSolution | None
    gd_measures: Measures | None
    predictions: dict[str, Prediction]
    wall_times: dict[str, float]
    loss_fall: float
    spectra: Spectrum | None = None
    path: str | None = None
    warnings: list[str] = dataclasses.field(default_factory=list)

    @property
    def trained(self) -> FlowSolution | GDSolution:
        """The trajectory the run was measured along: the true flow, or gradient descent where it skipped the flow."""
        return self.gd if self.flow is None else self.flow

    @property
    def rows(self) -> list[AbstractRow]:
        """The run's rows, in order."""
        return [p.row for p in self.predictions.values()]

    @property
    def out_shape(self) -> tuple[int, ...]:
        """The per-input output shape, () or (k,) (of f(0))."""
        return tuple(self.f0.shape[1:])

    @property
    def dg_vs_p4(self) -> float | None:
        """max_t |f_DG - f_(p=4)| / sqrt(n): the two agree to O(1/m^2) (docs/math.md section 4), or None."""
        if "dg" not in self.predictions or "p4" not in self.predictions:
            return None
        return float(f_error(self.predictions["dg"].solution.f, self.predictions["p4"].solution.f).max())

    def measures(self) -> dict[str, Measures]:
        """Each prediction's measures by label and, with gradient descent, its own (against the flow) as "gd"."""
        out = {label: p.measures for label, p in self.predictions.items()}
        return out | ({"gd": self.gd_measures} if self.gd_measures is not None else {})
