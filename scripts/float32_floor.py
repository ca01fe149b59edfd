"""The error floor float32 puts under the error-vs-width curves (issue 5 item 7; docs/math.md section 6).

For every width and seed, the same problem (depth 1, n = 8, d = 4, t = 20) is solved twice, in float64 and in
float32. Printed per width (geometric mean over seeds): the float32 reference's own error (float32 true
flow against float64 true flow) -- the floor -- and the p = 2 and p = 4 errors measured in each precision.
Writes results/float32_floor.txt; nth.engine._run.FLOAT32_FLOOR_A, _B are the fit of the floor it reports.

    python scripts/float32_floor.py [--widths 256,512,1024,2048,4096] [--seeds 3]
"""

import argparse
import dataclasses
import time

import jax.numpy as jnp
import numpy as np

from nth.compare import f_error, fit_slope, geometric_mean
from nth import SolveConfig, run_solve

ap = argparse.ArgumentParser()
ap.add_argument("--widths", default="256,512,1024,2048,4096")
ap.add_argument("--seeds", type=int, default=3)
ap.add_argument("--out", default="results/float32_floor.txt")
a = ap.parse_args()
widths = [int(w) for w in a.widths.split(",")]
base = SolveConfig(p=4, depth=1, n=8, d=4, t_max=20.0, num_times=11, n_test=0, dg=False)
rows = []
t0 = time.perf_counter()
for m in widths:
    floor, e64, e32 = [], {2: [], 4: []}, {2: [], 4: []}
    for s in range(a.seeds):
        r64 = run_solve(dataclasses.replace(base, width=m, seed=s))
        r32 = run_solve(dataclasses.replace(base, width=m, seed=s, dtype="float32"))
        floor.append(float(f_error(jnp.asarray(r32.flow.f, jnp.float64), r64.flow.f).max()))
        for q in (2, 4):
            e64[q].append(r64.predictions[f"p{q}"].measures.max_f_error)
            e32[q].append(r32.predictions[f"p{q}"].measures.max_f_error)
    rows.append((m, geometric_mean(floor), *(geometric_mean(e[q]) for e in (e64, e32) for q in (2, 4))))
    print(rows[-1], flush=True)
rows = np.array(rows)
slope, _ = fit_slope(rows[:, 0], rows[:, 1])
intercept = float(np.mean(np.log(rows[:, 1]) - slope * np.log(rows[:, 0])))
lines = ["# float32 floor: depth 1, n = 8, d = 4, t = 20, tanh; geometric means over "
         f"{a.seeds} seeds; float32 tolerances rtol 1e-6, atol 1e-8",
         f"# {'width':>6} {'floor (f32 vs f64 flow)':>24} {'p2 f64':>10} {'p4 f64':>10} {'p2 f32':>10} {'p4 f32':>10}"]
lines += [f"  {int(r[0]):>6} {r[1]:>24.3e} {r[2]:>10.3e} {r[3]:>10.3e} {r[4]:>10.3e} {r[5]:>10.3e}" for r in rows]
lines.append(f"# floor fit: {np.exp(intercept):.3e} * m^{slope:.2f}; wall {time.perf_counter() - t0:.0f} s")
open(a.out, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
