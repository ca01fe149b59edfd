"""nth.compare: error measures on hand-computed arrays, geometric means, log-log slope fits and their bootstrap
confidence intervals."""

import math

import numpy as np
import pytest
import scipy.stats

import nth

WIDTHS = np.array([64.0, 128.0, 256.0, 512.0, 1024.0])


def test_f_error_is_rms_over_outputs():
    """f_error = ||f_pred - f_true||_2 / sqrt(n) per saved time: hand-computed values, including the 1/sqrt(n)."""
    f_true = np.array([[0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0], [2.0, -1.0, 0.5, 0.0]])
    f_pred = np.array([[1.0, 1.0, 1.0, 1.0], [4.0, 5.0, 1.0, 1.0], [2.0, -1.0, 0.5, 0.0]])
    out = nth.f_error(f_pred, f_true)
    assert out.shape == (3,)
    # |(1,1,1,1)| = 2 -> 2 / sqrt(4) = 1; |(3,4,0,0)| = 5 -> 5 / 2 = 2.5; identical -> 0
    assert out.tolist() == [1.0, 2.5, 0.0]
    # n = 2: |(3, 4)| / sqrt(2)
    assert nth.f_error([[3.0, 4.0]], [[0.0, 0.0]])[0] == pytest.approx(5 / math.sqrt(2), rel=1e-15)
    # symmetric in its arguments
    assert nth.f_error(f_true, f_pred).tolist() == out.tolist()


def test_k2_error_is_max_abs_entry_per_time():
    """k2_error = max_ab |K_pred - K_true| at every saved time (the sign of the largest difference is irrelevant)."""
    K_true = np.zeros((2, 3, 3))
    K_pred = np.zeros((2, 3, 3))
    K_pred[0, 1, 2] = -0.75
    K_pred[0, 0, 0] = 0.5
    K_pred[1, 2, 0] = 1e-3
    out = nth.k2_error(K_pred, K_true)
    assert out.shape == (2,)
    assert out.tolist() == [0.75, 1e-3]
    assert nth.k2_error(K_true + 7.0, K_true).tolist() == [7.0, 7.0]


def test_geometric_mean_with_axis():
    """geometric_mean = exp(mean(log x)), over everything or along one axis."""
    x = np.array([[1.0, 4.0], [2.0, 8.0]])
    np.testing.assert_allclose(nth.geometric_mean(x, axis=1), [2.0, 4.0], rtol=1e-15)
    np.testing.assert_allclose(nth.geometric_mean(x, axis=0), [math.sqrt(2.0), math.sqrt(32.0)], rtol=1e-15)
    assert nth.geometric_mean(x) == pytest.approx(8.0 ** 0.5, rel=1e-15)
    assert nth.geometric_mean([1e-6, 1e-2]) == pytest.approx(1e-4, rel=1e-14)  # not the arithmetic mean


def test_fit_slope_recovers_an_exact_power_law():
    """Errors C w^a exactly: the slope is a to 1e-12 and its standard error is ~0; with two widths the slope is
    exact and the standard error undefined (NaN); one width is refused."""
    for a in (-2.0, -0.5, 1.5):
        slope, se = nth.fit_slope(WIDTHS, 3.7 * WIDTHS**a)
        assert abs(slope - a) < 1e-12
        assert 0.0 <= se < 1e-12
    slope, se = nth.fit_slope([100, 400], [1e-3, 1e-3 / 16])
    assert abs(slope + 2.0) < 1e-12
    assert math.isnan(se)
    with pytest.raises(ValueError, match="at least two distinct widths"):
        nth.fit_slope([100], [1e-3])


def test_fit_slope_standard_error_matches_scipy():
    """On noisy data, slope and standard error equal scipy.stats.linregress on (log w, log e)."""
    rng = np.random.default_rng(3)
    err = 2.0 * WIDTHS**-1.0 * np.exp(0.3 * rng.normal(size=WIDTHS.size))
    slope, se = nth.fit_slope(WIDTHS, err)
    ref = scipy.stats.linregress(np.log(WIDTHS), np.log(err))
    assert slope == pytest.approx(ref.slope, rel=1e-12)
    assert se == pytest.approx(ref.stderr, rel=1e-10)
    assert se > 0.01


def synthetic(sigma, seed=0, seeds=10):
    """E[w, s] = C w^-2 exp(sigma z[w, s]): a -2 power law with log-normal seed-to-seed spread."""
    z = np.random.default_rng(seed).normal(size=(WIDTHS.size, seeds))
    return 5.0 * WIDTHS[:, None] ** -2.0 * np.exp(sigma * z)


def test_slope_with_ci_contains_the_true_slope():
    """Synthetic errors with exponent -2 and 10 seeds: over 20 independent data sets the 95% bootstrap interval
    contains -2 in at least 17 (measured 20; ~92% over 200 data sets, a percentile bootstrap of 10 seeds covers
    slightly under nominal), a 50% interval far less often (measured 8); with 10x less noise the interval is
    10x narrower (the log-errors scale, and so does every bootstrap slope) and still contains -2."""
    covered = {0.95: 0, 0.5: 0}
    for data_seed in range(1, 21):
        E = synthetic(1.0, data_seed)
        for level in covered:
            slope, lo, hi = nth.slope_with_ci(WIDTHS, E, level=level, resamples=200)
            assert lo <= slope <= hi
            covered[level] += lo < -2.0 < hi
    assert covered[0.95] >= 17
    assert covered[0.5] <= 14
    wide = nth.slope_with_ci(WIDTHS, synthetic(1.0, 1), resamples=500)
    narrow = nth.slope_with_ci(WIDTHS, synthetic(0.1, 1), resamples=500)
    assert wide[1] < -2.0 < wide[2] and narrow[1] < -2.0 < narrow[2]
    assert wide[2] - wide[1] > 0.1  # a genuine interval, not a point
    assert (narrow[2] - narrow[1]) == pytest.approx(0.1 * (wide[2] - wide[1]), rel=1e-9)
    # noise-free data: a point interval at the exact slope
    exact = nth.slope_with_ci(WIDTHS, synthetic(0.0), resamples=50)
    assert max(abs(v + 2.0) for v in exact) < 1e-12


def test_slope_with_ci_ignores_missing_runs():
    """NaN entries (missing runs) are left out of their width's geometric mean, and a width with no runs at all
    is dropped: the same answer as on the data without them."""
    E = synthetic(0.5)
    holes = E.copy()
    holes[1, 3] = np.nan
    holes[3, [0, 7]] = np.nan
    slope, lo, hi = nth.slope_with_ci(WIDTHS, holes, resamples=300)
    assert np.isfinite([slope, lo, hi]).all()
    gm = [nth.geometric_mean(row[np.isfinite(row)]) for row in holes]
    assert slope == pytest.approx(nth.fit_slope(WIDTHS, gm)[0], rel=1e-13)
    assert slope != pytest.approx(nth.slope_with_ci(WIDTHS, E, resamples=300)[0], rel=1e-6)  # the holes mattered
    # a whole width missing: identical to leaving that width out
    missing = E.copy()
    missing[2] = np.nan
    keep = [0, 1, 3, 4]
    assert nth.slope_with_ci(WIDTHS, missing, resamples=300) == nth.slope_with_ci(WIDTHS[keep], E[keep],
                                                                                 resamples=300)


def test_slope_with_ci_is_deterministic_for_a_seed():
    """The same seed gives the same interval; another seed resamples differently (same point estimate)."""
    E = synthetic(1.0)
    a = nth.slope_with_ci(WIDTHS, E, resamples=300, seed=4)
    assert nth.slope_with_ci(WIDTHS, E, resamples=300, seed=4) == a
    b = nth.slope_with_ci(WIDTHS, E, resamples=300, seed=5)
    assert b[0] == a[0]
    assert b[1:] != a[1:]
