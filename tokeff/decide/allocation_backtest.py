"""Is the split right? Refit below a budget cut, decide at the held-out budgets, compare with the sweep.

The loss backtest (`tokeff.laws.backtest`) asks whether a run's loss falls in its interval; the
decision drawn from those intervals can still be wrong. Here the table is an isoFLOP sweep: rows
are grouped into budgets (a budget column, or the runs' compute, within a relative tolerance), the
top `frac` of budgets is held out, the form is fitted to the rest with the very `fit` a user runs,
and at each held-out budget C:

- the sweep's own optimum n* (`tokeff.decide.isoflop.budget_optimum`: a parabola in log N through
  the lowest held-out runs, with a bootstrap interval), and D* = C / 6n*;
- tokeff's decision, from `allocate`'s own code path (`tokeff.decide.allocation.allocate_fit`):
  N_opt's median and 90% interval, and D_opt;
- Approach 2 from the fitted budgets' optima, scored by the same code: the least-squares line (as
  drawn by hand) and its Bayesian hierarchical version with a 90% predictive interval;

and per decision |log(N/n*)|, |log(D/D*)|, whether the 90% interval holds n*, and the regret: the
loss of running N instead of n*, read off the held-out budget's parabola, in % of the optimum's loss
(an extrapolation when N lies outside the runs: flagged). A held-out budget whose optimum lies
outside its runs has no optimum to score against; it is reported and left out of the scores.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np

from tokeff.decide.isoflop import BUDGET_RTOL, BudgetOptimum, OptimumLine, approach2, budget_optimum, group_budgets
from tokeff.errors import UserError
from tokeff.laws.data import column_values, prepare, read_table
from tokeff.laws.forms import Form, get_form
from tokeff.laws.settings import FitSettings

LEVEL = 0.9


def _score(n: float, lo: float | None, hi: float | None, opt: BudgetOptimum) -> dict:
    """One decision (N, its 90% interval) against the held-out budget's optimum."""
    regret = float(opt.loss_at(n) / opt.loss_opt - 1.0) * 100
    return {"N_opt": float(n), "q05": lo, "q95": hi, "log_error": float(np.log(n / opt.n_opt)),
            "abs_log_error": float(abs(np.log(n / opt.n_opt))),
            "D_abs_log_error": float(abs(np.log((opt.budget / 6 / n) / (opt.budget / 6 / opt.n_opt)))),
            "holds": None if lo is None else bool(lo <= opt.n_opt <= hi),
            "regret_pct": regret, "regret_extrapolated": not (opt.window[0] <= n <= opt.window[1])}


def _pooled(budgets: list[dict], key: str) -> dict:
    scored = [b[key] for b in budgets if b["sweep"]["interior"]]
    holds = [s["holds"] for s in scored if s["holds"] is not None]
    return {"n_budgets": len(scored),
            "mean_abs_log_error": float(np.mean([s["abs_log_error"] for s in scored])) if scored else None,
            "mean_D_abs_log_error": float(np.mean([s["D_abs_log_error"] for s in scored])) if scored else None,
            "holds": int(sum(holds)) if holds else None, "of": len(holds),
            "median_regret_pct": float(np.median([s["regret_pct"] for s in scored])) if scored else None}


def allocation_backtest(table, form: Form | str, settings: FitSettings | None = None, *, by: str | None = None,
                        frac: float = 1 / 3, rtol: float = BUDGET_RTOL, frontier_source: str = "auto",
                        mapping: Mapping[str, str] | None = None, target: str | None = None, **overrides) -> dict:
    """The allocation backtest's report (what backtest.json holds); see the module doc. `by` names
    the budget (a column or product of columns; default: the runs' compute 6ND); the fit runs with
    `settings` (keyword `overrides` replace single ones, as in `tokeff.laws.fit.fit`)."""
    import pandas as pd

    from tokeff.decide.allocation import allocate_fit
    from tokeff.decide.frontier import is_pretraining_form
    from tokeff.decide.sweep_check import fit_optima
    from tokeff.laws.fit import fit

    settings = settings or FitSettings()
    if overrides:
        settings = settings.replace(**overrides)
    seed = settings.seed
    form = (get_form(form) if isinstance(form, str) else form).with_priors(settings.prior_overrides)
    if not is_pretraining_form(form):
        raise UserError(f"--decision: the frontier backtest needs a pretraining loss law over N and D; form {form.name} is not")
    if not 0.0 < frac < 1.0:
        raise UserError(f"--frac: must be in (0, 1), got {frac}")
    frame = read_table(os.fspath(table)) if isinstance(table, (str, os.PathLike)) else pd.DataFrame(table)
    extra = {}
    if by:
        extra["__budget__"] = column_values(frame, by, "--by")
    data = prepare(frame.assign(**extra), form, mapping=mapping, target=target, drop_invalid=settings.drop_invalid,
                   exclude=settings.exclude, keep=tuple(extra))
    n_all, d_all = (np.asarray(data.inputs[k], np.float64) for k in ("N", "D"))
    compute = 6.0 * n_all * d_all
    labels = group_budgets(data.extra["__budget__"] if by else compute, rtol)
    n_groups = int(labels.max()) + 1
    n_held = int(np.floor(n_groups * frac + 0.05))  # the top frac of budgets, rounded down (0.33 of 12 is 4)
    if n_held < 1 or n_groups - n_held < 3:
        raise UserError(f"--frac: {n_groups} budget(s) found (--by {by or '6ND'}); holding out the top {frac:g} "
                        "needs at least 1 held out and 3 fitted")
    fit_rows = np.flatnonzero(labels < n_groups - n_held)
    # Each held-out budget's own optimum (from its runs alone), before the fit: with none inside its
    # runs there is nothing to score the fit against.
    held = range(n_groups - n_held, n_groups)
    optima = {g: budget_optimum(n_all[labels == g], data.y[labels == g], budget=float(np.median(compute[labels == g])),
                                seed=seed + g) for g in held if (labels == g).sum() >= 4}
    if not any(o.interior for o in optima.values()):
        raise UserError(f"--by: none of the {n_held} held-out budget(s) has its optimum inside its runs"
                        " (an isoFLOP sweep's budgets need runs on both sides of the optimum); nothing to score")
    result = fit(data.take(fit_rows), form, settings)
    fitted_optima = [o for o in fit_optima(result, seed=seed) if o.interior]
    line_a2 = approach2(fitted_optima) if len(fitted_optima) >= 3 else None
    bayes_line = OptimumLine.fit(fitted_optima, seed=seed) if len(fitted_optima) >= 3 else None
    budgets = []
    for g in held:
        rows = labels == g
        c = float(np.median(compute[rows]))
        entry = {"budget_flops": c, "n_runs": int(rows.sum()), "runs": {"N": n_all[rows].tolist(), "loss": data.y[rows].tolist()}}
        if rows.sum() < 4:
            entry["sweep"] = {"interior": False, "reason": "fewer than 4 runs"}
            budgets.append(entry)
            continue
        opt = optima[g]
        entry["sweep"] = opt.as_dict()
        alloc = allocate_fit(result, c, frontier_source=frontier_source)
        q = alloc["decision"]["N_opt"]
        entry["tokeff"] = _score(q["median"], q["q05"], q["q95"], opt)
        entry["tokeff"]["source"] = alloc.get("frontier_source", "law")
        law = alloc.get("law_N_opt", q)
        entry["law"] = _score(law["median"], law["q05"], law["q95"], opt)
        if line_a2 is not None:
            entry["approach2"] = _score(float(np.exp(line_a2[0] + line_a2[1] * np.log(c))), None, None, opt)
            draws = bayes_line.n_opt_draws([c], seed=seed + g)[:, 0]
            lo, med, hi = np.quantile(draws, [0.05, 0.5, 0.95])
            entry["approach2_bayes"] = _score(float(med), float(lo), float(hi), opt)
        budgets.append(entry)
    keys = ["tokeff", "law"] + (["approach2", "approach2_bayes"] if line_a2 is not None else [])
    return {"decision": "frontier", "form": form.name, "by": by or "6ND", "frac": frac, "rtol": rtol,
            "method": settings.method, "n_rows": data.n_points, "n_fit": int(len(fit_rows)),
            "n_budgets": n_groups, "n_held_out_budgets": n_held, "fit_max_budget": float(compute[fit_rows].max()),
            "fit_ok": bool(result.diagnostics["ok"]), "diagnostics_problems": result.diagnostics["problems"],
            "fitted_optima": [o.as_dict() for o in fitted_optima],
            "approach2_line": None if line_a2 is None else {"intercept": line_a2[0], "slope": line_a2[1],
                                                           "bayes": bayes_line.summary()},
            "budgets": budgets, "scores": {k: _pooled(budgets, k) for k in keys}}


def format_report(report: dict) -> str:
    """The per-budget table and the pooled scores."""
    names = [k for k in ("tokeff", "law", "approach2", "approach2_bayes") if k in report["scores"]]
    lines = [f"allocation backtest {report['form']} ({report['method']}): fitted {report['n_fit']} runs of "
             f"{report['n_budgets'] - report['n_held_out_budgets']} budgets (up to {report['fit_max_budget']:.3g} FLOPs), "
             f"held out {report['n_held_out_budgets']} budget(s)",
             f"{'budget':>9} {'sweep n* [90%]':<29}" + "".join(f"{n + ' N [90%] |log err| regret%':<44}" for n in names)]
    for b in report["budgets"]:
        s = b["sweep"]
        if not s["interior"]:
            lines.append(f"{b['budget_flops']:>9.3g} no optimum inside the runs ({s.get('reason', 'vertex beyond the sweep')})")
            continue
        row = f"{b['budget_flops']:>9.3g} " + f"{s['n_opt']:.3g} [{s['q05']:.3g}, {s['q95']:.3g}]".ljust(29)
        for n in names:
            d = b[n]
            iv = "" if d["q05"] is None else f" [{d['q05']:.3g}, {d['q95']:.3g}]"
            row += f"{d['N_opt']:.3g}{iv} {d['abs_log_error']:.2f} {d['regret_pct']:.2f}".ljust(44)
        lines.append(row)
    for n in names:
        p = report["scores"][n]
        holds = "-" if p["holds"] is None else f"{p['holds']}/{p['of']}"
        lines.append(f"{n:<16} mean |log err| N {p['mean_abs_log_error']:.3f}  D {p['mean_D_abs_log_error']:.3f}   "
                     f"90% interval holds n*: {holds}   median regret {p['median_regret_pct']:.3f}%")
    return "\n".join(lines)


def plot(report: dict, path: str) -> None:
    """One panel per held-out budget: its runs, the parabola and the sweep's optimum (90% band),
    tokeff's N_opt (90% band) and Approach 2's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tokeff.io import save_figure

    budgets = report["budgets"]
    fig, axes = plt.subplots(1, len(budgets), figsize=(4.2 * len(budgets), 3.8), squeeze=False)
    for ax, b in zip(axes[0], budgets):
        n, loss = np.asarray(b["runs"]["N"]), np.asarray(b["runs"]["loss"])
        ax.scatter(n, loss, s=14, c="k", zorder=3, label="held-out runs")
        s = b["sweep"]
        if "coef" in s:
            grid = np.geomspace(min(n.min(), b.get("tokeff", {}).get("q05") or n.min()),
                                max(n.max(), b.get("tokeff", {}).get("q95") or n.max()), 200)
            c0, c1, c2 = s["coef"]
            ax.plot(grid, np.exp(c0 + c1 * np.log(grid) + c2 * np.log(grid) ** 2), c="0.5", lw=1)
            ax.axvspan(s["q05"], s["q95"], color="k", alpha=0.12)
            ax.axvline(s["n_opt"], c="k", lw=1.2, label="sweep's optimum (90%)")
        for key, color, name in (("tokeff", "C0", "tokeff N_opt (90%)"), ("approach2_bayes", "C2", "Approach 2 (90%)")):
            if key in b:
                d = b[key]
                ax.axvspan(d["q05"], d["q95"], color=color, alpha=0.15)
                ax.axvline(d["N_opt"], c=color, lw=1.5, ls="--", label=name)
        ax.set(xscale="log", yscale="log", xlabel="N (parameters)", title=f"C = {b['budget_flops']:.3g} FLOPs")
    axes[0][0].set_ylabel("loss")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
