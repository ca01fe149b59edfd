"""Error against gradient descent versus the learning rate at fixed width, up to the edge of stability
(docs/math.md section 7): continuous p = 4, the discrete frozen kernel and the discrete O(1/m) system.

    python scripts/gd_lr_study.py --width 1024 --seeds 5 --out results/gd_lr_study

writes ``<out>.md`` (a table of geometric means over seeds) and ``<out>.png``. Each run trains the depth-1 tanh
network (n = 4, d = 3, the built-in problem) by full-batch gradient descent for ``--steps`` steps at F times its
own stable step 2n/lambda_max(K^(2)(0)).
"""

from __future__ import annotations

import argparse
import os

import numpy as np

import nth
from nth.compare import geometric_mean

#: The rows compared with gradient descent, by label, with their figure titles.
LABELS = {label: ("continuous " if nth.row(label).reference == "flow" else "") + nth.row(label).title
          for label in ("p4", "discrete_p2", "discrete_o1m")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--fractions", default="0.02,0.05,0.1,0.2,0.4,0.6,0.8,0.9,0.95,0.99")
    ap.add_argument("--out", default="results/gd_lr_study")
    a = ap.parse_args()
    fractions = [float(f) for f in a.fractions.split(",")]
    errs = {k: np.zeros((len(fractions), a.seeds)) for k in LABELS}
    for i, F in enumerate(fractions):
        for s in range(a.seeds):
            cfg = nth.SolveConfig(p=4, width=a.width, depth=1, n=4, d=3, n_test=0, seed=s, lr_fraction=F,
                                  steps=a.steps, num_times=11, infinite=False, dg=False)
            res = nth.solve(cfg)
            for k in LABELS:
                errs[k][i, s] = res.predictions[k].measures.max_f_error_gd
        print(f"F = {F}: " + ", ".join(f"{k} {geometric_mean(errs[k][i]):.2e}" for k in LABELS), flush=True)
    lines = [f"# Error against gradient descent versus learning rate (m = {a.width}, depth 1 tanh, n = 4, d = 3, "
             f"{a.steps} steps, {a.seeds} seeds)", "",
             "max_step |f - f_GD| / sqrt(n), geometric mean over seeds (min .. max); F = lr / stable step.", "",
             "| F | " + " | ".join(LABELS.values()) + " |", "|---|" + "---|" * len(LABELS)]
    for i, F in enumerate(fractions):
        lines.append(f"| {F:g} | " + " | ".join(f"{geometric_mean(errs[k][i]):.2e} ({errs[k][i].min():.1e} .. "
                                                 f"{errs[k][i].max():.1e})" for k in LABELS) + " |")
    with open(a.out + ".md", "w") as fh:
        fh.write("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    for k, name in LABELS.items():
        ax.plot(fractions, [geometric_mean(r) for r in errs[k]], "o-", label=name)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("learning rate / stable step 2n / lambda_max(K^(2)(0))")
    ax.set_ylabel("max_step |f - f_GD| / sqrt(n) (geo. mean over seeds)")
    ax.set_title(f"error vs learning rate, m = {a.width}, {a.steps} steps, {a.seeds} seeds", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(a.out + ".png", dpi=110)
    print(f"wrote {a.out}.md and {a.out}.png ({os.path.getsize(a.out + '.png')} bytes)")


if __name__ == "__main__":
    main()
