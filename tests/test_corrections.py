"""DG O(1/m) corrections (docs/math.md section 4), the HY p = 3 reduced system, and finite learning rate."""

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import rel_err

import nth
from nth.dynamics import dg_correction, gradient_descent, hy_p3_reduced, stable_lr


@pytest.fixture(scope="module")
def problem():
    data = nth.default_problem(n=8, d=4, seed=0, n_test=3)
    X, y, Xt = jnp.asarray(data.X), jnp.asarray(data.y), jnp.asarray(data.X_test)
    net = nth.init_mlp(1, 4, 128, 2, "tanh")
    return net, X, y, Xt, nth.kernels(net, X, 4), nth.kernels(net, X, 4, first=Xt), net(X), net(Xt)


def test_closed_and_ode_forms_agree(problem):
    net, X, y, Xt, ks, kt, f0, ft0 = problem
    ts = np.linspace(0, 40, 17)
    a = dg_correction(ks, f0, y, ts, method="closed", test_kernels=kt, f0_test=ft0)
    b = dg_correction(ks, f0, y, ts, method="ode", test_kernels=kt, f0_test=ft0)
    for s in range(len(ts)):  # at every saved time, relative to the size of the quantity there
        assert rel_err(a.f[s], b.f[s]) < 1e-8
        assert rel_err(a.K2[s], b.K2[s]) < 1e-8
        assert rel_err(a.f_test[s], b.f_test[s]) < 1e-8
    # the correction itself (not just K) agrees: Theta1 = K2 - K
    assert rel_err(a.K2 - ks[2], b.K2 - ks[2]) < 1e-8
    assert float(jnp.abs(a.K2[-1] - ks[2]).max()) > 1e-4  # and it is not trivially zero


def test_late_time_formula_matches_ode(problem):
    """DG Eq. 104: Theta1(t) -> Theta1(inf) once every mode has decayed (t = 40 / lambda_min(K/n))."""
    net, X, y, Xt, ks, kt, f0, ft0 = problem
    lam_min = float(np.linalg.eigvalsh(np.asarray(ks[2]) / 8)[0])
    b = dg_correction(ks, f0, y, [0.0, 40.0 / lam_min], method="ode")
    assert rel_err(b.K2[-1] - ks[2], b.K2_late - ks[2]) < 1e-8


def test_dg_starts_like_the_hierarchy(problem):
    """At t = 0 the corrected kernel moves at the exact rate dK^(2)/dt = -(1/n) K^(3)[Delta(0)]."""
    net, X, y, Xt, ks, kt, f0, ft0 = problem
    h = 1e-4
    a = dg_correction(ks, f0, y, [0.0, h])
    assert rel_err((a.K2[1] - a.K2[0]) / h, -(ks[3] @ (f0 - y)) / 8) < 1e-3


def test_hy_p3_reduced_system_equals_generic_truncation(problem):
    net, X, y, Xt, ks, kt, f0, ft0 = problem
    ts = np.linspace(0, 40, 9)
    generic = nth.truncated_nth(ks, f0, y, ts, p=3)
    assert rel_err(hy_p3_reduced(ks, f0, y, ts), generic.f) < 1e-8


def test_test_points_at_training_inputs_reproduce_training_predictions(problem):
    """HY Eq. 22 with x = a training input must give that input's training trajectory."""
    net, X, y, Xt, ks, kt, f0, ft0 = problem
    ts = np.linspace(0, 20, 5)
    kx = nth.kernels(net, X, 4, first=X[2:4])
    for q in (2, 4):
        s = nth.truncated_nth(ks, f0, y, ts, p=q, test_kernels=kx, f0_test=f0[2:4])
        assert rel_err(s.f_test, s.f[:, 2:4]) < 1e-9
    d = dg_correction(ks, f0, y, ts, test_kernels=kx, f0_test=f0[2:4])
    assert rel_err(d.f_test, d.f[:, 2:4]) < 1e-9


def test_gradient_descent_approaches_gradient_flow_at_order_lr(problem):
    """Full-batch GD at t = lr * step differs from gradient flow by O(lr) (HY Section 4 item 2)."""
    net, X, y, Xt, ks, kt, f0, ft0 = problem
    T = 10.0
    eta0 = 1e-2 * stable_lr(ks[2])
    errs = []
    for eta in (eta0, eta0 / 2):
        S = int(np.ceil(T / eta))
        gd = gradient_descent(net, X, y, T / S, np.array([0, S // 2, S]), X_test=Xt)
        flow = nth.gradient_flow(net, X, y, gd.ts, X_test=Xt)
        errs.append(float(nth.f_error(gd.f, flow.f).max()))
        np.testing.assert_allclose(gd.f[0], f0, rtol=1e-14)
    assert errs[0] < 0.05
    assert 1.8 < errs[0] / errs[1] < 2.2, errs


def test_gradient_descent_divergence_is_reported(problem):
    net, X, y, Xt, ks, kt, f0, ft0 = problem
    with pytest.raises(nth.SolverError, match="diverged"):
        gradient_descent(net, X, y, 50 * stable_lr(ks[2]), np.array([0, 200]))


def test_dg_refuses_missing_kernels(problem):
    net, X, y, Xt, ks, kt, f0, ft0 = problem
    with pytest.raises(nth.ConfigError, match="K\\^\\(4\\)"):
        dg_correction({2: ks[2], 3: ks[3]}, f0, y, [0.0, 1.0])
    with pytest.raises(nth.ConfigError, match="method"):
        dg_correction(ks, f0, y, [0.0, 1.0], method="exact")
