"""The fine-tuning split, backtested: refit below a budget cut, choose among the held-out budget's runs.

For a fine-tuning form the decision at a budget is a choice among options (model x examples x
length, or a subsampling strategy) that each spend it. A sweep that ran several options at one
budget shows which was best there. So: group rows into budgets (`--by`: a budget column such as
`budget_tokens`, rows within a relative tolerance), hold out the top `frac` of budgets, fit the form
to the rest with the very `fit` a user runs, and at each held-out budget decide among the options
its runs took, as `allocate` decides (`tokeff.decide.decision.decide`: expected utility over the
fit's `new_run` predictive draws, P(best), expected regret, near-ties flagged). Scored against the
runs: did the choice take the observed best; the observed regret (best observed metric minus the
chosen option's); the P(best) the fit gave the option that was observed best; and whether that
option is in the smallest set of options holding 90% of P(best); and whether the observed regret
exceeds twice the noise of a difference of two runs (binomial on the eval set for accuracy): with
few eval questions the observed best is itself mostly noise, and only such a miss says the choice
was wrong.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np

from tokeff.decide.decision import decide
from tokeff.decide.isoflop import BUDGET_RTOL, group_budgets
from tokeff.errors import UserError
from tokeff.laws.data import column_values, prepare, read_table
from tokeff.laws.forms import Form, get_form
from tokeff.laws.settings import FitSettings

SET_LEVEL = 0.9


def _credible_set(p_best: np.ndarray, level: float = SET_LEVEL) -> np.ndarray:
    """Indices of the fewest options whose P(best) adds up to `level`."""
    order = np.argsort(-p_best, kind="stable")
    return order[: int(np.searchsorted(np.cumsum(p_best[order]), level - 1e-9)) + 1]


def choice_backtest(table, form: Form | str, settings: FitSettings | None = None, *, by: str, frac: float = 1 / 3,
                    rtol: float = BUDGET_RTOL, mapping: Mapping[str, str] | None = None, target: str | None = None,
                    **overrides) -> dict:
    """The choice backtest's report (what backtest.json holds); see the module doc."""
    import pandas as pd

    from tokeff.laws.fit import fit

    settings = settings or FitSettings()
    if overrides:
        settings = settings.replace(**overrides)
    form = (get_form(form) if isinstance(form, str) else form).with_priors(settings.prior_overrides)
    from tokeff.decide.frontier import is_pretraining_form

    if is_pretraining_form(form):  # its decision is a point on the frontier, backtested by --decision frontier
        raise UserError(f"--decision: choice applies to fine-tuning forms; {form.name} is a pretraining law"
                        " (use --decision frontier)")
    if not 0.0 < frac < 1.0:
        raise UserError(f"--frac: must be in (0, 1), got {frac}")
    frame = read_table(os.fspath(table)) if isinstance(table, (str, os.PathLike)) else pd.DataFrame(table)
    data = prepare(frame.assign(__budget__=column_values(frame, by, "--by")), form, mapping=mapping, target=target,
                   drop_invalid=settings.drop_invalid, exclude=settings.exclude, keep=("__budget__",))
    labels = group_budgets(data.extra["__budget__"], rtol)
    n_groups = int(labels.max()) + 1
    n_held = int(np.floor(n_groups * frac + 0.05))
    if n_held < 1 or n_groups - n_held < 2:
        raise UserError(f"--frac: {n_groups} budget(s) found (--by {by}); holding out the top {frac:g} "
                        "needs at least 1 held out and 2 fitted")
    result = fit(data.take(np.flatnonzero(labels < n_groups - n_held)), form, settings)
    sign = 1.0 if form.target == "accuracy" else -1.0  # utility: higher is better
    budgets = []
    for g in range(n_groups - n_held, n_groups):
        rows = np.flatnonzero(labels == g)
        # One option per distinct run (a repeated row, e.g. a pool that ran out, is the same run).
        _, first = np.unique(np.stack([data.inputs[k][rows] for k in form.inputs], 1), axis=0, return_index=True)
        rows = rows[np.sort(first)]
        if len(rows) < 2:
            continue
        inputs = {k: np.asarray(v)[rows] for k, v in data.inputs.items()}
        metric_PxO = result.predictive(inputs, kind="new_run", seed=settings.seed + g)
        d = decide(sign * metric_PxO)
        observed = sign * data.y[rows]
        best = int(np.argmax(observed))
        chosen = d.best
        # The measurement noise of a difference of two runs' metrics: binomial for accuracy (its
        # eval set), the fit's own log-scale noise for a loss; a miss smaller than 2 of these is noise.
        if form.target == "accuracy" and data.n_eval is not None:
            p = np.clip(np.mean(data.y[rows]), 0.01, 0.99)
            noise = float(np.sqrt(2 * p * (1 - p) / np.median(data.n_eval[rows])))
        else:
            noise = float(np.sqrt(2) * np.median(result.samples["sigma"]) * np.mean(data.y[rows]))
        budgets.append({
            "budget": float(np.median(data.extra["__budget__"][rows])), "n_options": int(len(rows)),
            "options": {k: v.tolist() for k, v in inputs.items()}, "observed": data.y[rows].tolist(),
            "predicted_median": np.median(metric_PxO, 0).tolist(),
            "chosen": chosen, "observed_best": best, "took_observed_best": chosen == best,
            "observed_regret": float(observed[best] - observed[chosen]),
            "p_best_chosen": float(d.p_best[chosen]), "p_best_of_observed_best": float(d.p_best[best]),
            "observed_best_in_90_set": bool(best in _credible_set(d.p_best)),
            "indistinguishable": d.indistinguishable,
            "observed_spread": float(observed.max() - observed.min()),
            "noise_sd": noise, "miss_beyond_noise": bool(observed[best] - observed[chosen] > 2 * noise),
        })
    if not budgets:
        raise UserError("--by: no held-out budget has two or more distinct runs to choose between")
    return {"decision": "choice", "form": form.name, "target": form.target, "by": by, "frac": frac,
            "method": settings.method, "n_budgets": n_groups, "n_held_out_budgets": n_held,
            "fit_ok": bool(result.diagnostics["ok"]), "budgets": budgets,
            "scores": {"took_observed_best": int(sum(b["took_observed_best"] for b in budgets)),
                       "of": len(budgets),
                       "mean_observed_regret": float(np.mean([b["observed_regret"] for b in budgets])),
                       "mean_observed_spread": float(np.mean([b["observed_spread"] for b in budgets])),
                       "observed_best_in_90_set": int(sum(b["observed_best_in_90_set"] for b in budgets)),
                       "misses_beyond_noise": int(sum(b["miss_beyond_noise"] for b in budgets))}}


def format_report(report: dict) -> str:
    s = report["scores"]
    lines = [f"choice backtest {report['form']} ({report['method']}): held out {report['n_held_out_budgets']} of "
             f"{report['n_budgets']} budgets (--by {report['by']})",
             f"{'budget':>10}{'options':>8}{'took best':>10}{'regret':>9}{'spread':>9}{'P(best) chosen':>15}"
             f"{'P(best) obs. best':>18}{'in 90% set':>11}{'noise sd':>9}"]
    for b in report["budgets"]:
        lines.append(f"{b['budget']:>10.3g}{b['n_options']:>8}{str(b['took_observed_best']):>10}{b['observed_regret']:>9.3g}"
                     f"{b['observed_spread']:>9.3g}{b['p_best_chosen']:>15.2f}{b['p_best_of_observed_best']:>18.2f}"
                     f"{str(b['observed_best_in_90_set']):>11}{b['noise_sd']:>9.3g}"
                     + ("  (near-tie)" if b["indistinguishable"] else "") + ("  miss beyond noise" if b["miss_beyond_noise"] else ""))
    lines.append(f"took the observed best at {s['took_observed_best']}/{s['of']} budgets; mean observed regret "
                 f"{s['mean_observed_regret']:.3g} (spread of the options {s['mean_observed_spread']:.3g}); observed "
                 f"best in the 90% P(best) set at {s['observed_best_in_90_set']}/{s['of']}; misses beyond 2 noise sd: "
                 f"{s['misses_beyond_noise']}/{s['of']}")
    return "\n".join(lines)
