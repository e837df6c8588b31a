"""Proper scores of a predictive sample against what was observed.

Coverage alone rewards width: a 90% interval of +-10% covers almost anything and decides nothing.
A proper score (Gneiting & Raftery 2007) is minimised in expectation only by the true predictive
distribution, so it trades calibration against sharpness in one number:

- CRPS in its energy form, E|X - y| - E|X - X'| / 2 (X, X' independent predictive draws), divided
  by |y| so tables at different loss levels compare (the relative CRPS, %). It has the units of the
  target: a point forecast's CRPS is its absolute error.
- the interval score of the central (1 - alpha) interval [l, u]:
  (u - l) + 2/alpha (l - y) 1{y < l} + 2/alpha (y - u) 1{y > u}, also relative to |y| (%).
- the log predictive density of y: a Gaussian kernel density estimate over the draws (Silverman's
  bandwidth, 0.9 min(sd, IQR / 1.34) n^-1/5), on log y for losses (where the likelihood lives;
  `log_scale`), so it needs only draws and scores any predictive alike (one form, a mixture of
  forms, the classic bootstrap). Higher is better; the others, lower.
- sharpness: the median width of the central 90% interval, relative to the median prediction (%).

Each score takes draws [S, n] (S draws for each of n observations) and y [n] and returns [n];
`pointwise` gives them all, `summarise` the means a backtest reports.
"""

from __future__ import annotations

import numpy as np

LEVELS = (0.5, 0.8, 0.9)


def crps(draws: np.ndarray, y: np.ndarray) -> np.ndarray:
    """[n] CRPS of each column of `draws` at `y` (energy form; the target's units). With sorted
    draws x_(1) <= ... <= x_(S), E|X - X'| = 2 / S^2 sum_i (2i - S - 1) x_(i): O(S log S), not S^2."""
    x = np.sort(np.asarray(draws, np.float64), axis=0)
    y = np.asarray(y, np.float64)
    s = x.shape[0]
    weights = (2.0 * np.arange(1, s + 1) - s - 1)[:, None]
    spread = 2.0 * np.sum(weights * x, axis=0) / s**2
    return np.mean(np.abs(x - y[None, :]), axis=0) - 0.5 * spread


def relative_crps(draws: np.ndarray, y: np.ndarray) -> np.ndarray:
    """[n] CRPS as a percentage of |y|."""
    y = np.asarray(y, np.float64)
    return crps(draws, y) / np.abs(y) * 100


def interval_bounds(draws: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """([n], [n]) the central `level` interval of each column of `draws`."""
    tail = (1.0 - level) / 2
    return np.quantile(draws, tail, axis=0), np.quantile(draws, 1.0 - tail, axis=0)


def interval_score(lo: np.ndarray, hi: np.ndarray, y: np.ndarray, level: float) -> np.ndarray:
    """[n] Gneiting & Raftery's interval score of the central `level` interval [lo, hi] at y."""
    alpha = 1.0 - level
    lo, hi, y = (np.asarray(v, np.float64) for v in (lo, hi, y))
    return (hi - lo) + 2.0 / alpha * np.maximum(lo - y, 0.0) + 2.0 / alpha * np.maximum(y - hi, 0.0)


def relative_interval_score(draws: np.ndarray, y: np.ndarray, level: float) -> np.ndarray:
    """[n] interval score of the draws' central `level` interval, as a percentage of |y|."""
    lo, hi = interval_bounds(draws, level)
    return interval_score(lo, hi, y, level) / np.abs(np.asarray(y, np.float64)) * 100


def log_density(draws: np.ndarray, y: np.ndarray, *, log_scale: bool = True) -> np.ndarray:
    """[n] log predictive density of y from the draws: a Gaussian kernel estimate per column, of
    log y when `log_scale` (the density of log loss: Jacobian-free, so tables compare), else of y."""
    x = np.asarray(draws, np.float64)
    y = np.asarray(y, np.float64)
    if log_scale:
        x, y = np.log(x), np.log(y)
    s = x.shape[0]
    sd = x.std(axis=0, ddof=1)
    iqr = np.subtract(*np.quantile(x, [0.75, 0.25], axis=0)) / 1.34
    spread = np.where(iqr > 0, np.minimum(sd, iqr), sd)
    h = 0.9 * spread * s ** -0.2
    h = np.maximum(h, 1e-12 * np.maximum(np.abs(np.median(x, 0)), 1.0))  # a point mass: a narrow kernel
    z = (y[None, :] - x) / h[None, :]
    log_k = -0.5 * z**2 - 0.5 * np.log(2 * np.pi) - np.log(h)[None, :]
    top = log_k.max(axis=0)
    return top + np.log(np.mean(np.exp(log_k - top[None, :]), axis=0))


def pointwise(draws: np.ndarray, y: np.ndarray, *, log_scale: bool = True) -> dict[str, np.ndarray]:
    """Every score of each observation ([n] arrays): `crps_rel_pct`, `interval_score_rel_pct_<level>`,
    `log_density`, `width_90_pct` (the 90% width, % of the median); NaN where a column of draws
    is not all finite (such a prediction scores nothing)."""
    draws = np.asarray(draws, np.float64)
    y = np.asarray(y, np.float64)
    ok = np.isfinite(draws).all(axis=0) & np.isfinite(y)
    x = np.where(ok[None, :], draws, 1.0)
    lo, hi = interval_bounds(x, 0.9)
    out = {
        "crps_rel_pct": relative_crps(x, y),
        **{f"interval_score_rel_pct_{lv:g}": relative_interval_score(x, y, lv) for lv in LEVELS},
        "log_density": log_density(x, y, log_scale=log_scale),
        "width_90_pct": (hi - lo) / np.abs(np.median(x, axis=0)) * 100,
    }
    return {k: np.where(ok, v, np.nan) for k, v in out.items()}


def summarise(points: dict[str, np.ndarray]) -> dict:
    """The report's scores from `pointwise` arrays (pooled over cuts): means of the scores, the
    median 90% width (sharpness); None when any prediction was not finite."""
    def mean(v):
        v = np.asarray(v, np.float64)
        return float(np.mean(v)) if v.size and np.isfinite(v).all() else None

    width = np.asarray(points["width_90_pct"], np.float64)
    return {
        "crps_rel_pct": mean(points["crps_rel_pct"]),
        "interval_score_rel_pct": {f"{lv:g}": mean(points[f"interval_score_rel_pct_{lv:g}"]) for lv in LEVELS},
        "log_density": mean(points["log_density"]),
        "sharpness_90_pct": float(np.median(width)) if width.size and np.isfinite(width).all() else None,
    }
