"""The infinite-width muP limit of one hidden layer (docs/math.md section 12): the unit dynamics at finite width
are nth's own gradient flow and gradient descent, the linear case in closed form, and the quadrature and
particle limits agree within their own stated errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nth
from nth.dynamics import SolverSettings
from nth.dynamics._mup_limit import limit_rates, linear_limit, mup_limit, unit_flow, units_of
from nth.models import preset

TIGHT = SolverSettings(solver="dopri8", rtol=1e-12, atol=1e-14, max_steps=200_000)


def _data(n=3, d=2, n_test=2, seed=1):
    X = jax.random.normal(jax.random.PRNGKey(seed), (n, d))
    Xt = jax.random.normal(jax.random.PRNGKey(seed + 1), (n_test, d))
    return X / jnp.linalg.norm(X, axis=1, keepdims=True), Xt / jnp.linalg.norm(Xt, axis=1, keepdims=True)


@pytest.mark.parametrize("param", ["mup", "meanfield"])
@pytest.mark.parametrize("loss,outputs", [("mse", 1), ("cross-entropy", 3)])
def test_units_at_finite_width_are_the_networks_own_gradient_flow(param, loss, outputs):
    """The unit ODE of a width-64 muP (and mean-field) net, started from its own weights, equals nth's gradient
    flow of that net: f, f at test inputs, K^(2) and the loss to 1e-10 (both solves at rtol 1e-12)."""
    X, Xt = _data()
    model = nth.init_mlp(0, 2, 64, 1, "tanh", param=param, outputs=outputs)
    y = jnp.array([0.5, -0.3, 0.8]) if outputs == 1 else jnp.array([0, 2, 1])
    lossf = nth.loss_from_spec(loss)
    Y = lossf.targets(y, 3, model(X).shape[1:])
    ts = jnp.linspace(0.0, 5.0, 6)
    flow = nth.gradient_flow(model, X, Y, ts, X_test=Xt, loss=lossf, solver=TIGHT)
    nodes, rates = units_of(model, X, Xt)
    (f, ft, K2, lo), _ = unit_flow(nodes, rates, X, Y, ts, activation="tanh", loss=lossf,
                                   out_shape=model(X).shape[1:], X_test=Xt, solver=TIGHT)
    assert float(jnp.max(jnp.abs(flow.f[-1] - flow.f[0]))) > 0.1  # the outputs move by O(1)
    for a, b in ((f, flow.f), (ft, flow.f_test), (K2, flow.K2), (lo, flow.loss)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-10)


def test_units_at_finite_width_are_the_networks_own_gradient_descent():
    """Forward Euler of the unit ODE at step lr is gradient descent on the muP net's weights."""
    X, Xt = _data()
    model = nth.init_mlp(3, 2, 32, 1, "tanh", param="mup")
    y = jnp.array([0.5, -0.3, 0.8])
    steps = np.array([0, 5, 20])
    gd = nth.gradient_descent(model, X, y, 0.5, steps, X_test=Xt)
    nodes, rates = units_of(model, X, Xt)
    (f, ft, K2, lo), _ = unit_flow(nodes, rates, X, y, 0.5 * steps, activation="tanh", X_test=Xt, lr=0.5,
                                   steps=steps)
    for a, b in ((f, gd.f), (ft, gd.f_test), (K2, gd.K2), (lo, gd.loss)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-12)


def test_units_on_minibatches_are_the_networks_own_sgd():
    """With a batch schedule, the Euler steps of the unit ODE on each step's batch (1/B over its inputs) are SGD
    on the muP net's weights (two outputs)."""
    X, Xt = _data(n=4, d=3)
    model = nth.init_mlp(5, 3, 32, 1, "tanh", param="mup", outputs=2)
    y = jax.random.normal(jax.random.PRNGKey(9), (4, 2))
    steps, batches = np.array([0, 3, 7]), nth.batch_schedule(4, 2, 7, seed=1)
    gd = nth.gradient_descent(model, X, y, 0.3, steps, X_test=Xt, batches=batches)
    nodes, rates = units_of(model, X, Xt)
    (f, ft, K2, lo), _ = unit_flow(nodes, rates, X, y, 0.3 * steps, activation="tanh", out_shape=(2,), X_test=Xt,
                                   lr=0.3, steps=steps, batches=batches)
    for a, b in ((f, gd.f), (ft, gd.f_test), (K2, gd.K2)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-12)


def test_test_inputs_off_the_span_of_the_training_inputs():
    """A test input outside the span of the training inputs: the limit (its part in the span moved by the dynamics,
    the rest r integrated at readout) equals direct units drawn in all d dimensions, within the stated errors."""
    X, Xt = _data(n=2, d=3)
    y = jnp.array([0.7, -0.4])
    ts = jnp.linspace(0.0, 3.0, 4)
    rates = limit_rates("mup")
    tr = mup_limit(X, y, ts, rates, activation="tanh", X_test=Xt, method="trapezoid", h=0.3)
    draws = []
    for i in range(4):  # antithetic units u ~ N(0, I_3), v ~ N(0, 1), in the full input space
        U = np.asarray(jax.random.normal(jax.random.PRNGKey(20 + i), (2**14, 3)))
        v = np.asarray(jax.random.normal(jax.random.PRNGKey(40 + i), (2**14, 1)))
        U, v = np.concatenate([U, U]), np.concatenate([v, -v])
        nodes = nth.dynamics.Nodes(z=jnp.asarray(U @ np.asarray(X).T), z_test=jnp.asarray(U @ np.asarray(Xt).T),
                                   v=jnp.asarray(v), w=jnp.full((U.shape[0],), 1.0 / U.shape[0]), r_std=jnp.zeros(2))
        draws.append(np.asarray(unit_flow(nodes, rates, X, y, ts, activation="tanh", X_test=Xt)[0][1]))
    mean, se = np.mean(draws, axis=0), np.std(draws, axis=0, ddof=1) / 2
    assert float(np.max(np.abs(np.asarray(tr.f_test) - mean) / (4 * se + tr.error))) < 1
    beta = np.linalg.lstsq(np.asarray(X).T, np.asarray(Xt).T, rcond=None)[0]
    assert np.linalg.norm(np.asarray(Xt).T - np.asarray(X).T @ beta, axis=0).min() > 0.1  # off the span indeed
    assert float(np.max(np.abs(np.asarray(tr.f_test[-1])))) > 10 * float(np.max(4 * se + tr.error))  # and moved


def test_the_unit_constants_come_from_the_preset():
    """muP and mean-field at depth 1 have width-independent unit constants (s_u = sigma_w, s_v = sigma_a, unit
    rates); the kernel-regime presets are refused with the powers of m that move."""
    assert preset("mup", 1).has_mean_field_limit and preset("meanfield", 1).has_mean_field_limit
    assert not preset("ntk", 1).has_mean_field_limit and not preset("standard", 1).has_mean_field_limit
    r = limit_rates("mup", sigma_w=1.5, sigma_a=0.5)
    assert (r.s_u, r.s_v, r.eta_u, r.eta_v) == (1.5, 0.5, 1.0, 1.0)
    for param in ("ntk", "standard"):
        with pytest.raises(nth.ConfigError, match=f"param '{param}' has no mean-field"):
            limit_rates(param)


def test_linear_limit_closed_form_against_quadrature_and_particles():
    """Linear phi: the (d + k) x (d + k) moment ODE equals the trapezoidal limit to 1e-8 (train and test inputs,
    a test input outside the span of the training inputs), and the Sobol and particle limits within 4 of their
    stated errors."""
    X, Xt = _data(n=2, d=3)  # rank 2, plus one readout: the rule is 3-dimensional
    y = jnp.array([0.7, -0.4])
    ts = jnp.linspace(0.0, 4.0, 5)
    rates = limit_rates("mup")
    f, ft = linear_limit(X, y, ts, rates, X_test=Xt)
    tr = mup_limit(X, y, ts, rates, activation="linear", X_test=Xt, method="trapezoid", h=0.4)
    assert tr.error < 1e-8 and float(jnp.max(jnp.abs(f[-1] - f[0]))) > 0.1
    np.testing.assert_allclose(np.asarray(tr.f), np.asarray(f), rtol=0, atol=1e-8)
    np.testing.assert_allclose(np.asarray(tr.f_test), np.asarray(ft), rtol=0, atol=1e-8)
    for method in ("sobol", "particles"):
        mc = mup_limit(X, y, ts, rates, activation="linear", X_test=Xt, method=method, points=2**12)
        gap = max(float(jnp.max(jnp.abs(mc.f - f))), float(jnp.max(jnp.abs(mc.f_test - ft))))
        assert gap < 4 * mc.error, (method, gap, mc.error)


def test_tanh_limit_quadrature_against_sobol_and_its_kernel_at_initialization():
    """tanh: the trapezoidal limit and the Sobol and particle limits agree within their stated errors; at t = 0 the limit's kernel is
    the limiting NTK Kbar^(2) of the same network (muP and NTK parametrization share it at initialization) and
    its outputs vanish."""
    X, Xt = _data()
    y = jnp.array([0.5, -0.3, 0.8])
    ts = jnp.linspace(0.0, 3.0, 4)
    rates = limit_rates("mup")
    tr = mup_limit(X, y, ts, rates, activation="tanh", X_test=Xt, method="trapezoid", h=0.3)
    for method in ("sobol", "particles"):
        so = mup_limit(X, y, ts, rates, activation="tanh", X_test=Xt, method=method, points=2**13)
        gap = max(float(jnp.max(jnp.abs(tr.f - so.f))), float(jnp.max(jnp.abs(tr.f_test - so.f_test))))
        assert gap < 4 * so.error + tr.error, (method, gap, so.error, tr.error)
    Kbar = nth.limiting_kernels(X, depth=1, activation="tanh").ntk
    np.testing.assert_allclose(np.asarray(tr.K2[0]), np.asarray(Kbar), rtol=0, atol=1e-9)  # measured 3e-12
    assert float(jnp.max(jnp.abs(tr.f[0]))) < 1e-12


def test_bad_limit_options_are_refused():
    X, _ = _data()
    y = jnp.zeros(3)
    rates = limit_rates("mup")
    with pytest.raises(nth.ConfigError, match="limit method 'gauss'"):
        mup_limit(X, y, jnp.array([0.0, 1.0]), rates, method="gauss")
    with pytest.raises(nth.ConfigError, match="limit points = 1000"):
        mup_limit(X, y, jnp.array([0.0, 1.0]), rates, method="sobol", points=1000)
    with pytest.raises(nth.MemoryBudgetError, match="limit-points"):
        mup_limit(X, y, jnp.array([0.0, 1.0]), rates, method="sobol", points=2**20, memory_budget=10**8)
    with pytest.raises(nth.ConfigError, match="one-hidden-layer"):
        units_of(nth.init_mlp(0, 2, 8, 2, "tanh", param="mup"), X)


def test_the_mup_inf_rows_of_a_run(tmp_path):
    """A depth-1 muP run with a learning rate predicts mup-inf (against the flow) and d-mup-inf (against gradient
    descent): each is the library's limit on the run's data, recorded with its method and error; elsewhere the
    row is refused in one line; a second run on the same data reuses the limit."""
    import h5py

    cfg = nth.SolveConfig(p=2, width=128, depth=1, n=3, d=2, n_test=2, param="mup", lr=0.5, steps=4, num_times=3,
                          limit_method="sobol", limit_points=2**10)
    path = str(tmp_path / "mup.h5")
    res = nth.run_solve(cfg, path)
    assert {"mup_inf", "discrete_mup_inf"} <= set(res.predictions)
    data = res.data
    X, Xt, y = jnp.asarray(data.X), jnp.asarray(data.X_test), jnp.asarray(data.y)
    ts = np.asarray(res.gd.ts)
    kw = dict(activation="tanh", X_test=Xt, method="sobol", points=2**10, solver=cfg.nth_settings)
    flow_limit = mup_limit(X, y, ts, limit_rates("mup"), **kw)
    gd_limit = mup_limit(X, y, ts, limit_rates("mup"), lr=0.5, steps=np.asarray(res.gd.steps), **kw)
    np.testing.assert_allclose(np.asarray(res.predictions["mup_inf"].solution.f), np.asarray(flow_limit.f), rtol=0,
                               atol=1e-13)
    np.testing.assert_allclose(np.asarray(res.predictions["discrete_mup_inf"].solution.f_test),
                               np.asarray(gd_limit.f_test), rtol=0, atol=1e-13)
    with h5py.File(path) as h:
        g = h["mup_inf"]
        assert g.attrs["method"] == "sobol" and g.attrs["points"] == 2**10 and g.attrs["limit_error"] > 0
        assert "discrete/mup_inf" in h
    other = nth.solve(cfg.replace(seed=1, width=64))  # the limit depends on no seed and no width: solved once
    assert other.predictions["mup_inf"].solution is res.predictions["mup_inf"].solution
    for bad, why in ((dict(depth=2), "depth 1"), (dict(param="ntk"), "no mean-field limit"),
                     (dict(limit_points=1000), "limit points = 1000")):
        with pytest.raises(nth.ConfigError, match=why):
            cfg.replace(mup_inf=True, **bad).validate()
    assert not nth.SolveConfig(param="mup", depth=2).use_mup_inf and not nth.SolveConfig(depth=1).use_mup_inf


def test_a_mup_sweep_and_the_dichotomy_figure_draw_the_limit(tmp_path):
    """A width sweep under muP at depth 1 tabulates mup-inf's error like any row's, and the dichotomy figure fits
    its slope beside the kernel rows'."""
    base = nth.SolveConfig(p=2, depth=1, n=3, d=2, n_test=0, param="mup", t_max=2.0, num_times=3,
                           limit_method="sobol", limit_points=2**8)
    path = str(tmp_path / "mup.h5")
    assert nth.run_sweep(nth.SweepConfig(widths=(16, 64), num_seeds=2, base=base), path) == {"done": 0, "ran": 4}
    sc = nth.load_sweep(path)["scalars"]
    assert np.isfinite(sc["max_f_error_mup_inf"]).all() and np.isfinite(sc["max_f_error_p2"]).all()
    from nth.plot import dichotomy

    fits = dichotomy({"mup": path}, str(tmp_path / "d.png"), level="p2")
    assert set(fits["mup"]) == {"K2_movement", "p2", "mup_inf"}
    assert (tmp_path / "d.png").read_bytes()[:4] == b"\x89PNG"
