"""Figures from sweep files (matplotlib, imported only here): error vs width, trajectories, kernel sizes, and
the ntk vs muP dichotomy.

Each function reads a sweep file written by :mod:`nth.io` (either layout) and writes one PNG; ``nth plot`` and the
scripts in ``scripts/`` are thin wrappers around them.
"""

from __future__ import annotations

import io
import os
import textwrap

import numpy as np

from .compare import geometric_mean, slope_with_ci
from .engine._rows import row
from .errors import ConfigError
from .io import ERROR_QUANTITIES, check_output_path, load_sweep, no_values, prediction_labels, trained_by, write_atomic
from .models import DEFAULT_DEPTH

_PNG = b"\x89PNG\r\n\x1a\n"


def _plt():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("plots need matplotlib: pip install matplotlib (or pip install 'nth[plot]')") from None
    return plt


def check_figure_path(out: str) -> str:
    """Refuse, before anything is read or drawn, a figure path that cannot be written, or an existing file that is
    not a PNG (figures are redrawn in place; any other file is never overwritten)."""
    out = check_output_path(out, force=True)
    if not out.lower().endswith(".png"):
        raise ConfigError(f"figure path {out!r} must end in .png")
    if os.path.exists(out):
        with open(out, "rb") as fh:
            if fh.read(8) != _PNG:
                raise ConfigError(f"{out!r} exists and is not a PNG image; nth plot overwrites only its own figures: "
                                  "choose another --out")
    return out


def _save(plt, fig, out: str) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    write_atomic(out, buf.getvalue(), force=True, what="nth plot")


def _name(label: str) -> str:
    return row(label).title


def _reference_slopes(ax, widths, anchors: dict[int, float]):
    """Dashed reference lines of the given slopes, each through (widths[0], anchor)."""
    w = np.asarray(widths, dtype=float)
    for (s, anchor), ls in zip(anchors.items(), ("--", ":", "-.")):
        ax.plot(w, anchor * (w / w[0]) ** s, "k" + ls, lw=1, alpha=0.6, label=f"slope {s}")


def describe(sweep: dict) -> str:
    """One line naming the architecture, data, horizon and seeds of a sweep (both file layouts)."""
    cfg = sweep["config"]["base"]
    data = cfg["data"] or f"synthetic n={cfg['n'] or 16}, d={cfg['d'] or 8}"
    if cfg.get("model"):
        arch = f"model {cfg['model']}"
    else:
        arch = f"{cfg.get('arch', 'mlp')}, {cfg['activation']}, depth {cfg['depth']}"
    if cfg.get("steps") is not None:  # gradient descent: the horizon is lr * steps
        lr = f"lr {cfg['lr']:g}" if cfg.get("lr") is not None else f"lr {cfg['lr_fraction']:g} x stable step"
        horizon = f"{lr}, {cfg['steps']} steps" + (f", SGD batches of {cfg['batch_size']}"
                                                      if cfg.get("batch_size") is not None else "")
    else:
        horizon = f"t in [0, {cfg['t_max']:g}]"
    return f"{arch}, {data}, {horizon}, {sweep['seeds'].size} seeds"


def error_vs_width(path: str, out: str, *, quantity: str = "max_f_error") -> dict[str, tuple[float, float, float]]:
    """Log-log error against width, one line per level p and for DG, with fitted slopes and 95% bootstrap
    intervals in the legend and dashed reference slopes -1 and -2 (HY Thm 2.6, DG Eq. 89). ``quantity`` is
    max_f_error, max_K2_error or max_test_error (against the flow), or max_f_error_gd or max_test_error_gd
    (against gradient descent, in a sweep with a learning rate). Returns {label: (slope, low, high)}."""
    out = check_figure_path(out)
    plt = _plt()
    sw = load_sweep(path)
    widths, sc = sw["widths"], sw["scalars"]
    labels = prediction_labels(sc, quantity + "_")
    if not labels:
        raise ConfigError(no_values(sw, quantity))
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    fits = {}
    for label in labels:
        E = sc[f"{quantity}_{label}"]
        g = np.array([geometric_mean(r[np.isfinite(r)]) if np.isfinite(r).any() else np.nan for r in E])
        fits[label] = slope_with_ci(widths, E)
        s, lo, hi = fits[label]
        line, = ax.plot(widths, g, "o-", label=f"{_name(label)}: slope {s:.2f} [{lo:.2f}, {hi:.2f}]")
        ax.scatter(np.repeat(widths, E.shape[1]), E.ravel(), s=6, color=line.get_color(), alpha=0.3)
    reference = "gd" if quantity.endswith("_gd") else "flow"
    refs: dict[float, float] = {}  # each predicted slope, through the largest first-width error of its rows
    for lab in labels:
        s = row(lab).exponent(reference)
        first = geometric_mean(sc[f"{quantity}_{lab}"][0])
        if s and np.isfinite(first):
            refs[s] = max(refs.get(s, 0.0), first)
    _reference_slopes(ax, widths, refs)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("width m")
    ax.set_ylabel(ERROR_QUANTITIES[quantity] + " (geo. mean over seeds)")
    ax.set_title(textwrap.fill(f"error vs width: {describe(sw)}", 80), fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    _save(plt, fig, out)
    return fits


def trajectories(path: str, out: str, *, seed: int = 0, entry: int = 0, pair: tuple[int, int] = (0, 1)) -> None:
    """One output f_entry(t) and one kernel entry K^(2)_pair(t): true gradient flow against p = 2, p = 4 and
    DG, at the narrowest and the widest width of the sweep (the analogue of DG Figure 11). With k outputs per
    input, ``entry`` and ``pair`` index samples s = a k + i (input a, output i; docs/math.md section 10)."""
    out = check_figure_path(out)
    plt = _plt()
    sw = load_sweep(path)
    if not sw["config"]["base"].get("flow", True):
        raise ConfigError(f"{path!r} skipped the true gradient flow (--no-flow), which these panels draw; plot "
                          "error-vs-width --quantity max_f_error_gd instead")
    if not sw["config"]["base"].get("save_k2", True):
        raise ConfigError(f"{path!r} was written without the K^(2)(t) trajectories (--no-save-k2), which these panels "
                          "draw; plot error-vs-width or kernel-sizes instead")
    widths = [w for w in sw["widths"] if (int(w), seed) in sw["runs"]]
    if not widths:
        raise ConfigError(f"{path!r} holds no run with seed {seed}")
    chosen = [widths[0], widths[-1]] if len(widths) > 1 else [widths[0]]
    fig, axes = plt.subplots(3, len(chosen), figsize=(5.2 * len(chosen), 8.6), squeeze=False)
    a, b = pair
    styles = (("p2", "C0--"), ("p4", "C1-."), ("dg", "C2:"))
    for col, w in enumerate(chosen):
        # outputs over samples: (T, n) or (T, n, k) -> (T, N)
        run = {k: v.reshape(v.shape[0], -1) if k.endswith("_f") else v for k, v in sw["runs"][(int(w), seed)].items()}
        t = run["t"]
        for row, (key, idx, name) in enumerate((("f", (slice(None), entry), f"f_{entry}(t)"),
                                                ("K2", (slice(None), a, b), f"K2_{a}{b}(t)"))):
            ax = axes[2 * row, col]
            ax.plot(t, run[f"true_{key}"][idx], "k-", lw=2.5, alpha=0.5, label="true gradient flow")
            for label, style in styles:
                if f"{label}_{key}" in run:
                    ax.plot(t, run[f"{label}_{key}"][idx], style, lw=1.5, label=_name(label))
            ax.set_title(f"{name}, width {int(w)}, seed {seed}", fontsize=9)
        ax = axes[1, col]  # the differences, which the top row cannot resolve
        for label, style in styles:
            if f"{label}_f" in run:
                ax.semilogy(t[1:], np.abs(run[f"{label}_f"][1:, entry] - run["true_f"][1:, entry]), style, lw=1.5,
                            label=_name(label))
        ax.set_title(f"|f_{entry}(t) - f_true,{entry}(t)|, width {int(w)}", fontsize=9)
        for row in range(3):
            axes[row, col].set_xlabel("t")
            axes[row, col].grid(True, alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(textwrap.fill(describe(sw), 100), fontsize=9)
    fig.tight_layout()
    _save(plt, fig, out)


def kernel_sizes(path: str, out: str) -> dict[str, tuple[float, float, float]]:
    """Mean |K^(r)(0)| against width for r = 2..p with fitted slopes (HY Eqs. 11-12: K3 ~ 1/m, K4 ~ 1/m,
    K5 ~ 1/m^2), and max |K^(2)(T) - K^(2)(0)| along true gradient flow (HY Corollary 2.4: slope -1)."""
    out = check_figure_path(out)
    plt = _plt()
    sw = load_sweep(path)
    widths, sc = sw["widths"], sw["scalars"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.6))
    fits = {}
    for key in sorted(k for k in sc if k.startswith("kernel_mean_abs_K")):
        r = key[len("kernel_mean_abs_K"):]
        fits[f"K{r}"] = s, lo, hi = slope_with_ci(widths, sc[key])
        ax1.plot(widths, geometric_mean(sc[key], axis=1), "o-", label=f"mean |K^({r})|: slope {s:.2f} [{lo:.2f}, {hi:.2f}]")
    ax1.set_title("kernel sizes at initialization", fontsize=9)
    fits["K2_movement"] = s, lo, hi = slope_with_ci(widths, sc["K2_movement"])
    g = geometric_mean(sc["K2_movement"], axis=1)
    ax2.plot(widths, g, "o-", color="C4", label=f"max |K2(T) - K2(0)|: slope {s:.2f} [{lo:.2f}, {hi:.2f}]")
    _reference_slopes(ax2, widths, {-1: g[0]})
    ax2.set_title(f"NTK movement along {trained_by(sw)}", fontsize=9)
    _finish_width_axes(plt, fig, (ax1, ax2), describe(sw), out)
    return fits


def _finish_width_axes(plt, fig, axes, title: str, out: str) -> None:
    """Log-log width axes with grid and legend; title, save to ``out``, close."""
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("width m")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    _save(plt, fig, out)


def dichotomy(paths: dict[str, str], out: str, *, level: str = "p4") -> dict[str, dict[str, tuple[float, float, float]]]:
    """TP4's dynamical dichotomy from one sweep per parametrization (``paths``: {param: sweep file}): the NTK's
    movement max_t |K^(2)(t) - K^(2)(0)| along true gradient flow (left) and the error of the truncated NTH at
    ``level`` (right) against width, with fitted slopes. In the kernel regime (ntk) both fall like 1/m (resp.
    faster); under muP (feature learning) neither falls: the kernel moves at O(1) and the hierarchy does not
    truncate. A sweep with the mup-inf row (depth 1) also draws its error, the distance to the feature-learning limit
    (dashed; predicted slope -1/2, docs/math.md section 12). Returns {param: {"K2_movement": fit, level: fit[,
    "mup_inf": fit]}}."""
    out = check_figure_path(out)
    plt = _plt()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.6))
    fits: dict[str, dict[str, tuple[float, float, float]]] = {}
    for i, (param, path) in enumerate(paths.items()):
        sw = load_sweep(path)
        widths, sc = sw["widths"], sw["scalars"]
        key = f"max_f_error_{level}"
        if key not in sc:
            raise ConfigError(f"{path!r} holds no {key!r} (a sweep with p >= {level[1:]} is needed)")
        fits[param] = {}
        for ax, k in ((ax1, "K2_movement"), (ax2, key)):
            fits[param][k if k == "K2_movement" else level] = s, lo, hi = slope_with_ci(widths, sc[k])
            g = geometric_mean(sc[k], axis=1)
            ax.plot(widths, g, "o-", color=f"C{i}", label=f"{param}: slope {s:.2f} [{lo:.2f}, {hi:.2f}]")
            if i == 0:  # NTK movement ~ 1/m; the level-q error ~ m^(-floor(q/2)) (docs/math.md section 3)
                _reference_slopes(ax, widths, {-1 if k == "K2_movement" else -(int(level[1:]) // 2): g[0]})
        if "max_f_error_mup_inf" in sc:  # the feature-learning limit itself (docs/math.md section 12)
            fits[param]["mup_inf"] = s, lo, hi = slope_with_ci(widths, sc["max_f_error_mup_inf"])
            g = geometric_mean(sc["max_f_error_mup_inf"], axis=1)
            ax2.plot(widths, g, "s--", color=f"C{i}", label=f"{param}, distance to the muP limit (mup-inf): slope "
                     f"{s:.2f} [{lo:.2f}, {hi:.2f}]")
            _reference_slopes(ax2, widths, {-0.5: g[0]})
        cfg = sw["config"]["base"]
    ax1.set_title(f"NTK movement along {trained_by(sw)}", fontsize=9)
    ax2.set_title(f"truncated NTH ({_name(level)}) error max_t |f - f_true|/sqrt(n)", fontsize=9)
    _finish_width_axes(plt, fig, (ax1, ax2), f"kernel regime vs feature learning (TP4): {cfg['activation']}, depth "
                       f"{cfg['depth']}, t in [0, {cfg['t_max']:g}], {sw['seeds'].size} seeds; geometric means", out)
    return fits


def correlation_vs_width(paths: list[str], out: str, *, variance: bool = False) -> list[list[dict]]:
    """|C| (or its variance, ``variance=True``) against width, one panel per correlation function and one series
    per correlation file (activation and initialization), with one standard error as bars, hollow markers where
    the mean is within 3 standard errors of zero, and DG's predicted slope s_C (2 s_C) dashed through the
    middle width of every series (DG Conjecture 1 and Lemma 6; docs/math.md sections 8 and 8.1). The files must hold the same functions. Returns each
    file's summaries (:func:`nth.engine.summarize_corr`)."""
    from .engine import summarize_corr
    from .io import load_corr

    out = check_figure_path(out)
    plt = _plt()
    loaded = [load_corr(p) for p in paths]
    summaries = [summarize_corr(r["config"], r["values"]) for r in loaded]
    funcs = [s["function"] for s in summaries[0]]
    for p, s in zip(paths, summaries):
        if [x["function"] for x in s] != funcs:
            raise ConfigError(f"{p!r} holds other correlation functions than {paths[0]!r}; plot them separately")
    cols = min(3, len(funcs))
    rows = -(-len(funcs) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.7 * rows), squeeze=False)
    for j, func in enumerate(funcs):
        ax = axes[j // cols][j % cols]
        s_pred = summaries[0][j]["variance_exponent" if variance else "s_C"]
        for r, s in zip(loaded, summaries):
            st = s[j]
            w = np.asarray(st["widths"], float)
            if variance:
                y, err, fit, ci = np.asarray(st["variance"]), None, st["slope_variance"], st["slope_variance_ci"]
                ok = np.ones_like(w, bool)
            else:
                y, err = np.abs(np.asarray(st["mean"])), np.asarray(st["stderr"])
                fit, ci = st["slope_mean"], st["slope_mean_ci"]
                ok = np.asarray([z is None or z > st["resolve"] for z in (st["z"] or [0.0] * len(w))])
            lab = f"{r['config'].activation}, {r['config'].init}: " + (
                "not resolved" if fit is None else f"{fit:.2f}" + ("" if None in ci else f" [{ci[0]:.2f}, {ci[1]:.2f}]"))
            if not np.any(y > 0):  # identically zero: nothing to draw on log axes
                ax.plot([], [], " ", label=lab + " (identically 0)")
                continue
            line = ax.errorbar(w, y, yerr=err, fmt="-", lw=1, label=lab)
            c = line[0].get_color()
            ax.plot(w[ok], y[ok], "o", color=c, ms=4)
            ax.plot(w[~ok], y[~ok], "o", mfc="none", color=c, ms=4)
            mid = len(w) // 2
            if y[mid] > 0:  # the predicted slope, dashed through this series' middle width
                ax.plot(w, y[mid] * (w / w[mid]) ** s_pred, "--", color=c, lw=1, alpha=0.6)
        ax.plot([], [], "k--", lw=1, alpha=0.6,
                label=f"predicted {'2 s_C' if variance else 's_C'} = {s_pred:g} (dashed, per series)")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(func, fontsize=7)
        ax.set_xlabel("width m")
        ax.set_ylabel("variance over draws" if variance else "|mean| over draws (+- 1 s.e.)")
        ax.legend(fontsize=6)
        ax.grid(True, which="both", alpha=0.3)
    for j in range(len(funcs), rows * cols):
        axes[j // cols][j % cols].axis("off")
    cfg = loaded[0]["config"]
    fig.suptitle(f"{'variances' if variance else 'correlation functions'} vs width: depth {cfg.depth}, inputs of "
                 f"dimension {cfg.in_dim}, {min(r['draws'] for r in loaded)}+ draws per width; dashed: Dyer & "
                 "Gur-Ari Conjecture 1", fontsize=9)
    fig.tight_layout()
    _save(plt, fig, out)
    return summaries


def _complete_widths(widths, values):
    """The widths at which every seed has a finite value, and those rows (a mean over draws needs all of them)."""
    V = np.asarray(values, dtype=np.float64)
    keep = np.isfinite(V).all(axis=1)
    return np.asarray(widths)[keep], V[keep]


def _separated_gaps(sw: dict) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """{i: (widths, V)}: for every top index i (1-based) that is separated (:func:`nth.kernel.separated_top`) at
    initialization in at least half of the seeds at two widths or more, those widths (where every seed has
    finished) and lambda_i(H) - lambda_i(G) at initialization there, (W, seeds)."""
    from .kernel import separated_top

    seeds = [int(s) for s in sw["seeds"]]
    per_width = {}
    for w in sw["widths"]:
        runs = [sw["runs"].get((int(w), s)) for s in seeds]
        if any(r is None or "spectrum_hessian_top" not in r for r in runs):
            continue
        top = np.array([r["spectrum_hessian_top"][0] for r in runs])
        gn = np.array([r["spectrum_gn_eigenvalues"][0][: top.shape[1]] for r in runs])
        sep = np.array([separated_top(t, g) for t, g in zip(top, gn)])
        per_width[int(w)] = (top[:, : gn.shape[1]] - gn, sep)
    out = {}
    for i in range(1, max((g.shape[1] for g, _ in per_width.values()), default=0) + 1):
        ws = [w for w, (g, sep) in per_width.items() if 2 * np.sum(sep >= i) >= sep.size]
        if len(ws) >= 2:
            out[i] = (np.asarray(ws), np.array([per_width[w][0][:, i - 1] for w in ws]))
    return out


def spectrum(path: str, out: str) -> dict[str, dict]:
    """DG Figures 9-10 from a sweep run with ``spectra`` (docs/math.md section 11), four panels: (a) for each top
    index i separated at initialization (:func:`nth.kernel.separated_top`, in at least half of the seeds at the
    widths drawn), the mean over seeds of lambda_i(H) - lambda_i(G) against width, with its standard error and
    fitted exponent (:func:`nth.compare.moment_fits`: fitted only where the mean is resolved from zero); (b) the
    RMS eigenvalue of B at initialization and at the last saved time (geometric mean over seeds,
    :func:`nth.compare.slope_with_ci`); every panel but (d) over the widths where every seed has finished;
    (c) the relative moment differences (Tr H^j - Tr G^j) / Tr G^j, j = 1..4,
    at initialization (solid) and at the last time (dashed); (d) the top eigenvalues of H and G of seed 0 at the
    largest width (DG Fig. 9b: k near-equal copies with k outputs). The predicted exponents
    (:data:`nth.kernel.SPECTRUM_LAWS`) are dashed. Returns {quantity: fit}: moment_fits' dict for the gap of
    index i (``top_gap_<i>``, with the ``widths`` it was fitted over) and the moments, {slope, ci} for rms_B."""
    from .kernel import SPECTRUM_LAWS

    out = check_figure_path(out)
    sw = load_sweep(path)
    sc = sw["scalars"]
    if "rms_B_init" not in sc:
        raise ConfigError(f"{path!r} holds no spectra: run the sweep with --spectra (finished runs: {len(sw['runs'])})")
    from .compare import moment_fits

    plt = _plt()
    base = sw["config"]["base"]  # the laws are the MLP's (a sweep made in Python may leave depth at its default)
    depth = (base.get("depth") or DEFAULT_DEPTH) if base.get("arch", "mlp") == "mlp" and not base.get("model") else None
    laws = {law.name: law for law in SPECTRUM_LAWS}
    fig, axes = plt.subplots(2, 2, figsize=(11, 8.5))
    fits: dict[str, dict] = {}

    def reference(ax, law, w, anchor):
        s = law.exponent(depth)
        for slope, ls, tag in ((s, "--", "predicted"), (law.measured_only if depth == 1 else None, ":", "DG measured")):
            if slope:
                ax.plot(w, anchor * (w / w[0]) ** slope, "k" + ls, lw=1, alpha=0.6, label=f"{tag} slope {slope:g}")

    ax = axes[0, 0]
    anchored = False
    for i, (w, V) in _separated_gaps(sw).items():
        if V.shape[1] < 2:
            continue
        fit = fits[f"top_gap_{i}"] = moment_fits(w, V) | {"widths": [int(x) for x in w]}
        mean, se = np.abs(np.asarray(fit["mean"])), np.asarray(fit["stderr"])
        s = fit["slope_mean"]
        lab = f"slope {s:.2f} [{fit['slope_mean_ci'][0]:.2f}, {fit['slope_mean_ci'][1]:.2f}]" if s is not None \
            else "mean not resolved from 0"
        ax.errorbar(w, mean, yerr=se, fmt="o-", capsize=3, color=f"C{(i - 1) % 10}", label=f"i = {i}: {lab}")
        if s is not None and not anchored:
            reference(ax, laws["top_gap"], w.astype(float), mean[0])
            anchored = True
    ax.set_title(f"(a) separated top eigenvalues at initialization, mean over {len(sw['seeds'])} seeds", fontsize=9)
    ax.set_ylabel("|E (lambda_i(H) - lambda_i(G))|")

    ax = axes[0, 1]
    for tag, style in (("init", "o-"), ("final", "s--")):
        E = np.asarray(sc[f"rms_B_{tag}"], dtype=np.float64)
        # the widths where every seed has finished, as for the other panels, and B is not 0 (a model linear in theta)
        ok = np.isfinite(E).all(axis=1) & (E > 0).any(axis=1)
        if ok.sum() < 2:
            continue
        g = np.array([geometric_mean(r[np.isfinite(r) & (r > 0)]) for r in E[ok]])
        s, lo, hi = slope_with_ci(sw["widths"][ok], E[ok])
        fits[f"rms_B_{tag}"] = {"slope": s, "ci": [lo, hi]}
        ax.plot(sw["widths"][ok], g, style, label=f"{'initialization' if tag == 'init' else 'last time'}: slope "
                f"{s:.2f} [{lo:.2f}, {hi:.2f}]")
        if tag == "init":
            reference(ax, laws["rms_B"], np.asarray(sw["widths"][ok], dtype=float), g[0])
    ax.set_title("(b) RMS eigenvalue of B (DG Fig. 10b)", fontsize=9)
    ax.set_ylabel("sqrt(Tr(B^2) / P) (geo. mean over seeds)")

    ax = axes[1, 0]
    for j in range(1, 5):
        for tag, ls in (("init", "-"), ("final", "--")):
            w, V = _complete_widths(sw["widths"], sc[f"moment_reldiff_{j}_{tag}"])
            if w.size < 2 or V.shape[1] < 2:
                continue
            fit = fits[f"moment_reldiff_{j}_{tag}"] = moment_fits(w, V)
            s = fit["slope_mean"]
            ax.plot(w, np.abs(fit["mean"]), "o" + ls, color=f"C{j - 1}", ms=3,
                    label=f"j = {j}, {'init' if tag == 'init' else 'last'}"
                    + (f": slope {s:.2f}" if s is not None else ": not resolved"))
    ax.set_title("(c) relative moment differences (DG Fig. 10a)", fontsize=9)
    ax.set_ylabel("|(Tr H^j - Tr G^j) / Tr G^j| (mean over seeds)")

    for a in (axes[0, 0], axes[0, 1], axes[1, 0]):
        a.set_xscale("log", base=2)
        a.set_yscale("log")
        a.set_xlabel("width m")
        if a.get_legend_handles_labels()[0]:  # a panel may have nothing to fit (one seed, one width)
            a.legend(fontsize=7)
        a.grid(True, which="both", alpha=0.3)

    ax = axes[1, 1]
    m = int(np.max([w for (w, s) in sw["runs"] if s == 0] or [0]))
    if m:
        run = sw["runs"][(m, 0)]
        top, gn = run["spectrum_hessian_top"][0], run["spectrum_gn_eigenvalues"][0]
        ax.plot(np.arange(1, top.size + 1), top, "o", label="H (Lanczos)")
        ax.plot(np.arange(1, min(gn.size, 2 * top.size) + 1), gn[: 2 * top.size], "x", label="G (exact)")
        ax.set_title(f"(d) top eigenvalues at initialization, width {m}, seed 0 (DG Fig. 9b)", fontsize=9)
        ax.set_xlabel("index i")
        ax.set_ylabel("eigenvalue")
        ax.legend(fontsize=8)
        ax.grid(True, alpha=0.3)
    fig.suptitle(textwrap.fill(f"the loss Hessian and the NTK: {describe(sw)}", 110), fontsize=9)
    fig.tight_layout()
    _save(plt, fig, out)
    return fits
