"""Markdown table of every fitted width exponent in the given sweep files, with 95% bootstrap intervals
and the exponent the theory predicts (docs/math.md section 3; HY Eqs. 11-12, Cor. 2.4, Thm 2.6; DG Eq. 89).

    python scripts/results_table.py results/sweep_*.h5 > results/exponents.md
"""

import sys

from nth.compare import slope_with_ci
from nth.engine import row
from nth.engine._rows import labels_in
from nth.plot import describe
from nth.io import load_sweep, trained_by

#: Predicted exponents of the quantities that are not prediction errors (those: each row's exponent()).
EXPECTED = {"dg_vs_p4": -2, "K2": 0, "K3": -1, "K4": -1, "K5": -2, "K6": -2, "K2_movement": -1}


def rows(path):
    sw = load_sweep(path)
    sc, w = sw["scalars"], sw["widths"]
    out = []
    for quantity, title in (("max_f_error", "f error"), ("max_test_error", "test error"),
                            ("max_K2_error", "K2 error")):
        for label in labels_in(sc, quantity + "_"):
            r = row(label)
            out.append((f"{title}, {r.title}", slope_with_ci(w, sc[f"{quantity}_{label}"]), r.exponent("flow")))
    if "dg_vs_p4" in sc:
        out.append(("DG - (p = 4), f", slope_with_ci(w, sc["dg_vs_p4"]), EXPECTED["dg_vs_p4"]))
    for key in sorted(k for k in sc if k.startswith("kernel_mean_abs_K")):
        r = key[len("kernel_mean_abs_K"):]
        out.append((f"mean abs K^({r})(0)", slope_with_ci(w, sc[key]), EXPECTED.get(f"K{r}")))
    out.append((f"max abs K2(T) - K2(0), {trained_by(sw)}", slope_with_ci(w, sc["K2_movement"]),
                EXPECTED["K2_movement"]))
    return sw, out


def main():
    print("| file | quantity | fitted slope | 95% CI | theory |")
    print("|---|---|---|---|---|")
    for path in sys.argv[1:]:
        sw, out = rows(path)
        name = path.split("/")[-1]
        for q, (s, lo, hi), exp in out:
            flag = "" if exp is None or lo - 0.15 <= exp <= hi + 0.15 else " (*)"
            print(f"| {name} | {q} | {s:.2f}{flag} | [{lo:.2f}, {hi:.2f}] | {'' if exp is None else format(exp, 'g')} |")
    print()
    for path in sys.argv[1:]:
        sw = load_sweep(path)
        print(f"- `{path.split('/')[-1]}`: {describe(sw)}; widths {', '.join(str(int(x)) for x in sw['widths'])}; "
              f"{len(sw['runs'])} runs")
    print("\n(*): the theory's exponent lies more than 0.15 outside the bootstrap interval; see results/README.md.")


if __name__ == "__main__":
    main()
