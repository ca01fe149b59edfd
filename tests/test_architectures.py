"""Architectures beyond the MLP (docs/math.md section 9): convolutional and residual nets, nth's own and the user's.

Every model here is served by the generic kernel implementations (factored, contraction, jvp), so the checks
are the model-independent ones of docs/math.md section 2 (HY Theorem 2.3, Eqs. 7, 9-10, 15):

- K^(2), K^(3), K^(4) (and at test inputs, HY Eq. 22) equal dense brute-force references built from the
  Jacobian over the flattened parameter vector (tests/conftest.py), with no nth code involved;
- the NTH identity d/dt K^(r) = -(1/n) K^(r+1)[Delta] holds along the Diffrax-integrated gradient flow;
- p = 2 is the matrix exponential;
- a user model given by ``--model FILE.py:make_model`` or ``--model package.module:make_model`` runs end to
  end and its file holds the schema of nth/io/_schema.py, with the stored K^(4) equal to the brute force.

Two models are defined in this file as plain Equinox modules (not nth's built-ins): a 1-D convolutional net
(tanh, a dilated second layer, a bias, global average pooling) and a residual MLP (an eqx.nn.Linear embedding,
block biases, a 0-d output bias); both carry the activation function as a leaf that is not a parameter.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import math
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import equinox as eqx
import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from conftest import bruteforce, rel_err

import nth
from nth.cli import main
from nth.models import build_user_model

FLOW = nth.SolverSettings(solver="dopri8", rtol=1e-13, atol=1e-15)


# --------------------------------------------------------------------------------------------------------------
# Models defined here (plain Equinox modules: nth sees only model(X) and the inexact-array leaves)
# --------------------------------------------------------------------------------------------------------------


def _conv1d(h, W, dilation=1):
    return jax.lax.conv_general_dilated(h, W, (1,), "SAME", rhs_dilation=(dilation,),
                                        dimension_numbers=("NCH", "OIH", "NCH"))


class ConvNet1D(eqx.Module):
    """x (d,) as a 1-channel signal -> tanh conv layers (m channels, kernel k, layer l dilated l) -> GAP -> readout.

    NTK parametrization: every layer divided by sqrt(fan-in) (C_in k, then m), sqrt(d) on the unit-norm input.
    """

    Ws: tuple[jax.Array, ...]  # (m, C_in, k)
    b: jax.Array  # (m,) bias of the first layer
    a: jax.Array  # (m,) readout
    act: Callable  # a plain function: a leaf, but not a parameter

    def __call__(self, X):
        h = X[:, None, :] * math.sqrt(X.shape[1])
        for l, W in enumerate(self.Ws):
            h = _conv1d(h, W, dilation=l + 1) / math.sqrt(W.shape[1] * W.shape[2])
            if l == 0:
                h = h + self.b[None, :, None]
            h = self.act(h)
        return h.mean(axis=2) @ self.a / math.sqrt(self.a.shape[0])


def make_convnet(seed: int, width: int, depth: int = 2, k: int = 3) -> ConvNet1D:
    keys = jax.random.split(jax.random.PRNGKey(seed), depth + 2)
    shapes = [(width, 1, k)] + [(width, width, k)] * (depth - 1)
    Ws = tuple(jax.random.normal(kk, s, jnp.float64) for kk, s in zip(keys, shapes))
    return ConvNet1D(Ws=Ws, b=0.3 * jax.random.normal(keys[-2], (width,), jnp.float64),
                     a=jax.random.normal(keys[-1], (width,), jnp.float64), act=jnp.tanh)


class ResMLP(eqx.Module):
    """z = x W^T + c (eqx.nn.Linear), z <- z + act(z U^T / sqrt(m) + b) V^T / sqrt(m) per block (act = tanh),
    f = a . act(z) / sqrt(m) + c0 (a 0-d output bias). Every matrix acting on an m-vector is divided by sqrt(m)."""

    embed: eqx.nn.Linear
    Us: list[jax.Array]
    bs: list[jax.Array]
    Vs: list[jax.Array]
    a: jax.Array
    c0: jax.Array
    act: Callable

    def __call__(self, X):
        s = 1.0 / math.sqrt(self.a.shape[0])
        z = X @ self.embed.weight.T + self.embed.bias
        for U, b, V in zip(self.Us, self.bs, self.Vs):
            z = z + (self.act(z @ U.T * s + b) @ V.T) * s
        return self.act(z) @ self.a * s + self.c0


def make_resmlp(seed: int, d: int, width: int, depth: int = 2) -> ResMLP:
    keys = jax.random.split(jax.random.PRNGKey(seed), 3 * depth + 4)
    normal = lambda i, shape, scale=1.0: scale * jax.random.normal(keys[i], shape, jnp.float64)  # noqa: E731
    embed = eqx.nn.Linear(d, width, key=keys[0], dtype=jnp.float64)
    embed = eqx.tree_at(lambda e: (e.weight, e.bias), embed, (normal(0, (width, d)), normal(1, (width,), 0.3)))
    return ResMLP(embed=embed, Us=[normal(2 + l, (width, width)) for l in range(depth)],
                  bs=[normal(2 + depth + l, (width,), 0.3) for l in range(depth)],
                  Vs=[normal(2 + 2 * depth + l, (width, width)) for l in range(depth)],
                  a=normal(-2, (width,)), c0=normal(-1, (), 0.3), act=jnp.tanh)


# --------------------------------------------------------------------------------------------------------------
# Brute force: dense Jacobians over the flattened parameter vector (no nth code)
# --------------------------------------------------------------------------------------------------------------


def pick(tree, i):
    """Time i of a model whose parameter leaves carry a leading time axis (FlowSolution.params)."""
    return jax.tree_util.tree_map(lambda a: a[i] if eqx.is_array(a) else a, tree)


# --------------------------------------------------------------------------------------------------------------
# 1. Kernels against brute force, for the two models above and nth's CNN and ResNet
# --------------------------------------------------------------------------------------------------------------


def _small(name):
    """(model, the module to differentiate by brute force, X, X_test): n = 4 training and 2 test inputs on the unit
    sphere, width 5, depth 2, one output (nth's own cnn and resnet are checked against brute force with several
    outputs in tests/test_losses.py, and the MLP against the naive baseline in tests/test_kernels.py)."""
    data = nth.default_problem(n=4, d=6, seed=1, n_test=2)
    X, Xt = jnp.asarray(data.X), jnp.asarray(data.X_test)
    raw = make_convnet(0, 5) if name == "convnet" else make_resmlp(0, 6, 5)
    return nth.as_model(raw, width=5, in_shape=(6,)), raw, X, Xt


MODELS = ["convnet", "resmlp"]


#: The generic implementations (any model); "auto" is "factored" for all of MODELS.
GENERIC = ["factored", "contraction", "jvp"]


@functools.cache
def small_setup(name):
    """The model ``name`` with its inputs and the brute-force kernels over all six inputs (shared): the training
    kernels are its leading slots, the test ones put a test input in the first slot."""
    model, raw, X, Xt = _small(name)
    return dict(model=model, raw=raw, X=X, Xt=Xt, ref=bruteforce(raw, jnp.concatenate([X, Xt])))


@pytest.mark.parametrize("name", MODELS)
def test_kernels_equal_bruteforce(name):
    """K^(2)..K^(4) from nth.kernels = dense J J^T and its derivatives along J (docs/math.md sections 2, 9; HY Eqs.
    7, 10), by every generic implementation, on the training inputs and with test inputs in the first slot (HY Eq.
    22)."""
    s = small_setup(name)
    X, Xt, n = s["X"], s["Xt"], s["X"].shape[0]
    assert nth.kernel.implementation(s["model"]).name == "factored"
    for first, rows in ((None, slice(0, n)), (Xt, slice(n, None))):
        for impl in GENERIC:
            got = nth.kernels(s["model"], X, 4, first=first, implementation=impl)
            for r in (2, 3, 4):
                want = s["ref"][r][(rows,) + (slice(0, n),) * (r - 1)]
                assert got[r].shape == want.shape == (want.shape[0],) + (n,) * (r - 1)
                assert rel_err(got[r], want) < 1e-10, (impl, r, first is None)


# --------------------------------------------------------------------------------------------------------------
# 2-3. Dynamics of the two models defined here: the NTH identity along the true flow, and p = 2
# --------------------------------------------------------------------------------------------------------------


H = 0.01  # step of the finite difference in the identity test (see its docstring)


@pytest.fixture(scope="module", params=["convnet", "resmlp", "user"])
def wide(request):
    """Width 32 (kernels move slowly), n = 5 points in d = 6: the model, its kernels up to K^(4) and the true flow
    at t = 0, h, .., 4h with its parameters. "user" is the model of USER_MODEL, loaded the way ``--model
    FILE.py:make_model`` loads it (nth.models.build_user_model)."""
    data = nth.default_problem(n=5, d=6, seed=3)
    X, y = jnp.asarray(data.X), jnp.asarray(data.y)
    if request.param == "user":
        _, spec = request.getfixturevalue("user_file")
        model = nth.cast_model(build_user_model(spec, 32, 2, in_shape=(6,)), jnp.float64)
    else:
        raw = make_convnet(2, 32) if request.param == "convnet" else make_resmlp(2, 6, 32)
        model = nth.as_model(raw, width=32, in_shape=(6,))
    ks = nth.kernels(model, X, 4)
    flow = nth.gradient_flow(model, X, y, jnp.arange(5) * H, solver=FLOW, save_params=True)
    # the GAP conv nets' NTKs are ill-conditioned (translation-averaged features), so they need a longer horizon
    t_max = 10.0 if request.param == "resmlp" else 60.0
    return dict(model=model, X=X, y=y, ks=ks, f0=model(X), flow=flow, t_max=t_max)


@pytest.mark.parametrize("r", [2, 3], ids=lambda r: f"K{r}")
def test_nth_identity_along_integrated_flow(wide, r):
    """d/dt K^(r) = -(1/n) K^(r+1)[Delta] at t = 0 (HY Eq. 10; docs/math.md sections 2, 9), by the fourth-order
    one-sided difference of K^(r)(theta(t)) on the Diffrax trajectory (dopri8, rtol 1e-13) at t = 0..4h.

    Measured difference error (the rel_err asserted) at h = 0.02 / 0.01 / 0.005: resmlp K2 1.6e-6 / 1.2e-7 /
    8.0e-9, K3 4.0e-6 / 2.2e-7 / 1.3e-8; convnet K2 7.1e-10 / 4.8e-11 / 4.2e-11 (floor), K3 1.3e-10 / 6.3e-12 /
    3.0e-12. It falls 15-20-fold per halving, the O(h^4) truncation of the formula, down to a floor near 1e-11:
    at h = 0.01 the check passes because the difference resolves the derivative."""
    X, y, ks, flow = wide["X"], wide["y"], wide["ks"], wide["flow"]
    n = X.shape[0]
    k_r = eqx.filter_jit(nth.kernel_fn(r))
    Kt = [k_r(pick(flow.params, i), X, X) for i in range(5)]
    dK = (-25 * Kt[0] + 48 * Kt[1] - 36 * Kt[2] + 16 * Kt[3] - 3 * Kt[4]) / (12 * H)
    assert rel_err(-(ks[r + 1] @ (wide["f0"] - y)) / n, dK) < 1e-6
    assert rel_err(Kt[0], ks[r]) < 1e-13
    assert rel_err(flow.K2[0], ks[2]) < 1e-13


def test_p2_equals_matrix_exponential(wide):
    """p = 2: f(t) = y + expm(-t K/n) (f0 - y), scipy's expm as the reference (HY Eq. 15; docs/math.md s. 2)."""
    X, y, ks, f0 = wide["X"], wide["y"], wide["ks"], wide["f0"]
    n = X.shape[0]
    ts = np.linspace(0.0, wide["t_max"], 10)
    sol = nth.truncated_nth(ks, f0, y, ts, p=2)
    K = np.asarray(ks[2])
    ref = np.stack([np.asarray(y) + scipy.linalg.expm(-t * K / n) @ np.asarray(f0 - y) for t in ts])
    assert np.abs(np.asarray(sol.f) - ref).max() < 1e-8 * np.abs(ref).max()
    loss = 0.5 * np.mean((ref - np.asarray(y)) ** 2, axis=1)
    assert loss[-1] < 0.5 * loss[0]  # it trained visibly


# --------------------------------------------------------------------------------------------------------------
# 4-6. The user's model through the CLI
# --------------------------------------------------------------------------------------------------------------

USER_MODEL = '''
"""A 1-D conv net with a residual second layer (a test model for nth's --model)."""
import math

import equinox as eqx
import jax
import jax.numpy as jnp


def conv(h, W):
    return jax.lax.conv_general_dilated(h, W, (1,), "SAME", dimension_numbers=("NCH", "OIH", "NCH"))


class SkipConv(eqx.Module):
    W1: jax.Array
    W2: jax.Array
    a: jax.Array

    def __call__(self, X):
        m = self.a.shape[0]
        h = jnp.tanh(conv(X[:, None, :] * math.sqrt(X.shape[1]), self.W1) / math.sqrt(3))
        h = h + jnp.tanh(conv(h, self.W2) / math.sqrt(3 * m))
        return h.mean(axis=2) @ self.a / math.sqrt(m)


def make_model(width, key):
    k1, k2, k3 = jax.random.split(key, 3)
    return SkipConv(W1=jax.random.normal(k1, (width, 1, 3)), W2=jax.random.normal(k2, (width, width, 3)),
                    a=jax.random.normal(k3, (width,)))
'''


def _import_file(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def user_file(tmp_path_factory):
    """USER_MODEL written to a file: (path, its --model spec)."""
    file = tmp_path_factory.mktemp("user_model") / "skipconv.py"
    file.write_text(USER_MODEL)
    return file, f"{file}:make_model"


@pytest.fixture(scope="module")
def user_run(user_file):
    """`nth solve --model FILE.py:make_model --p 4 --width 16 --n 5 --d 4 --save-kernels` into a file."""
    file, spec = user_file
    out = file.parent / "user.h5"
    code = main(["solve", "--model", spec, "--p", "4", "--width", "16", "--n", "5", "--d", "4", "--t-max", "3",
                 "--num-times", "4", "--out", str(out), "--save-kernels", "--quiet"])
    return code, file, spec, out


def test_user_model_file_holds_full_schema(user_run):
    """--model FILE.py:make_model: exit 0 and the schema of nth/io/_schema.py (version 2), without the m = inf row."""
    code, file, spec, out = user_run
    assert code == 0
    n, k, T, p = 5, 4, 4, 4
    with h5py.File(out, "r") as h:
        assert h.attrs["schema_version"] == 3
        cfg = json.loads(h.attrs["config"])
        assert cfg["model"] == spec
        assert cfg["model_info"]["arch"] == "model" and cfg["model_info"]["width"] == 16
        assert cfg["arch_options"] == {"arch": "model", "model": spec}
        assert cfg["p"] == p and cfg["n"] == n and cfg["width"] == 16 and cfg["in_shape"] == [4]
        assert cfg["inf"] is False and cfg["dg"] is True
        for key in ("version_nth", "version_jax", "version_diffrax", "version_equinox", "version_numpy",
                    "version_h5py", "seed", "wall_time_kernels", "wall_time_gradient_flow"):
            assert key in h.attrs, key
        assert h["/true/t"].shape == (T,) and h["/true/f"].shape == (T, n) and h["/true/loss"].shape == (T,)
        assert h["/true/K2"].shape == (T, n, n) and h["/true/f_test"].shape == (T, k)
        np.testing.assert_allclose(h["/true/t"][()], np.linspace(0, 3, T), rtol=1e-15)
        assert h["/true"].attrs["solver"] == "dopri8" and h["/true"].attrs["num_steps"] > 0
        for q in range(2, p + 1):
            g = h[f"/nth/p{q}"]
            assert g["f"].shape == (T, n) and g["K2"].shape == (T, n, n) and g["loss"].shape == (T,)
            assert g["f_test"].shape == (T, k)
            assert 0 < g.attrs["max_f_error"] < 1  # finite, and the run compared something
            assert g.attrs["max_K2_error"] >= 0 and g.attrs["max_test_error"] > 0 and "num_steps" in g.attrs
        assert "/nth/p5" not in h
        assert h["/dg/f"].shape == (T, n) and h["/dg/K2"].shape == (T, n, n) and h["/dg/f_test"].shape == (T, k)
        assert h["/dg/K2_late"].shape == (n, n) and h["/dg"].attrs["max_f_error"] > 0
        assert "/inf" not in h  # a user model has no limiting kernel (docs/math.md section 9)
        assert h["/init/f0"].shape == (n,)
        # the same forward pass in two compiled programs (the run's, the flow's first save): equal to rounding
        np.testing.assert_allclose(h["/init/f0"][()], h["/true/f"][0], rtol=1e-14, atol=0)
        for r in range(2, p + 1):
            assert h[f"/kernels/K{r}"].shape == (n,) * r
            assert h[f"/kernels/K{r}_test"].shape == (k,) + (n,) * (r - 1)
        assert h["/data/X"].shape == (n, 4) and h["/data/y"].shape == (n,) and h["/data/X_test"].shape == (k, 4)
        np.testing.assert_allclose(np.linalg.norm(h["/data/X"][()], axis=1), 1.0, rtol=1e-14)


def test_user_model_stored_kernels_equal_bruteforce(user_run):
    """The stored /kernels/K2..K4 and K2_test..K4_test = brute force of make_model(16, PRNGKey(0)) on /data/X and
    /data/X_test (HY Eqs. 7, 10, 22)."""
    code, file, spec, out = user_run
    assert code == 0
    with h5py.File(out, "r") as h:
        X, Xt = jnp.asarray(h["/data/X"][()]), jnp.asarray(h["/data/X_test"][()])
        stored = {f"K{r}{t}": h[f"/kernels/K{r}{t}"][()] for r in (2, 3, 4) for t in ("", "_test")}
        f0 = h["/init/f0"][()]
    raw = _import_file(file, "skipconv_for_bruteforce").make_model(16, jax.random.PRNGKey(0))
    raw = nth.cast_model(raw, jnp.float64)
    np.testing.assert_allclose(raw(X), f0, rtol=1e-13)  # the same weights
    ref, ref_test = bruteforce(raw, X), bruteforce(raw, X, Xt)
    for r in (2, 3, 4):
        assert rel_err(stored[f"K{r}"], ref[r]) < 1e-10
        assert rel_err(stored[f"K{r}_test"], ref_test[r]) < 1e-10


def test_user_model_refuses_inf(user_file, tmp_path, capsys):
    """--inf with --model: exit 2, one line naming the mlp (Kbar^(2) is derived for the MLP only, docs/math.md s. 9)."""
    _, spec = user_file
    out = tmp_path / "inf.h5"
    code = main(["solve", "--model", spec, "--inf", "--p", "2", "--width", "8", "--n", "4", "--d", "4",
                 "--t-max", "1", "--num-times", "2", "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("nth: error: ") and err.count("\n") == 1 and "mlp" in err
    assert not out.exists()


def test_missing_model_file_is_named(tmp_path, capsys):
    """--model nonexistent.py:make_model: exit 2 with a message naming the file."""
    out = tmp_path / "none.h5"
    code = main(["solve", "--model", "nonexistent.py:make_model", "--p", "2", "--width", "8", "--n", "4",
                 "--t-max", "1", "--num-times", "2", "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("nth: error: ") and "nonexistent.py" in err and "Traceback" not in err
    assert not out.exists()


def test_model_from_package_module(tmp_path, monkeypatch):
    """--model package.module:make_model, importable from sys.path, runs (exit 0) and is recorded."""
    pkg = tmp_path / "mypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "mod.py").write_text(textwrap.dedent('''
        import equinox as eqx
        import jax
        import jax.numpy as jnp


        class Tiny(eqx.Module):
            W: jax.Array
            a: jax.Array

            def __call__(self, X):
                return jnp.tanh(X @ self.W.T) @ self.a / jnp.sqrt(self.a.shape[0])


        def make_model(width, key):
            k1, k2 = jax.random.split(key)
            return Tiny(W=jax.random.normal(k1, (width, 3)), a=jax.random.normal(k2, (width,)))
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "pkg.h5"
    try:
        code = main(["solve", "--model", "mypkg.mod:make_model", "--p", "2", "--width", "8", "--n", "4", "--d", "3",
                     "--t-max", "1", "--num-times", "2", "--out", str(out), "--quiet"])
    finally:
        for name in ("mypkg.mod", "mypkg"):  # forget it: other tests may name a package mypkg too
            sys.modules.pop(name, None)
    assert code == 0
    with h5py.File(out, "r") as h:
        cfg = json.loads(h.attrs["config"])
        assert cfg["model"] == "mypkg.mod:make_model" and cfg["model_info"]["arch"] == "model"
        assert h["/nth/p2/f"].shape == (2, 4) and "/nth/p3" not in h


# --------------------------------------------------------------------------------------------------------------
# 7. A plain module wrapped without in_shape (kept last)
# --------------------------------------------------------------------------------------------------------------


def test_as_model_without_in_shape_computes_kernels():
    """nth.as_model(module, width=m), in_shape left out (it is optional: AbstractModel.in_shape may be None), gives
    the brute-force kernels too (docs/math.md section 9)."""
    s = small_setup("resmlp")
    got, n = nth.kernels(nth.as_model(s["raw"], width=5), s["X"], 3), s["X"].shape[0]
    for r in (2, 3):
        assert rel_err(got[r], s["ref"][r][(slice(0, n),) * r]) < 1e-10


# --------------------------------------------------------------------------------------------------------------
# 7. The engine's other paths on models without a structured path
# --------------------------------------------------------------------------------------------------------------

INT_LEAF_MODEL = '''
"""A tanh layer reading its inputs through a seed-dependent permutation: an integer array leaf that is not a
parameter (a test model for nth's --model)."""
import math

import equinox as eqx
import jax
import jax.numpy as jnp


class Permuted(eqx.Module):
    W: jax.Array
    a: jax.Array
    perm: jax.Array  # integer: not trained, but different for every seed

    def __call__(self, X):
        h = jnp.tanh(X[:, self.perm] @ self.W.T / math.sqrt(X.shape[1]))
        return h @ self.a / math.sqrt(self.a.shape[0])


def make_model(width, key):
    k1, k2, k3 = jax.random.split(key, 3)
    return Permuted(W=jax.random.normal(k1, (width, 3)), a=jax.random.normal(k2, (width,)),
                    perm=jax.random.permutation(k3, 3))
'''


def test_seeds_together_equal_seeds_one_by_one_for_a_user_model(tmp_path):
    """Several seeds in one computation (nth.solve_seeds: stacked kernels, one vmapped flow and NTH solve) give each
    seed's own run, for a user model whose integer leaf differs between seeds (every array leaf is stacked)."""
    file = tmp_path / "permuted.py"
    file.write_text(INT_LEAF_MODEL)
    cfg = nth.SolveConfig(model=f"{file}:make_model", p=3, width=8, n=4, d=3, n_test=2, t_max=2.0, num_times=3)
    together = nth.solve_seeds(cfg, [0, 1, 2])
    for s, res in zip((0, 1, 2), together):
        alone = nth.solve(cfg.replace(seed=s))
        np.testing.assert_allclose(res.flow.f, alone.flow.f, rtol=0, atol=1e-12)
        for label, e in alone.measures().items():
            for k, v in e.as_dict().items():
                assert abs(getattr(res.measures()[label], k) - v) <= 1e-8 * abs(v), (s, label, k)
    assert together[0].config["seeds_together"] == 3 and together[1].config["seed"] == 1


def test_matrix_free_top_level_for_a_generic_model():
    """K^(p) applied matrix-free by the generic engine (a JVP along sum_b c_b grad f_b) = the dense contraction,
    and the matrix-free truncated NTH = the dense one (HY Eq. 15), for nth's ResNet."""
    data = nth.default_problem(n=5, d=4, seed=2)
    X, y = jnp.asarray(data.X), jnp.asarray(data.y)
    net = nth.init_resnet(1, 4, 12, 2, "tanh")
    dense = nth.kernels(net, X, 3)
    free = nth.kernels(net, X, 3, matrix_free=True)
    c = jnp.asarray(np.random.default_rng(0).normal(size=5))
    assert rel_err(free[3](c), dense[3] @ c) < 1e-12
    ts = np.linspace(0.0, 5.0, 4)
    a = nth.truncated_nth(dense, net(X), y, ts, p=3)
    b = nth.truncated_nth(free, net(X), y, ts, p=3)
    assert float(jnp.abs(a.f - b.f).max()) < 1e-10 and float(jnp.abs(a.f - a.f[0]).max()) > 1e-3


def test_float32_run_of_a_convolutional_net():
    """--dtype float32 with a CNN: the model, its inputs and every trajectory in float32 (the shape check traces the
    model in the run's dtype)."""
    cfg = nth.SolveConfig(arch="cnn", width=4, depth=1, n=3, d=4, n_test=0, dtype="float32", p=3, t_max=1.0,
                          num_times=2)
    res = nth.solve(cfg)
    assert res.flow.f.dtype == jnp.float32 and res.predictions["p3"].solution.f.dtype == jnp.float32
    assert res.config["rtol"] == 1e-6 and np.isfinite(np.asarray(res.flow.f)).all()
