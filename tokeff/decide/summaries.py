"""Posterior summaries of a decision quantity: weighted quantiles and intervals.

Draws may carry importance weights (a reweighted posterior in tokeff.decide.proposals), so every
summary takes optional weights; without them all draws count equally.
"""

from __future__ import annotations

import numpy as np

QUANTILES = {"q05": 0.05, "q10": 0.10, "median": 0.50, "q90": 0.90, "q95": 0.95}


def normalized_weights(n_draws: int, weights_P: np.ndarray | None) -> np.ndarray:
    if weights_P is None:
        return np.full(n_draws, 1.0 / n_draws)
    w = np.asarray(weights_P, dtype=np.float64)
    return w / w.sum()


def effective_sample_size(weights_P: np.ndarray) -> float:
    """Kish's ESS: the number of equally weighted draws worth as much as these weighted ones."""
    w = weights_P / weights_P.sum()
    return float(1.0 / np.sum(w**2))


def weighted_quantiles(x_P: np.ndarray, qs, weights_P: np.ndarray | None = None) -> np.ndarray:
    x = np.asarray(x_P, dtype=np.float64)
    if weights_P is None:
        return np.quantile(x, qs)
    order = np.argsort(x)
    cdf = np.cumsum(weights_P[order])
    cdf = (cdf - 0.5 * weights_P[order]) / cdf[-1]
    return np.interp(qs, cdf, x[order])


def interval(x_P: np.ndarray, weights_P: np.ndarray | None = None) -> dict[str, float]:
    """mean, median, q05, q10, q90, q95 of a posterior quantity."""
    w = normalized_weights(len(x_P), weights_P)
    qs = weighted_quantiles(x_P, list(QUANTILES.values()), None if weights_P is None else w)
    out = {"mean": float(np.sum(w * x_P))}
    out.update({k: float(v) for k, v in zip(QUANTILES, qs)})
    return out
