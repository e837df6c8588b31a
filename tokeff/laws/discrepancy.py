"""What the law misses beyond the fitted range: a discrepancy that grows with the distance from it.

A fitted form is not the truth (Kaplan vs Chinchilla vs Farseer surfaces differ), and runs sharing a
model size or a budget share their residuals. Inside the fitted range neither shows much: the fit
bends to the data. Beyond it the error of the form grows, and the posterior of a misspecified form
does not know. So a new observation at inputs x gets, on the likelihood's scale (log loss),

    log y_new = log mean(x) + noise + tau * d(x)^2 * z,     z ~ Normal(0, 1),

with d(x) the log-distance of x beyond the fitted range: the largest excess, in natural-log units,
of any input or of the product of the inputs (compute, for N and D) over its range in the fit data
(0 inside the range). The predictive variance is sigma^2 + tau^2 d(x)^4. Why d^2 (`GROWTH`): a fit
matches the truth's level and slope at the edge of its range, so what it misses beyond is
curvature, a second-order term.

tau is learned from the fit data by internal leave-future-out at several origins
(`INNER_ORIGINS`): order the runs by the product of their inputs, refit (MAP/Laplace: one compiled
program for all origins, padded to the whole table's size: the one the fit's own MAP or NUTS starts
compiled, `tokeff.laws.laplace`) on the lower 62.5% and 75% (moved between runs of
different compute, `cut_between_ties`, so an isoFLOP budget is never split), predict every run above,
with d measured from *that inner fit's own range*, and ask how much wider than the inner fit's own
predictive spread the misses were. The origins see the same top runs again, so each counts as 1/K
of the evidence. tau's posterior on a grid, under a weakly informative half-normal prior
(`TAU_PRIOR`: 0.02 means 2% at one e-fold beyond the range, 8% at two), is drawn once per posterior
draw. Too few runs for the internal split: tau keeps its prior (wide, honest). Loss targets only: an
accuracy's binomial noise on a small eval set already dominates pilot-scale intervals.
"""

from __future__ import annotations

from functools import cache, partial

import numpy as np

from tokeff.laws.data import FitData, cut_between_ties
from tokeff.laws.priors import Prior

MODES = ("extrapolation", "none")
TAU_PRIOR = Prior("halfnormal", (0.02,))
# Inner leave-future-out origins: refit on these fractions of the runs (ordered by the product of
# the inputs) and predict every run above, with the distance from that inner fit's own range.
INNER_ORIGINS = (0.625, 0.75)
# The discrepancy's sd grows as d^GROWTH: a fit matches the truth's level and slope at the edge of its
# range, so what it misses beyond is the curvature, a second-order term (measured: tau fitted with a
# linear growth at the inner origins' distances understated the one at the outer distances by
# 1.5-1.7x on Kaplan- and Farseer-like truths, i.e. growth ~ d^2).
GROWTH = 2.0
INNER_DRAWS = 1000
PRODUCT = "*"  # key of the product of all inputs in a range dict
_GRID = np.linspace(0.0, 0.5, 1001)


def log_ranges(inputs: dict[str, np.ndarray]) -> dict[str, list[float]]:
    """[min, max] of log x per input, and of the log product of all inputs (key `PRODUCT`)."""
    logs = {k: np.log(np.asarray(v, np.float64)) for k, v in inputs.items()}
    logs[PRODUCT] = sum(logs.values())
    return {k: [float(v.min()), float(v.max())] for k, v in logs.items()}


def distance(ranges: dict[str, list[float]], inputs: dict[str, np.ndarray]) -> np.ndarray:
    """d(x): the largest log-excess of any input, or of the inputs' product, beyond `ranges`."""
    logs = {k: np.log(np.asarray(inputs[k], np.float64)) for k in ranges if k != PRODUCT}
    logs[PRODUCT] = sum(logs.values())
    excess = [np.maximum(0.0, np.maximum(logs[k] - hi, lo - logs[k])) for k, (lo, hi) in ranges.items()]
    return np.max(np.stack(excess), axis=0)


def growth(ranges: dict[str, list[float]], inputs: dict[str, np.ndarray]) -> np.ndarray:
    """d(x)^GROWTH: what tau multiplies to give the discrepancy's sd at x."""
    return distance(ranges, inputs) ** GROWTH


def _tau_log_likelihood(residual, spread_var, dist, likelihood, failures=None) -> np.ndarray:
    """log p(internal residuals | tau) on `_GRID`: each residual scored by the fit's own observation
    model (`observation_dist`) at scale sqrt(spread_var + tau^2 d^2); with `failures` (the inner
    fit's share and scale) a run may have failed, so failed runs above the fit do not pass for a
    discrepancy. float64: the grid's log-likelihoods differ by less than float32 resolves."""
    import jax

    from tokeff.laws.model import pad_edge, padded_size

    # One compiled program per likelihood and padded count of residuals (`padded_size`); the padding
    # is masked out of the sum, so it adds exactly zero.
    n = len(residual)
    rows = padded_size(n)
    mask = np.arange(rows) < n
    pad = lambda v: pad_edge(np.asarray(v, np.float64), rows, 0)  # noqa: E731
    with jax.enable_x64(True):
        ll = _tau_grid_program()(likelihood, pad(residual), pad(spread_var), pad(dist), mask,
                                 None if failures is None else tuple(np.float64(v) for v in failures))
        return np.asarray(ll, np.float64)


@cache
def _tau_grid_program():
    """(likelihood, residual, spread_var, dist, mask, failures) -> [len(_GRID)]: the sum over the
    rows where `mask` holds of each residual's log-likelihood at each tau of the grid (see
    `_tau_log_likelihood`); jitted on first use, so that importing this module compiles nothing."""
    import jax
    import jax.numpy as jnp

    from tokeff.laws.model import observation_dist

    @partial(jax.jit, static_argnums=0)
    def program(likelihood, residual, spread_var, dist, mask, failures):
        scale = jnp.sqrt(spread_var[None, :] + (jnp.asarray(_GRID)[:, None] * dist[None, :]) ** 2)
        ll = observation_dist("loss", likelihood, 0.0, sigma=scale, failures=failures).log_prob(residual[None, :])
        return jnp.where(mask[None, :], ll, 0.0).sum(axis=1)

    return program


def _inner_origin(form, likelihood, inner: FitData, held: FitData, *, pad_to: int, seed: int):
    """Refit on `inner` (MAP/Laplace) and predict `held`: residuals, predictive variances, distances."""
    from tokeff.laws.laplace import run_laplace
    from tokeff.laws.model import FAILURE_SITES, predictive

    samples, _, opt = run_laplace(form, likelihood, inner, draws=INNER_DRAWS, seed=seed, pad_to=pad_to)
    samples = {k: v.reshape(-1) for k, v in samples.items()}
    log_pred = np.log(predictive(form, likelihood, samples, held.inputs, "observed", seed=seed))
    ok = np.all(np.isfinite(log_pred), axis=0)
    centre = np.median(log_pred, axis=0)
    q25, q75 = np.quantile(log_pred, [0.25, 0.75], axis=0)
    spread_var = np.maximum(((q75 - q25) / 1.349) ** 2, 1e-12)  # robust: Student-t draws have heavy tails
    dist = growth(log_ranges(inner.inputs), held.inputs)
    residual = np.log(held.y) - centre
    failures = tuple(float(np.median(samples[k])) for k in FAILURE_SITES) if likelihood.kind == "failures" else None
    record = {"n_fit": inner.n_points, "n_held_out": held.n_points, "converged": bool(opt["converged"]),
              "median_distance": float(np.median(dist[ok])) if ok.any() else None,
              "median_abs_residual": float(np.median(np.abs(residual[ok]))) if ok.any() else None}
    return residual[ok], spread_var[ok], dist[ok], failures, record


def learn_tau(form, likelihood, data: FitData, *, n_draws: int, seed: int = 0,
              pad_to: int | None = None) -> tuple[np.ndarray, dict]:
    """Draws of tau (see the module doc) and a record of how they were learned, for the summary.
    The inner fits are padded to `bucket(n)`, or to `pad_to` when larger (the fit's own padding)."""
    from tokeff.laws.laplace import bucket

    rng = np.random.default_rng(seed)
    log_product = sum(np.log(v) for v in data.inputs.values())
    order = np.argsort(log_product, kind="stable")
    n = data.n_points
    # Origins fall between runs of different compute, never inside an isoFLOP budget (row order).
    places = {cut_between_ties(log_product[order], int(round(n * f))) for f in INNER_ORIGINS}
    cuts = sorted(places - {None})
    cuts = [k for k in cuts if k >= len(form.params) + 2 and n - k >= 3]
    log_post = -0.5 * (_GRID / TAU_PRIOR.args[0]) ** 2
    info = {"prior": str(TAU_PRIOR), "origins": []}
    for k in cuts:
        residual, spread_var, dist, failures, record = _inner_origin(
            form, likelihood, data.take(order[:k]), data.take(order[k:]), pad_to=max(bucket(n), pad_to or 0),
            seed=seed)
        info["origins"].append(record)
        if len(residual) >= 3:
            # The origins see the same top runs again: each counts as 1/K of the evidence.
            log_post = log_post + _tau_log_likelihood(residual, spread_var, dist, likelihood, failures) / len(cuts)
    if not cuts:
        info["note"] = "too few runs for the internal split: tau keeps its prior"
    return _draw_tau(log_post, rng, n_draws, info)


def _draw_tau(log_post: np.ndarray, rng: np.random.Generator, n_draws: int, info: dict) -> tuple[np.ndarray, dict]:
    """Draws of tau from its posterior on the grid (inverse CDF), and their summary added to `info`."""
    weights = np.exp(log_post - log_post.max())
    cdf = np.cumsum(weights) / weights.sum()
    draws = np.interp(rng.uniform(size=n_draws), cdf, _GRID)
    info |= {"median": float(np.median(draws)), "q05": float(np.quantile(draws, 0.05)),
             "q95": float(np.quantile(draws, 0.95))}
    return draws, info


def learn_tau_grouped(form, likelihood, data: FitData, group_index: np.ndarray, *, n_draws: int,
                      seed: int = 0) -> tuple[np.ndarray, dict]:
    """tau for a grouped fit: the internal leave-future-out of `learn_tau` run within each group
    (each group's runs ordered by the product of its inputs, refitted alone by MAP/Laplace at the
    inner origins, one compiled program for all groups), every group's residuals scoring one shared
    tau. The inner fits are independent per group, so they miss by more than the pooled fit would:
    tau errs wide. Groups too short for the inner split add nothing."""
    from tokeff.laws.laplace import bucket

    rng = np.random.default_rng(seed)
    labels = np.unique(group_index)
    pad_to = bucket(max(int((group_index == g).sum()) for g in labels))
    log_post = -0.5 * (_GRID / TAU_PRIOR.args[0]) ** 2
    info = {"prior": str(TAU_PRIOR), "origins": [], "groups_used": 0}
    for g in labels:
        sub = data.take(np.flatnonzero(group_index == g))
        log_product = sum(np.log(v) for v in sub.inputs.values())
        order = np.argsort(log_product, kind="stable")
        n = sub.n_points
        places = {cut_between_ties(log_product[order], int(round(n * f))) for f in INNER_ORIGINS}
        cuts = [k for k in sorted(places - {None}) if k >= len(form.params) + 2 and n - k >= 2]
        used = False
        for k in cuts:
            residual, spread_var, dist, failures, record = _inner_origin(
                form, likelihood, sub.take(order[:k]), sub.take(order[k:]), pad_to=pad_to, seed=seed)
            info["origins"].append({"group": int(g), **record})
            if len(residual) >= 1:
                log_post = log_post + _tau_log_likelihood(residual, spread_var, dist, likelihood, failures) / len(cuts)
                used = True
        info["groups_used"] += int(used)
    if not info["groups_used"]:
        info["note"] = "every group too short for the internal split: tau keeps its prior"
    return _draw_tau(log_post, rng, n_draws, info)
