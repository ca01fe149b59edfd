"""Shared fixtures: small float64 problems that exercise every code path in seconds."""

import os

# The suite runs in several processes (pytest-xdist, pyproject.toml); on a GPU machine they share the device,
# so none may take most of its memory up front (JAX's default). Set before JAX starts its backend.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
# The suite compiles hundreds of small programs and runs each a few times: XLA's backend optimization level 0
# compiles them about a quarter faster (measured on the brute-force kernel tests, 107 s -> 80 s) and leaves the
# run time of the long solves unchanged (scaling and end-to-end tests, 93 s -> 91 s). A level set by the caller
# is kept.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import nth  # noqa: E402

nth.enable_float64()  # every check of the suite runs in float64 (importing nth alone leaves JAX's precision)


def flat_jacobian(net, X):
    """Brute-force Jacobian df/dtheta as an (n, P) matrix, by reverse mode over the flattened leaves."""
    import jax

    J = jax.jacrev(lambda nt: nt(X))(net)
    n = X.shape[0]
    return jnp.concatenate([leaf.reshape(n, -1) for leaf in jax.tree_util.tree_leaves(J)], axis=1)


def flat_jacfwd(fn, net, out_shape):
    """Brute-force d fn(theta) / d theta as (out..., P) by nested jacfwd (the naive approach)."""
    import jax

    D = jax.jacfwd(fn)(net)
    return jnp.concatenate([leaf.reshape(*out_shape, -1) for leaf in jax.tree_util.tree_leaves(D)], axis=-1)


def bruteforce(model, X, X1=None, r_max=4):
    """{r: K^(r)(X1, X, .., X)} over samples (input-major, one per output of every input) for r = 2..r_max from
    the definitions of docs/math.md sections 2 and 10, with dense Jacobians over the flat theta (no nth code but
    the forward pass): K^(2) = J1 J^T with J = df(X)/dtheta (reverse mode), and K^(r+1)(.., b) = sum_p
    dK^(r)(..)/dtheta_p J(b, p), the derivative of the K^(r) function itself (J inside it moves with theta) along
    the row J(b, :), taken by jax.jvp (= jacfwd contracted with J, without the P x P intermediate of a jacfwd of
    a jacfwd)."""
    import equinox as eqx
    import jax
    from jax.flatten_util import ravel_pytree

    params, static = eqx.partition(model, eqx.is_inexact_array)
    theta, unravel = ravel_pytree(params)
    X1 = X if X1 is None else X1
    jac = jax.jacrev(lambda th, Z: eqx.combine(unravel(th), static)(Z).reshape(-1))
    fns = {2: lambda th: jac(th, X1) @ jac(th, X).T}
    for r in range(3, r_max + 1):
        fns[r] = lambda th, prev=fns[r - 1]: jnp.moveaxis(
            jax.vmap(lambda v: jax.jvp(prev, (th,), (v,))[1])(jac(th, X)), 0, -1)
    return jax.jit(lambda th: {r: fn(th) for r, fn in fns.items()})(theta)


@pytest.fixture
def tiny():
    """n = 5 points in d = 3, a depth-2 width-7 tanh network: small enough for brute-force references."""
    data = nth.default_problem(n=5, d=3, seed=1)
    net = nth.init_mlp(0, 3, 7, 2, "tanh")
    return net, jnp.asarray(data.X), jnp.asarray(data.y)


def rel_err(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.fixture(autouse=True, scope="module")
def _fresh_compilation_caches():
    """Drop JAX's compiled executables after every test module: the suite compiles many programs (every model,
    level and kernel implementation), and one process holding all of them has crashed inside XLA's compiler."""
    yield
    import jax

    jax.clear_caches()
