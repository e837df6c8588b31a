"""The compute-optimal frontier of a pretraining law under C = 6ND, per posterior draw.

Chinchilla has a closed form; any other loss law over (N, D) is minimised numerically along the
constraint. `allocate_pretraining` reports the frontier at a budget and across budgets, beside
the published Chinchilla and Epoch AI frontiers.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping

import numpy as np

from tokeff.decide.summaries import interval
from tokeff.errors import UserError
from tokeff.published import PUBLISHED_CHINCHILLA

MeanFn = Callable[[Mapping[str, np.ndarray], Mapping[str, np.ndarray]], np.ndarray]


def chinchilla_frontier(samples: Mapping[str, np.ndarray], budgets_U: np.ndarray):
    """Closed-form compute-optimal (N, D) per draw and budget under C = 6ND.

    Minimising E + A/N^a + B/D^b with D = C/(6N) gives N_opt = G (C/6)^(b/(a+b)),
    D_opt = (C/6)^(a/(a+b)) / G, G = (a A / (b B))^(1/(a+b)). Returns two [P, O] arrays.
    """
    a = np.asarray(samples["alpha"], np.float64)[:, None]
    b = np.asarray(samples["beta"], np.float64)[:, None]
    A = np.asarray(samples["A"], np.float64)[:, None]
    B = np.asarray(samples["B"], np.float64)[:, None]
    c6 = np.asarray(budgets_U, np.float64)[None, :] / 6.0
    log_g = (np.log(a * A) - np.log(b * B)) / (a + b)
    log_n = log_g + b / (a + b) * np.log(c6)
    log_d = -log_g + a / (a + b) * np.log(c6)
    return np.exp(log_n), np.exp(log_d)


def numeric_frontier(mean: MeanFn, samples: Mapping[str, np.ndarray], budgets_U: np.ndarray,
                     *, n_input: str = "N", d_input: str = "D", grid: int = 97, iters: int = 40):
    """Compute-optimal (N, D) per draw by minimising the loss along C = 6ND.

    A log-spaced grid over N brackets each draw's minimum, then golden-section search in log N
    refines it, down to what the mean function's precision resolves (a float32 JAX mean pins
    N_opt to ~1%: the loss is flat at the optimum). Returns two [P, O] arrays.
    """
    params_P = {k: np.asarray(v, np.float64) for k, v in samples.items()}
    n_draws = len(next(iter(params_P.values())))
    params_Px1 = {k: v[:, None] for k, v in params_P.items()}
    n_opt_PxU = np.empty((n_draws, len(budgets_U)))
    for k, c in enumerate(np.asarray(budgets_U, np.float64)):
        # Search N from 10 parameters to C/60 (at least 10 tokens): wide enough for any sane law.
        log_lo, log_hi = math.log(10.0), math.log(c / 6.0 / 10.0)
        if log_hi <= log_lo:
            raise UserError(f"budget: {c:.3g} FLOPs is too small for a frontier")

        def loss(log_n):
            n = np.exp(log_n)
            inputs = {n_input: n, d_input: c / 6.0 / n}
            return np.asarray(mean(params_Px1 if np.ndim(log_n) == 2 else params_P, inputs), np.float64)

        log_grid_1xG = np.linspace(log_lo, log_hi, grid)[None, :]
        loss_PxG = np.broadcast_to(loss(log_grid_1xG), (n_draws, grid))
        loss_PxG = np.where(np.isfinite(loss_PxG), loss_PxG, np.inf)
        i = np.argmin(loss_PxG, axis=1)
        step = (log_hi - log_lo) / (grid - 1)
        lo = log_lo + np.maximum(i - 1, 0) * step
        hi = log_lo + np.minimum(i + 1, grid - 1) * step
        inv_phi = (math.sqrt(5.0) - 1.0) / 2.0
        for _ in range(iters):
            x1, x2 = hi - inv_phi * (hi - lo), lo + inv_phi * (hi - lo)
            left = loss(x1) < loss(x2)  # the minimum lies in [lo, x2]
            hi, lo = np.where(left, x2, hi), np.where(left, lo, x1)
        n_opt_PxU[:, k] = np.exp(0.5 * (lo + hi))
    return n_opt_PxU, np.asarray(budgets_U)[None, :] / 6.0 / n_opt_PxU


def frontier(form, samples: Mapping[str, np.ndarray], budgets_U: np.ndarray):
    """N_opt, D_opt ([P, O]) for a pretraining form: its own allocation rule where it has one
    (chinchilla's closed form), else numeric minimisation along C = 6ND."""
    if form.allocate is None:
        return numeric_frontier(form.mean, samples, budgets_U)
    params_Px1 = {k: np.asarray(v, np.float64)[:, None] for k, v in samples.items()}
    rule = form.allocate(params_Px1, np.asarray(budgets_U, np.float64)[None, :])
    return np.asarray(rule["N_opt"], np.float64), np.asarray(rule["D_opt"], np.float64)


def is_pretraining_form(form) -> bool:
    """A loss law over model size N and tokens D: its decision is a point on the C = 6ND frontier."""
    return set(form.inputs) == {"N", "D"} and form.target == "loss"


def _budget_sweep(budget: float, lo: float | None, hi: float | None, n: int) -> np.ndarray:
    """Budgets to show the decision across: the fit's range and the asked budget, padded."""
    lo = min(budget, lo) / 3 if lo else budget / 100
    hi = max(budget, hi) * 3 if hi else budget * 100
    return np.geomspace(lo, hi, n)


def allocate_pretraining(form, samples: Mapping[str, np.ndarray], budget: float, *,
                         budget_range: tuple[float, float] | None = None, n_budgets: int = 25,
                         weights_P: np.ndarray | None = None, frontier_fn: Callable | None = None) -> dict:
    """The compute-optimal frontier at `budget` and across budgets, with credible intervals;
    `frontier_fn(budgets_U) -> (N_opt, D_opt)` replaces the law's own (`frontier`)."""
    budgets_U = np.unique(np.append(_budget_sweep(budget, *(budget_range or (None, None)), n_budgets), budget))
    n_PxU, d_PxU = (frontier_fn or (lambda u: frontier(form, samples, u)))(budgets_U)
    at = int(np.searchsorted(budgets_U, budget))
    curves = [{"budget_flops": float(c),
               "N_opt": interval(n_PxU[:, k], weights_P),
               "D_opt": interval(d_PxU[:, k], weights_P),
               "tokens_per_param": interval(d_PxU[:, k] / n_PxU[:, k], weights_P)}
              for k, c in enumerate(budgets_U)]
    reference = {}
    for name, values in PUBLISHED_CHINCHILLA.items():
        n_ref, d_ref = chinchilla_frontier({k: np.array([v]) for k, v in values.items()}, np.array([budget]))
        reference[name] = {"N_opt": float(n_ref[0, 0]), "D_opt": float(d_ref[0, 0]),
                           "tokens_per_param": float(d_ref[0, 0] / n_ref[0, 0])}
    return {"kind": "pretraining", "decision": {k: curves[at][k] for k in ("N_opt", "D_opt", "tokens_per_param")},
            "frontier": curves, "reference_at_budget": reference,
            "note": "N and D in the units the fit used (its inputs N, D); C = 6ND"}
