"""Pilot tables like the seed paper's (Lagasse et al. 2025): the fine-tuning data fits must survive.

A pilot is small and awkward: a few instruct models (135M-1.7B), three subsampling strategies that
fill a token budget greedily from one pool of examples (`few_long`, `many_short`, `balanced`),
budgets of 1k-150k tokens, one eval set of 27-300 questions, and accuracies near chance. Where a
budget exceeds the pool, the strategy takes the whole pool: the run is the same as at the next
smaller budget, and the table repeats the row (as the seed authors' published table does).
`bench/pilot_convergence.py` fits many of these with the defaults and counts the fits that report ok.
"""

from __future__ import annotations

import numpy as np

MODELS = (1.35e8, 3.6e8, 4.94e8, 1.0e9, 1.7e9)
STRATEGIES = ("few_long", "many_short", "balanced")
EVAL_SIZES = (27, 45, 100, 300)


def _fill(lengths: np.ndarray, budget: float, strategy: str) -> np.ndarray:
    """Examples a strategy takes from the pool for `budget` tokens (greedy, in its order)."""
    if strategy == "few_long":
        order = np.argsort(-lengths, kind="stable")
    elif strategy == "many_short":
        order = np.argsort(lengths, kind="stable")
    else:
        order = np.argsort(np.abs(lengths - np.median(lengths)), kind="stable")
    taken = order[np.cumsum(lengths[order]) <= budget]
    return lengths[taken if taken.size else order[:1]]


def pilot_table(seed: int, *, chance: float = 0.25) -> dict[str, np.ndarray]:
    """One pilot results table (results-table columns: n_examples, avg_tokens, params, accuracy,
    n_eval, plus strategy and budget_tokens), from a volume-law truth with a small effect."""
    rng = np.random.default_rng(seed)
    models = np.sort(rng.choice(MODELS, size=rng.integers(3, 6), replace=False))
    budgets = np.exp(np.sort(rng.uniform(np.log(1e3), np.log(1.5e5), rng.integers(3, 6))))
    pool = np.maximum(8, rng.lognormal(np.log(rng.uniform(60, 300)), 0.8, rng.integers(100, 1500))).round()
    n_eval = int(rng.choice(EVAL_SIZES))
    beta, gamma = rng.uniform(0.0, 0.15), rng.uniform(0.0, 0.2)
    lift = rng.uniform(0.0, 0.12)  # accuracy above chance at the design's centre
    rows = []
    for m in models:
        for strategy in STRATEGIES:
            for budget in budgets:
                taken = _fill(pool, budget, strategy)
                rows.append((len(taken), taken.mean(), m, strategy, budget))
    n, avg, params = (np.array([r[i] for r in rows], np.float64) for i in range(3))
    log_v, log_m = np.log(n * avg), np.log(params)
    term = lift * np.exp(beta * (log_v - log_v.mean()) + gamma * (log_m - log_m.mean()))
    p = np.clip(chance + term, 0.0, 1.0)
    # One eval per distinct run: a repeated row (the pool ran out) repeats its accuracy too.
    runs = {}
    acc = np.empty(len(rows))
    for i, key in enumerate(zip(n, avg, params)):
        if key not in runs:
            runs[key] = rng.binomial(n_eval, p[i]) / n_eval
        acc[i] = runs[key]
    return {
        "n_examples": n, "avg_tokens": avg, "params": params, "accuracy": acc,
        "n_eval": np.full(len(rows), float(n_eval)),
        "strategy": np.array([r[3] for r in rows]), "budget_tokens": np.array([r[4] for r in rows]),
    }
