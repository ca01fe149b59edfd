"""K^(r) by nested forward mode against brute-force references (docs/math.md section 2, HY Eqs. 4-10)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import flat_jacfwd, flat_jacobian, rel_err

import nth
from nth.kernel import kernel_fn


@pytest.mark.parametrize("param", ["mup", "standard"])
def test_weighted_ntk_equals_weighted_jacobian_gram(param):
    """abc-parametrizations: K^(2) = J diag(eta) J^T with eta_l = m^(2(s_l - a_l) - c) built here from TP4's
    exponents (layer order W^(1), W^(2), a), and the output layer's initial scale is m^(s - a - b)."""
    from nth.models import preset

    X = jnp.asarray(nth.default_problem(n=6, d=4, seed=2).X)
    m, H = 9, 2
    net = nth.init_mlp(3, 4, m, H, "tanh", param=param)
    ref = nth.init_mlp(3, 4, m, H, "tanh")
    abc = preset(param, H)
    s = [0.0, 0.5, 0.5]
    e = [2 * (s[l] - float(abc.a[l])) - float(abc.c) for l in range(H + 1)]
    sizes = [m * 4, m * m, m]
    eta = jnp.concatenate([jnp.full(k, float(m) ** e_l) for k, e_l in zip(sizes, e)])
    J = flat_jacobian(net, X)
    assert rel_err(nth.ntk(net, X), (J * eta) @ J.T) < 1e-13
    g_out = s[2] - float(abc.a[2]) - float(abc.b[2])
    assert rel_err(net.a, ref.a * float(m) ** g_out) < 1e-15


@pytest.mark.parametrize("depth", [1, 3])
def test_structured_ntk_equals_jacobian_gram(depth):
    data = nth.default_problem(n=6, d=4, seed=2)
    X = jnp.asarray(data.X)
    net = nth.init_mlp(3, 4, 9, depth, "gelu", sigma_w=1.3, sigma_a=0.7)
    J = flat_jacobian(net, X)
    assert rel_err(nth.ntk(net, X), J @ J.T) < 1e-13


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "erf", "gelu", "softplus"])
def test_K3_equals_bruteforce(tiny, activation):
    """K^(3)(a1,a2,b) = <grad K^(2)(a1,a2), grad f_b>: jacfwd of K^(2) contracted with the Jacobian of f."""
    _, X, _ = tiny
    net = nth.init_mlp(0, 3, 7, 2, activation, beta=2.0)
    n = X.shape[0]
    J = flat_jacobian(net, X)
    ref = jnp.einsum("abp,cp->abc", flat_jacfwd(lambda nt: nth.ntk(nt, X), net, (n, n)), J)
    got = nth.kernels(net, X, 3, chunk=2)[3]
    assert got.shape == (n, n, n)
    assert rel_err(got, ref) < 1e-10


def test_K4_equals_bruteforce(tiny):
    net, X, _ = tiny
    n = X.shape[0]
    J = flat_jacobian(net, X)
    k3 = kernel_fn(3)
    ref = jnp.einsum("abcp,dp->abcd", flat_jacfwd(lambda nt: k3(nt, X, X), net, (n, n, n)), J)
    got = nth.kernels(net, X, 4, chunk=3)[4]
    assert rel_err(got, ref) < 1e-10
    # symmetric in the first two slots only (docs/math.md section 3): the last two differ at O(1)
    assert rel_err(got.transpose(1, 0, 2, 3), got) < 1e-12
    assert rel_err(got.transpose(0, 1, 3, 2), got) > 1e-2


def test_chunk_size_does_not_change_kernels(tiny):
    net, X, _ = tiny
    a = nth.kernels(net, X, 4, chunk=1)
    b = nth.kernels(net, X, 4, chunk=5)
    for r in (2, 3, 4):
        assert rel_err(a[r], b[r]) < 1e-13


def test_kernel_sizes_follow_width_scaling():
    """K^(3) ~ 1/m (HY Eqs. 11-12): doubling the width twice shrinks mean |K^(3)| about 4-fold."""
    X = jnp.asarray(nth.default_problem(n=4, d=3).X)
    sizes = []
    for m in (256, 1024):
        vals = [float(jnp.abs(nth.kernels(nth.init_mlp(s, 3, m, 1, "tanh"), X, 3)[3]).mean()) for s in range(4)]
        sizes.append(nth.geometric_mean(vals))
    slope, _ = nth.fit_slope([256, 1024], sizes)
    assert -1.4 < slope < -0.6


def test_memory_budget_refusal_is_predicted_before_allocation(tiny):
    net, X, _ = tiny
    with pytest.raises(nth.MemoryBudgetError, match=r"K\^\(4\).*memory budget") as e:
        nth.kernels(net, X, 4, memory_budget=1000)
    assert "--memory-budget" in str(e.value) and "reduce" in str(e.value).lower()
    # the prediction is exact for the kernels themselves, and made from shapes alone (an abstract model)
    shapes = eqx.filter_eval_shape(lambda: nth.init_mlp(0, 3, 100, 1))
    plan = nth.plan_kernels(shapes, 128, 4, memory_budget=2**40)
    assert plan.kernel_bytes[4] == 128**4 * 8 == 2 * 2**30
    # matrix-free stores K^(2)..K^(p-1) only, so a budget that refuses the dense K^(4) can accept it
    budget = 2**31
    with pytest.raises(nth.MemoryBudgetError, match="matrix-free"):
        nth.plan_kernels(shapes, 128, 4, memory_budget=budget)
    mf = nth.plan_kernels(shapes, 128, 4, memory_budget=budget, matrix_free=True)
    assert 4 not in mf.kernel_bytes and mf.total_bytes < budget


def test_relu_refused_for_higher_levels(tiny):
    _, X, _ = tiny
    net = nth.init_mlp(0, 3, 7, 1, "relu")
    assert nth.kernels(net, X, 2)[2].shape == (5, 5)
    with pytest.raises(nth.ConfigError, match="relu.*p = 3"):
        nth.kernels(net, X, 3)


def test_float32_kernels_close_to_float64(tiny):
    net, X, _ = tiny
    k64 = nth.kernels(net, X, 3)
    net32 = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), net)
    k32 = nth.kernels(net32, X.astype(jnp.float32), 3)
    assert k32[3].dtype == jnp.float32
    assert rel_err(k32[3], k64[3]) < 1e-4
    assert np.isfinite(np.asarray(k32[3])).all()


def test_test_point_kernels(tiny):
    """K^(r)(x, X^(r-1)) with test inputs in the first slot (HY Eq. 22): rows of the training kernels when
    x is a training input, and the brute-force reference for a new input."""
    net, X, _ = tiny
    Xt = jnp.concatenate([X[3:4], jnp.asarray(nth.default_problem(n=2, d=3, seed=9).X)])
    train = nth.kernels(net, X, 4)
    test = nth.kernels(net, X, 4, first=Xt)
    for r in (2, 3, 4):
        assert test[r].shape == (3,) + (5,) * (r - 1)
        assert rel_err(test[r][0], train[r][3]) < 1e-13
    n = X.shape[0]
    J = flat_jacobian(net, X)
    ref = jnp.einsum("abp,cp->abc", flat_jacfwd(lambda nt: nth.ntk(nt, Xt, X), net, (3, n)), J)
    assert rel_err(test[3], ref) < 1e-10


@pytest.mark.parametrize("activation,depth,p,param", [
    ("tanh", 1, 5, "ntk"), ("gelu", 2, 4, "ntk"), ("softplus", 3, 4, "ntk"), ("tanh", 1, 4, "mup")])
def test_kernel_implementations_agree(activation, depth, p, param):
    """Every kernel implementation gives the same K^(2)..K^(p), to 1e-12 relative, up to K^(5), also with muP's
    per-layer learning rates (weighted inner product): nth's "structured" (rank-one directions), "factored" (factors
    of the linear maps found in the program), "contraction" (closed forms from derivative tensors) and "jvp"
    (nested JVPs through the forward pass) against the naive full-Jacobian + nested jacfwd baseline."""
    from benchmarks.baselines import naive_kernels

    X = jnp.asarray(nth.default_problem(n=5, d=3, seed=4).X)
    net = nth.init_mlp(1, 3, 6, depth, activation, sigma_w=1.2, beta=1.5, param=param)
    naive = naive_kernels(net, X, p)
    for impl in ("structured", "factored", "contraction", "jvp"):
        got = nth.kernels(net, X, p, chunk=3, implementation=impl)
        for r in range(2, p + 1):
            assert rel_err(got[r], naive[r]) < 1e-12, (impl, r)


@pytest.mark.parametrize("first,p", [(False, 4), (True, 4)])
def test_matrix_free_operator_equals_dense_contraction(tiny, first, p):
    net, X, _ = tiny
    Xt = jnp.asarray(nth.default_problem(n=2, d=3, seed=9).X) if first else None
    dense = nth.kernels(net, X, p, first=Xt)
    ops = nth.kernels(net, X, p, first=Xt, matrix_free=True)
    assert isinstance(ops[p], nth.KernelOperator) and ops[p].shape == dense[p].shape
    for r in range(2, p):
        assert rel_err(ops[r], dense[r]) < 1e-14
    c = jnp.asarray(np.random.default_rng(0).normal(size=X.shape[0]))
    assert rel_err(ops[p](c), dense[p] @ c) < 1e-12


@pytest.mark.parametrize("arch,outputs,impl", [("mlp", 1, "auto"), ("cnn", 2, "auto"), ("mlp", 1, "contraction")])
def test_training_and_test_kernels_in_one_pass(arch, outputs, impl, monkeypatch):
    """kernels_and_test equals kernels at X and kernels with the test inputs first, to rounding (1e-13), for the
    structured MLP, the factored cnn with two outputs, and the contraction path (whose levels computed whole
    above 2 keep the two passes apart); where it can, it makes one pass per level over [X; X_test] instead of
    two; over the memory budget of that pass it computes the two apart."""
    from nth.kernel import _engine

    key = jax.random.PRNGKey(5)
    if arch == "mlp":
        net, X = nth.init_mlp(1, 3, 8, 2, "tanh", outputs=outputs), jax.random.normal(key, (4, 3), jnp.float64)
    else:
        net, X = nth.init_cnn(1, (4, 4), 3, 2, "tanh", outputs=outputs), jax.random.normal(key, (3, 4, 4), jnp.float64)
    Xt = 0.5 + X[:2]
    calls = []
    real = _engine.tensor
    monkeypatch.setattr(_engine, "tensor", lambda *a, **k: calls.append(k.get("rows") is not None) or real(*a, **k))
    train, test = nth.kernels_and_test(net, X, Xt, 4, implementation=impl)
    assert calls == ([False] * 3 if impl == "contraction" else [True] * 3) + [False] * 3 * (impl == "contraction")
    calls.clear()
    ref_train, ref_test = nth.kernels(net, X, 4, implementation=impl), nth.kernels(net, X, 4, first=Xt,
                                                                                implementation=impl)
    for r in (2, 3, 4):
        assert train[r].shape == ref_train[r].shape and test[r].shape == ref_test[r].shape
        assert rel_err(train[r], ref_train[r]) < 1e-13 and rel_err(test[r], ref_test[r]) < 1e-13
    if arch == "mlp" and impl == "auto":  # a budget that holds either pass but not the one over [X; X_test]
        calls.clear()
        kw = dict(chunk=1, outputs=outputs, in_shape=tuple(X.shape[1:]))
        plans = [nth.plan_kernels(net, X.shape[0], 4, first_rows=rows, **kw) for rows in (None, 2)]
        budget = max(p.total_bytes for p in plans)
        _, test2 = nth.kernels_and_test(net, X, Xt, 4, memory_budget=budget, chunk=1)
        assert not any(calls) and rel_err(test2[4], ref_test[4]) < 1e-13
