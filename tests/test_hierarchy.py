"""The truncated NTH (HY Eq. 15): closed form at p = 2, internal consistency, readable solver failures."""

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from conftest import rel_err

import nth


@pytest.fixture(scope="module")
def problem():
    data = nth.default_problem(n=8, d=4, seed=0)
    X, y = jnp.asarray(data.X), jnp.asarray(data.y)
    net = nth.init_mlp(1, 4, 64, 2, "tanh")
    return net, X, y, nth.kernels(net, X, 4), net(X)


def test_p2_equals_matrix_exponential(problem):
    """p = 2: f(t) = y + expm(-t K/n) (f0 - y), with scipy's expm as the independent reference."""
    net, X, y, ks, f0 = problem
    n = X.shape[0]
    ts = np.linspace(0, 60, 13)
    sol = nth.truncated_nth(ks, f0, y, ts, p=2)
    K = np.asarray(ks[2])
    ref = np.stack([np.asarray(y) + scipy.linalg.expm(-t * K / n) @ np.asarray(f0 - y) for t in ts])
    assert np.abs(np.asarray(sol.f) - ref).max() < 1e-8 * np.abs(ref).max()
    assert np.abs(nth.linearized_closed_form(K, f0, y, ts) - ref).max() < 1e-10


def test_p3_kernel_moves_by_the_integrated_residual(problem):
    """p = 3 (HY Section 4 item 3): K^(3) frozen, so K^(2)(t) = K^(2)(0) - (1/n) K^(3)(0)[int_0^t Delta], with the
    integral of the solved residual by Simpson's rule on a fine grid (error O(h^4): measured 1.1e-10 relative with
    401 points, 1.8e-9 with 201)."""
    from scipy.integrate import simpson

    net, X, y, ks, f0 = problem
    n = X.shape[0]
    ts = np.linspace(0, 20, 401)
    sol = nth.truncated_nth(ks, f0, y, ts, p=3)
    R = simpson(np.asarray(sol.f) - np.asarray(y)[None, :], x=ts, axis=0)
    moved = np.asarray(sol.K2[-1]) - np.asarray(ks[2])
    assert np.abs(moved).max() > 1e-3  # the kernel does move
    assert rel_err(moved, -np.asarray(ks[3]) @ R / n) < 1e-8


def test_save_all_returns_every_evolving_kernel(problem):
    net, X, y, ks, f0 = problem
    ts = np.linspace(0, 10, 5)
    sol = nth.truncated_nth(ks, f0, y, ts, p=4, save_all=True)
    assert sorted(sol.K) == [2, 3]
    assert sol.K[3].shape == (5, 8, 8, 8)
    assert rel_err(sol.K[2], sol.K2) == 0.0
    assert rel_err(sol.K[3][0], ks[3]) < 1e-14
    # the loss is (1/2n)|f - y|^2
    np.testing.assert_allclose(sol.loss, 0.5 * np.mean((np.asarray(sol.f) - np.asarray(y)) ** 2, axis=1),
                               rtol=1e-12)
    # the p = 4 trajectory leaves t = 0 at the exact rates df/dt = -K^(2) Delta / n, dK^(2)/dt = -K^(3)[Delta] / n
    # and dK^(3)/dt = -K^(4)[Delta] / n (HY Eq. 15), by a second-order one-sided difference (error O(h^2))
    h = 1e-4
    short = nth.truncated_nth(ks, f0, y, [0.0, h, 2 * h], p=4, save_all=True,
                              solver=nth.SolverSettings(rtol=1e-13, atol=1e-15))
    delta = np.asarray(f0 - y)
    n = delta.shape[0]

    def rate(a):
        a = np.asarray(a)
        return (-3 * a[0] + 4 * a[1] - a[2]) / (2 * h)

    assert rel_err(rate(short.f), -np.asarray(ks[2]) @ delta / n) < 1e-6
    assert rel_err(rate(short.K[2]), -np.asarray(ks[3]) @ delta / n) < 1e-6
    assert rel_err(rate(short.K[3]), -np.asarray(ks[4]) @ delta / n) < 1e-6


def test_higher_levels_agree_at_short_times(problem):
    """All levels share the Taylor expansion of f to order t^(p-1): at t << 1 they differ only slightly."""
    net, X, y, ks, f0 = problem
    ts = np.array([0.0, 1e-2])
    f = {q: np.asarray(nth.truncated_nth(ks, f0, y, ts, p=q).f[-1]) for q in (2, 3, 4)}
    d23 = np.abs(f[2] - f[3]).max()
    d34 = np.abs(f[3] - f[4]).max()
    assert d23 > 0 and d34 > 0
    # f_2 - f_3 = O(t^3), f_3 - f_4 = O(t^4): the second is much smaller
    assert d34 < 0.1 * d23


def test_max_steps_raises_readable_error(problem):
    net, X, y, ks, f0 = problem
    with pytest.raises(nth.SolverError, match=r"(?s)truncated NTH \(p = 4\).*max_steps"):
        nth.truncated_nth(ks, f0, y, np.linspace(0, 100, 3), p=4, solver=nth.SolverSettings(max_steps=3))


def test_bad_arguments(problem):
    net, X, y, ks, f0 = problem
    with pytest.raises(nth.ConfigError, match="p = 5 needs"):
        nth.truncated_nth(ks, f0, y, [0.0, 1.0], p=5)
    with pytest.raises(nth.ConfigError, match="p = 1"):
        nth.truncated_nth(ks, f0, y, [0.0, 1.0], p=1)
    with pytest.raises(nth.ConfigError, match="non-decreasing"):
        nth.truncated_nth(ks, f0, y, [0.0, 2.0, 1.0], p=2)
    with pytest.raises(nth.ConfigError, match="rtol"):
        nth.truncated_nth(ks, f0, y, [0.0, 1.0], p=2, solver=nth.SolverSettings(rtol=-1.0))


def test_default_horizon_reaches_the_requested_fall(problem):
    net, X, y, ks, f0 = problem
    T = nth.default_horizon(ks[2], f0, y, fall=1000.0)
    f = nth.linearized_closed_form(ks[2], f0, y, [0.0, T])
    L = 0.5 * np.mean((f - np.asarray(y)) ** 2, axis=1)
    assert L[0] / L[1] == pytest.approx(1000.0, rel=1e-6)


def test_matrix_free_top_level_equals_dense(problem):
    """Issue-5 equality: K^(4) never materialized (contracted by a JVP in the RHS) gives the dense solution,
    at training and test inputs, to 1e-10."""
    net, X, y, ks, f0 = problem
    Xt = jnp.asarray(nth.default_problem(n=2, d=4, seed=5).X)
    ts = np.linspace(0, 20, 6)
    kt = nth.kernels(net, X, 4, first=Xt)
    dense = nth.truncated_nth(ks, f0, y, ts, p=4, test_kernels=kt, f0_test=net(Xt))
    mf = nth.kernels(net, X, 4, matrix_free=True)
    mft = nth.kernels(net, X, 4, first=Xt, matrix_free=True)
    free = nth.truncated_nth(mf, f0, y, ts, p=4, test_kernels=mft, f0_test=net(Xt))
    assert float(jnp.abs(free.f - dense.f).max()) < 1e-10
    assert float(jnp.abs(free.f_test - dense.f_test).max()) < 1e-10
    assert float(jnp.abs(free.K2 - dense.K2).max()) < 1e-10
    assert float(jnp.abs(dense.f - dense.f[0]).max()) > 1e-2  # it trained
    with pytest.raises(nth.ConfigError, match="matrix-free"):
        nth.truncated_nth({2: ks[2], 3: nth.KernelOperator(net, X, None, r=3), 4: ks[4]}, f0, y, ts, p=4)
