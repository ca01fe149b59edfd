"""Is it faster to batch the seeds of one width with vmap than to run them one after another?

    python scripts/bench_vmap_seeds.py --widths 256,1024,4096 --seeds 5

For each width, times (after compilation, which is reported separately) the two costly stages of a sweep
run, K^(2)..K^(p) and the true gradient flow, for S seeds: (a) a Python loop over seeds, as ``nth sweep``
does, and (b) one ``jax.vmap`` over the stacked initial weights. Prints the ratio (a)/(b): above 1 means
batching is faster. The vmapped flow steps all seeds in lockstep, so it takes as many steps as the
slowest seed.
"""

import argparse
import time

import equinox as eqx
import jax
import jax.numpy as jnp

import nth
from nth.gradflow import _flow_rhs, _save_flow
from nth.kernels import kernel_fn
from nth.odeint import _solve, SOLVERS
import diffrax


def timed(fn, repeats=2):
    out = jax.block_until_ready(fn())  # compile + first run
    t = time.perf_counter()
    for _ in range(repeats):
        out = jax.block_until_ready(fn())
    return out, (time.perf_counter() - t) / repeats


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--widths", default="256,1024,4096")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--p", type=int, default=4)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--d", type=int, default=4)
    ap.add_argument("--t-max", type=float, default=20.0)
    a = ap.parse_args()
    data = nth.default_problem(a.n, a.d)
    X, y = jnp.asarray(data.X), jnp.asarray(data.y)
    ts = jnp.linspace(0.0, a.t_max, 11)
    print(f"device {jax.devices()[0].platform}, {a.seeds} seeds, p = {a.p}, n = {a.n}, depth 1")
    print(f"{'width':>6} {'stage':>8} {'loop [s]':>9} {'vmap [s]':>9} {'loop/vmap':>9}")
    kfn = kernel_fn(a.p, chunk=a.n)

    def flow(net):
        u0 = jax.tree_util.tree_map(jnp.zeros_like, net)
        return _solve(_flow_rhs, u0, (net, X, y, None), ts, 1e-10, 1e-12, SOLVERS["dopri8"](), 100_000, _save_flow,
                      diffrax.NoProgressMeter()).ys[0]

    for m in (int(w) for w in a.widths.split(",")):
        nets = [nth.init_mlp(s, a.d, m, 1) for s in range(a.seeds)]
        stacked = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *nets)
        k_one = eqx.filter_jit(kfn)
        k_all = eqx.filter_jit(eqx.filter_vmap(kfn, in_axes=(0, None, None)))
        _, t_loop = timed(lambda: [k_one(nt, X, X) for nt in nets])
        _, t_vmap = timed(lambda: k_all(stacked, X, X))
        print(f"{m:>6} {'K^(p)':>8} {t_loop:>9.3f} {t_vmap:>9.3f} {t_loop / t_vmap:>9.2f}")
        f_all = eqx.filter_jit(eqx.filter_vmap(flow))
        _, t_loop = timed(lambda: [flow(nt) for nt in nets], repeats=1)
        _, t_vmap = timed(lambda: f_all(stacked), repeats=1)
        print(f"{m:>6} {'flow':>8} {t_loop:>9.3f} {t_vmap:>9.3f} {t_loop / t_vmap:>9.2f}")


if __name__ == "__main__":
    main()
