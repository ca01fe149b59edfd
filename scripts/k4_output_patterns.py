"""K^(4)(0) of the cross-entropy cnn sweep's network (results/sweep_cnn_ce3_digits.h5) split by the pattern of
its four output indices: entries whose indices pair up (i1 = i2 and i3 = i4, or another pairing) have a nonzero
mean at O(1/m); the others have mean zero and only O(m^-3/2) fluctuations (results/README.md, architectures).

    python scripts/k4_output_patterns.py WIDTHS SEEDS      e.g. 64,256 1 (about 11 minutes on a 2-core CPU)
"""

import itertools
import sys
import time

import jax.numpy as jnp
import numpy as np

import nth
from nth.engine import build_model, load_data

nth.enable_float64()
CFG = nth.SolveConfig(arch="cnn", depth=2, data="digits", classes=3, digits_per_class=2, loss="cross-entropy",
                      outputs=3, n_test=0, p=4, t_max=100.0, num_times=11)
K = 3
PAIRED = np.zeros((K,) * 4, bool)
for a, b, c, d in itertools.product(range(K), repeat=4):
    PAIRED[a, b, c, d] = (a == b and c == d) or (a == c and b == d) or (a == d and b == c)


def main(widths: str, seeds: str) -> None:
    for m in map(int, widths.split(",")):
        for s in range(int(seeds)):
            cfg = CFG.replace(width=m, seed=s)
            data = load_data(cfg)
            t0 = time.perf_counter()
            k4 = np.asarray(nth.kernels(build_model(cfg, data, s), jnp.asarray(data.X), 4)[4])
            n = data.n  # samples s = a K + i: axes (a1, i1, ..., a4, i4) -> (a1..a4, i1..i4)
            k4 = k4.reshape((n, K) * 4).transpose(0, 2, 4, 6, 1, 3, 5, 7)
            mask = np.broadcast_to(PAIRED, k4.shape)
            print(f"m {m} seed {s}: mean |K4| paired {np.abs(k4[mask]).mean():.4e} unpaired "
                  f"{np.abs(k4[~mask]).mean():.4e} all {np.abs(k4).mean():.4e} ({time.perf_counter() - t0:.0f} s)",
                  flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:3])
