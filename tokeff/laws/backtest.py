"""Backtesting a fit: order the runs (by compute, say), refit on the lower ones, predict the rest.

In-sample diagnostics and SBC say whether the sampler is right for the model; only held-out runs say
whether the model's intervals hold where a user extrapolates. For each cut the rows below it are
fitted with the very `fit` a user would run, and the rows above are predicted as *new observations*
(`Fit.predictive(kind="observed")`: noise and any discrepancy term included). One cut puts the top
`frac` of rows aside; `cuts=K` rolls K origins through that top fraction, each fit predicting the
block up to the next origin. A cut never splits rows that tie on the ordering (`between_ties`).
Scores, pooled over cuts:

- coverage of the central 50/80/90% intervals;
- median absolute percentage error of the predictive median;
- decision accuracy (DataDecide, Magnusson et al. 2025): among held-out pairs with different
  observed targets, the fraction the predicted medians order the same way; also within groups that
  share a budget (a `group` column, else a `budget` column when the table has one);
- proper scores (`tokeff.laws.scores`): mean relative CRPS, interval scores at 50/80/90%, mean log
  predictive density, and sharpness (median 90% width): coverage alone rewards width.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping

import numpy as np

from tokeff.errors import UserError
from tokeff.laws.data import FitData, column_values, cut_between_ties, prepare, read_table
from tokeff.laws.forms import Form, get_form
from tokeff.laws import scores as scores_lib
from tokeff.laws.settings import FitSettings

LEVELS = (0.5, 0.8, 0.9)
BUDGET_COLUMN = "budget"


@dataclasses.dataclass
class Cut:
    """One origin: which rows were fitted and which predicted, with the predictive draws."""

    fit_rows: np.ndarray
    held_rows: np.ndarray
    draws: np.ndarray  # [S, n_held] predictive draws of a new observation
    diagnostics: dict


def origins(n_rows: int, *, frac: float = 0.33, cuts: int = 1) -> list[tuple[int, int]]:
    """(n_fit, end) per cut over rows in order: fit rows [0, n_fit), predict [n_fit, end)."""
    if not 0.0 < frac < 1.0:
        raise UserError(f"--frac: must be in (0, 1), got {frac}")
    if cuts < 1:
        raise UserError(f"--cuts: must be >= 1, got {cuts}")
    if int(round(n_rows * frac)) < 1:
        raise UserError(f"--frac: {frac:g} of {n_rows} rows holds out no row; hold out at least one")
    starts = [int(round(n_rows * (1 - frac * (cuts - j) / cuts))) for j in range(cuts)]
    ends = starts[1:] + [n_rows]
    if any(e <= s for s, e in zip(starts, ends)):
        raise UserError(f"--cuts: {cuts} cuts in the top {frac:g} of {n_rows} rows leave a cut with no rows to predict")
    return list(zip(starts, ends))


def between_ties(plan: list[tuple[int, int]], sorted_values: np.ndarray) -> list[tuple[int, int]]:
    """`plan` with every cut moved between two different ordering values (`cut_between_ties`)."""
    starts = [cut_between_ties(sorted_values, s) for s, _ in plan]
    if starts[0] is None:
        raise UserError("--by: every row has the same value, so no cut can separate fitted from held-out rows")
    ends = starts[1:] + [len(sorted_values)]
    if any(e <= s for s, e in zip(starts, ends)):
        raise UserError(f"--cuts: {len(plan)} cuts leave a cut with no rows to predict once tied rows"
                        " (equal values of --by) are kept on one side")
    return list(zip(starts, ends))


def _pairwise_order_accuracy(pred: np.ndarray, obs: np.ndarray) -> tuple[int, int]:
    """(agreeing, total) over pairs with different observed values."""
    i, j = np.triu_indices(len(obs), 1)
    differ = obs[i] != obs[j]
    agree = np.sign(pred[i] - pred[j]) == np.sign(obs[i] - obs[j])
    return int((agree & differ).sum()), int(differ.sum())


def backtest(
    table,
    form: Form | str,
    settings: FitSettings | None = None,
    *,
    by: str,
    frac: float = 0.33,
    cuts: int = 1,
    group: str | None = None,
    mapping: Mapping[str, str] | None = None,
    target: str | None = None,
    progress: bool = False,
    **overrides,
) -> dict:
    """Backtest `form` on `table` ordered by the column expression `by` (e.g. `params*tokens`),
    each cut fitted with `settings` (keyword `overrides` replace single ones, as in
    `tokeff.laws.fit.fit`); cut i fits and predicts with seed `settings.seed + i`.
    Returns the report (what backtest.json holds) and, under "cuts", the per-cut results."""
    import pandas as pd
    from tqdm.auto import tqdm

    from tokeff.laws.fit import fit
    from tokeff.laws.laplace import bucket

    settings = settings or FitSettings()
    if overrides:
        settings = settings.replace(**overrides)
    from tokeff.laws.stacking import fit_stacked, form_names, member_forms

    stack = form_names(form)  # `a,b,c`: each cut fits the stack of those forms (`tokeff.laws.stacking`)
    members = member_forms(stack) if stack else None
    form = members[0] if stack else (get_form(form) if isinstance(form, str) else form).with_priors(settings.prior_overrides)
    name = ",".join(stack) if stack else form.name
    frame = read_table(os.fspath(table)) if isinstance(table, (str, os.PathLike)) else pd.DataFrame(table)
    order_by = column_values(frame, by, "--by")
    group_expr = group or (BUDGET_COLUMN if BUDGET_COLUMN in frame.columns else None)
    groups = None
    if group_expr:
        if group_expr not in frame.columns:
            column_values(frame, group_expr, "--group")  # the one-line error for a missing column
        groups = frame[group_expr].astype(str).to_numpy()
    finite = np.isfinite(order_by)
    if not finite.all():
        if not settings.drop_invalid:
            raise UserError(f"--by: {int((~finite).sum())} row(s) with NaN/inf in '{by}'; fix them or pass --drop-invalid")
    frame = frame.assign(__order__=order_by, __group__=groups if groups is not None else "")[finite]
    # The exclusion rule applies to the whole table, once, as `tokeff fit` would apply it
    # (`--no-exclude` keeps every row); the cuts' fits then take rows of `data` as they are.
    data = prepare(frame, form, mapping=mapping, target=target, drop_invalid=settings.drop_invalid,
                   exclude=settings.exclude, keep=("__order__", "__group__"))
    rows = np.argsort(data.extra["__order__"], kind="stable")
    n_params = max(len(f.params) for f in (members or [form]))
    n_needed = n_params + 2
    plan = between_ties(origins(data.n_points, frac=frac, cuts=cuts), data.extra["__order__"][rows])
    for n_fit, _ in plan:
        if n_fit < n_needed:
            raise UserError(f"--frac: a cut leaves {n_fit} row(s) to fit form {name}, which has"
                            f" {n_params} parameters + noise; need at least {n_needed}")

    results = []
    for i, (n_fit, end) in enumerate(tqdm(plan, desc=f"backtest {name}", disable=not progress or len(plan) == 1)):
        fit_rows, held_rows = rows[:n_fit], rows[n_fit:end]
        seed = settings.seed + i
        # Every cut's fit padded as the whole table is: one compiled program (per form) for every
        # cut, and the same one as a fit of the whole table.
        if stack:
            result = fit_stacked(data.take(fit_rows), stack, settings.replace(seed=seed), pad_to=bucket(data.n_points))
        else:
            result = fit(data.take(fit_rows), form, settings.replace(seed=seed), pad_to=bucket(data.n_points))
        held = data.take(held_rows)
        draws = result.predictive(held.inputs, "observed", n_eval=held.n_eval, seed=seed)
        results.append(Cut(fit_rows, held_rows, draws, result.diagnostics))
    return summarise(form, data, results, by=by, group=group_expr, settings=settings, name=name)


def summarise(form: Form, data: FitData, cuts: list[Cut], *, by: str, group: str | None,
              settings: FitSettings, name: str | None = None) -> dict:
    """The backtest report: coverage per level, errors, decision accuracy, and one entry per cut."""
    held = np.concatenate([c.held_rows for c in cuts])
    y = data.y[held]
    draws = [c.draws for c in cuts]
    median = np.concatenate([np.median(d, 0) for d in draws])
    coverage, widths = {}, {}
    for level in LEVELS:
        tail = (1 - level) / 2
        lo = np.concatenate([np.quantile(d, tail, 0) for d in draws])
        hi = np.concatenate([np.quantile(d, 1 - tail, 0) for d in draws])
        coverage[f"{level:g}"] = float(np.mean((y >= lo) & (y <= hi)))
        widths[f"{level:g}"] = float(np.median((hi - lo) / np.abs(median)) * 100)
    points = [scores_lib.pointwise(d, data.y[c.held_rows], log_scale=form.target == "loss") for c, d in zip(cuts, draws)]
    points = {k: np.concatenate([p[k] for p in points]) for k in points[0]}
    finite = np.isfinite(median)
    pct_error = np.abs(median - y) / np.abs(y) * 100
    order = data.extra["__order__"]
    per_cut, decisions = [], {"agree": 0, "pairs": 0, "within_agree": 0, "within_pairs": 0}
    groups = data.extra["__group__"] if group else None
    for c in cuts:
        med_c = np.median(c.draws, 0)
        overall = _pairwise_order_accuracy(med_c, data.y[c.held_rows])
        decisions["agree"] += overall[0]
        decisions["pairs"] += overall[1]
        if groups is not None:
            g_c, y_c = groups[c.held_rows], data.y[c.held_rows]
            for g in np.unique(g_c):
                ga, gt = _pairwise_order_accuracy(med_c[g_c == g], y_c[g_c == g])
                decisions["within_agree"] += ga
                decisions["within_pairs"] += gt
        per_cut.append({
            "n_fit": int(len(c.fit_rows)),
            "n_held_out": int(len(c.held_rows)),
            "fit_max_by": float(order[c.fit_rows].max()),
            "extrapolation_factor": float(order[c.held_rows].max() / order[c.fit_rows].max()),
            "fit_ok": bool(c.diagnostics["ok"]),
            "diagnostics_problems": c.diagnostics["problems"],
            **({"stacking_weights": c.diagnostics["weights"]} if "weights" in c.diagnostics else {}),
        })
    return {
        "form": name or form.name,
        "target": form.target,
        "by": by,
        "group": group,
        "method": settings.method,
        "likelihood": settings.likelihood,
        "settings": settings.as_dict(),
        "n_rows": data.n_points,
        "columns": dict(data.columns),
        "excluded": list(data.excluded),  # rows the exclusion rule left out (`tokeff.laws.data`)
        "n_fit": per_cut[0]["n_fit"],
        "n_held_out": int(len(held)),
        "extrapolation_factor": max(c["extrapolation_factor"] for c in per_cut),
        "coverage": coverage,
        "median_interval_width_pct": widths,
        "median_abs_pct_error": float(np.median(pct_error)) if finite.all() else None,
        "predictions_finite": bool(finite.all()),
        "scores": scores_lib.summarise(points),
        "decision_accuracy": {
            "all": decisions["agree"] / decisions["pairs"] if decisions["pairs"] else None,
            "within_group": decisions["within_agree"] / decisions["within_pairs"] if decisions["within_pairs"] else None,
            "pairs": decisions["pairs"],
            "within_group_pairs": decisions["within_pairs"],
        },
        "all_fits_ok": all(c["fit_ok"] for c in per_cut),
        "cuts": per_cut,
        "held_out": {
            "order": order[held].tolist(),
            "observed": y.tolist(),
            "median": median.tolist(),
            **{f"q{int(round(100 * q)):02d}": np.concatenate([np.quantile(d, q, 0) for d in draws]).tolist()
               for q in (0.05, 0.25, 0.75, 0.95)},
            **{k: [float(v) if np.isfinite(v) else None for v in points[k]] for k in ("crps_rel_pct", "log_density")},
        },
        "fitted": {"order": order[cuts[0].fit_rows].tolist(), "observed": data.y[cuts[0].fit_rows].tolist()},
    }


def plot(report: dict, path: str) -> None:
    """Held-out runs against their 50% and 90% predictive intervals, over the ordering variable."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tokeff.io import save_figure

    h = report["held_out"]
    x, y, med = (np.asarray(h[k]) for k in ("order", "observed", "median"))
    inside = (y >= np.asarray(h["q05"])) & (y <= np.asarray(h["q95"]))
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    ax.scatter(report["fitted"]["order"], report["fitted"]["observed"], s=8, c="0.6", label="fitted runs (first cut)")
    ax.vlines(x, h["q05"], h["q95"], color="C0", alpha=0.35, lw=3, label="90% interval")
    ax.vlines(x, h["q25"], h["q75"], color="C0", alpha=0.8, lw=3, label="50% interval")
    ax.scatter(x, med, marker="_", c="C0", s=60)
    ax.scatter(x[inside], y[inside], s=14, c="k", zorder=3, label="held out, inside 90%")
    ax.scatter(x[~inside], y[~inside], s=18, c="C3", marker="x", zorder=3, label="held out, outside 90%")
    ax.set_xscale("log")
    if report["target"] == "loss":
        ax.set_yscale("log")
    cov = report["coverage"]
    ax.set(xlabel=report["by"], ylabel=report["target"],
           title=f"{report['form']} ({report['method']}): 90% coverage {cov['0.9']:.2f}, "
                 f"50% {cov['0.5']:.2f}, x{report['extrapolation_factor']:.1f}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
