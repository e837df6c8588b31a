"""The sweep's own compute-optimal model size: per-budget parabolas and a line through their vertices.

An isoFLOP sweep trains several model sizes N at one compute budget C (D = C / 6N). Where its loss
is lowest is a direct measurement of the decision tokeff's frontier predicts, with no law in between.
The isoFLOP literature reads it off with a parabola in log N through the lowest runs of the budget
(Hoffmann et al. 2022, Approach 2; Porian et al. 2024 interpolate the same way) and draws a straight
line through log n*(C) against log C ("Approach 2"), extrapolated to larger budgets.

- `group_budgets`: rows whose compute agrees within a relative tolerance form one budget.
- `budget_optimum`: the parabola in log N through the `POINTS` runs nearest (in log N) the lowest
  one, fitted to log loss; the vertex is the optimum, with a parametric-bootstrap 90% interval.
- `OptimumLine`: the line through the per-budget optima. A Bayesian hierarchical version of
  Approach 2: log n*_b = a + b log C_b + u_b + e_b, u_b ~ N(0, s^2) the between-budget scatter (the
  optimum does not follow an exact power law: schedules, warmup and counting conventions bend it),
  e_b ~ N(0, m_b^2) the parabola's own bootstrap error. Flat priors on (a, b), uniform on s over
  [0, `SCATTER_MAX`]: the posterior of s is exact on a grid, (a, b) given s is Gaussian, so predictive
  draws of n*(C) at a new budget carry the line's uncertainty and the scatter a new budget brings.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tokeff.errors import UserError

# Runs the parabola goes through: the lowest run and its nearest neighbours in log N. Five spans
# about a factor 4-8 of N on the sweeps we know (Porian et al.: steps of ~1.5x), where log loss
# against log N is close to quadratic; wider windows bend the vertex toward the flatter side.
# Measured on Porian et al.'s five settings (57 budgets): mean |log| distance to their own
# interpolated optima 0.09 with 5 points, 0.13 with 7.
POINTS = 5
MIN_RUNS = 4  # fewer runs at a budget give no optimum to read (a parabola needs 3, plus one to check)
BUDGET_RTOL = 0.05  # rows whose compute differs by less than this (relative) are one budget
SCATTER_MAX = 1.0  # upper end of the uniform prior on the between-budget scatter (natural-log units)
LEVEL = 0.9


@dataclasses.dataclass(frozen=True)
class BudgetOptimum:
    """One budget's optimum as the runs show it: log loss = c0 + c1 x + c2 x^2, x = log N."""

    budget: float
    n_opt: float  # exp of the parabola's vertex
    q05: float  # the bootstrap's 90% interval of n_opt
    q95: float
    log_sd: float  # the bootstrap's sd of log n_opt
    loss_opt: float  # the parabola's loss at the vertex
    coef: tuple[float, float, float]
    window: tuple[float, float]  # N range of the runs the parabola went through
    interior: bool  # the vertex lies within the runs' N range (not an extrapolated edge)
    n_runs: int

    def loss_at(self, n) -> np.ndarray:
        """The parabola's loss at model size(s) `n` (an extrapolation outside `window`)."""
        x = np.log(np.asarray(n, np.float64))
        c0, c1, c2 = self.coef
        return np.exp(c0 + c1 * x + c2 * x**2)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def group_budgets(compute: np.ndarray, rtol: float = BUDGET_RTOL) -> np.ndarray:
    """Integer labels (0 = smallest) grouping values within `rtol` of their group's smallest: a
    group never spans more than a factor 1 + rtol, however densely values fill the range."""
    compute = np.asarray(compute, np.float64)
    if not (np.isfinite(compute).all() and (compute > 0).all()):
        raise UserError("--by: budgets must be positive and finite")
    order = np.argsort(compute, kind="stable")
    labels = np.empty(len(compute), np.int64)
    label, start = -1, -np.inf
    for i in order:
        if compute[i] > start * (1 + rtol):
            label, start = label + 1, compute[i]
        labels[i] = label
    return labels


def _window(x: np.ndarray, y: np.ndarray, points: int) -> np.ndarray:
    """Indices (into x sorted) of the `points` runs centred, in log N order, on the lowest loss."""
    k = min(points, len(x))
    i = int(np.argmin(y))
    lo = int(np.clip(i - k // 2, 0, len(x) - k))
    return np.arange(lo, lo + k)


def _vertex(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    coef = np.polynomial.polynomial.polyfit(x, y, 2)
    return coef, (-coef[1] / (2 * coef[2]) if coef[2] > 0 else np.nan)


def budget_optimum(n, loss, *, budget: float | None = None, points: int = POINTS, bootstrap: int = 1000,
                   seed: int = 0) -> BudgetOptimum:
    """The optimum of one isoFLOP budget's runs (sizes `n`, losses `loss`): see the module doc.

    The parametric bootstrap redraws the window's runs around the parabola, at a noise scale drawn
    from its posterior given the residuals, so the interval says how far the vertex moves under the
    runs' own noise; a resample with no minimum (a concave fit) counts at the window's nearer edge."""
    n, loss = np.asarray(n, np.float64), np.asarray(loss, np.float64)
    keep = np.isfinite(n) & np.isfinite(loss) & (n > 0) & (loss > 0)
    n, loss = n[keep], loss[keep]
    if len(n) < MIN_RUNS:
        raise UserError(f"budget {budget or 0:.3g}: {len(n)} usable run(s); an optimum needs at least {MIN_RUNS}")
    order = np.argsort(n)
    x, y = np.log(n[order]), np.log(loss[order])
    w = _window(x, y, points)
    xw, yw = x[w], y[w]
    coef, v = _vertex(xw, yw)
    lo_x, hi_x = xw.min(), xw.max()
    if not np.isfinite(v):  # no minimum: the lowest run is as far as the sweep says
        v = x[int(np.argmin(y))]
    interior = bool(lo_x <= v <= hi_x)
    span = hi_x - lo_x
    v = float(np.clip(v, lo_x - span, hi_x + span))  # a near-flat fit: no further than a window away
    fitted = np.polynomial.polynomial.polyval(xw, coef)
    dof = max(len(xw) - 3, 1)
    rss = max(float(np.sum((yw - fitted) ** 2)), 1e-12)
    rng = np.random.default_rng(seed)
    # Noise scale drawn from its posterior (RSS / chi2_dof): with 2 residual degrees of freedom a
    # plug-in scale would understate the vertex's spread (a t, not a normal, interval).
    sd_B = np.sqrt(rss / rng.chisquare(dof, bootstrap))
    coef_3xB = np.polynomial.polynomial.polyfit(xw, fitted[:, None] + sd_B * rng.standard_normal((len(xw), bootstrap)), 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        boot = np.where(coef_3xB[2] > 0, -coef_3xB[1] / (2 * coef_3xB[2]), lo_x if v - lo_x < hi_x - v else hi_x)
    boot = np.clip(boot, lo_x - span, hi_x + span)
    q05, q95 = np.quantile(boot, [0.05, 0.95])
    c = float(budget) if budget is not None else float("nan")
    return BudgetOptimum(c, float(np.exp(v)), float(np.exp(min(q05, v))), float(np.exp(max(q95, v))),
                         float(np.std(boot)), float(np.exp(np.polynomial.polynomial.polyval(v, coef))),
                         tuple(float(t) for t in coef), (float(np.exp(lo_x)), float(np.exp(hi_x))), interior,
                         int(len(n)))


def sweep_optima(compute: np.ndarray, n: np.ndarray, loss: np.ndarray, *, rtol: float = BUDGET_RTOL,
                 points: int = POINTS, bootstrap: int = 1000, seed: int = 0) -> list[BudgetOptimum]:
    """`budget_optimum` of every budget (grouped by `group_budgets`) with at least `MIN_RUNS` runs,
    in increasing budget order; a budget's compute is the median of its runs'."""
    labels = group_budgets(compute, rtol)
    out = []
    for g in range(labels.max() + 1):
        rows = labels == g
        if rows.sum() >= MIN_RUNS:
            out.append(budget_optimum(n[rows], loss[rows], budget=float(np.median(compute[rows])), points=points,
                                      bootstrap=bootstrap, seed=seed + g))
    return out


@dataclasses.dataclass(frozen=True)
class OptimumLine:
    """log n*(C) = a + b log C through per-budget optima, with the between-budget scatter s (the
    module doc's hierarchical model); `posterior` holds draws of (a, b, s)."""

    a: np.ndarray  # [P]
    b: np.ndarray
    s: np.ndarray
    budgets: tuple[float, ...]
    n_opts: tuple[float, ...]

    @classmethod
    def fit(cls, optima: list[BudgetOptimum], *, draws: int = 4000, seed: int = 0) -> "OptimumLine":
        """The posterior of the line through the interior ones of `optima` (at least 3 budgets): a
        vertex beyond a budget's runs is not a measured optimum."""
        optima = [o for o in optima if o.interior]
        if len(optima) < 3:
            raise UserError(f"isoFLOP line: {len(optima)} budget(s) with an optimum inside their runs; "
                            "a line with scatter needs 3")
        c = np.log([o.budget for o in optima])
        y = np.log([o.n_opt for o in optima])
        m2 = np.array([o.log_sd for o in optima]) ** 2
        x_mean = c.mean()
        X = np.stack([np.ones_like(c), c - x_mean], 1)
        grid = np.linspace(0.0, SCATTER_MAX, 801)[1:]
        log_post = np.empty(len(grid))
        fits = []
        for j, s in enumerate(grid):
            v = s**2 + m2
            prec = X.T @ (X / v[:, None])
            beta = np.linalg.solve(prec, X.T @ (y / v))
            r = y - X @ beta
            # Marginal likelihood of s with (a, b) integrated out under a flat prior.
            log_post[j] = -0.5 * (np.sum(np.log(v)) + np.linalg.slogdet(prec)[1] + np.sum(r**2 / v))
            fits.append((beta, prec))
        p = np.exp(log_post - log_post.max())
        rng = np.random.default_rng(seed)
        pick = rng.choice(len(grid), draws, p=p / p.sum())
        a, b, s = np.empty(draws), np.empty(draws), grid[pick]
        for j in np.unique(pick):
            at = pick == j
            beta, prec = fits[j]
            ab = rng.multivariate_normal(beta, np.linalg.inv(prec), int(at.sum()))
            a[at], b[at] = ab[:, 0] - ab[:, 1] * x_mean, ab[:, 1]
        return cls(a, b, s, tuple(float(o.budget) for o in optima), tuple(float(o.n_opt) for o in optima))

    def n_opt_draws(self, budgets, *, seed: int = 0) -> np.ndarray:
        """[P, U] predictive draws of the optimum at `budgets`: the line's draw plus a new budget's scatter."""
        log_c = np.log(np.asarray(budgets, np.float64))[None, :]
        z = np.random.default_rng(seed).standard_normal((len(self.a), log_c.shape[1]))
        return np.exp(self.a[:, None] + self.b[:, None] * log_c + self.s[:, None] * z)

    def summary(self) -> dict:
        return {"slope": float(np.median(self.b)), "slope_q05": float(np.quantile(self.b, 0.05)),
                "slope_q95": float(np.quantile(self.b, 0.95)), "scatter": float(np.median(self.s)),
                "budgets": list(self.budgets), "n_opts": list(self.n_opts)}


def approach2(optima: list[BudgetOptimum]) -> tuple[float, float]:
    """(intercept, slope) of the least-squares line log n* = a + b log C through the interior optima
    (Hoffmann et al.'s Approach 2, as a practitioner draws it by hand)."""
    optima = [o for o in optima if o.interior]
    c = np.log([o.budget for o in optima])
    y = np.log([o.n_opt for o in optima])
    b, a = np.polyfit(c, y, 1)
    return float(a), float(b)
