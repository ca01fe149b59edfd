"""Error measures between a prediction and the true gradient flow, and log-log slope fits (docs/math.md section 3)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from jaxtyping import Float

from .errors import ConfigError


def f_error(f_pred: Float[np.ndarray, "T n *k"], f_true: Float[np.ndarray, "T n *k"]) -> Float[np.ndarray, " T"]:
    """||f_pred(t) - f_true(t)||_2 / sqrt(n) at every saved time: the RMS over the n inputs of the output error
    (with k outputs, of its Euclidean norm over them)."""
    f_pred, f_true = np.asarray(f_pred), np.asarray(f_true)
    d = f_pred - f_true
    if d.ndim > 2:  # (T, n, k): the norm runs over every sample
        return np.linalg.norm(d.reshape(d.shape[0], -1), axis=-1) / np.sqrt(d.shape[1])
    return np.linalg.norm(d, axis=-1) / np.sqrt(f_true.shape[-1])


def k2_error(K_pred: Float[np.ndarray, "T n n"], K_true: Float[np.ndarray, "T n n"]) -> Float[np.ndarray, " T"]:
    """max_ab |K^(2)_pred(t) - K^(2)_true(t)| at every saved time."""
    d = np.abs(np.asarray(K_pred) - np.asarray(K_true))
    return d.reshape(d.shape[0], -1).max(axis=1)


def geometric_mean(x: Float[np.ndarray, "..."], axis: int | None = None) -> Float[np.ndarray, "..."]:
    """Geometric mean: the right average of errors that vary by decades across seeds (docs/math.md section 3)."""
    return np.exp(np.mean(np.log(np.asarray(x, dtype=np.float64)), axis=axis))


def loglog_fit(widths: Float[np.ndarray, " W"], values: Float[np.ndarray, " W"]) -> tuple[float, float, float]:
    """The law value = c m^s fitted by least squares in log-log: (s, log c, standard error of s; NaN with two
    widths). Fewer than two distinct widths raise ConfigError (docs/math.md section 3)."""
    x, y = np.log(np.asarray(widths, dtype=float)), np.log(np.asarray(values, dtype=float))
    if np.unique(x).size < 2:
        raise ConfigError(f"a slope needs at least two distinct widths; got {np.asarray(widths).tolist()}")
    A = np.vstack([x, np.ones_like(x)]).T
    coef = np.linalg.lstsq(A, y, rcond=None)[0]
    dof = x.size - 2
    se = np.sqrt(float(np.sum((y - A @ coef) ** 2)) / dof / np.sum((x - x.mean()) ** 2)) if dof > 0 else np.nan
    return float(coef[0]), float(coef[1]), float(se)


def fit_slope(widths: Float[np.ndarray, " W"], errors: Float[np.ndarray, " W"]) -> tuple[float, float]:
    """Least-squares slope of log(error) against log(width), and its standard error (:func:`loglog_fit`; the
    exponents of docs/math.md section 3)."""
    slope, _, se = loglog_fit(widths, errors)
    return slope, se


def _seed_rows(widths, errors) -> tuple[np.ndarray, list[np.ndarray]]:
    """The widths that have finite positive errors (a log-log fit needs them), and those errors per width:
    NaN entries (missing runs) and non-positive errors are left out, and a width left with none is dropped."""
    E = np.asarray(errors, dtype=np.float64)
    widths = np.asarray(widths, dtype=np.float64)
    if E.ndim != 2 or E.shape[0] != widths.size:
        raise ConfigError(f"errors of shape {E.shape} must be (widths, seeds) with {widths.size} widths")
    usable = [E[i][np.isfinite(E[i]) & (E[i] > 0)] for i in range(E.shape[0])]
    keep = [i for i, r in enumerate(usable) if r.size]
    return widths[keep], [usable[i] for i in keep]


def _bootstrap_geomeans(rows: list[np.ndarray], resamples: int, seed: int) -> Iterator[list[float]]:
    """Geometric means per width of the seeds resampled with replacement, independently at every width."""
    rng = np.random.default_rng(seed)
    for _ in range(resamples):
        yield [geometric_mean(rng.choice(r, size=r.size)) for r in rows]


def slope_with_ci(widths: Float[np.ndarray, " W"], errors: Float[np.ndarray, "W S"], *, level: float = 0.95,
                  resamples: int = 2000,
                  seed: int = 0) -> tuple[float, float, float]:
    """Slope of the geometric mean over seeds against width (log-log), with a bootstrap confidence interval.

    ``errors`` is (W, S): seeds are resampled with replacement independently at every width, which carries
    the seed-to-seed spread (about two decades, docs/math.md section 3) into the interval. NaN entries (missing
    runs) and non-positive errors (no logarithm) are ignored, and a width left with none is dropped; fewer than
    two widths left raise ConfigError. Returns (slope, low, high).
    """
    widths, rows = _seed_rows(widths, errors)
    slope = fit_slope(widths, [geometric_mean(r) for r in rows])[0]
    boot = np.array([fit_slope(widths, g)[0] for g in _bootstrap_geomeans(rows, resamples, seed)])
    a = (1 - level) / 2
    lo, hi = np.quantile(boot, [a, 1 - a])
    return slope, float(lo), float(hi)


def moment_fits(widths: Float[np.ndarray, " W"], values: Float[np.ndarray, "W N"], *, resolve: float = 3.0,
                level: float = 0.95, resamples: int = 2000, seed: int = 0) -> dict[str, object]:
    """Mean, variance and standard error over draws at each width, and the log-log exponents of |mean| and of the
    variance against width with bootstrap intervals (draws resampled with replacement at every width;
    docs/math.md sections 8 and 8.1).

    The mean is *resolved* when |mean| > ``resolve`` standard errors at every width, with one sign at all of
    them. Its exponent is fitted only then, and with two widths or more (else ``slope_mean`` and its interval
    are None: a mean that may be zero has no logarithm). ``draws_needed`` plans a run from a short one: the
    draws per width at which every mean, if it is what was measured, would lie ``resolve`` standard errors from
    zero with 80% probability, (resolve + 0.84)^2 var / mean^2 at the worst width (the spread relative to the
    mean does not depend on the width where the bound is tight, DG Lemma 6). Where a mean is not resolved it is
    itself uncertain, and so is this number.
    ``zero`` says that every draw at every width is exactly 0 (then nothing is fitted and ``z`` is None).
    Non-finite numbers are returned as None, so that the result is valid JSON.
    """
    V = np.asarray(values, dtype=np.float64)
    widths = np.asarray(widths, dtype=np.float64)
    if V.ndim != 2 or widths.ndim != 1 or V.shape[0] != widths.size:
        raise ConfigError(f"moment_fits: values of shape {V.shape} must be (widths, draws) with {widths.size} widths")
    if V.shape[1] < 2 or not np.all(np.isfinite(V)) or not np.all(widths > 0):
        raise ConfigError("moment_fits: needs at least 2 finite draws per width and positive widths")
    if not 0 < level < 1:
        raise ConfigError(f"moment_fits: level = {level!r} must lie in (0, 1)")
    W, N = V.shape
    mean, var = V.mean(axis=1), V.var(axis=1, ddof=1)
    se = np.sqrt(var / N)
    zero = bool(np.all(V == 0))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(se > 0, np.abs(mean) / np.where(se > 0, se, 1), np.where(mean != 0, np.inf, 0.0))
        needed = np.where(mean != 0, (resolve + 0.84) ** 2 * var / np.where(mean != 0, mean, 1) ** 2, np.inf)
    fits = np.unique(widths).size >= 2
    resolved = bool(np.all(z > resolve)) and not zero and np.unique(np.sign(mean)).size == 1
    rng = np.random.default_rng(seed)
    bmean, bvar = np.empty((resamples, W)), np.empty((resamples, W))
    for i in range(W):
        for lo in range(0, resamples, 250):  # bounded memory: 250 x N indices at a time
            idx = rng.integers(0, N, size=(min(250, resamples - lo), N))
            smp = V[i][idx]
            bmean[lo:lo + len(smp), i], bvar[lo:lo + len(smp), i] = smp.mean(axis=1), smp.var(axis=1, ddof=1)
    a = (1 - level) / 2

    def fit(y, boot):
        slope = fit_slope(widths, y)[0]
        bs = [fit_slope(widths, b)[0] for b in boot if np.all(b > 0)]
        lo, hi = np.quantile(bs, [a, 1 - a]) if bs else (np.nan, np.nan)
        return slope, [_finite(lo), _finite(hi)]

    out: dict[str, object] = {"widths": widths.astype(int).tolist(), "draws": int(N), "resolve": resolve,
                              "mean": mean.tolist(),
                              "variance": var.tolist(), "stderr": se.tolist(),
                              "z": None if zero else [_finite(v) for v in z], "resolved": resolved, "zero": zero,
                              "draws_needed": int(np.ceil(np.max(needed))) if np.all(np.isfinite(needed)) else None}
    out["slope_mean"], out["slope_mean_ci"] = fit(np.abs(mean), np.abs(bmean)) if resolved and fits else (None, None)
    if np.all(var > 0) and fits:
        out["slope_variance"], out["slope_variance_ci"] = fit(var, bvar)
    else:
        out["slope_variance"], out["slope_variance_ci"] = None, None
    return out


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def width_for(widths: Float[np.ndarray, " W"], errors: Float[np.ndarray, "W S"], eps: float, *, level: float = 0.95,
              resamples: int = 2000, seed: int = 0) -> dict[str, object]:
    """The width at which the error law c m^s (docs/math.md section 3, and section 7 for the errors against
    gradient descent; the predicted s: the row's :meth:`~nth.engine.AbstractRow.exponent`),
    fitted to the geometric mean over seeds of ``errors`` (W widths x S seeds) in log-log, falls below ``eps``:
    m* = (eps / c)^(1/s), with a bootstrap interval (seeds resampled at every width, as :func:`slope_with_ci`).
    ``width`` is None when the fitted error does not fall with width (s >= 0: ``never`` is True) or falls so
    slowly that the width is beyond the float range (``never`` False); bootstrap fits with s >= 0 count as
    'never' (infinite width) in the interval."""
    if not (isinstance(eps, (int, float)) and np.isfinite(eps) and eps > 0):
        raise ConfigError(f"eps = {eps!r} must be a positive number")
    widths, rows = _seed_rows(widths, errors)

    def solve(g):
        s, logc, _ = loglog_fit(widths, g)
        log_m = (np.log(eps) - logc) / s if s < 0 else np.inf
        return s, logc, float(np.exp(log_m)) if log_m < np.log(np.finfo(float).max) else np.inf  # no overflow

    s, logc, m = solve([geometric_mean(r) for r in rows])
    boot = np.array([solve(g)[2] for g in _bootstrap_geomeans(rows, resamples, seed)])
    a = (1 - level) / 2
    order = np.sort(boot)  # order statistics: 'never' (inf) sorts last, without arithmetic on it
    lo, hi = order[int(np.floor(a * (resamples - 1)))], order[int(np.ceil((1 - a) * (resamples - 1)))]
    return {"slope": s, "c": float(np.exp(logc)), "eps": float(eps), "width": m if np.isfinite(m) else None,
            "never": bool(s >= 0),
            "width_ci": [float(lo) if np.isfinite(lo) else None, float(hi) if np.isfinite(hi) else None],
            "widths": widths.astype(int).tolist()}
