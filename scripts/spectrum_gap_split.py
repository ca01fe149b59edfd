"""The top-eigenvalue gap of a spectrum sweep split by eigenvalue index (results/README.md, the loss Hessian and
the NTK): mean over seeds of mean_i (lambda_i(H) - lambda_i(G)) at initialization for the indices in each range,
its standard error, and the fitted slope of its absolute value against width (least squares on the widths
that every seed has), beside the mean eigenvalues of H and G in that range.

    python scripts/spectrum_gap_split.py SWEEP.h5 [RANGES]     RANGES e.g. 1:1,1:3,4:20 (1-based, inclusive)
"""

import sys

import numpy as np

import nth


def main(path: str, ranges: str = "1:1,1:3,4:20") -> None:
    sw = nth.load_sweep(path)
    seeds = [int(s) for s in sw["seeds"]]
    widths = [int(w) for w in sw["widths"] if all((int(w), s) in sw["runs"] for s in seeds)]
    for r in ranges.split(","):
        lo, hi = (int(x) for x in r.split(":"))
        idx = slice(lo - 1, hi)

        def at_init(w, s, name):
            return np.mean(sw["runs"][(w, s)][name][0][idx])

        gap = np.array([[at_init(w, s, "spectrum_hessian_top") - at_init(w, s, "spectrum_gn_eigenvalues")
                         for s in seeds] for w in widths])
        mean, se = gap.mean(1), gap.std(1, ddof=1) / np.sqrt(len(seeds))
        slope = np.polyfit(np.log(widths), np.log(np.abs(mean)), 1)[0]
        H = [np.mean([at_init(w, s, "spectrum_hessian_top") for s in seeds]) for w in widths]
        G = [np.mean([at_init(w, s, "spectrum_gn_eigenvalues") for s in seeds]) for w in widths]
        print(f"eigenvalues {lo}-{hi}, widths {widths}: gap {np.array2string(mean, precision=4)} "
              f"(stderr {np.array2string(se, precision=4)}), slope of |gap| {slope:.2f}; "
              f"H {np.array2string(np.array(H), precision=4)}, G {np.array2string(np.array(G), precision=4)}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
