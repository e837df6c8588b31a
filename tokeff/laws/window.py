"""How much of each curve a grouped fit sees: every row, each group's top K rows, or a K chosen by the data.

Why a window: a form can describe where a curve is heading well and its cheap start badly. On real
fine-tuning curves the smallest sizes sit on a flat stretch whose shape differs from model to model,
and a fit of every size bends to it: it trades accuracy near the cut, which says most about the far
end, for accuracy at the start, which says little (measured: docs/notes/2026-12-finetune-selection.md).
Dropping the start helps there; on curves the form describes it only throws data away. Which holds
is a property of the form and the data, not a constant, so `"auto"` asks the fitted rows themselves,
by leave-future-out inside them:

- each group's rows, ordered by the product of the inputs, lose their top 37.5% or their top 25%
  (at least one row; `HOLD_SHARES`, the discrepancy's two inner origins): that is the future;
- for every window K from `min_window(form)` up to the longest group's remaining rows, each group
  is refitted alone (MAP, one compiled program for every group and K, `tokeff.laws.laplace`) on its
  top K remaining rows, and its law's mean at the mode predicts its future rows;
- a window's score is the mean, over groups and the two origins (which see the same top rows again,
  so they are averaged, not summed), of each group's mean squared error in log target;
- the chosen K is the window of the lowest score (a tie goes to the longer one; the longest is
  every remaining row). Why no margin in favour of every row (e.g. a one-standard-error rule): the
  costs are not symmetric. Where the form is right, dropping a few early rows costs little (a
  pooled fit of curves of the form itself, top 6 of 11 sizes: r 0.996 against 0.997); where it is
  wrong at the start, keeping them costs much (real FLAN curves: 0.82 against 0.95). With one to
  four rows ahead per curve the evidence is weak: a one-standard-error rule kept every row on FLAN
  at 1/8 of each curve, where dropping the start helps most (window 6 was better by 0.5 standard
  errors).

The chosen K is then applied to the whole fitted table: each group's top K rows, the same length
of window below the top as it had below the inner cut; K as long as the longest group's remaining
rows means every row. Only fitted rows are used: nothing held out by a
backtest enters the choice. Independent inner fits miss by more than a pooled fit on a short window
(they borrow nothing), so the rule errs towards long windows.

Why `"auto"` is the default: on Lin et al.'s real curves it picks the better model from 1/8 of each
curve (mean Pearson r 0.974 against 0.928 with every row; the pick's observed rank 1/2/2 against
9/1/2), and from 1/64 of each curve, where the windows' scores differ by less than their noise, it
costs 0.03 in r and changes no pick. With fewer than two groups long enough for the inner split,
every row is kept.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np

from tokeff.errors import UserError

if TYPE_CHECKING:  # the CLI reads this module's flags' defaults without importing JAX
    from tokeff.laws.data import FitData

DEFAULT = "auto"  # a grouped fit's window unless asked (measured: docs/notes/2026-12-finetune-selection.md)
MIN_WINDOW = 3  # fewer rows per group cannot show a curve's slope and its bend
# The inner futures: each group's top 37.5% and 25% of rows, the discrepancy's inner origins
# (`tokeff.laws.discrepancy.INNER_ORIGINS`, 0.625 and 0.75).
HOLD_SHARES = (0.375, 0.25)
MODES = ("all", "auto")


@dataclasses.dataclass(frozen=True)
class Window:
    """A window as asked: "all", "auto", or each group's top `k` rows."""

    mode: str
    k: int | None = None

    def __str__(self) -> str:
        return str(self.k) if self.mode == "top" else self.mode


def parse_window(value: "str | int | Window | None", field: str = "--window") -> Window:
    """"all", "auto" or an integer K >= `MIN_WINDOW`; anything else is refused, naming `field`."""
    if value is None:
        return Window(DEFAULT)
    if isinstance(value, Window):
        return value
    if isinstance(value, (bool, np.bool_)):
        raise UserError(f"{field}: must be all, auto or an integer >= {MIN_WINDOW}, got {value!r}")
    text = str(value).strip().lower()
    if text in MODES:
        return Window(text)
    try:
        k = int(text)
    except ValueError:
        raise UserError(f"{field}: must be all, auto or an integer >= {MIN_WINDOW}, got '{value}'") from None
    if k < MIN_WINDOW:
        raise UserError(f"{field}: a window of {k} row(s) per group is too short; at least {MIN_WINDOW}")
    return Window("top", k)


def _order_key(data: "FitData") -> np.ndarray:
    return sum(np.log(np.asarray(v, np.float64)) for v in data.inputs.values())


def top_rows(data: "FitData", group_index: np.ndarray, k: int) -> np.ndarray:
    """Mask of each group's `k` rows of largest product of inputs (all of a group's rows if fewer)."""
    key = _order_key(data)
    keep = np.zeros(data.n_points, bool)
    for g in np.unique(group_index):
        rows = np.flatnonzero(group_index == g)
        keep[rows[np.argsort(key[rows], kind="stable")[-k:]]] = True
    return keep


def min_window(form) -> int:
    """The shortest window tried: one row per parameter, and at least `MIN_WINDOW`."""
    return max(MIN_WINDOW, len(form.params))


def choose_window(form, likelihood, data: "FitData", group_index: np.ndarray, *, seed: int = 0) -> tuple[int | None, dict]:
    """(K, record): the window chosen by the module doc's rule (None: every row) and how."""
    from tokeff.laws.laplace import bucket, run_laplace
    from tokeff.laws.model import law_mean

    key = _order_key(data)
    ordered = []
    for g in np.unique(group_index):
        rows = np.flatnonzero(group_index == g)
        rows = rows[np.argsort(key[rows], kind="stable")]
        n_holds = [max(1, int(round(h * len(rows)))) for h in HOLD_SHARES]
        if len(rows) - max(n_holds) >= min_window(form):
            ordered.append((rows, n_holds))
    record = {"rule": "leave-future-out, lowest mean squared log error", "hold_shares": list(HOLD_SHARES),
              "groups_used": len(ordered)}
    if len(ordered) < 2:
        return None, {**record, "note": "groups too short for the inner split: every row kept"}
    longest = max(len(rows) - min(n_holds) for rows, n_holds in ordered)
    windows = list(range(min_window(form), longest + 1))
    if len(windows) < 2:
        return None, {**record, "note": "no window shorter than every row to try: every row kept"}
    pad_to = bucket(longest)
    # errors[o, i, j]: origin o, window i, group j
    errors = np.full((len(HOLD_SHARES), len(windows), len(ordered)), np.nan)
    for j, (rows, n_holds) in enumerate(ordered):
        for o, n_hold in enumerate(n_holds):
            inner, held = data.take(rows[:-n_hold]), data.take(rows[-n_hold:])
            for i, k in enumerate(windows):
                if k > inner.n_points:  # the group's every inner row: the same fit as the window before
                    errors[o, i, j] = errors[o, i - 1, j]
                    continue
                _, point, _ = run_laplace(form, likelihood, inner.take(np.arange(inner.n_points - k, inner.n_points)),
                                          draws=2, seed=seed, pad_to=pad_to)
                predicted = law_mean(form, {p: np.array([[point[p]]]) for p in form.param_names}, held.inputs,
                                     log=True)[0]
                errors[o, i, j] = float(np.mean((np.log(held.y) - predicted) ** 2))
    finite = np.isfinite(errors)
    errors = np.where(finite, errors, (np.max(errors[finite]) if finite.any() else 0.0) * 10 + 1.0)
    errors = errors.mean(axis=0)  # the origins see the same top rows again: their mean, not their sum
    score = errors.mean(axis=1)
    # The best score; a tie (within float noise) goes to the longer window.
    chosen = windows[max(i for i in range(len(windows)) if score[i] <= score.min() * (1 + 1e-6))]
    gain = errors[-1] - errors  # each group's gain of each window over every row
    se = gain.std(axis=1, ddof=1) / np.sqrt(gain.shape[1])
    record |= {"windows": windows, "mse_log": [float(v) for v in score],
               "gain_se": [float(v) for v in se], "chosen": chosen}
    return (None if chosen >= longest else chosen), record


def apply_window(form, likelihood, data: "FitData", group_index: np.ndarray, window: "str | int | Window | None", *,
                 seed: int = 0) -> tuple[np.ndarray, dict]:
    """(mask of the rows to fit, the summary's "window" record) for `window` (`parse_window`)."""
    w = parse_window(window)
    record: dict = {"asked": str(w)}
    k = w.k
    if w.mode == "auto":
        k, record["choice"] = choose_window(form, likelihood, data, group_index, seed=seed)
    keep = np.ones(data.n_points, bool) if k is None else top_rows(data, group_index, k)
    record |= {"k": k, "rows_fitted": int(keep.sum()), "rows_left_out": int((~keep).sum())}
    return keep, record


def format_window(record: dict) -> str:
    """One line for the CLI: the rows fitted, and for "auto" each window's score."""
    fitted = "every row" if record["k"] is None else f"each group's top {record['k']} rows"
    line = f"window {record['asked']}: {fitted} ({record['rows_fitted']} fitted, {record['rows_left_out']} left out)"
    choice = record.get("choice") or {}
    if "windows" in choice:
        line += ("; leave-future-out mean squared log error by window: "
                 + "  ".join(f"{k} {v:.3g}" for k, v in zip(choice["windows"], choice["mse_log"])))
    elif "note" in choice:
        line += f"; {choice['note']}"
    return line
