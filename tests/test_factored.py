"""The "factored" kernel implementation (nth.kernel._factored; docs/math.md section 2, "Factored kernels of any
model"): the linear maps it finds in a model's program, and its kernels against brute force with every step
applied in factored form, every step applied in place, and the choice by cost."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import pytest
from conftest import bruteforce, rel_err

import nth
from nth.kernel import IMPLEMENTATIONS
from nth.kernel._factored import factored_sites, trace
from nth.kernel._impl import Factored


class Mixed(eqx.Module):
    """Every kind of use of a weight: an NHWC convolution with stride 2 (weight HWIO), a bias, a transposed atrous
    convolution (lhs and rhs dilation 2), a matrix product with the weight as the left operand (as eqx.nn.Linear
    writes it), a weight used twice inside a jitted block, and a readout with 2 outputs."""

    conv: jax.Array
    bias: jax.Array
    up: jax.Array
    W: jax.Array
    T: jax.Array
    a: jax.Array

    def __call__(self, X):
        dn = ("NHWC", "HWIO", "NHWC")
        h = jax.lax.conv_general_dilated(X, self.conv, (2, 2), ((1, 1), (1, 1)), dimension_numbers=dn)
        h = jnp.tanh(h / 3.0 + self.bias)
        h = jax.lax.conv_general_dilated(h, self.up, (1, 1), ((2, 2), (2, 2)), lhs_dilation=(2, 2),
                                         rhs_dilation=(2, 2), dimension_numbers=dn)  # 3x3 -> 5x5
        h = jnp.tanh(h / 3.0).reshape(h.shape[0], -1)
        h = jnp.tanh(jax.vmap(lambda v: self.W @ v)(h) / math.sqrt(h.shape[1]))
        h = jax.jit(lambda v: jnp.tanh(v @ self.T.T / 2.0) @ self.T / 2.0)(h)
        return h @ self.a / 2.0


def make_mixed(seed=0):
    ks = jax.random.split(jax.random.PRNGKey(seed), 6)
    shapes = dict(conv=(3, 3, 2, 3), bias=(3,), up=(3, 3, 3, 2), W=(4, 50), T=(4, 4), a=(4, 2))
    return Mixed(**{name: jax.random.normal(k, s, jnp.float64) for k, (name, s) in zip(ks, shapes.items())})


class Library(eqx.Module):
    """Equinox's own layers on one input each (vmapped): Conv2d (NCHW, with bias), Linear (weight on the left,
    with bias)."""

    conv: eqx.nn.Conv2d
    lin: eqx.nn.Linear

    def __call__(self, X):
        def one(x):
            h = jnp.tanh(self.conv(x[None]) / 3.0)
            return self.lin(h.reshape(-1) / 6.0)

        return jax.vmap(one)(X)


def make_library(seed=0):
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    conv = eqx.nn.Conv2d(1, 2, 3, padding=1, key=k1, dtype=jnp.float64)
    return Library(conv=conv, lin=eqx.nn.Linear(2 * 4 * 4, 3, key=k2, dtype=jnp.float64))


def test_linear_maps_found():
    """The sites are the weights multiplied into an activation once (through relabellings, inside a jit too); a
    bias and a weight used twice are dense leaves with whole per-input gradients."""
    model = nth.as_model(make_mixed(), in_shape=(6, 6, 2))
    prog = trace(model, (6, 6, 2), jnp.float64)
    names = list(Mixed.__dataclass_fields__)  # the leaves in field order
    sites = {names[s.leaf]: (type(s.form).__name__, s.S, s.C, s.O) for s in prog.sites.values()}
    assert sites == {"conv": ("_ConvSite", 9, 18, 3), "up": ("_ConvSite", 25, 27, 2), "W": ("_DotSite", 1, 50, 4),
                     "a": ("_DotSite", 1, 4, 2)}
    assert sorted(names[i] for i in prog.dense) == ["T", "bias"]
    for m, in_shape, want in ((nth.init_mlp(0, 3, 5, 2), (3,), 3), (nth.init_cnn(0, (4, 4), 3, 2), (4, 4), 3),
                              (nth.init_resnet(0, 3, 5, 2), (3,), 6)):
        prog = trace(m, in_shape, jnp.float64)
        assert len(prog.sites) == want and prog.dense == ()
    lib = trace(nth.as_model(make_library(), in_shape=(4, 4)), (4, 4), jnp.float64)
    assert len(lib.sites) == 2 and len(lib.dense) == 2  # the two weights; the two biases


def test_step_form_chosen_by_cost():
    """Steps move a matrix product's weight in factored form when rows S (C + O) < O C (wide dense layers),
    a convolution's weight in place (S positions make the factors dearer)."""
    prog = trace(nth.init_mlp(0, 3, 64, 2), (3,), jnp.float64)
    assert [prog.sites[j].O * prog.sites[j].C for j in sorted(factored_sites(prog, 8))] == [64 * 64]
    cnn = trace(nth.init_cnn(0, (8, 8), 16, 2), (8, 8), jnp.float64)
    assert factored_sites(cnn, 8) == frozenset()
    assert factored_sites(cnn, 8, True) == frozenset(cnn.sites) and factored_sites(prog, 8, False) == frozenset()


@pytest.fixture(scope="module", params=["mixed", "library"])
def user(request):
    """A user model of each kind above on 3 training and 2 test inputs, with its brute-force kernels over all five
    (the training kernels are the leading slots, the test ones put a test input in the first slot)."""
    raw, shape = (make_mixed(), (6, 6, 2)) if request.param == "mixed" else (make_library(), (4, 4))
    Z = jax.random.normal(jax.random.PRNGKey(3), (5,) + shape, jnp.float64)
    return nth.as_model(raw, in_shape=shape), Z[:3], Z[3:], bruteforce(raw, Z)


def test_user_model_kernels_equal_bruteforce(user):
    """K^(2)..K^(4) over samples (several outputs) on training and test inputs equal brute force to 1e-10, and so
    does K^(4) with every step in factored form and with every step in place (the matrix-free top level and the
    other implementations: tests/test_losses.py)."""
    model, X, Xt, ref = user
    N = model(X).size  # samples: inputs x outputs
    assert nth.kernel.implementation(model).name == "factored"
    for first, rows in ((None, slice(0, N)), (Xt, slice(N, None))):
        got = nth.kernels(model, X, 4, first=first)
        for r in (2, 3, 4):
            want = ref[r][(rows,) + (slice(0, N),) * (r - 1)]
            assert got[r].shape == want.shape
            assert rel_err(got[r], want) < 1e-10, (r, first is None)
    train4 = ref[4][(slice(0, N),) * 4]
    for steps in (True, False):
        assert rel_err(nth.kernel.kernel(model, X, 4, implementation=Factored(steps=steps)), train4) < 1e-10, steps


@pytest.mark.parametrize("steps", [True, False], ids=["factored", "in-place"])
@pytest.mark.parametrize("name", ["mlp-mup", "cnn", "resnet"])
def test_builtin_kernels_equal_bruteforce_in_both_step_forms(name, steps):
    """The built-in models with steps in the form the cost rule does not pick for them (muP's per-layer learning
    rates on the MLP: the weighted inner product)."""
    if name == "mlp-mup":
        model, X = nth.init_mlp(0, 3, 6, 2, param="mup"), jnp.asarray(nth.default_problem(n=4, d=3, seed=0).X)
    elif name == "cnn":
        model, X = nth.init_cnn(0, (4, 4), 3, 2, outputs=2), jax.random.normal(jax.random.PRNGKey(2), (3, 4, 4))
    else:
        model, X = nth.init_resnet(0, 3, 4, 2), jnp.asarray(nth.default_problem(n=4, d=3, seed=0).X)
    got = nth.kernels(model, X, 4, implementation=Factored(steps=steps))
    want = nth.kernels(model, X, 4, implementation="jvp")
    for r in (2, 3, 4):
        assert rel_err(got[r], want[r]) < 1e-12, r
    assert IMPLEMENTATIONS["factored"].steps is None


def nt_style_apply(params, X):
    """A network as neural-tangents writes one: a pure function of a parameter dict and a batch (biases included)."""
    h = jnp.tanh(X @ params["W1"] / math.sqrt(X.shape[1]) + params["b1"])
    return h @ params["a"] / math.sqrt(h.shape[1])


NT_MODEL = '''
"""make_model returning a pair (apply_fn, params), as neural-tangents and Flax Linen hand them out."""
import math

import jax
import jax.numpy as jnp


def apply_fn(params, X):
    h = jnp.tanh(X @ params["W1"] / math.sqrt(X.shape[1]) + params["b1"])
    return h @ params["a"] / math.sqrt(h.shape[1])


def make_model(width, key):
    k1, k2, k3 = jax.random.split(key, 3)
    return apply_fn, {"W1": jax.random.normal(k1, (3, width)), "b1": 0.1 * jax.random.normal(k2, (width,)),
                      "a": jax.random.normal(k3, (width,))}
'''


def test_apply_fn_and_params_pair(tmp_path):
    """A pair (apply_fn, params) is a model, in the library (nth.as_model) and through --model FILE.py:make_model:
    its kernels equal brute force, its weight matrices are found as linear maps (the bias is dense), and a
    pair whose second element is callable is refused in one line."""
    from nth.models import build_user_model

    ks = jax.random.split(jax.random.PRNGKey(0), 3)
    params = {"W1": jax.random.normal(ks[0], (3, 5), jnp.float64), "b1": jax.random.normal(ks[1], (5,), jnp.float64),
              "a": jax.random.normal(ks[2], (5,), jnp.float64)}
    model = nth.as_model((nt_style_apply, params), in_shape=(3,))
    assert model.describe()["class"] == "nt_style_apply"  # files record the function, not the wrapper
    X = jnp.asarray(nth.default_problem(n=4, d=3, seed=1).X)
    got, ref = nth.kernels(model, X, 4), bruteforce(model, X)
    for r in (2, 3, 4):
        assert rel_err(got[r], ref[r]) < 1e-10, r
    prog = trace(model, (3,), jnp.float64)
    assert len(prog.sites) == 2 and len(prog.dense) == 1
    file = tmp_path / "nt_model.py"
    file.write_text(NT_MODEL)
    loaded = nth.cast_model(build_user_model(f"{file}:make_model", 6, 0, in_shape=(3,)), jnp.float64)
    assert isinstance(loaded.module, nth.Applied) and loaded(X).shape == (4,)
    assert rel_err(nth.kernels(loaded, X, 3)[3], bruteforce(loaded, X, r_max=3)[3]) < 1e-10
    with pytest.raises(nth.ConfigError, match="apply_fn"):
        nth.as_model((nt_style_apply, nt_style_apply))


@pytest.mark.parametrize("spatial,window", [((7,), (3,)), ((5, 6), (3, 3)), ((4, 4), (5, 1))])
def test_convolution_as_patch_product_equals_xla(spatial, window):
    """The built-in cnn's convolution (nth.models._patches.conv_same: the product of the input's patches with the
    kernel, which XLA runs as fast inside a Diffrax loop as outside) equals XLA's 'SAME' convolution."""
    from nth.models._patches import conv_same

    k1, k2 = jax.random.split(jax.random.PRNGKey(len(spatial)))
    x = jax.random.normal(k1, (2, 3) + spatial, jnp.float64)
    W = jax.random.normal(k2, (4, 3) + window, jnp.float64)
    names = "HW"[: len(spatial)]
    want = jax.lax.conv_general_dilated(x, W, (1,) * len(spatial), "SAME",
                                        dimension_numbers=("NC" + names, "OI" + names, "NC" + names))
    assert rel_err(conv_same(x, W), want) < 1e-14
