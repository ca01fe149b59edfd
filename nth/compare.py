"""Error measures between a prediction and the true gradient flow, and log-log slope fits (docs/math.md section 3)."""

from __future__ import annotations

import numpy as np
from jaxtyping import Float

from .errors import ConfigError


def f_error(f_pred: Float[np.ndarray, "T n"], f_true: Float[np.ndarray, "T n"]) -> Float[np.ndarray, " T"]:
    """||f_pred(t) - f_true(t)||_2 / sqrt(n) at every saved time (the RMS output error)."""
    f_pred, f_true = np.asarray(f_pred), np.asarray(f_true)
    return np.linalg.norm(f_pred - f_true, axis=-1) / np.sqrt(f_true.shape[-1])


def k2_error(K_pred: Float[np.ndarray, "T n n"], K_true: Float[np.ndarray, "T n n"]) -> Float[np.ndarray, " T"]:
    """max_ab |K^(2)_pred(t) - K^(2)_true(t)| at every saved time."""
    d = np.abs(np.asarray(K_pred) - np.asarray(K_true))
    return d.reshape(d.shape[0], -1).max(axis=1)


def geometric_mean(x: Float[np.ndarray, "..."], axis: int | None = None) -> Float[np.ndarray, "..."]:
    """Geometric mean: the right average of errors that vary by decades across seeds (docs/math.md section 3)."""
    return np.exp(np.mean(np.log(np.asarray(x, dtype=np.float64)), axis=axis))


def fit_slope(widths: Float[np.ndarray, " W"], errors: Float[np.ndarray, " W"]) -> tuple[float, float]:
    """Least-squares slope of log(error) against log(width), and its standard error."""
    x, y = np.log(np.asarray(widths, dtype=float)), np.log(np.asarray(errors, dtype=float))
    if np.unique(x).size < 2:
        raise ConfigError(f"a slope needs at least two distinct widths; got {np.asarray(widths).tolist()}")
    A = np.vstack([x, np.ones_like(x)]).T
    coef, res, *_ = np.linalg.lstsq(A, y, rcond=None)
    dof = x.size - 2
    if dof <= 0:
        return float(coef[0]), float("nan")
    sigma2 = float(np.sum((y - A @ coef) ** 2)) / dof
    se = np.sqrt(sigma2 / np.sum((x - x.mean()) ** 2))
    return float(coef[0]), float(se)


def slope_with_ci(widths: Float[np.ndarray, " W"], errors: Float[np.ndarray, "W S"], *, level: float = 0.95,
                  resamples: int = 2000,
                  seed: int = 0) -> tuple[float, float, float]:
    """Slope of the geometric mean over seeds against width (log-log), with a bootstrap confidence interval.

    ``errors`` is (W, S): seeds are resampled with replacement independently at every width, which carries
    the seed-to-seed spread (about two decades, docs/math.md section 3) into the interval. NaN entries (missing
    runs) and non-positive errors (no logarithm) are ignored, and a width left with none is dropped; fewer than
    two widths left raise ConfigError. Returns (slope, low, high).
    """
    E = np.asarray(errors, dtype=np.float64)
    widths = np.asarray(widths, dtype=np.float64)
    # a log-log fit uses the finite positive errors; a width without any is left out
    usable = [E[i][np.isfinite(E[i]) & (E[i] > 0)] for i in range(E.shape[0])]
    keep = [i for i, r in enumerate(usable) if r.size]
    widths, rows = widths[keep], [usable[i] for i in keep]
    slope = fit_slope(widths, [geometric_mean(r) for r in rows])[0]
    rng = np.random.default_rng(seed)
    boot = np.empty(resamples)
    for b in range(resamples):
        boot[b] = fit_slope(widths, [geometric_mean(rng.choice(r, size=r.size)) for r in rows])[0]
    a = (1 - level) / 2
    lo, hi = np.quantile(boot, [a, 1 - a])
    return slope, float(lo), float(hi)
