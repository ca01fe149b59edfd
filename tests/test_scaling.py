"""Agreement with true gradient flow and its width scaling (docs/math.md sections 3-4, HY Thm 2.6, DG Eq. 89).

Same initial weights for every prediction and the reference; 4 widths spanning a factor 8, 5 seeds; errors
averaged geometrically over seeds; 4 test inputs besides the 8 training points. Depth 1 and n = 8 keep the
whole sweep near a minute on two CPU cores.
"""

import pytest

import nth
from nth.engine import sweep_errors

WIDTHS = [512, 1024, 2048, 4096]
SEEDS = [0, 1, 2, 3, 4]


@pytest.fixture(scope="module")
def sweep():
    cfg = nth.SolveConfig(p=4, depth=1, n=8, d=4, n_test=4, t_max=20.0, num_times=11)
    return sweep_errors(cfg, WIDTHS, SEEDS, reference_check=True)


def test_p2_error_falls_like_one_over_width(sweep):
    slope, se = nth.fit_slope(WIDTHS, nth.geometric_mean(sweep["f_p2"], axis=1))
    assert -1.4 < slope < -0.7, (slope, se)


def test_p4_error_falls_like_one_over_width_squared(sweep):
    slope, se = nth.fit_slope(WIDTHS, nth.geometric_mean(sweep["f_p4"], axis=1))
    assert slope < -1.6, (slope, se)


def test_p4_beats_p2_at_the_largest_width(sweep):
    g2 = nth.geometric_mean(sweep["f_p2"][-1])
    g4 = nth.geometric_mean(sweep["f_p4"][-1])
    assert g2 > 10 * g4, (g2, g4)


def test_kernel_error_falls_with_width(sweep):
    """max |K^(2)_p2 - K^(2)_true| is the NTK's own movement, O(1/m) (HY Corollary 2.4)."""
    slope, _ = nth.fit_slope(WIDTHS, nth.geometric_mean(sweep["K2_p2"], axis=1))
    assert -1.4 < slope < -0.7


def slope(sweep, key):
    return nth.fit_slope(WIDTHS, nth.geometric_mean(sweep[key], axis=1))[0]


def test_dg_error_falls_like_one_over_width_squared(sweep):
    """DG Eqs. 11-12 capture the whole O(1/m) correction: what is left is O(1/m^2)."""
    assert slope(sweep, "f_dg") < -1.6
    assert slope(sweep, "K2_dg") < -1.6


def test_dg_and_p4_differ_at_second_order(sweep):
    """DG and the p = 4 truncation agree to O(1/m^2) (docs/math.md section 4)."""
    assert slope(sweep, "dg_vs_p4") < -1.6


def test_test_point_errors_scale_like_training_errors(sweep):
    """HY Eq. 22: predictions at unseen inputs inherit the orders of the training predictions."""
    assert -1.4 < slope(sweep, "test_p2") < -0.7
    assert slope(sweep, "test_p4") < -1.6
    assert slope(sweep, "test_dg") < -1.6


def test_reference_is_converged(sweep):
    """The flow at default and 100x tighter tolerances differs by < 1/10 of the smallest NTH error."""
    smallest = min(sweep[f"f_{label}"].min() for label in ("p2", "p3", "p4", "dg"))
    assert sweep["ref_diff"].max() < 0.1 * smallest, (sweep["ref_diff"].max(), smallest)
