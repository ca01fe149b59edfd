"""DG Theorem 11 as a study: the drift of the NTK under minibatch SGD, E[Theta_t - Theta_0] = O(1/m) over
initializations and its variance O(1/m^2) (docs/math.md section 10).

    python scripts/sgd_ntk_drift.py --seeds 30 --out results/sgd_ntk_drift

For each problem (the built-in smooth problem with mse, n = 16, d = 8; three digit classes with cross-entropy,
n = 12, three outputs) a depth-1 tanh MLP is trained by SGD on batches of n/4 (one fixed schedule, seed 0) for
``--steps`` steps at one learning rate for every width and seed (half the stable step 2B / lambda_max of the
widest network of seed 0). Per initialization the drift D = K^(2)(T) - K^(2)(0) is read as two scalars: its mean
diagonal tr(D) / N and the entry D(1, 2) (samples 1 and 2). Over the seeds at each width the mean and the
variance of each are fitted against width (:func:`nth.compare.moment_fits`: log-log slopes with bootstrap 95%
intervals, seeds resampled). Writes ``<out>.md``, ``<out>.png`` and the drifts ``<out>.npz``.
"""

from __future__ import annotations

import argparse
import os
import time

import jax.numpy as jnp
import numpy as np

import nth
from nth.compare import moment_fits

PROBLEMS = {
    "smooth (mse)": dict(loss="mse", data=None, classes=2),
    "digits (cross-entropy, 3 classes)": dict(loss="cross-entropy", data="digits", classes=3),
}
SCALARS = ("mean diagonal tr(D)/N", "entry D(1,2)")


def drifts(problem: dict, widths: list[int], seeds: int, steps: int) -> tuple[np.ndarray, float, int]:
    """(widths, seeds, 2) drift scalars, the learning rate and the batch size."""
    cfg = nth.SolveConfig(depth=1, n=None if problem["data"] else 16, d=None if problem["data"] else 8,
                          digits_per_class=4, n_test=0, **problem)
    data = nth.engine.load_data(cfg)
    X = jnp.asarray(data.X)
    batch = data.n // 4
    batches = nth.batch_schedule(data.n, batch, steps, seed=0)
    loss = cfg.loss_fn

    def network(width, seed):
        model = nth.engine.build_model(cfg.replace(width=width, seed=seed), data, seed)
        return model, nth.engine.run_targets(cfg, data, nth.models.output_shape(model, data.in_shape, jnp.float64))

    model, y = network(max(widths), 0)
    lr = 0.5 * nth.stable_lr(nth.ntk(model, X), loss=loss, f0=model(X), y=y, batch_size=batch)
    out = np.zeros((len(widths), seeds, 2))
    for i, m in enumerate(widths):
        t = time.perf_counter()
        for s in range(seeds):
            model, y = network(m, s)
            gd = nth.gradient_descent(model, X, y, lr, np.array([0, steps]), loss=loss, batches=batches)
            D = np.asarray(gd.K2[-1] - gd.K2[0])
            out[i, s] = np.trace(D) / D.shape[0], D[0, 1]
        print(f"  m = {m}: {seeds} seeds in {time.perf_counter() - t:.1f} s", flush=True)
    return out, lr, batch


def _fmt(s, ci):
    return "not resolved" if s is None else f"{s:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", type=lambda s: [int(w) for w in s.split(",")], default=[256, 512, 1024, 2048, 4096])
    ap.add_argument("--seeds", type=int, default=30)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--out", default="results/sgd_ntk_drift")
    a = ap.parse_args()
    nth.enable_float64()
    t0 = time.perf_counter()
    lines = ["# NTK drift under minibatch SGD versus width (DG Theorem 11)", "",
             f"Depth-1 tanh MLP, SGD on batches of n/4 (one schedule, seed 0), {a.steps} steps at one learning rate "
             f"per problem; widths {a.widths}, {a.seeds} initializations each. D = K^(2)(T) - K^(2)(0). Predicted: "
             "E[D] ~ m^-1, Var[D] ~ m^-2. Slopes of |mean| and variance over the seeds with bootstrap 95% intervals "
             "(`nth.compare.moment_fits`); a mean within 3 standard errors of zero at some width is not fitted.", "",
             "| problem | n, B, lr | drift scalar | mean at widths | slope of mean (pred. -1) | slope of variance "
             "(pred. -2) |", "|---|---|---|---|---|---|"]
    saved, fits = {}, {}
    for name, problem in PROBLEMS.items():
        print(name, flush=True)
        V, lr, B = drifts(problem, a.widths, a.seeds, a.steps)
        saved[name] = V
        for j, scalar in enumerate(SCALARS):
            fit = moment_fits(np.asarray(a.widths), V[:, :, j])
            fits[(name, scalar)] = fit
            means = ", ".join(f"{v:.2e}" for v in fit["mean"])
            lines.append(f"| {name} | {4 * B}, {B}, {lr:.3g} | {scalar} | {means} | "
                         f"{_fmt(fit['slope_mean'], fit['slope_mean_ci'] or (None, None))} | "
                         f"{_fmt(fit['slope_variance'], fit['slope_variance_ci'])} |")
    lines += ["", f"Wall time {time.perf_counter() - t0:.0f} s (2-core CPU). Reproduce: "
              f"`python scripts/sgd_ntk_drift.py --seeds {a.seeds} --steps {a.steps} --out {a.out}`."]
    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    with open(a.out + ".md", "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    np.savez(a.out + ".npz", widths=np.asarray(a.widths), **{f"drift_{i}": v for i, v in enumerate(saved.values())})
    _figure(a.widths, fits, a.out + ".png")
    print("\n".join(lines))


def _figure(widths, fits, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    w = np.asarray(widths, dtype=float)
    for (name, scalar), fit in fits.items():
        label = f"{name.split(' (')[0]}, {scalar.split(' ')[0] if 'entry' not in scalar else 'D(1,2)'}"
        for ax, key, slope, pred in ((axes[0], "mean", "slope_mean", -1), (axes[1], "variance", "slope_variance", -2)):
            v = np.abs(np.asarray(fit[key], dtype=float))
            s = fit[slope]
            ax.loglog(w, v, "o-", label=f"{label}: slope {s:.2f}" if s is not None else f"{label}: not resolved")
            ax.loglog(w, v[0] * (w / w[0]) ** pred, "k:", lw=0.8)
    axes[0].set_title("|E[K2(T) - K2(0)]| over initializations (dotted: m^-1)")
    axes[1].set_title("Var[K2(T) - K2(0)] (dotted: m^-2)")
    for ax in axes:
        ax.set_xticks(w, [str(int(x)) for x in w])
        ax.minorticks_off()
        ax.set_xlabel("width m")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
