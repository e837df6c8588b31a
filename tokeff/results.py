"""The results table: one row per finished run, the contract between sweeps and fits.

Storage is JSONL. A row is appended with ONE `os.write` of the whole line on an `O_APPEND`
file descriptor, under an exclusive `flock`, followed by `fsync`. Why not rewrite the file
(write-temp + rename)? Rewriting is read-modify-write: two appenders that race both read the
old file and the second rename drops the first one's row. An `O_APPEND` write lands whole at
the end of the file, so concurrent appenders never interleave and never lose each other's rows,
and a crash can at worst leave a torn *last* line, which `read_rows` skips and the next append
fences off with a newline. Object stores (gs://) cannot append; there the table is rewritten
through a temporary object, which is safe for one writer per table — sweeps therefore give
each independent launcher (`--shard i/n`) its own table file and merge them on read.

A sweep folder holds one table per independent launcher (`table_path`): `results.jsonl`, or
`results-I-of-N.jsonl` per shard; `sweep_rows` reads them merged.

Rows hold numbers as numbers (FLOPs and tokens are never strings); the reader dedupes by
`run_id` (the latest row wins, so a retried failure replaces its failed row).
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import math
import numbers
import os
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

from tokeff.errors import UserError
from tokeff.io import is_remote, join_path

# (name, kind) in table order. Kinds: "str", "int" (integral number), "float" (any real number),
# "float?" (a real number or null: a failed run has no accuracy or loss).
SCHEMA: tuple[tuple[str, str], ...] = (
    ("run_id", "str"),
    ("model", "str"),
    ("params", "int"),
    ("non_embedding_params", "int"),
    ("dataset", "str"),
    ("strategy", "str"),
    ("n_examples", "int"),
    ("avg_tokens", "float"),
    ("unique_tokens", "int"),
    ("tokens_seen", "int"),
    ("epochs", "float"),
    ("budget_flops", "float"),
    ("flops_used", "float"),
    ("steps", "int"),
    ("seed", "int"),
    ("eval_loss", "float?"),
    ("accuracy", "float?"),
    ("n_eval", "int"),
    ("wall_seconds", "float"),
    ("status", "str"),
)
FIELDS: tuple[str, ...] = tuple(name for name, _ in SCHEMA) + ("extra",)
STATUSES = ("ok", "failed")


def _number(field: str, value: Any, kind: str) -> int | float | None:
    if value is None and kind == "float?":
        return None
    # bool is an int subclass and numpy scalars are not Python numbers: normalise both.
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise UserError(f"results.{field}: must be a number, got {type(value).__name__} {value!r}")
    if kind == "int":
        if isinstance(value, numbers.Integral):
            return int(value)
        if math.isfinite(value) and float(value).is_integer():
            return int(value)
        raise UserError(f"results.{field}: must be an integer, got {value!r}")
    # Integers stay exact ints: a 1e20-scale FLOP count loses its low digits as a float.
    if isinstance(value, numbers.Integral):
        return int(value)
    value = float(value)
    if math.isnan(value) and kind == "float?":
        return None
    if not math.isfinite(value):
        raise UserError(f"results.{field}: must be finite, got {value!r}")
    return value


def validate_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A checked, normalised copy of `row` (plain Python numbers, `extra` a dict).

    Raises UserError naming the first missing, unknown or mistyped field.
    """
    if not isinstance(row, Mapping):
        raise UserError(f"results: a row must be a mapping, got {type(row).__name__}")
    unknown = sorted(set(row) - set(FIELDS))
    if unknown:
        raise UserError(f"results.{unknown[0]}: unknown field (put free-form values under 'extra')")
    out: dict[str, Any] = {}
    for field, kind in SCHEMA:
        if field not in row:
            raise UserError(f"results.{field}: missing")
        value = row[field]
        if kind == "str":
            if not isinstance(value, str) or not value:
                raise UserError(f"results.{field}: must be a non-empty string, got {value!r}")
            out[field] = value
        else:
            out[field] = _number(field, value, kind)
    for field in ("params", "non_embedding_params", "n_examples", "unique_tokens", "tokens_seen",
                  "steps", "n_eval", "budget_flops", "flops_used", "wall_seconds"):
        if out[field] < 0:
            raise UserError(f"results.{field}: must be >= 0, got {out[field]!r}")
    if out["status"] not in STATUSES:
        raise UserError(f"results.status: must be one of {', '.join(STATUSES)}, got {out['status']!r}")
    if out["accuracy"] is not None and not 0.0 <= out["accuracy"] <= 1.0:
        raise UserError(f"results.accuracy: must be in [0, 1], got {out['accuracy']!r}")
    if out["status"] == "ok" and out["flops_used"] > out["budget_flops"]:
        raise UserError(
            f"results.flops_used: {out['flops_used']:.6g} exceeds budget_flops {out['budget_flops']:.6g}"
        )
    extra = row.get("extra", {})
    if extra is None:
        extra = {}
    if not isinstance(extra, Mapping):
        raise UserError(f"results.extra: must be a mapping, got {type(extra).__name__}")
    try:
        out["extra"] = json.loads(json.dumps(dict(extra), default=_json_default, allow_nan=False))
    except (TypeError, ValueError) as e:
        raise UserError(f"results.extra: not JSON-serialisable ({e})") from None
    return out


def _json_default(value: Any) -> Any:
    """numpy scalars and arrays inside `extra` become plain JSON values."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def encode_row(row: Mapping[str, Any]) -> bytes:
    """The validated row as one UTF-8 JSON line (newline included)."""
    line = json.dumps(validate_row(row), separators=(",", ":"), allow_nan=False)
    return (line + "\n").encode("utf-8")


def append_row(path: str | os.PathLike, row: Mapping[str, Any]) -> dict[str, Any]:
    """Validate `row` and append it to the JSONL table at `path` (created if missing)."""
    data = encode_row(row)
    path = os.fspath(path)
    if not is_remote(path):
        _append_local(path, data)
    else:
        _append_by_rewrite(path, data)
    return json.loads(data)


def _append_local(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        # flock serialises appenders that share a kernel (and some network filesystems); the
        # O_APPEND single write is what keeps a line whole even without it.
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                data = b"\n" + data  # fence off a torn line left by a crashed writer
            written = os.write(fd, data)
            if written != len(data):
                raise OSError(f"{path}: short write ({written} of {len(data)} bytes)")
            os.fsync(fd)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _append_by_rewrite(path: str, data: bytes) -> None:
    from etils import epath

    target = epath.Path(path)
    old = target.read_bytes() if target.exists() else b""
    if old and not old.endswith(b"\n"):
        old += b"\n"
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    tmp.write_bytes(old + data)
    tmp.replace(target)


def _read_text(path: str, field: str = "data") -> str | None:
    if not is_remote(path):
        if not os.path.lexists(path):
            return None
        from tokeff.inputs import read_input_text

        return read_input_text(path, field)  # regular files only, size-bounded
    from etils import epath

    target = epath.Path(path)
    return target.read_text() if target.exists() else None


def read_rows(path: str | os.PathLike, *, dedupe: bool = True) -> list[dict[str, Any]]:
    """Rows of a JSONL (or CSV) table; a missing file is an empty table.

    A line that is not valid JSON is the torn write of a crashed appender: it is skipped with a
    warning. With `dedupe`, only the latest row of each run_id is kept (in first-seen order).
    """
    path = os.fspath(path)
    text = _read_text(path)
    if text is None:
        return []
    return rows_from_text(text, path, dedupe=dedupe)


def rows_from_text(text: str, path: str, *, dedupe: bool = True) -> list[dict[str, Any]]:
    """The rows of a table's text as `read_rows` reads them (`path` names it and gives its type)."""
    if path.endswith(".csv"):
        return _read_csv(text, path, dedupe=dedupe)
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
        except json.JSONDecodeError:
            warnings.warn(f"{path}:{number}: skipping a torn line (an interrupted append)", stacklevel=2)
            continue
        try:
            rows.append(validate_row(raw))
        except UserError as e:
            raise UserError(f"{path}:{number}: {e}") from None
    return dedupe_rows(rows) if dedupe else rows


def dedupe_rows(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per run_id: the latest one, at the position its run_id first appeared."""
    latest: dict[str, dict[str, Any]] = {}
    for row in rows:
        latest[row["run_id"]] = dict(row)
    return list(latest.values())


def table_paths(sweep_dir: str) -> list[str]:
    """Every table file of a sweep: `results.jsonl` and the per-shard `results-I-of-N.jsonl`."""
    from etils import epath

    root = epath.Path(sweep_dir)
    if not root.exists():
        return []
    return sorted(os.fspath(p) for p in root.glob("results*.jsonl"))


def sweep_rows(sweep_dir: str) -> list[dict[str, Any]]:
    """All rows of a sweep, merged across shard tables and deduped by run_id."""
    rows = []
    for path in table_paths(sweep_dir):
        rows.extend(read_rows(path, dedupe=False))
    return dedupe_rows(rows)


def table_path(sweep_dir: str, shard: tuple[int, int]) -> str:
    """The table file shard `(index, count)` of a sweep appends to (`results.jsonl` when unsharded)."""
    index, count = shard
    name = "results.jsonl" if count == 1 else f"results-{index}-of-{count}.jsonl"
    return join_path(sweep_dir, name)


def _flat(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row with `extra` spread into `extra.KEY` columns (non-scalar values as JSON text)."""
    out = {k: v for k, v in row.items() if k != "extra"}
    for key, value in (row.get("extra") or {}).items():
        scalar = value is None or isinstance(value, (str, int, float, bool))
        out[f"extra.{key}"] = value if scalar else json.dumps(value, separators=(",", ":"))
    return out


def to_csv(rows: Iterable[Mapping[str, Any]]) -> str:
    """CSV text: the schema columns in order, then every `extra.KEY` column seen, sorted."""
    flat = [_flat(r) for r in rows]
    extras = sorted({k for r in flat for k in r if k.startswith("extra.")})
    columns = [name for name, _ in SCHEMA] + extras
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for r in flat:
        writer.writerow({c: "" if r.get(c) is None else r.get(c) for c in columns})
    return buffer.getvalue()


def write_csv(rows: Iterable[Mapping[str, Any]], path: str | os.PathLike) -> None:
    """Write `to_csv(rows)` to `path` through a temporary file, so a reader never sees half of it."""
    from etils import epath

    target = epath.Path(os.fspath(path))
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    tmp.write_text(to_csv(rows))
    tmp.replace(target)


def _read_csv(text: str, path: str, *, dedupe: bool) -> list[dict[str, Any]]:
    kinds = dict(SCHEMA)
    rows = []
    for number, record in enumerate(csv.DictReader(io.StringIO(text)), 2):
        row: dict[str, Any] = {"extra": {}}
        for column, cell in record.items():
            if column in kinds:
                row[column] = _parse_cell(column, cell, kinds[column], f"{path}:{number}")
            elif column and column.startswith("extra."):
                if cell not in (None, ""):
                    row["extra"][column[len("extra."):]] = _parse_extra(cell)
            elif column:
                raise UserError(f"{path}: column {column!r}: unknown (extra columns are named extra.KEY)")
        try:
            rows.append(validate_row(row))
        except UserError as e:
            raise UserError(f"{path}:{number}: {e}") from None
    return dedupe_rows(rows) if dedupe else rows


def _parse_cell(column: str, cell: str | None, kind: str, where: str) -> Any:
    if kind == "str":
        return cell
    if cell in (None, ""):
        if kind == "float?":
            return None
        raise UserError(f"{where}: results.{column}: missing")
    try:
        return int(cell) if cell.lstrip("-").isdigit() else float(cell)
    except ValueError:
        raise UserError(f"{where}: results.{column}: must be a number, got {cell!r}") from None


def _parse_extra(cell: str) -> Any:
    try:
        return json.loads(cell)
    except json.JSONDecodeError:
        return cell
