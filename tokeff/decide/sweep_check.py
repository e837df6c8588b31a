"""The law's frontier, carried to the sweep's own optima: the miss of the decision, per draw.

A law's frontier N_opt(C) is taken from its parameters alone. Where the fitted table is an isoFLOP
sweep, the runs also show the optimum directly at every fitted budget (`tokeff.decide.isoflop`), and
the two disagree where the form cannot follow the sweep (a form's curvature in N is not the
sweep's): measured on Porian et al.'s five settings, the law's N_opt 2x beyond the fit was 3-4x
too small on two of them with 90% intervals that never held the optimum. So the decision carries
the law's own measured miss, as the loss predictions carry the discrepancy term:

    log N_opt(C) = log N_law(C; theta) + r(C),   r(C) = c0 + c1 log C + u,   u ~ N(0, s^2),

with r fitted to the miss at the fitted budgets, r_b = log n*_b - median log N_law(C_b), by the
hierarchical line of `tokeff.decide.isoflop.OptimumLine` (each n*_b's bootstrap error, the
between-budget scatter s, flat priors), so a new budget's N_opt carries the line's uncertainty and
the scatter a new budget brings. A law that follows the sweep gets r ~ 0 and keeps its frontier
(plus the scatter's width); one that does not is moved onto the sweep's line. Each posterior draw
of theta takes one draw of r, so what reweights theta (`tokeff.decide.proposals`) keeps working.
D_opt = C / (6 N_opt).

Without a sweep in the fit data (fewer than 3 budgets whose optimum lies inside their runs) the
frontier is the law's alone, and says so (`source`). A grouped fit (one law per group) has no one
frontier and is refused.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tokeff.decide.frontier import frontier
from tokeff.decide.isoflop import BudgetOptimum, OptimumLine, sweep_optima

SOURCES = ("auto", "law")


@dataclasses.dataclass(frozen=True)
class FrontierDraws:
    """[P, U] draws of N_opt and D_opt at budgets U, and where they came from."""

    n_opt: np.ndarray
    d_opt: np.ndarray
    source: str  # "law" or "law+sweep" (the law's frontier carried to the sweep's optima)
    law_n_opt: np.ndarray  # the law's own frontier, for comparison
    optima: tuple[BudgetOptimum, ...] = ()
    correction: dict | None = None  # the miss line's summary (slope, scatter) when used


def fit_optima(fit, *, seed: int = 0) -> list[BudgetOptimum]:
    """The per-budget optima of a pretraining fit's own data (budgets grouped by C = 6ND)."""
    n, d = (np.asarray(fit.data.inputs[k], np.float64) for k in ("N", "D"))
    return sweep_optima(6.0 * n * d, n, np.asarray(fit.data.y, np.float64), seed=seed)


def fit_frontier(fit, budgets_U, *, source: str = "auto", seed: int = 0) -> FrontierDraws:
    """The frontier `allocate` and `propose` decide on: see the module doc."""
    if source not in SOURCES:
        from tokeff.errors import UserError

        raise UserError(f"--frontier: must be one of {SOURCES}, got '{source}'")
    if getattr(fit, "groups", None) is not None:  # per-group laws have no one frontier to carry
        from tokeff.errors import UserError

        raise UserError(f"FIT_DIR: a grouped fit (per {fit.groups.column}) has one law per group, not one "
                        "frontier: fit without --group to allocate compute")
    budgets_U = np.asarray(budgets_U, np.float64)
    if hasattr(fit, "mix"):  # a stacked fit (`tokeff.laws.stacking`): its members' frontiers, mixed by weight
        parts = {}

        def member(m, k):
            parts[k] = fit_frontier(m, budgets_U, source=source, seed=seed)
            return np.stack([parts[k].n_opt, parts[k].d_opt, parts[k].law_n_opt], axis=1)

        mixed = fit.mix(member, seed=seed)
        used = "law+sweep" if any(p.source == "law+sweep" for p in parts.values()) else "law"
        return FrontierDraws(mixed[:, 0], mixed[:, 1], used, mixed[:, 2])
    law_n, law_d = frontier(fit.form, fit.samples, budgets_U)
    optima = [o for o in fit_optima(fit, seed=seed) if o.interior] if source == "auto" else []
    if len(optima) < 3:
        return FrontierDraws(law_n, law_d, "law", law_n, tuple(optima))
    law_at_b, _ = frontier(fit.form, fit.samples, np.array([o.budget for o in optima]))
    medians = np.median(law_at_b, axis=0)
    misses = [dataclasses.replace(o, n_opt=o.n_opt / m, q05=o.q05 / m, q95=o.q95 / m) for o, m in zip(optima, medians)]
    line = OptimumLine.fit(misses, draws=law_n.shape[0], seed=seed)
    r_PxU = line.n_opt_draws(budgets_U, seed=seed + 1)
    n_opt = law_n * r_PxU
    return FrontierDraws(n_opt, budgets_U[None, :] / 6.0 / n_opt, "law+sweep", law_n, tuple(optima),
                         {"slope": float(np.median(line.b)), "scatter": float(np.median(line.s)),
                          "miss_at_fitted_budgets": [float(np.log(m.n_opt)) for m in misses]})
