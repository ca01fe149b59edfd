"""`nth width-for` (issue 15 item 4): the error law c m^s of each prediction, fitted on the narrower widths of a
committed sweep, predicts the width at which the error reaches the value measured at the widest width, which the
fit did not see."""

import json
import os

import numpy as np
import pytest

import nth
from nth.cli import main
from nth.compare import geometric_mean, width_for
from nth.engine import row

SWEEP = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "results", "sweep_tanh_d1.h5")


def test_held_out_widest_width_is_predicted(capsys):
    sw = nth.load_sweep(SWEEP)
    widths = sw["widths"]
    for lab in ("p2", "p3", "p4", "p5", "dg"):
        E = sw["scalars"][f"max_f_error_{lab}"]
        eps = geometric_mean(E[-1])  # measured at 4096, not seen by the fit below
        assert main(["width-for", SWEEP, "--eps", repr(float(eps)), "--level", lab, "--json",
                     "--fit-widths", ",".join(map(str, widths[:-1]))]) == 0
        fit = json.loads(capsys.readouterr().out)[lab]
        lo, hi = fit["width_ci"]
        assert lo < widths[-1] < hi, (lab, fit)
        assert abs(np.log(fit["width"] / widths[-1])) < np.log(1.2), (lab, fit["width"])  # measured: within 11%


def test_width_for_exact_law_and_refusals(capsys):
    widths = np.array([100, 200, 400, 800])
    E = np.stack([np.full(5, 3.0 * w**-2.0) for w in widths])
    f = width_for(widths, E, 3.0 * 1000.0**-2.0)
    assert abs(f["slope"] + 2) < 1e-12 and abs(f["width"] - 1000.0) < 1e-9  # measured 2.3e-13
    flat = width_for(widths, np.ones((4, 3)), 0.5)
    assert flat["width"] is None and flat["never"]  # a flat error never reaches eps
    # an error that falls, but so slowly that the width is beyond the float range: not 'never', and no overflow
    slow = width_for(widths, 2.0 * widths[:, None] ** -1e-3 * np.ones((4, 3)), 1e-3)
    assert slow["width"] is None and not slow["never"] and slow["slope"] < 0
    for eps in (0, -1.0, float("nan")):
        with pytest.raises(nth.ConfigError, match="eps"):
            width_for(widths, E, eps)
    assert main(["width-for", SWEEP, "--eps", "1e-4", "--level", "p9"]) == 2
    assert "--level 'p9'" in capsys.readouterr().err
    assert main(["width-for", SWEEP, "--eps", "1e-4", "--fit-widths", "256,300"]) == 2
    assert "--fit-widths [300] are not widths" in capsys.readouterr().err


def test_predicted_exponents():
    """The laws of docs/math.md sections 3-5 and 7, read off the rows: against the flow p{q} -> -floor(q/2),
    dg -> -2, inf -> -1/2, the discrete rows 0 (their O(lr) gap); against gradient descent d-p2 -> -1, d-o1m -> -2,
    continuous rows 0. Every row names its group, table name and reference once."""
    assert [row(f"p{q}").exponent() for q in range(2, 7)] == [-1, -1, -2, -2, -3]
    assert (row("dg").exponent(), row("inf").exponent(), row("discrete_o1m").exponent()) == (-2, -0.5, 0)
    assert [row(x).exponent("gd") for x in ("discrete_p2", "discrete_o1m", "p4", "dg")] == [-1, -2, 0, 0]
    assert [(row(x).group, row(x).name, row(x).reference) for x in ("p3", "discrete_o1m", "dg", "inf")] == [
        ("nth/p3", "p=3", "flow"), ("discrete/o1m", "d-o1m", "gd"), ("dg", "dg", "flow"), ("inf", "inf", "flow")]
    for bad in ("gd", "p1", "discrete_p3", "q4"):
        with pytest.raises(nth.ConfigError, match="not a prediction"):
            row(bad)
    with pytest.raises(nth.ConfigError, match="reference"):
        row("p2").exponent("sgd")
