"""How the truncated NTH / DG predictions compare with gradient descent as the learning rate grows.

    python scripts/lr_sweep.py --width 1024 --fractions 0.001,0.01,0.1,0.5 --t-max 20

For each learning rate lr = fraction * (2n / lambda_max(K^(2))) (the largest stable step), trains the
network by full-batch gradient descent for t_max / lr steps and reports max_t |f_pred - f_gd|/sqrt(n) at
t = lr * step for p = 2, p = 4 and DG, next to the same predictions' error against gradient flow and the
GD-vs-flow gap (HY Section 4 item 2: the continuous-time analysis carries over while lr << sqrt(m)).
"""

import argparse

import jax.numpy as jnp

import nth
from nth import stable_lr


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--depth", type=int, default=1)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--d", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--t-max", type=float, default=20.0)
    ap.add_argument("--fractions", default="0.001,0.01,0.1,0.5")
    a = ap.parse_args()
    data = nth.default_problem(a.n, a.d)
    net = nth.init_mlp(a.seed, a.d, a.width, a.depth)
    eta_max = stable_lr(nth.ntk(net, jnp.asarray(data.X)))
    print(f"width {a.width}, depth {a.depth}, n {a.n}: largest stable step 2n/lambda_max = {eta_max:.4g}")
    print(f"{'lr/stable':>9} {'lr':>9} {'steps':>7} {'gd-flow':>10} {'p2-gd':>10} {'p4-gd':>10} {'dg-gd':>10}"
          f" {'p4-flow':>10}")
    for frac in (float(x) for x in a.fractions.split(",")):
        steps = max(1, round(a.t_max / (frac * eta_max)))
        lr = a.t_max / steps
        cfg = nth.SolveConfig(p=4, width=a.width, depth=a.depth, n=a.n, d=a.d, n_test=0, seed=a.seed, lr=lr,
                              steps=steps, num_times=11)
        e = nth.run_solve(cfg).errors
        print(f"{frac:>9g} {lr:>9.3g} {steps:>7d} {e['gd']['max_f_error']:>10.2e} {e['p2']['max_f_error_gd']:>10.2e}"
              f" {e['p4']['max_f_error_gd']:>10.2e} {e['dg']['max_f_error_gd']:>10.2e} {e['p4']['max_f_error']:>10.2e}")


if __name__ == "__main__":
    main()
