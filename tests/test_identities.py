"""The NTH identity of docs/math.md section 2 (HY Eq. 10): along true gradient flow,

    d/dt K^(r)(a1..ar) = -(1/n) sum_b K^(r+1)(a1..ar, b) Delta_b.

Checked two ways at t = 0 for r = 2, 3: against the chain rule through theta-dot = -eta . grad L, and
against a finite-difference derivative of K^(r)(theta(t)) along the Diffrax-integrated gradient flow; in NTK
parametrization and in muP and standard parametrization (per-layer learning rates eta_l, weighted inner
product; nth.models._param).
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import pytest
from conftest import rel_err

import nth
from nth.kernel import kernel_fn


@pytest.fixture(scope="module", params=["ntk", "mup", "standard"])
def setup(request):
    data = nth.default_problem(n=6, d=4, seed=3)
    X, y = jnp.asarray(data.X), jnp.asarray(data.y)
    net = nth.init_mlp(5, 4, 48, 2, "tanh", param=request.param)
    ks = nth.kernels(net, X, 4)
    delta = net(X) - y
    return net, X, y, ks, delta, request.param



@pytest.mark.parametrize("r", [2, 3])
def test_contraction_equals_chain_rule_derivative(setup, r):
    net, X, y, ks, delta, param = setup
    n = X.shape[0]
    # eta_l of (W^(1), W^(2), a) at m = 48, written out from TP4 Table 1 (nth.models._param's mapping)
    e = {"ntk": (1.0, 1.0, 1.0), "mup": (48.0, 48.0, 1.0), "standard": (1 / 48, 1.0, 1.0)}[param]
    assert net.lrs is None or net.lrs == pytest.approx(e)
    g = jax.grad(nth.training_loss)(net, X, y)
    theta_dot = eqx.tree_at(lambda t: (t.Ws, t.a), g, (tuple(-e[l] * W for l, W in enumerate(g.Ws)), -e[-1] * g.a))
    dK = jax.jvp(lambda nt: kernel_fn(r)(nt, X, X), (net,), (theta_dot,))[1]
    assert rel_err(-(ks[r + 1] @ delta) / n, dK) < 1e-10


@pytest.mark.parametrize("r", [2, 3])
def test_contraction_equals_derivative_along_integrated_flow(setup, r):
    """Fourth-order one-sided difference of K^(r)(theta(t)) on the Diffrax trajectory, t = 0..4h. Under muP
    the kernels move at O(1) rates, so h = 0.01 (the difference error falls 16x per halving of h: 2e-7 here)."""
    net, X, y, ks, delta, _ = setup
    n = X.shape[0]
    h = 0.01
    flow = nth.gradient_flow(net, X, y, jnp.arange(5) * h, save_params=True,
                             solver=nth.SolverSettings(solver="dopri8", rtol=1e-13, atol=1e-15))
    Kt = [kernel_fn(r)(jax.tree_util.tree_map(lambda a: a[i], flow.params), X, X) for i in range(5)]
    dK = (-25 * Kt[0] + 48 * Kt[1] - 36 * Kt[2] + 16 * Kt[3] - 3 * Kt[4]) / (12 * h)
    assert rel_err(-(ks[r + 1] @ delta) / n, dK) < 1e-6
    assert rel_err(flow.K2[0], ks[2]) < 1e-14
