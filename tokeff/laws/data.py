"""From a results table (CSV/JSONL) to the arrays a form is fitted to, with every check a user needs.

Columns follow the results-table schema by default (each form names its default columns); `mapping`
(`--map VAR=COLUMN`) points an input or the target at any column, and `a*b` multiplies two columns
(the volume law's V = n_examples*avg_tokens). Inputs and loss targets enter through logs, so they
must be positive; rows with NaN/inf values are refused, naming each column and its row count, unless
`drop_invalid`.

Rows that are not draws from the law are excluded by one stated rule (`excluded_rows`), and each
exclusion is reported (row, value, reason) in the fit's summary and printed by `tokeff fit`:
- a non-finite target (NaN/inf loss or accuracy): the run failed or diverged and measured nothing;
- loss targets, a diverged run: a loss above the "far-out" fence of the table's log losses,
  `log y > Q3 + max(3 IQR, log 2)` (Tukey's far-out fence, and at least twice the upper-quartile
  loss). A run that diverges climbs back towards its initial loss (ln vocab, 7-12 nats, against
  1.5-4 for trained runs) or beyond; a run that merely trained less sits inside the spread that
  the design produces. The fence is on log loss, so it is scale-free, needs no vocabulary size,
  and is computed from the table alone (not from a fit, which a diverged run would distort).
Nothing else is dropped: the Student-t likelihood down-weights the outliers that stay.
"""

from __future__ import annotations

import dataclasses
import io
import os
from collections.abc import Mapping

import numpy as np

from tokeff.errors import UserError
from tokeff.laws.forms import Form

DEFAULT_TARGET = {"loss": "eval_loss", "accuracy": "accuracy"}
DEFAULT_COUNT = "n_eval"
# The diverged-run fence on log loss: Q3 + max(FAR_OUT_IQR * IQR, log(MIN_DIVERGED_RATIO)).
FAR_OUT_IQR = 3.0
MIN_DIVERGED_RATIO = 2.0
# The largest input or target value a fit takes: the laws run in float32 (max ~3.4e38), and a
# power of an input must stay finite there too.
MAX_VALUE = 1e30


@dataclasses.dataclass
class FitData:
    """What a fit sees: inputs by form variable, the target, and for accuracy the eval-set sizes."""

    inputs: dict[str, np.ndarray]
    y: np.ndarray
    n_eval: np.ndarray | None
    columns: dict[str, str]  # form variable (and "target", "n_eval") -> source column expression
    # Other per-row columns carried along (e.g. a backtest's ordering), not seen by the fit.
    extra: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    # Table rows left out by the exclusion rule (module doc): {"row" (0-based), "value", "reason"}.
    excluded: list[dict] = dataclasses.field(default_factory=list)

    @property
    def n_points(self) -> int:
        return int(self.y.shape[0])

    def take(self, rows: np.ndarray) -> "FitData":
        """The rows `rows` (indices or a mask), e.g. the runs below a backtest's cut."""
        pick = lambda v: None if v is None else np.asarray(v)[rows]  # noqa: E731
        return FitData({k: pick(v) for k, v in self.inputs.items()}, pick(self.y), pick(self.n_eval),
                       dict(self.columns), {k: pick(v) for k, v in self.extra.items()}, list(self.excluded))

    def input_ranges(self) -> dict[str, list[float]]:
        return {k: [float(v.min()), float(v.max())] for k, v in self.inputs.items()}

    def to_frame(self):
        import pandas as pd

        cols = {**self.inputs, "y": self.y}
        if self.n_eval is not None:
            cols["n_eval"] = self.n_eval
        return pd.DataFrame(cols)

    @classmethod
    def from_frame(cls, frame, columns: dict[str, str]) -> "FitData":
        inputs = {k: frame[k].to_numpy(np.float64) for k in frame.columns if k not in ("y", "n_eval")}
        n_eval = frame["n_eval"].to_numpy(np.float64) if "n_eval" in frame.columns else None
        return cls(inputs, frame["y"].to_numpy(np.float64), n_eval, dict(columns))


# Ordering values this close (relatively) are one value: an isoFLOP budget's N*D in a table whose
# N and D were rounded to 6 significant digits differ by up to ~1e-5.
TIE_RTOL = 1e-4


def cut_between_ties(sorted_values: np.ndarray, cut: int) -> int | None:
    """The place nearest to `cut` (rows [0, place) below it) between two different values of an
    ascending ordering, or None when every value is the same.

    Runs that tie on the ordering (every run of an isoFLOP budget has the same params*tokens) are
    then never split between a fit and the runs it predicts by their row order or by rounding, so
    a backtest, and the discrepancy's internal origins, do not depend on how the table is sorted.
    A cut equally far from two places goes down (more runs predicted)."""
    v = np.asarray(sorted_values, np.float64)
    places = np.flatnonzero(~np.isclose(v[1:], v[:-1], rtol=TIE_RTOL, atol=0.0)) + 1
    if not len(places):
        return None
    return int(places[np.argmin(np.abs(places - cut) * 2 + (places > cut))])


def read_table(path: str):
    """A table as a pandas DataFrame: a results table (.jsonl/.csv, or a sweep dir), or any other CSV/JSON.

    Results tables (rows with a `run_id`) are read by `tokeff.results.read_rows`, the one reader
    of the sweep's output: a torn last JSONL line is skipped with a warning, rows are deduped by
    run_id, and a sweep directory merges its shard tables. Other tables (a published scaling
    table with columns params,tokens,loss) are read as they are.
    """
    import pandas as pd

    from tokeff import results

    from tokeff.inputs import read_input_text

    if not str(path).strip():
        raise UserError("data: the path is empty; name a results table")
    ext = os.path.splitext(path)[1].lower()
    try:
        if os.path.isdir(path):
            if not results.table_paths(path):
                raise UserError(f"data: {path} is a directory without results tables (results*.jsonl); "
                                "name a .csv or .jsonl file, or a sweep directory")
            frame = _results_frame(results.sweep_rows(path))
        elif ext not in (".csv", ".jsonl", ".ndjson", ".json") and os.path.exists(path):
            raise UserError(f"data: unsupported file type '{ext}' for {path} (use .csv or .jsonl)")
        else:
            text = read_input_text(path, "data")  # regular files only, size-bounded
            if ext != ".json" and _is_results_table(text, ext):
                frame = _results_frame(results.rows_from_text(text, path))
            elif ext == ".csv":
                _check_unique_header(text, path)
                frame = _read_csv(text, path)
            elif ext == ".json":
                frame = pd.read_json(io.StringIO(text))
            else:
                frame = pd.read_json(io.StringIO(text), lines=True)
    except UserError as e:
        message = str(e)
        raise UserError(message if path in message else f"data: {path}: {message}") from None
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as e:
        raise UserError(f"data: cannot parse {path}: {str(e).splitlines()[0]}") from None
    if len(frame) == 0:
        raise UserError(f"data: {path} has no rows")
    return frame


def _read_csv(text: str, path: str):
    """The CSV as a DataFrame, its first column never taken for an index: pandas reads rows that
    all have one field more than the header with the first field as the index, which shifts every
    value one column to the left of its name; such rows are refused."""
    import warnings

    import pandas as pd

    with warnings.catch_warnings():
        warnings.simplefilter("error", pd.errors.ParserWarning)
        try:
            return pd.read_csv(io.StringIO(text), index_col=False)
        except pd.errors.ParserWarning:
            raise UserError(f"data: {path}: rows have more fields than the header has columns") from None


def _check_unique_header(text: str, path: str) -> None:
    """Two columns of one name would be read as NAME and NAME.1: refuse them instead."""
    import csv

    header = next(csv.reader(io.StringIO(text)), [])
    seen = set()
    for column in (c.strip() for c in header):
        if column in seen:
            raise UserError(f"data: {path}: column {column!r} appears twice in the header")
        seen.add(column)


def _is_results_table(text: str, ext: str) -> bool:
    """Whether the text's first record (JSONL line or CSV header) has a run_id: a tokeff results table."""
    import json

    for line in text.splitlines():
        if not line.strip():
            continue
        if ext == ".csv":
            return "run_id" in [c.strip() for c in line.strip().split(",")]
        try:
            first = json.loads(line)
        except json.JSONDecodeError:
            return False
        return isinstance(first, dict) and "run_id" in first
    return False


def _results_frame(rows):
    """Results rows as a DataFrame, `extra` spread into `extra.KEY` columns."""
    import pandas as pd

    flat = [{**{k: v for k, v in r.items() if k != "extra"},
             **{f"extra.{k}": v for k, v in (r.get("extra") or {}).items()}} for r in rows]
    return pd.DataFrame(flat)


def parse_mapping(items: list[str] | None, field: str = "--map", expected: str = "VAR=COLUMN") -> dict[str, str]:
    """`["N=params", "D=tokens"]` -> {"N": "params", "D": "tokens"}; errors name `field`."""
    out = {}
    for item in items or []:
        var, sep, col = item.partition("=")
        if not sep or not var.strip() or not col.strip():
            raise UserError(f"{field}: expected {expected}, got '{item}'")
        var, col = var.strip(), col.strip()
        if var in out and out[var] != col:
            raise UserError(f"{field}: {var} is given twice ({var}={out[var]} and {var}={col}); give it once")
        out[var] = col
    return out


def column_values(frame, expr: str, role: str) -> np.ndarray:
    """The column `expr` of `frame` as floats; `a*b` multiplies columns. `role` names it in errors."""
    values = None
    for name in expr.split("*"):
        name = name.strip()
        if name not in frame.columns:
            hint = f"; use --map {role.split()[-1]}=COLUMN" if role.startswith(("input", "target")) else ""
            raise UserError(
                f"{role}: column '{name}' not in the data (columns: {', '.join(map(str, frame.columns))}){hint}"
            )
        try:
            col = frame[name].to_numpy(np.float64)
        except (TypeError, ValueError):
            raise UserError(f"{role}: column '{name}' is not numeric") from None
        values = col if values is None else values * col
    return values


def excluded_rows(y: np.ndarray, target: str) -> tuple[np.ndarray, list[str | None]]:
    """The exclusion rule of the module doc: (mask of rows kept, reason per row or None)."""
    reasons: list[str | None] = [None] * len(y)
    finite = np.isfinite(y)
    for i in np.flatnonzero(~finite):
        reasons[i] = "non-finite target: a failed or diverged run"
    if target == "loss" and finite.sum() >= 4 and (y[finite] > 0).all():
        log_y = np.log(y[finite])
        q1, q3 = np.quantile(log_y, [0.25, 0.75])
        fence = q3 + max(FAR_OUT_IQR * (q3 - q1), np.log(MIN_DIVERGED_RATIO))
        for i in np.flatnonzero(finite):
            if np.log(y[i]) > fence:
                reasons[i] = (f"diverged: loss above the far-out fence {np.exp(fence):.4g}"
                              f" (Q3 + max({FAR_OUT_IQR:g} IQR, log {MIN_DIVERGED_RATIO:g}) of log loss)")
    return np.array([r is None for r in reasons], bool), reasons


def format_exclusions(excluded: list[dict], target_column: str, shown: int = 5) -> str:
    """The line `tokeff fit` prints about the exclusion rule (rows are 0-based table rows)."""
    parts = [f"row {e['row']} ({target_column} {e['value']}: {e['reason'].split(':')[0]})" for e in excluded[:shown]]
    more = f", and {len(excluded) - shown} more (summary.json: excluded)" if len(excluded) > shown else ""
    return f"excluded {len(excluded)} row(s) not drawn from the law: " + ", ".join(parts) + more


def _nonfinite_message(stacked: np.ndarray, columns: dict[str, str], variables: list[str], has_count: bool,
                       rows: np.ndarray) -> str:
    """One line naming each table column that holds NaN/inf, with its row count and first row."""
    labels = [(columns[v], f"input {v}") for v in variables] + [(columns["target"], "target")]
    if has_count:
        labels.append((columns["n_eval"], "input n_eval"))
    parts = []
    for (column, role), bad in zip(labels, ~np.isfinite(stacked).T):
        if bad.any():
            parts.append(f"column {column} ({role}): {int(bad.sum())} row(s) with NaN/inf, "
                         f"first table row {int(rows[np.argmax(bad)])}")
    return "; ".join(parts) + "; fix them or pass --drop-invalid"


def prepare(
    table,
    form: Form,
    *,
    mapping: Mapping[str, str] | None = None,
    target: str | None = None,
    drop_invalid: bool = False,
    exclude: bool = True,
    min_points: int | None = None,
    keep: tuple[str, ...] = (),
) -> FitData:
    """Select, validate and convert the columns a form needs. `table`: DataFrame, path, or dict of columns.
    With `exclude` (the default) rows that are not draws from the law are left out by the rule of
    the module doc and listed in `FitData.excluded`; without it a non-finite target is refused."""
    import pandas as pd

    if isinstance(table, (str, os.PathLike)):
        table = read_table(os.fspath(table))
    elif not isinstance(table, pd.DataFrame):
        table = pd.DataFrame(table)
    mapping = dict(mapping or {})
    unknown = set(mapping) - set(form.inputs) - {"target", "n_eval"}
    if unknown:
        raise UserError(f"--map: {sorted(unknown)} not inputs of form {form.name} (inputs: {', '.join(form.inputs)})")

    columns = {}
    for var in form.inputs:
        expr = mapping.get(var, form.columns.get(var))
        if expr is None:
            raise UserError(f"input {var}: form {form.name} has no default column for it; pass --map {var}=COLUMN")
        columns[var] = expr
    if target and mapping.get("target") and mapping["target"] != target:
        raise UserError(f"--target: {target!r} conflicts with --map target={mapping['target']}; give the target once")
    columns["target"] = target or mapping.get("target") or DEFAULT_TARGET[form.target]
    if form.target == "accuracy":
        columns["n_eval"] = mapping.get("n_eval", DEFAULT_COUNT)

    inputs = {var: column_values(table, columns[var], f"input {var}") for var in form.inputs}
    y = column_values(table, columns["target"], "target")
    n_eval = column_values(table, columns["n_eval"], "input n_eval") if "n_eval" in columns else None
    extra = {k: table[k].to_numpy() for k in keep}

    excluded = []
    rows = np.arange(y.shape[0])  # table row of each kept point
    if exclude:
        kept, reasons = excluded_rows(y, form.target)
        excluded = [{"row": int(i), "value": float(y[i]) if np.isfinite(y[i]) else str(y[i]), "reason": reasons[i]}
                    for i in np.flatnonzero(~kept)]
        inputs, y = {k: v[kept] for k, v in inputs.items()}, y[kept]
        n_eval = n_eval[kept] if n_eval is not None else None
        extra = {k: v[kept] for k, v in extra.items()}
        rows = rows[kept]

    stacked = np.stack([*inputs.values(), y] + ([n_eval] if n_eval is not None else []), axis=1)
    finite = np.isfinite(stacked).all(axis=1)
    if not finite.all():
        if not drop_invalid:
            raise UserError(_nonfinite_message(stacked, columns, list(inputs), n_eval is not None, rows))
        # Dropped rows are listed with the exclusions: printed by `tokeff fit`, kept in summary.json.
        excluded += [{"row": int(rows[i]), "value": float(y[i]) if np.isfinite(y[i]) else str(y[i]),
                      "reason": "invalid: NaN/inf in a used column (--drop-invalid)"} for i in np.flatnonzero(~finite)]
        excluded.sort(key=lambda e: e["row"])
        inputs = {k: v[finite] for k, v in inputs.items()}
        y = y[finite]
        n_eval = n_eval[finite] if n_eval is not None else None
        extra = {k: v[finite] for k, v in extra.items()}

    for var, v in [*inputs.items(), ("target", y)]:
        if v.size and np.abs(v).max() > MAX_VALUE:
            where = f"input {var} (column '{columns[var]}')" if var != "target" else f"target (column '{columns['target']}')"
            raise UserError(f"{where}: values up to {np.abs(v).max():.3g} are over the limit of {MAX_VALUE:.0e} "
                            "(they overflow the fit's float32 arithmetic)")

    for var, v in inputs.items():
        if (v <= 0).any():
            raise UserError(f"input {var} (column '{columns[var]}'): {int((v <= 0).sum())} non-positive value(s); logs are taken")
    if form.target == "loss" and (y <= 0).any():
        raise UserError(f"target (column '{columns['target']}'): {int((y <= 0).sum())} non-positive loss value(s)")
    if form.target == "accuracy":
        if ((y < 0) | (y > 1)).any():
            raise UserError(f"target (column '{columns['target']}'): accuracy outside [0, 1]")
        if (n_eval < 1).any() or (np.abs(n_eval - np.round(n_eval)) > 1e-6).any():
            raise UserError(f"n_eval (column '{columns['n_eval']}'): must be positive integers (eval-set sizes)")

    n_needed = min_points if min_points is not None else len(form.params) + 2
    if y.shape[0] < n_needed:
        raise UserError(
            f"data: {y.shape[0]} point(s) for form {form.name} with {len(form.params)} parameters + noise;"
            f" need at least {n_needed}"
        )
    for var, v in inputs.items():
        if np.ptp(np.log(v)) < 1e-9:
            raise UserError(
                f"input {var} (column '{columns[var]}'): constant in the data ({v[0]:.4g}); the parameters"
                f" attached to it are not identified: vary it, or use a form without it"
            )
    return FitData(inputs=inputs, y=y, n_eval=n_eval, columns=columns, extra=extra, excluded=excluded)
