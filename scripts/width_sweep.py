"""Error of the truncated NTH against true gradient flow versus width: fitted log-log slopes per level.

    python scripts/width_sweep.py --widths 512,1024,2048,4096 --seeds 5 --p 5 --depth 1 --n 8 --d 4 --t-max 20

Errors are max over saved times of |f_nth - f_true|/sqrt(n), averaged geometrically over seeds (docs/math.md
section 3); test_* are the same at test inputs (HY Eq. 22), dg the Dyer & Gur-Ari correction (p >= 4),
dg_vs_p4 the distance between DG and the p = 4 truncation; slopes are least-squares fits in log-log with their standard errors. Also checks that the
reference flow is converged (default vs 100x tighter tolerances, docs/math.md section 6). ``--json`` saves
the raw errors.
"""

import argparse
import json
import time


import nth
from nth.engine import sweep_errors


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--widths", default="512,1024,2048,4096")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--p", type=int, default=4)
    ap.add_argument("--depth", type=int, default=1)
    ap.add_argument("--activation", default="tanh")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--d", type=int, default=4)
    ap.add_argument("--t-max", type=float, default=20.0)
    ap.add_argument("--n-test", type=int, default=4)
    ap.add_argument("--json", help="write the raw errors and fitted slopes to this JSON file")
    a = ap.parse_args()
    widths = [int(w) for w in a.widths.split(",")]
    cfg = nth.SolveConfig(p=a.p, depth=a.depth, activation=a.activation, n=a.n, d=a.d, t_max=a.t_max,
                          n_test=a.n_test, num_times=11)
    t0 = time.perf_counter()
    errs = sweep_errors(cfg, widths, list(range(a.seeds)), reference_check=True, log=print)
    wall = time.perf_counter() - t0
    print(f"\n{'quantity':>10} " + " ".join(f"{m:>10}" for m in widths) + f" {'slope':>16}")
    report = {"config": vars(a), "wall_s": wall, "slopes": {}, "errors": {}}
    for key in [k for k in errs if k not in ("loss_fall", "ref_diff")] + ["ref_diff"]:
        g = nth.geometric_mean(errs[key], axis=1)
        slope, se = nth.fit_slope(widths, g)
        report["slopes"][key] = [slope, se]
        report["errors"][key] = errs[key].tolist()
        print(f"{key:>10} " + " ".join(f"{v:>10.3e}" for v in g) + f" {slope:>8.2f} +- {se:.2f}")
    print(f"p=2 / p={a.p} at width {widths[-1]}: "
          f"{nth.geometric_mean(errs['f_p2'][-1]) / nth.geometric_mean(errs[f'f_p{a.p}'][-1]):.1f}x")
    smallest = min(errs[k].min() for k in errs if k.startswith("f_"))
    print(f"reference check: max diff {errs['ref_diff'].max():.2e} vs smallest NTH error {smallest:.2e} "
          f"(ratio {errs['ref_diff'].max() / smallest:.2e}); min loss fall {errs['loss_fall'].min():.3g}x")
    print(f"wall time {wall:.1f} s")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(report, fh, indent=1)


if __name__ == "__main__":
    main()
