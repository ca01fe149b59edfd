"""Markdown table of a classifier sweep (docs/math.md section 10): for every row, the fitted width exponent of
its error against its own reference (true gradient flow for p = q and DG, gradient descent, or SGD on the run's batches, for d-p2 and d-o1m)
with a 95% bootstrap interval next to the predicted one, and its accuracy and disagreement rate with the
reference at the last saved time, averaged over seeds, at the narrowest and the widest width.

    python scripts/classifier_table.py results/sweep_ce3_digits.h5 results/sweep_logistic_digits.h5 > results/classifiers.md
"""

import sys

import numpy as np

from nth.compare import slope_with_ci
from nth.engine import row
from nth.io import load_sweep, prediction_labels
from nth.plot import describe


#: The classifier's measures at the last saved time (the attributes of every row's group).
MEASURES = ("accuracy", "test_accuracy", "disagreement", "test_disagreement")


def _ends(sc, key: str) -> str:
    """| mean over seeds at the narrowest width / at the widest (blank where the sweep has no such value)."""
    if key not in sc:
        return "| "
    v = np.nanmean(sc[key], axis=1)
    return f"| {v[0]:.2f} / {v[-1]:.2f} "


def table(path: str) -> list[str]:
    sw = load_sweep(path)
    sc, w = sw["scalars"], sw["widths"]
    cfg = sw["config"]["base"]
    lines = [f"### {path}", "", f"{describe(sw)}; loss {cfg.get('loss', 'mse')}", "",
             f"| row | reference | fitted slope [95% CI] | predicted | accuracy, m={w[0]} / m={w[-1]} "
             f"| test accuracy | disagreement | test disagreement |", "|---|---|---|---|---|---|---|---|"]
    gd = "SGD" if cfg.get("batch_size") else "gradient descent"
    for label in prediction_labels(sc, "max_f_error_"):
        r = row(label)
        key = "max_f_error_gd_" if r.reference == "gd" else "max_f_error_"
        s, lo, hi = slope_with_ci(w, sc[key + label])
        lines.append(f"| {r.name} | {gd if r.reference == 'gd' else 'gradient flow'} "
                     f"| {s:.2f} [{lo:.2f}, {hi:.2f}] | {r.exponent(r.reference):g} "
                     + "".join(_ends(sc, f"{q}_{label}") for q in MEASURES) + "|")
    lines.append(f"| {gd} (real network) | | | " + "".join(_ends(sc, f"{q}_gd") for q in MEASURES[:2]) + "| | |")
    return lines + [""]


if __name__ == "__main__":
    print("\n".join(line for p in sys.argv[1:] for line in table(p)))
