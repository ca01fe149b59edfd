"""The discrete-time hierarchy (docs/math.md section 7): its tensors against dense derivatives of tiny nets,
the identities linking them to K^(3) and K^(4), the frozen-kernel system against its closed form, the lr -> 0
limit (continuous p = 4), and the prediction of real gradient descent."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import nth
from nth.models import combine, partition

TOL = 1e-10


def _flat(model):
    """f(theta_flat; X) and the flat parameters, with the learning rates as a flat vector."""
    params, static = partition(model)
    theta, unravel = ravel_pytree(params)
    eta, _ = ravel_pytree(model.apply_learning_rates(jax.tree_util.tree_map(jnp.ones_like, params)))
    return (lambda th, X: combine(unravel(th), static)(X)), theta, eta


def brute_force(model, X, X1):
    """Every tensor of docs/math.md section 7 from dense Jacobians, Hessians and third derivatives (no nth code
    but the forward pass). X1 fills the first slot."""
    f, theta, eta = _flat(model)
    J = lambda th, Z: jax.jacfwd(f)(th, Z)  # noqa: E731  (rows, P)
    V = lambda th: (J(th, X) * eta).T  # noqa: E731  (P, n): v_b = eta . grad f_b
    K2 = lambda th: J(th, X1) @ V(th)  # noqa: E731
    H1 = jax.jacfwd(lambda th: J(th, X1))(theta)  # (k, P, P)
    T1 = jax.jacfwd(jax.jacfwd(lambda th: J(th, X1)))(theta)  # (k, P, P, P)
    v = V(theta)
    O11 = jnp.einsum("apq,pb,qc->abc", H1, v, v)
    O111 = jnp.einsum("apqr,pb,qc,re->abce", T1, v, v, v)
    M = jnp.einsum("xypq,pb,qc->xybc", jax.jacfwd(jax.jacfwd(K2))(theta), v, v)
    O11_of = lambda th: jnp.einsum("apq,pb,qc->abc", jax.jacfwd(lambda t: J(t, X1))(th), V(th), V(th))  # noqa: E731
    P = jnp.einsum("abcp,pe->abce", jax.jacfwd(O11_of)(theta), v)
    dK2 = jax.jacfwd(K2)(theta)  # (k, n, P)
    W = jnp.einsum("pbq,qc->pbc", jax.jacfwd(V)(theta), v)  # D(v_b)[v_c]
    second = jnp.einsum("xyp,pbc->xybc", dK2, W)
    return {"O11": O11, "O111": O111, "M": M, "P": P, "K4_minus_M": second}


def _tiny(arch):
    if arch == "mlp":
        return nth.init_mlp(0, 3, 5, 2, "tanh"), 3
    spec = nth.models.ModelSpec(arch="resnet", depth=1, activation="tanh")
    return spec.build(seed=1, width=4, in_shape=(3,)), 3


@pytest.fixture(scope="module", params=["mlp", "resnet"])
def tiny(request):
    model, d = _tiny(request.param)
    rng = np.random.default_rng(0)
    X = jnp.asarray(rng.standard_normal((3, d)) / np.sqrt(d))
    Xt = jnp.asarray(rng.standard_normal((2, d)) / np.sqrt(d))
    cache = {}

    def reference(test_rows):  # shared by the tests of this net
        if test_rows not in cache:
            cache[test_rows] = brute_force(model, X, Xt if test_rows else X)
        return cache[test_rows]

    return model, X, Xt, reference


@pytest.mark.parametrize("test_rows", [False, True], ids=["train", "test"])
def test_tensors_equal_brute_force(tiny, test_rows):
    model, X, Xt, reference = tiny
    got = nth.gd_tensors(model, X, first=Xt if test_rows else None)
    ref = reference(test_rows)
    for name in ("O11", "O111", "M", "P"):
        assert got[name].shape == ref[name].shape, name
        scale = float(jnp.abs(ref[name]).max())
        assert scale > 1e-6, name  # a tensor that vanishes would make the comparison empty
        np.testing.assert_allclose(got[name], ref[name], rtol=0, atol=TOL * scale, err_msg=name)


def test_identities_with_k3_and_k4(tiny):
    """K^(3)(a1,a2,b) = O11(a1,a2,b) + O11(a2,a1,b) and K^(4)(a1,a2,b,c) = M(a1,a2,b,c) + D K^(2)(a1,a2)[D(v_b)[v_c]]
    (docs/math.md section 7), the latter's second term from dense derivatives."""
    model, X, _, reference = tiny
    ks = nth.kernels(model, X, 4)
    T = nth.gd_tensors(model, X)
    O11 = T["O11"]
    np.testing.assert_allclose(ks[3], O11 + O11.transpose(1, 0, 2), rtol=0, atol=TOL * float(jnp.abs(ks[3]).max()))
    second = reference(False)["K4_minus_M"]
    np.testing.assert_allclose(ks[4], T["M"] + second, rtol=0, atol=TOL * float(jnp.abs(ks[4]).max()))


@pytest.fixture(scope="module")
def problem():
    """Depth-1 tanh MLP of width 1024 on 4 points with 2 test points: kernels, tensors, outputs (at width 256 this
    problem is still pre-asymptotic: the one-step error of the O(1/m) system falls like m^-4 from 256 to 1024)."""
    data = nth.default_problem(n=4, d=3, n_test=2)
    X, y, Xt = (jnp.asarray(a) for a in (data.X, data.y, data.X_test))
    model = nth.init_mlp(0, 3, 1024, 1, "tanh")
    ks, kt = nth.kernels(model, X, 4), nth.kernels(model, X, 4, first=Xt)
    T, Tt = nth.gd_tensors(model, X), nth.gd_tensors(model, X, first=Xt)
    return dict(model=model, X=X, y=y, Xt=Xt, ks=ks, kt=kt, T=T, Tt=Tt, f0=model(X), ft0=model(Xt))


def _discrete(pr, lr, steps, order="o1m"):
    return nth.discrete_nth(pr["ks"], pr["f0"], pr["y"], lr, steps, order=order, tensors=pr["T"],
                            test_kernels=pr["kt"], test_tensors=pr["Tt"], f0_test=pr["ft0"])


def test_frozen_kernel_system_is_the_matrix_power(problem):
    """Discrete p = 2: Delta(t) = (I - h K)^t Delta(0), and f_test(t) = f_test(0) - h K(x, X) sum_{s<t} Delta(s)."""
    K, Kt, f0, y = (np.asarray(a) for a in (problem["ks"][2], problem["kt"][2], problem["f0"], problem["y"]))
    lr = 0.5 * nth.stable_lr(K)
    steps = np.array([0, 1, 7, 30])
    sol = _discrete(problem, lr, steps, order="p2")
    h = lr / K.shape[0]
    A = np.eye(K.shape[0]) - h * K
    for i, t in enumerate(steps):
        deltas = [np.linalg.matrix_power(A, s) @ (f0 - y) for s in range(t + 1)]
        np.testing.assert_allclose(sol.f[i], y + deltas[t], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(sol.f_test[i], np.asarray(problem["ft0"]) - h * Kt @ sum(deltas[:t], np.zeros_like(f0)),
                                   rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(sol.K2, np.broadcast_to(K, sol.K2.shape))


def test_small_learning_rate_limit_is_continuous_p4(problem):
    """With lr * steps fixed, the discrete O(1/m) solution tends to the continuous p = 4 one, the gap
    proportional to lr (halving lr halves it), at training and test inputs."""
    t_end = 4.0
    gaps = []
    for lr in (0.2, 0.1, 0.05):
        steps = np.array([0, int(round(t_end / lr))])
        sol = _discrete(problem, lr, steps)
        cont = nth.truncated_nth(problem["ks"], problem["f0"], problem["y"], jnp.asarray([0.0, t_end]), p=4,
                                 test_kernels=problem["kt"], f0_test=problem["ft0"])
        gaps.append((float(jnp.abs(sol.f[-1] - cont.f[-1]).max()), float(jnp.abs(sol.f_test[-1] - cont.f_test[-1]).max())))
    gaps = np.asarray(gaps)
    assert (gaps > 0).all()
    ratios = gaps[:-1] / gaps[1:]
    assert np.all((ratios > 1.8) & (ratios < 2.2)), gaps


def test_discrete_prediction_of_gradient_descent(problem):
    """Against real gradient descent at half the stable step, the discrete O(1/m) system is far closer than the
    continuous p = 4 prediction (whose O(lr) error no width removes) and than the discrete frozen kernel."""
    pr = problem
    lr = 0.5 * nth.stable_lr(pr["ks"][2])
    steps = np.array([0, 5, 10, 20, 40])
    gd = nth.gradient_descent(pr["model"], pr["X"], pr["y"], lr, steps, X_test=pr["Xt"])
    o1m, p2 = _discrete(pr, lr, steps), _discrete(pr, lr, steps, order="p2")
    cont = nth.truncated_nth(pr["ks"], pr["f0"], pr["y"], gd.ts, p=4)
    err = {name: float(nth.f_error(sol.f, gd.f).max()) for name, sol in (("o1m", o1m), ("p2", p2), ("p4", cont))}
    assert err["o1m"] < err["p2"] / 5 and err["o1m"] < err["p4"] / 100, err
    test = {name: float(nth.f_error(sol.f_test, gd.f_test).max()) for name, sol in (("o1m", o1m), ("p2", p2))}
    assert test["o1m"] < test["p2"] / 5, test
    np.testing.assert_allclose(o1m.ts, gd.ts)


def test_tensors_are_planned_before_allocation(tiny):
    """The discrete-time tensors' bytes (n^4 each) and one batch of work are predicted and refused over budget."""
    model, X, _, _ = tiny
    with pytest.raises(nth.MemoryBudgetError, match=r"discrete-time tensors at n = 3 need about .*grow like n\^4"):
        nth.gd_tensors(model, X, memory_budget=20_000)
    sizes = nth.kernel._gd.gd_tensor_bytes(10, 2, jnp.float64)
    assert sizes == {"O11": 2 * 100 * 8, "O111": 2 * 1000 * 8, "M": 2 * 1000 * 8, "P": 2 * 1000 * 8}

