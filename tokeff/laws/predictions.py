"""Predictions with intervals at chosen inputs, per group, and which group to pick.

`predict_points` is what `tokeff predict` runs: for every input row and every group (grouped fits;
one unnamed "group" otherwise) the quantiles of a new observation and of the law's mean, both from
the fit's `predictive` (the one function that turns draws into predictions, as allocate and
backtest use), and, across the groups at the same inputs, each group's P(best) and expected regret
from the expected-utility decision (`tokeff.decide.decision.decide`) on what a run there would reach
(kind "new_run"; lower loss or higher accuracy is better).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np

from tokeff.errors import UserError
from tokeff.laws.data import MAX_VALUE
from tokeff.laws.selection import RUN_REPS, run_draws

QUANTILES = {"q05": 0.05, "q25": 0.25, "median": 0.5, "q75": 0.75, "q95": 0.95}


@dataclasses.dataclass
class Predictions:
    """One record per (input row, group) and one choice per input row."""

    form: str
    target: str
    group_column: str | None
    inputs: tuple[str, ...]
    rows: list[dict]
    choices: list[dict]

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def parse_at(items: Sequence[str], form) -> dict[str, np.ndarray]:
    """`["D=1.6e6"]` -> {"D": array([1.6e6])}: one row, every input of the form, positive and finite."""
    values = {}
    for item in items:
        var, sep, raw = item.partition("=")
        var = var.strip()
        if not sep or not var:
            raise UserError(f"--at: expected VAR=VALUE, got '{item}'")
        if var not in form.inputs:
            raise UserError(f"--at: '{var}' is not an input of form {form.name} (inputs: {', '.join(form.inputs)})")
        if var in values:
            raise UserError(f"--at: {var} given twice (one point: one value per input)")
        try:
            value = float(raw)
        except ValueError:
            raise UserError(f"--at: {var}={raw} is not a number") from None
        if not (math.isfinite(value) and value > 0):
            raise UserError(f"--at: {var}={raw} must be a positive finite number (logs are taken)")
        if value > MAX_VALUE:
            raise UserError(f"--at: {var}={raw} is over the limit of {MAX_VALUE:.0e} (it overflows the law's float32 arithmetic)")
        values[var] = np.array([value])
    missing = [k for k in form.inputs if k not in values]
    if missing:
        raise UserError(f"--at: no value for input(s) {', '.join(missing)} of form {form.name}")
    return values


def table_inputs(frame, form, columns: Mapping[str, str], group_column: str | None = None) -> dict[str, np.ndarray]:
    """The inputs of every row of `frame`: a column named after the input (D) or after the fit's
    column for it (n_examples); positive and finite. A grouped fit's group column is refused: every
    row is predicted for every group, so a row naming its own group would be silently overruled."""
    if group_column is not None and group_column in frame.columns:
        raise UserError(f"--table: has the fit's group column '{group_column}', but every row is predicted for every "
                        "group (or those named by --group-value); drop the column")
    out = {}
    for var in form.inputs:
        name = var if var in frame.columns else columns.get(var)
        if name not in frame.columns:
            expected = f"'{var}'" + (f" or '{columns[var]}'" if columns.get(var) else "")
            raise UserError(f"--table: no column for input {var} (expected {expected}; columns: {', '.join(map(str, frame.columns))})")
        try:
            v = frame[name].to_numpy(np.float64)
        except (TypeError, ValueError):
            raise UserError(f"--table: column '{name}' is not numeric") from None
        bad = ~(np.isfinite(v) & (v > 0))
        if bad.any():
            raise UserError(f"--table: column '{name}' has {int(bad.sum())} non-positive or non-finite value(s)")
        if v.size and v.max() > MAX_VALUE:
            raise UserError(f"--table: column '{name}' has values up to {v.max():.3g}, over the limit of {MAX_VALUE:.0e} "
                            "(they overflow the law's float32 arithmetic)")
        out[var] = v
    if not len(frame):
        raise UserError("--table: no rows")
    return out


def _quantiles(draws_P: np.ndarray, prefix: str = "") -> dict:
    qs = np.quantile(draws_P, list(QUANTILES.values()))
    return {f"{prefix}{k}": float(q) for k, q in zip(QUANTILES, qs)}


def _n_draws(fit) -> int:
    """Posterior draws held per predicted point: a stack draws each member's in full before mixing."""
    members = getattr(fit, "members", None)
    if members:
        return sum(_n_draws(m) for m in members)
    return len(next(iter(fit.samples.values())))


def predict_points(fit, inputs: Mapping[str, np.ndarray], *, group_values: Sequence[str] | None = None,
                   new_group: bool = False, n_eval: float | None = None, seed: int = 0) -> Predictions:
    """Predictions at each row of `inputs` for each group (module doc). `group_values`: the groups
    to predict (default: every fitted one); with `new_group` a label the fit never saw is a new
    group drawn from the population."""
    form = fit.form
    groups = getattr(fit, "groups", None)
    if groups is None:
        if group_values or new_group:
            raise UserError("--group-value: the fit is not grouped (fit with --group COLUMN)")
        labels: list = [None]
    else:
        labels = list(group_values) if group_values else list(groups.labels)
        if len(set(labels)) != len(labels):
            raise UserError("--group-value: a group is named twice")
        groups.lookup(labels, new_groups=new_group)  # unknown labels fail here, before any draw
    if form.target != "accuracy" and n_eval is not None:
        raise UserError(f"--n-eval: applies to accuracy fits; {form.name} is a loss form")
    if n_eval is not None and not (1 <= float(n_eval) <= MAX_VALUE and float(n_eval).is_integer()):
        raise UserError(f"--n-eval: must be a whole, positive number of questions, got {float(n_eval):g}")
    if form.target == "accuracy" and n_eval is None:
        n_eval = float(np.median(fit.data.n_eval))
    n_rows = len(next(iter(inputs.values())))
    from tokeff.resources import check_predict_size

    check_predict_size(n_points=n_rows * len(labels), n_draws=_n_draws(fit), run_reps=RUN_REPS)
    # Every (row, group) pair in one call: the draws of different groups are the same posterior draws.
    rep = {k: np.repeat(np.asarray(v, np.float64), len(labels)) for k, v in inputs.items()}
    tiled = labels * n_rows
    kw = {} if groups is None else {"groups": tiled, "new_groups": new_group}
    observed = _draws(fit, rep, "observed", n_eval=n_eval, seed=seed, **kw)
    mean = _draws(fit, rep, "mean", seed=seed, **kw)
    # The choice is scored as the selection backtest scores it: several draws of the miss per posterior draw.
    run = run_draws(fit, rep, None if groups is None else tiled, seed=seed, n_eval=n_eval, new_groups=new_group)
    from tokeff.decide.decision import decide

    sign = 1.0 if form.target == "accuracy" else -1.0
    rows, choices = [], []
    for r in range(n_rows):
        cols = slice(r * len(labels), (r + 1) * len(labels))
        point = {k: float(inputs[k][r]) for k in form.inputs}
        decision = decide(sign * run[:, cols]) if len(labels) > 1 else None
        for j, label in enumerate(labels):
            o = r * len(labels) + j
            record = {} if groups is None else {groups.column: label}
            if groups is not None:
                record["new_group"] = label not in groups.labels
            record |= point | _quantiles(observed[:, o]) | _quantiles(mean[:, o], "mean_")
            record["p_best"] = float(decision.p_best[j]) if decision else 1.0
            record["expected_regret"] = float(decision.expected_regret[j]) if decision else 0.0
            rows.append(record)
        if decision is not None:
            best = decision.best
            choices.append({**point, "choice": labels[best], "p_best": float(decision.p_best[best]),
                            "expected_regret": float(decision.expected_regret[best]),
                            "runner_up": labels[int(decision.order[1])],
                            "cannot_tell_apart": bool(decision.indistinguishable), "reason": decision.reason})
    return Predictions(form.name, form.target, None if groups is None else groups.column, tuple(form.inputs),
                       rows, choices)


def _draws(fit, inputs, kind, *, n_eval=None, seed=0, **kw) -> np.ndarray:
    """[P, O] draws from the fit's predictive of `kind`."""
    return np.asarray(fit.predictive(inputs, kind, n_eval=n_eval, seed=seed, **kw), np.float64)


def format_predictions(p: Predictions, *, shown: int = 40) -> str:
    """The table `tokeff predict` prints, and the choice at each input row."""
    width = max([len(str(r[p.group_column])) for r in p.rows] + [len(p.group_column)]) if p.group_column else 0
    width = max(width, 8)  # labels whole: model names can be long
    head = ([f"{p.group_column:>{width}}"] if p.group_column else []) + [f"{k:>12}" for k in p.inputs]
    lines = [" ".join(head)
             + f" {'median':>9} {'q05':>9} {'q95':>9} {'mean_med':>9} {'p_best':>7} {'regret':>8}"]
    for r in p.rows[:shown]:
        cells = [f"{str(r[p.group_column]):>{width}}"] if p.group_column else []
        cells += [f"{r[k]:12.4g}" for k in p.inputs]
        lines.append(" ".join(cells) + f" {r['median']:9.4g} {r['q05']:9.4g} {r['q95']:9.4g} {r['mean_median']:9.4g}"
                                       f" {r['p_best']:7.3f} {r['expected_regret']:8.3g}")
    if len(p.rows) > shown:
        lines.append(f"... and {len(p.rows) - shown} more rows (predictions.csv)")
    better = "lowest loss" if p.target == "loss" else "highest accuracy"
    for c in p.choices:
        at = ", ".join(f"{k}={c[k]:.4g}" for k in p.inputs)
        lines.append(f"at {at}: {choice_sentence(c, why=better)}")
    return "\n".join(lines)


def choice_sentence(choice: dict, *, what: str = "", why: str = "") -> str:
    """The choice among groups in words: the leader, or "cannot tell apart" the two at the top.
    `choice` holds choice, runner_up, cannot_tell_apart, reason, p_best and expected_regret."""
    c = choice
    if c["cannot_tell_apart"]:
        return (f"cannot tell apart {c['choice']} and {c['runner_up']} ({c['reason']}); "
                f"{c['choice']} leads with P(best) {c['p_best']:.2f}")
    return (f"choose {what}{c['choice']} ({why + ': ' if why else ''}P(best) {c['p_best']:.2f}, "
            f"expected regret {c['expected_regret']:.3g})")


def save_predictions(p: Predictions, out: str, *, force: bool = False) -> str:
    """predictions.csv (one line per row and group) and predictions.json, written atomically."""
    import os

    import pandas as pd

    from tokeff.io import output_dir, write_json

    with output_dir(out, "predict", force=force) as tmp:
        pd.DataFrame(p.rows).to_csv(os.path.join(tmp, "predictions.csv"), index=False)
        write_json(os.path.join(tmp, "predictions.json"), p.as_dict())
    return os.path.abspath(out)
