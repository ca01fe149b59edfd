"""Models from Flax (an optional extra, ``pip install 'nth[flax]'``; in the test extra): a Linen module as the
pair (module.apply, variables) and an NNX module as it is, in the library and through --model FILE.py:make_model.
Their kernels equal brute force, and their convolutions and dense layers are found as linear maps (the
factored kernels)."""

import jax
import jax.numpy as jnp
import pytest
from conftest import bruteforce, rel_err

import nth
from nth.kernel._factored import trace

flax = pytest.importorskip("flax")
fnn = pytest.importorskip("flax.linen")
nnx = pytest.importorskip("flax.nnx")


class Linen(fnn.Module):
    """An NHWC convolution with bias, tanh, a dense readout with 2 outputs."""

    @fnn.compact
    def __call__(self, x):
        x = fnn.Conv(3, (3, 3), padding="SAME", param_dtype=jnp.float64)(x[..., None])
        x = jnp.tanh(x / 3.0).reshape(x.shape[0], -1)
        return fnn.Dense(2, param_dtype=jnp.float64)(x / 7.0)


class NNX(nnx.Module):
    """The same network in NNX."""

    def __init__(self, rngs):
        self.conv = nnx.Conv(1, 3, (3, 3), padding="SAME", rngs=rngs, param_dtype=jnp.float64)
        self.lin = nnx.Linear(48, 2, rngs=rngs, param_dtype=jnp.float64)

    def __call__(self, x):
        x = jnp.tanh(self.conv(x[..., None]) / 3.0).reshape(x.shape[0], -1)
        return self.lin(x / 7.0)


NNX_FILE = '''
import jax.numpy as jnp
from flax import nnx


class Net(nnx.Module):
    def __init__(self, width, rngs):
        self.hidden = nnx.Linear(3, width, rngs=rngs, param_dtype=jnp.float64)
        self.out = nnx.Linear(width, 1, rngs=rngs, param_dtype=jnp.float64)

    def __call__(self, x):
        return self.out(jnp.tanh(self.hidden(x)))[:, 0]


def make_model(width, key):
    return Net(width, nnx.Rngs(int(key[-1])))
'''


@pytest.mark.parametrize("kind", ["linen", "nnx"])
def test_flax_models_kernels_equal_bruteforce(kind):
    X = jax.random.normal(jax.random.PRNGKey(0), (3, 4, 4), jnp.float64)
    if kind == "linen":
        variables = Linen().init(jax.random.PRNGKey(1), X)
        model = nth.as_model((Linen().apply, variables), in_shape=(4, 4))
    else:
        model = nth.as_model(NNX(nnx.Rngs(0)), in_shape=(4, 4))
    assert model(X).shape == (3, 2)
    assert model.describe()["class"] == ("Linen.apply" if kind == "linen" else "NNX")  # what files record
    got, ref = nth.kernels(model, X, 4), bruteforce(model, X)
    for r in (2, 3, 4):
        assert rel_err(got[r], ref[r]) < 1e-10, r
    prog = trace(model, (4, 4), jnp.float64)
    assert len(prog.sites) == 2 and len(prog.dense) == 2  # conv and dense kernels; their biases


def test_nnx_model_through_model_file(tmp_path):
    from nth.models import build_user_model

    file = tmp_path / "nnx_model.py"
    file.write_text(NNX_FILE)
    model = build_user_model(f"{file}:make_model", 5, 0, in_shape=(3,))
    X = jnp.asarray(nth.default_problem(n=4, d=3, seed=0).X)
    assert model(X).shape == (4,)
    assert rel_err(nth.kernels(model, X, 3)[3], bruteforce(model, X, r_max=3)[3]) < 1e-10
