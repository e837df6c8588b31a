"""Selection backtests: fit each group's cheap end, predict its far end, and score the choice.

The question a grouped fit answers is "which model", so its backtest scores a selection, not only
intervals. Each group's rows are ordered by an expression (e.g. n_examples) and the top `frac` of
*each group's* rows is held out (`within_group_cut`); the fit (pooled, or one independent fit per
group) sees the rest. At each group's largest held-out point (the far end of its curve):
- Pearson and Spearman r between the predicted medians and the observed values;
- the pick (the group of highest expected utility, `tokeff.decide.decision.decide`, on what a run
  there would reach: `run_draws`, `RUN_REPS` draws of the discrepancy per posterior draw), whether
  it is the observed best, its observed rank (1 = best) and its regret (observed target of the
  pick minus the best's, in the target's units, sign so that >= 0);
- P(best) of every group against whether it was the observed best (calibration of P(best):
  the Brier score, and the P(best) the pick got against how often picks are right, over many
  backtests);
- coverage of the 50% and 90% new-observation intervals over every held-out row.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from tokeff.errors import UserError

LEVELS = (0.5, 0.9)


def within_group_cut(order_by: np.ndarray, groups: np.ndarray, frac: float) -> np.ndarray:
    """Mask of held-out rows: the top `frac` of each group's rows by `order_by` (at least one row
    held out and at least two kept per group)."""
    if not 0.0 < frac < 1.0:
        raise UserError(f"--frac: must be in (0, 1), got {frac}")
    held = np.zeros(len(order_by), bool)
    for g in np.unique(groups):
        rows = np.flatnonzero(groups == g)
        n_held = min(max(1, int(round(frac * len(rows)))), len(rows) - 2)
        if n_held < 1:
            raise UserError(f"--group: group '{g}' has {len(rows)} row(s); a selection backtest needs at least 3 per group")
        held[rows[np.argsort(order_by[rows], kind="stable")[len(rows) - n_held:]]] = True
    return held


@dataclasses.dataclass
class SelectionScore:
    """Scores of one selection at the groups' far ends (module doc)."""

    pearson: float
    spearman: float
    pick: str
    best: str
    pick_is_best: bool
    pick_rank: int
    regret: float
    p_best_pick: float
    brier: float
    n_groups: int

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def score_selection(labels: Sequence[str], run_PxG: np.ndarray, observed_G: np.ndarray, target: str) -> SelectionScore:
    """Score the pick among groups from [P, G] draws of what a run at each group's far end would
    reach and the values observed there."""
    from scipy import stats

    from tokeff.decide.decision import decide

    sign = 1.0 if target == "accuracy" else -1.0
    observed_G = np.asarray(observed_G, np.float64)
    median = np.median(run_PxG, axis=0)
    decision = decide(sign * np.asarray(run_PxG, np.float64))
    pick = decision.best
    utility = sign * observed_G
    best = int(np.argmax(utility))
    rank = int(1 + np.sum(utility > utility[pick]))
    is_best = np.arange(len(labels)) == best
    ok = len(labels) > 2 and np.ptp(median) > 0
    return SelectionScore(
        pearson=float(stats.pearsonr(median, observed_G)[0]) if ok else float("nan"),
        spearman=float(stats.spearmanr(median, observed_G)[0]) if ok else float("nan"),
        pick=str(labels[pick]), best=str(labels[best]), pick_is_best=bool(pick == best), pick_rank=rank,
        regret=float(utility[best] - utility[pick]), p_best_pick=float(decision.p_best[pick]),
        brier=float(np.mean((decision.p_best - is_best) ** 2)), n_groups=len(labels))


# New-run draws per posterior draw at the far ends: the discrepancy's miss is drawn this many times
# for each, so that the medians, the pick (highest expected utility) and P(best) do not move with
# the Monte Carlo noise of one miss per draw (measured: with one, the same fit's pick went from
# rank 6 to 12 and r from 0.52 to 0.55 between seeds on a real task).
RUN_REPS = 16


def run_draws(fit, inputs, groups, *, seed: int = 0, reps: int = RUN_REPS, n_eval=None,
              new_groups: bool = False) -> np.ndarray:
    """[S * reps, O] draws of what a run would reach at `inputs` (`kind="new_run"`): `reps` draws of
    the discrepancy per posterior draw. Works for grouped fits (`groups`: one label per row) and
    ungrouped ones (`groups=None`)."""
    kwargs = {} if groups is None else {"groups": list(groups), "new_groups": new_groups}
    return np.concatenate([np.asarray(fit.predictive(inputs, "new_run", seed=seed + 7919 * r, n_eval=n_eval, **kwargs))
                           for r in range(reps)])


def coverage(draws_PxO: np.ndarray, y_O: np.ndarray, levels: Sequence[float] = LEVELS) -> dict[str, float]:
    """Share of `y_O` inside the central intervals of `draws_PxO` at each level."""
    out = {}
    for level in levels:
        lo, hi = np.quantile(draws_PxO, [(1 - level) / 2, (1 + level) / 2], axis=0)
        out[f"{level:.0%}"] = float(np.mean((y_O >= lo) & (y_O <= hi)))
    return out


def far_ends(order_by: np.ndarray, groups: np.ndarray, held: np.ndarray, labels: Sequence[str]) -> np.ndarray:
    """Row index of each group's largest held-out point, in the order of `labels`."""
    out = []
    for g in labels:
        rows = np.flatnonzero((groups == g) & held)
        out.append(rows[np.argmax(order_by[rows])])
    return np.array(out, np.int64)


def selection_backtest(table, form, group: str, *, by: str, frac: float, settings=None, pool=None, window=None,
                       mapping=None, target=None, seed: int = 0) -> dict:
    """`tokeff backtest --group COLUMN`: a pooled (hierarchical) fit on each group's rows below the
    within-group cut (`window`: which of them, `tokeff.laws.window`; chosen from those rows alone),
    scored as the module doc says. Returns the report (JSON-ready)."""
    import pandas as pd

    from tokeff.laws.data import column_values, read_table
    from tokeff.laws.forms import get_form
    from tokeff.laws.hierarchy import fit_grouped, group_column

    frame = read_table(table) if isinstance(table, str) else pd.DataFrame(table)
    form = get_form(form) if isinstance(form, str) else form
    groups = group_column(frame, group)
    labels = np.asarray(groups.labels)[groups.index]
    order_by = column_values(frame, by, "--by")
    held = within_group_cut(order_by, labels, frac)
    fit = fit_grouped(frame[~held].reset_index(drop=True), form, group, settings, pool=pool, window=window,
                      mapping=mapping, target=target)
    test = frame[held].reset_index(drop=True)
    from tokeff.laws.data import prepare

    data = prepare(test, form, mapping=mapping, target=target, exclude=False, min_points=1, keep=(group,))
    test_groups = np.asarray(data.extra[group]).astype(str)
    observed = fit.predictive(data.inputs, "observed", groups=list(test_groups), n_eval=data.n_eval, seed=seed)
    order_held = column_values(test, by, "--by")
    ends = far_ends(order_held, test_groups, np.ones(len(test_groups), bool), groups.labels)
    run = run_draws(fit, {k: v[ends] for k, v in data.inputs.items()}, groups.labels, seed=seed)
    score = score_selection(groups.labels, run, data.y[ends], form.target)
    return {"form": form.name, "group": group, "by": by, "frac": frac, "n_groups": len(groups.labels),
            "n_fit": int((~held).sum()), "n_held_out": int(held.sum()), "coverage": coverage(observed, data.y),
            "selection": score.as_dict(), "fit_ok": bool(fit.diagnostics["ok"]), "window": fit.summary["window"],
            "predicted_median": dict(zip(groups.labels, np.median(run, axis=0).tolist())),
            "observed": dict(zip(groups.labels, data.y[ends].tolist()))}
