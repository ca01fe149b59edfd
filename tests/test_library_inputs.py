"""Library calls with bad arguments raise nth's own errors naming the function and the argument (never a NumPy or
JAX error, NaN outputs or a solver's 'raise max_steps'); good calls, traced ones included, pass the same checks.

One tiny float64 problem (n = 4 inputs in d = 3, a width-8 MLP, K^(2)..K^(4)) serves every row.
"""

import re
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nth
from nth.checks import check_array, match_sizes

NAN = float("nan")


@pytest.fixture(scope="module")
def s():
    data = nth.default_problem(n=4, d=3, seed=1, n_test=2)
    X, y, Xt = jnp.asarray(data.X), jnp.asarray(data.y), jnp.asarray(data.X_test)
    net = nth.init_mlp(0, 3, 8, 1)
    # one computation for both: K^(r) at the 6 inputs, sliced to training slots (and a test first slot)
    full = nth.kernels(net, jnp.concatenate([X, Xt]), 4)
    ks = {r: K[(slice(0, 4),) * r] for r, K in full.items()}
    kt = {r: K[(slice(4, 6),) + (slice(0, 4),) * (r - 1)] for r, K in full.items()}
    return SimpleNamespace(X=X, y=y, Xt=Xt, net=net, ks=ks, kt=kt, f0=net(X), ft0=net(Xt), ts=np.array([0.0, 0.5]),
                           # built from constant arrays: nth.init_cnn / init_resnet would compile their draws
                           cnn=nth.CNN(Ws=(jnp.full((3, 1, 3, 3), 0.1),), a=jnp.ones((3, 4, 4)), in_shape_=(4, 4)),
                           resnet=nth.ResNet(W0=jnp.full((5, 3), 0.1), Us=(jnp.eye(5),), Vs=(jnp.eye(5),),
                                             a=jnp.ones(5)))


def with_nan(a, idx, value=NAN):
    return jnp.asarray(a).at[idx].set(value)


def replace(d, r, value):
    return {**d, r: value}


# (id, call on the fixture, error class, pattern the message must match)
BAD = [
    # dg_correction
    ("dg-short-f0", lambda s: nth.dg_correction(s.ks, s.f0[:3], s.y, s.ts), nth.DataError,
     r"^dg_correction: 'f0' has shape \(3,\); expected \(4,\) to match 'kernels\[2\]' \(4, 4\) and 'y' \(4,\)$"),
    ("dg-short-y", lambda s: nth.dg_correction(s.ks, s.f0, s.y[:3], s.ts), nth.DataError,
     r"^dg_correction: 'y' has shape \(3,\); expected \(4,\)"),
    ("dg-nan-K2", lambda s: nth.dg_correction(replace(s.ks, 2, with_nan(s.ks[2], (1, 2))), s.f0, s.y, s.ts),
     nth.DataError, r"^dg_correction: 'kernels\[2\]' has 1 non-finite value\(s\), first at index \(1, 2\) \(nan\); "
     r"kernel entries must be finite$"),
    ("dg-nan-K2-ode", lambda s: nth.dg_correction(replace(s.ks, 2, with_nan(s.ks[2], (0, 0))), s.f0, s.y, s.ts,
                                                  method="ode"),
     nth.DataError, r"^dg_correction: 'kernels\[2\]' has 1 non-finite"),
    ("dg-inf-K4", lambda s: nth.dg_correction(replace(s.ks, 4, with_nan(s.ks[4], (0, 1, 2, 3), np.inf)), s.f0, s.y,
                                              s.ts),
     nth.DataError, r"'kernels\[4\]' has 1 non-finite value\(s\), first at index \(0, 1, 2, 3\) \(inf\)"),
    ("dg-K3-wrong-shape", lambda s: nth.dg_correction(replace(s.ks, 3, s.ks[3][:, :, :3]), s.f0, s.y, s.ts),
     nth.DataError, r"'kernels\[3\]' has shape \(4, 4, 3\); expected \(4, 4, 4\)"),
    ("dg-f0_test-without-test_kernels", lambda s: nth.dg_correction(s.ks, s.f0, s.y, s.ts, f0_test=s.ft0),
     nth.ConfigError, r"^dg_correction: 'f0_test' was given without 'test_kernels'"),
    ("dg-f0_test-mismatch", lambda s: nth.dg_correction(s.ks, s.f0, s.y, s.ts, test_kernels=s.kt, f0_test=s.f0),
     nth.DataError, r"^dg_correction: 'f0_test' has shape \(4,\); expected \(2,\) to match 'test_kernels\[2\]' "
     r"\(2, 4\)"),
    ("dg-decreasing-ts", lambda s: nth.dg_correction(s.ks, s.f0, s.y, [0.0, 2.0, 1.0]), nth.ConfigError,
     r"^dg_correction: 'ts' must be non-decreasing; got ts\[2\] = 1 < ts\[1\] = 2$"),
    # truncated_nth
    ("nth-nan-K2", lambda s: nth.truncated_nth(replace(s.ks, 2, with_nan(s.ks[2], (1, 2))), s.f0, s.y, s.ts, p=3),
     nth.DataError, r"^truncated_nth: 'kernels\[2\]' has 1 non-finite value\(s\), first at index \(1, 2\) \(nan\)"),
    ("nth-nan-K4-top", lambda s: nth.truncated_nth(replace(s.ks, 4, with_nan(s.ks[4], (3, 3, 3, 3))), s.f0, s.y,
                                                   s.ts, p=4),
     nth.DataError, r"^truncated_nth: 'kernels\[4\]' has 1 non-finite value\(s\), first at index \(3, 3, 3, 3\)"),
    ("nth-short-y", lambda s: nth.truncated_nth(s.ks, s.f0, s.y[:3], s.ts, p=2), nth.DataError,
     r"^truncated_nth: 'y' has shape \(3,\); expected \(4,\) to match 'kernels\[2\]' \(4, 4\) and 'f0' \(4,\)$"),
    ("nth-short-f0", lambda s: nth.truncated_nth(s.ks, s.f0[:3], s.y, s.ts, p=2), nth.DataError,
     r"^truncated_nth: 'f0' has shape \(3,\); expected \(4,\) to match 'kernels\[2\]' \(4, 4\) and 'y' \(4,\)$"),
    ("nth-K3-wrong-shape", lambda s: nth.truncated_nth(replace(s.ks, 3, s.ks[3][0]), s.f0, s.y, s.ts, p=3),
     nth.DataError, r"^truncated_nth: 'kernels\[3\]' has shape \(4, 4\); expected \(4, 4, 4\)"),
    ("nth-K2-wrong-size", lambda s: nth.truncated_nth(replace(s.ks, 2, s.ks[2][:3, :3]), s.f0, s.y, s.ts, p=2),
     nth.DataError, r"^truncated_nth: 'kernels\[2\]' has shape \(3, 3\); expected \(4, 4\) to match 'y' \(4,\)"),
    ("nth-inf-f0", lambda s: nth.truncated_nth(s.ks, with_nan(s.f0, 3, -np.inf), s.y, s.ts, p=2), nth.DataError,
     r"^truncated_nth: 'f0' has 1 non-finite value\(s\), first at index \(3,\) \(-inf\); outputs must be finite$"),
    ("nth-complex-f0", lambda s: nth.truncated_nth(s.ks, s.f0 + 1j, s.y, s.ts, p=2), nth.DataError,
     r"^truncated_nth: 'f0' is complex \(complex128\); outputs must be real$"),
    ("nth-f0_test-without-test_kernels", lambda s: nth.truncated_nth(s.ks, s.f0, s.y, s.ts, p=2, f0_test=s.ft0),
     nth.ConfigError, r"^truncated_nth: 'f0_test' was given without 'test_kernels'"),
    ("nth-test_kernels-without-f0_test", lambda s: nth.truncated_nth(s.ks, s.f0, s.y, s.ts, p=2,
                                                                     test_kernels=s.kt),
     nth.ConfigError, r"^truncated_nth: 'test_kernels' was given without 'f0_test'"),
    ("nth-f0_test-mismatch", lambda s: nth.truncated_nth(s.ks, s.f0, s.y, s.ts, p=3, test_kernels=s.kt,
                                                         f0_test=s.ft0[:1]),
     nth.DataError, r"^truncated_nth: 'f0_test' has shape \(1,\); expected \(2,\) to match 'test_kernels\[2\]'"),
    ("nth-test-K3-wrong-shape", lambda s: nth.truncated_nth(s.ks, s.f0, s.y, s.ts, p=3,
                                                            test_kernels=replace(s.kt, 3, s.kt[3][:, :3]),
                                                            f0_test=s.ft0),
     nth.DataError, r"'test_kernels\[3\]' has shape \(2, 3, 4\); expected \(2, 4, 4\)"),
    ("nth-test-kernels-missing-level", lambda s: nth.truncated_nth(s.ks, s.f0, s.y, s.ts, p=3,
                                                                   test_kernels={2: s.kt[2]}, f0_test=s.ft0),
     nth.ConfigError, r"'test_kernels' must map r -> .* r = 2\.\.3 .*got \[2\]"),
    ("nth-nan-ts", lambda s: nth.truncated_nth(s.ks, s.f0, s.y, [0.0, NAN], p=2), nth.ConfigError,
     r"^truncated_nth: 'ts' has 1 non-finite value\(s\), first at index \(1,\) \(nan\); save times must be finite$"),
    ("nth-decreasing-ts", lambda s: nth.truncated_nth(s.ks, s.f0, s.y, [0.0, 2.0, 1.0], p=2), nth.ConfigError,
     r"^truncated_nth: 'ts' must be non-decreasing"),
    ("nth-2d-ts", lambda s: nth.truncated_nth(s.ks, s.f0, s.y, [[0.0, 1.0]], p=2), nth.ConfigError,
     r"^truncated_nth: 'ts' \(the save times\) must be a non-empty 1-D array; got shape \(1, 2\)$"),
    ("nth-kernels-not-a-mapping", lambda s: nth.truncated_nth([s.ks[2]], s.f0, s.y, s.ts), nth.ConfigError,
     r"^truncated_nth: 'kernels' must map r -> K\^\(r\)"),
    ("nth-stacked-f0-without-seed-axis", lambda s: nth.truncated_nth({2: jnp.stack([s.ks[2]] * 2)}, s.f0, s.y, s.ts,
                                                                      stacked=True),
     nth.DataError, r"^truncated_nth: 'f0' has shape \(4,\); expected \(2, 4\) .*stacked=True"),
    ("nth-stacked-K2-without-seed-axis", lambda s: nth.truncated_nth(s.ks, s.f0[None], s.y, s.ts, p=2, stacked=True),
     nth.DataError, r"^truncated_nth: 'kernels\[2\]' has shape \(4, 4\); with stacked=True expected \(B, n, n\)"),
    ("hy_p3-short-f0", lambda s: nth.hy_p3_reduced(s.ks, s.f0[:2], s.y, s.ts), nth.DataError,
     r"^hy_p3_reduced: 'f0' has shape \(2,\); expected \(4,\)"),
    # calling a model
    ("mlp-wrong-d", lambda s: s.net(jnp.ones((4, 5))), nth.DataError,
     r"^MLP: 'X' has shape \(4, 5\); expected \(n, 3\): this MLP takes inputs of shape \(3,\) \(the columns of W1\)$"),
    ("mlp-1d-X", lambda s: s.net(s.X[0]), nth.DataError,
     r"^MLP: 'X' has shape \(3,\); expected \(n, 3\).*X = x\[None\]"),
    ("mlp-complex-X", lambda s: s.net(s.X * (1 + 0j)), nth.DataError, r"^MLP: 'X' is complex .*inputs must be real"),
    ("mlp-wrong-d-under-jit", lambda s: jax.jit(lambda Z: s.net(Z))(jnp.ones((4, 5))), nth.DataError,
     r"^MLP: 'X' has shape \(4, 5\); expected \(n, 3\)"),
    ("cnn-flat-X", lambda s: s.cnn(jnp.ones((2, 16))), nth.DataError,
     r"^CNN: 'X' has shape \(2, 16\); expected \(n, 4, 4\): this CNN takes inputs of shape \(4, 4\)$"),
    ("resnet-wrong-d", lambda s: s.resnet(jnp.ones((2, 4))), nth.DataError,
     r"^ResNet: 'X' has shape \(2, 4\); expected \(n, 3\): this ResNet takes inputs of shape \(3,\) \(the columns "
     r"of W0\)$"),
    # kernels
    ("kernels-nan-X", lambda s: nth.kernels(s.net, with_nan(s.X, (2, 0)), 2), nth.DataError,
     r"^kernels: 'X' has 1 non-finite value\(s\), first at index \(2, 0\) \(nan\); inputs must be finite$"),
    ("kernels-complex-X", lambda s: nth.kernels(s.net, s.X + 0j, 2), nth.DataError,
     r"^kernels: 'X' is complex \(complex128\); inputs must be real$"),
    ("kernels-wrong-d", lambda s: nth.kernels(s.net, jnp.ones((4, 2)), 2), nth.DataError,
     r"^kernels: 'X' has shape \(4, 2\); expected \(n, 3\) to match the MLP's input shape \(3,\)$"),
    ("kernels-wrong-first", lambda s: nth.kernels(s.net, s.X, 2, first=s.X[:, :2]), nth.DataError,
     r"^kernels: 'first' has shape \(4, 2\); expected \(n, 3\)"),
    ("kernels-nan-weights", lambda s: nth.kernels(nth.MLP(Ws=(with_nan(s.net.Ws[0], (0, 1)),), a=s.net.a), s.X, 2),
     nth.DataError, r"^kernels: 'model' has 1 non-finite value\(s\) in \.Ws\[0\], first at index \(0, 1\) \(nan\)"),
    ("kernel-nan-first", lambda s: nth.kernel.kernel(s.net, s.X, 2, first=with_nan(s.Xt, (1, 1))), nth.DataError,
     r"^kernel: 'first' has 1 non-finite value\(s\), first at index \(1, 1\)"),
    ("ntk-wrong-X2", lambda s: nth.ntk(s.net, s.X, jnp.ones((2, 4))), nth.DataError,
     r"^ntk: 'X2' has shape \(2, 4\); expected \(n, 3\)"),
    ("kernel_fn-wrong-X1-under-jit", lambda s: jax.jit(nth.kernel_fn(3))(s.net, jnp.ones((2, 4)), s.X),
     nth.DataError, r"^kernel_fn\(3\): 'X1' has shape \(2, 4\); expected \(n, 3\)"),
    # gradient_flow, gradient_descent
    ("flow-nan-X", lambda s: nth.gradient_flow(s.net, with_nan(s.X, (2, 0)), s.y, s.ts), nth.DataError,
     r"^gradient_flow: 'X' has 1 non-finite value\(s\), first at index \(2, 0\) \(nan\); inputs must be finite$"),
    ("flow-nan-y", lambda s: nth.gradient_flow(s.net, s.X, with_nan(s.y, 1), s.ts), nth.DataError,
     r"^gradient_flow: 'y' has 1 non-finite value\(s\), first at index \(1,\) \(nan\); targets must be finite$"),
    ("flow-nan-X_test", lambda s: nth.gradient_flow(s.net, s.X, s.y, s.ts, X_test=with_nan(s.Xt, (0, 2))),
     nth.DataError, r"^gradient_flow: 'X_test' has 1 non-finite value\(s\), first at index \(0, 2\)"),
    ("flow-short-y", lambda s: nth.gradient_flow(s.net, s.X, s.y[:3], s.ts), nth.DataError,
     r"^gradient_flow: 'y' has shape \(3,\); expected \(4,\) to match 'X' \(4, 3\)$"),
    ("flow-wrong-d", lambda s: nth.gradient_flow(s.net, s.X[:, :2], s.y, s.ts), nth.DataError,
     r"^gradient_flow: 'X' has shape \(4, 2\); expected \(n, 3\) to match the MLP's input shape \(3,\)$"),
    ("flow-nan-ts", lambda s: nth.gradient_flow(s.net, s.X, s.y, [0.0, NAN]), nth.ConfigError,
     r"^gradient_flow: 'ts' has 1 non-finite value\(s\)"),
    ("flow-negative-ts", lambda s: nth.gradient_flow(s.net, s.X, s.y, [-1.0, 1.0]), nth.ConfigError,
     r"^gradient_flow: 'ts' must start at t >= 0"),
    ("flow-complex-ts", lambda s: nth.gradient_flow(s.net, s.X, s.y, np.array([0.0, 1.0]) + 0j), nth.ConfigError,
     r"^gradient_flow: 'ts' is complex \(complex128\); save times must be real$"),
    ("flow-nan-weights", lambda s: nth.gradient_flow(nth.MLP(Ws=s.net.Ws, a=with_nan(s.net.a, 5)), s.X, s.y, s.ts),
     nth.DataError, r"^gradient_flow: 'model' has 1 non-finite value\(s\) in \.a, first at index \(5,\) \(nan\)"),
    ("gd-nan-X", lambda s: nth.gradient_descent(s.net, with_nan(s.X, (0, 0)), s.y, 0.1, [0, 1]), nth.DataError,
     r"^gradient_descent: 'X' has 1 non-finite value\(s\)"),
    ("gd-string-y", lambda s: nth.gradient_descent(s.net, s.X, ["a", "b", "c", "d"], 0.1, [0, 1]), nth.DataError,
     r"^gradient_descent: 'y' has non-numeric dtype <U1"),
]


@pytest.mark.parametrize("call, error, pattern", [row[1:] for row in BAD], ids=[row[0] for row in BAD])
def test_bad_library_call_raises_nth_error(s, call, error, pattern):
    """Each bad call raises the expected nth error, before any solve, with a message naming the argument."""
    with pytest.raises(error) as e:
        call(s)
    assert isinstance(e.value, nth.NTHError) and isinstance(e.value, ValueError)
    assert re.search(pattern, str(e.value)), str(e.value)
    assert "max_steps" not in str(e.value)


def test_traced_calls_check_shapes_only(s):
    """Inside jit / vmap / grad the checks see tracers: shapes are still checked (rows above), values are not
    looked at, and the results equal the eager ones."""
    f = s.net(s.X)
    np.testing.assert_allclose(jax.jit(lambda Z: s.net(Z))(s.X), f, rtol=1e-14)
    np.testing.assert_allclose(jax.vmap(lambda x: s.net(x[None])[0])(s.X), f, rtol=1e-14)
    g = jax.grad(lambda Z: s.net(Z).sum())(s.X)
    assert g.shape == s.X.shape and bool(jnp.isfinite(g).all())
    K3 = jax.jit(nth.kernel_fn(3))(s.net, s.X, s.X)
    np.testing.assert_allclose(K3, s.ks[3], rtol=1e-12, atol=1e-14)
    K2s = jax.vmap(lambda Z: nth.ntk(s.net, Z))(jnp.stack([s.X, 2 * s.X]))
    np.testing.assert_allclose(K2s[0], s.ks[2], rtol=1e-12)
    # a NaN inside a traced call is the caller's: no value check under jit (no transfer, no error)
    out = jax.jit(lambda Z: s.net(Z))(with_nan(s.X, (0, 0)))
    assert bool(jnp.isnan(out[0])) and bool(jnp.isfinite(out[1:]).all())


def test_good_calls_pass_the_checks(s):
    """The checks are not blanket: valid calls (lists, NumPy arrays, test kernels) run."""
    dg = nth.dg_correction(s.ks, np.asarray(s.f0), list(np.asarray(s.y)), s.ts, test_kernels=s.kt, f0_test=s.ft0)
    assert dg.f.shape == (2, 4) and dg.f_test.shape == (2, 2)
    sol = nth.truncated_nth(s.ks, s.f0, s.y, s.ts, p=3, test_kernels=s.kt, f0_test=s.ft0)
    assert sol.f.shape == (2, 4) and sol.f_test.shape == (2, 2) and bool(jnp.isfinite(sol.f).all())
    np.testing.assert_allclose(sol.f[0], s.f0, rtol=1e-14)
    assert s.cnn(jnp.ones((2, 4, 4))).shape == (2,)
    assert s.resnet(s.X).shape == (4,)
    assert nth.kernel.kernel(s.net, s.X, 2).shape == (4, 4)


def test_stacked_calls_pass_the_checks(s):
    """stacked=True: kernels of two seeds at once, then the truncated NTH with the leading seed axis on f0 and
    every kernel (y and ts shared); equal to the seeds one at a time."""
    nets = [s.net, nth.init_mlp(1, 3, 8, 1)]
    stacked = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *nets)
    ks = nth.kernels(stacked, s.X, 2, stacked=True)
    assert ks[2].shape == (2, 4, 4)
    f0 = jnp.stack([n(s.X) for n in nets])
    both = nth.truncated_nth(ks, f0, s.y, s.ts, p=2, stacked=True, labels=["seed 0", "seed 1"])
    np.testing.assert_allclose(both.f[1], nth.linearized_closed_form(ks[2][1], f0[1], s.y, s.ts), rtol=1e-8)
    with pytest.raises(nth.ConfigError, match=r"'labels' has 1 entries; expected one per seed \(B = 2\)"):
        nth.truncated_nth(ks, f0, s.y, s.ts, p=2, stacked=True, labels=["seed 0"])


def test_check_helpers():
    """The helpers themselves: names in expected shapes are free sizes; the odd one out is blamed."""
    assert check_array("x", [1.0, 2.0], where="f", shape=("n",)).shape == (2,)
    with pytest.raises(nth.DataError, match=r"^f: 'x' has shape \(2,\); expected \(n, 3\) for rows$"):
        check_array("x", [1.0, 2.0], where="f", shape=("n", 3), why="for rows")
    with pytest.raises(nth.DataError, match=r"^f: 'x' has shape \(2,\); expected a 2-D array$"):
        check_array("x", [1.0, 2.0], where="f", ndim=2)
    with pytest.raises(nth.DataError, match=r"^f: 'x' is None"):
        check_array("x", None, where="f")
    with pytest.raises(nth.DataError, match=r"^f: 'b' has shape \(3,\); expected \(2,\) to match 'a' \(2,\) and 'c'"):
        match_sizes("f", [(name, shape, -1, lambda n: (n,)) for name, shape in
                          (("a", (2,)), ("b", (3,)), ("c", (2,)))])
    assert match_sizes("f", [("a", (5, 2), 0, lambda k: (k, 2))], symbol="k") == 5
