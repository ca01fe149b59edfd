"""Sharding across devices gives the single-device numbers (issue 5 item 6).

Four CPU devices are forced with XLA_FLAGS=--xla_force_host_platform_device_count=4, which must be set before
JAX starts, so the check runs in a subprocess.
"""

import os
import subprocess
import sys

SCRIPT = r"""
import dataclasses
import jax, jax.numpy as jnp, numpy as np
import nth
from nth.engine import SolveConfig, solve_seeds

assert len(jax.devices()) == 4, jax.devices()
X = jnp.asarray(nth.default_problem(n=6, d=3, seed=1).X)
Xt = jnp.asarray(nth.default_problem(n=2, d=3, seed=2).X)
net = nth.init_mlp(0, 3, 32, 2, "tanh")
for first in (None, Xt):
    one = nth.kernels(net, X, 4, first=first, devices=1, chunk=5)
    four = nth.kernels(net, X, 4, first=first, devices=4, chunk=5)
    for r in (2, 3, 4):
        err = float(jnp.abs(one[r] - four[r]).max() / jnp.abs(one[r]).max())
        print(f"kernel r={r} first={first is not None} rel {err:.2e}")
        assert err < 1e-13, err
# a plain Equinox module (its activation is a function leaf) through the generic engine, sharded over 4 devices
import equinox as eqx


class Batched(eqx.Module):
    mlp: eqx.nn.MLP

    def __call__(self, X):
        return jax.vmap(self.mlp)(X)


raw = eqx.nn.MLP(3, "scalar", 8, 2, activation=jnp.tanh, key=jax.random.PRNGKey(0))
user = nth.as_model(Batched(raw), width=8, in_shape=(3,))
one = nth.kernels(user, X[:4], 3, devices=1, chunk=4)
four = nth.kernels(user, X[:4], 3, devices=4, chunk=4)
err = float(jnp.abs(one[3] - four[3]).max() / jnp.abs(one[3]).max())
print(f"user model K3 rel {err:.2e}")
assert err < 1e-13, err
# each batch of direction tuples really is split over the four devices
from nth.kernel._engine import _batch, device_mesh, _ntk_spec
from nth.kernel import implementation
mesh = device_mesh(4)
P = jax.sharding.PartitionSpec
idx = jax.device_put(jnp.arange(8, dtype=jnp.int32)[:, None] % 6, jax.sharding.NamedSharding(mesh, P("tuples")))
out = _batch(_ntk_spec(implementation(net), 3), *jax.device_put((net, X, X), jax.sharding.NamedSharding(mesh, P())), idx, True, False, ())
assert len(out.sharding.device_set) == 4 and out.sharding.spec == P("tuples"), out.sharding
cfg = SolveConfig(p=3, width=64, depth=1, n=6, d=3, t_max=10.0, num_times=6, n_test=2)
a = solve_seeds(cfg, [0, 1, 2], devices=1)
b = solve_seeds(cfg, [0, 1, 2], devices=4)
for ra, rb in zip(a, b):
    for label, e in ra.measures().items():
        for k, v in e.as_dict().items():
            rel = abs(v - getattr(rb.measures()[label], k)) / abs(v)
            assert rel < 1e-8, (label, k, v, getattr(rb.measures()[label], k))
    assert float(jnp.abs(ra.flow.f - rb.flow.f).max()) < 1e-10
# correlation-function draws: a batch of initializations sharded over the four devices
from nth.engine import CorrConfig
from nth.engine._corr import correlation_values
ccfg = CorrConfig(functions=("d{mu}f(x1) d{nu}f(x2) d{mu,nu}f(x3) f(x4)",), widths=(16,), draws=10, depth=2, batch=6)
one = correlation_values(dataclasses.replace(ccfg, devices=1), 16)
four = correlation_values(dataclasses.replace(ccfg, devices=4), 16)
assert one.shape == four.shape == (10, 1)
assert float(np.abs(one - four).max()) < 1e-13 * float(np.abs(one).max()), (one, four)
print("SHARDED-OK")
"""


def test_sharded_kernels_and_seeds_equal_single_device():
    flags = os.environ.get("XLA_FLAGS", "")  # the suite's own (tests/conftest.py), plus four host devices
    env = dict(os.environ, XLA_FLAGS=f"{flags} --xla_force_host_platform_device_count=4".strip(), JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "SHARDED-OK" in proc.stdout
