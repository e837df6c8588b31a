"""The results table: validation, atomic appends from concurrent writers, torn lines, CSV."""

from __future__ import annotations

import json
import multiprocessing
import os

import pytest

from tokeff import results
from tokeff.errors import UserError


def make_row(run_id="r0", **changes):
    row = dict(
        run_id=run_id, model="tiny", params=70_000, non_embedding_params=37_000, dataset="mmlu",
        strategy="few_long", n_examples=12, avg_tokens=41.5, unique_tokens=498, tokens_seen=498,
        epochs=1.0, budget_flops=10**20 + 1, flops_used=10**20, steps=3, seed=0, eval_loss=1.25,
        accuracy=0.5, n_eval=40, wall_seconds=2.5, status="ok", extra={"lr": 1e-4},
    )
    row.update(changes)
    return row


def test_roundtrip_keeps_numbers_exact(tmp_path):
    path = tmp_path / "t.jsonl"
    results.append_row(path, make_row())
    (row,) = results.read_rows(path)
    assert row["budget_flops"] == 10**20 + 1  # an int, not rounded through float
    assert isinstance(row["avg_tokens"], float) and row["extra"] == {"lr": 1e-4}


@pytest.mark.parametrize("field, value, message", [
    ("budget_flops", "1e18", "results.budget_flops: must be a number"),
    ("steps", 2.5, "results.steps: must be an integer"),
    ("accuracy", 1.5, "results.accuracy: must be in [0, 1]"),
    ("status", "done", "results.status: must be one of"),
    ("n_eval", True, "results.n_eval: must be a number"),
    ("flops_used", 10**21, "results.flops_used: 1e+21 exceeds budget_flops"),
    ("wall_seconds", float("inf"), "results.wall_seconds: must be finite"),
])
def test_bad_rows_name_the_field(tmp_path, field, value, message):
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("]", r"\]")
                       .replace("+", r"\+")):
        results.append_row(tmp_path / "t.jsonl", make_row(**{field: value}))
    assert not (tmp_path / "t.jsonl").exists()


def test_missing_and_unknown_fields():
    row = make_row()
    del row["seed"]
    with pytest.raises(UserError, match="results.seed: missing"):
        results.validate_row(row)
    with pytest.raises(UserError, match="results.lr: unknown field"):
        results.validate_row(make_row(lr=0.1))


def test_numpy_scalars_and_nan_loss_normalise():
    import numpy as np

    row = results.validate_row(make_row(steps=np.int64(3), accuracy=np.float32(0.25),
                                        eval_loss=float("nan"), extra={"hist": np.arange(3)}))
    assert type(row["steps"]) is int and row["accuracy"] == 0.25 and row["eval_loss"] is None
    assert row["extra"]["hist"] == [0, 1, 2]


def test_dedupe_keeps_latest_row_in_first_position(tmp_path):
    path = tmp_path / "t.jsonl"
    results.append_row(path, make_row("a", status="failed", accuracy=None, eval_loss=None))
    results.append_row(path, make_row("b"))
    results.append_row(path, make_row("a", accuracy=0.75))
    rows = results.read_rows(path)
    assert [(r["run_id"], r["status"], r["accuracy"]) for r in rows] == [("a", "ok", 0.75), ("b", "ok", 0.5)]
    assert len(results.read_rows(path, dedupe=False)) == 3


def test_torn_last_line_is_skipped_and_fenced_off(tmp_path):
    path = tmp_path / "t.jsonl"
    results.append_row(path, make_row("a"))
    with open(path, "ab") as f:  # a writer died mid-line
        f.write(results.encode_row(make_row("b"))[:37])
    with pytest.warns(UserWarning, match="torn line"):
        assert [r["run_id"] for r in results.read_rows(path)] == ["a"]
    results.append_row(path, make_row("c"))
    with pytest.warns(UserWarning, match="t.jsonl:2: skipping a torn line"):
        assert [r["run_id"] for r in results.read_rows(path)] == ["a", "c"]


def _append_many(path, writer, count):
    for i in range(count):
        results.append_row(path, make_row(f"w{writer}-{i}", extra={"pad": "x" * 3000}))


def test_concurrent_appenders_never_interleave(tmp_path):
    path = os.fspath(tmp_path / "t.jsonl")
    # spawn, not fork: a worker that has imported JAX has threads, and a forked child can deadlock
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(path, w, 40)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
        assert p.exitcode == 0
    lines = open(path).read().splitlines()
    assert len(lines) == 160
    ids = [json.loads(line)["run_id"] for line in lines]  # every line parses: none interleaved
    assert sorted(ids) == sorted(f"w{w}-{i}" for w in range(4) for i in range(40))


def test_csv_export_and_reimport(tmp_path):
    rows = [make_row("a", extra={"lr": 1e-4, "hist": [1, 2]}),
            make_row("b", accuracy=None, eval_loss=None, status="failed", extra={"note": "oom"})]
    path = tmp_path / "t.csv"
    results.write_csv(rows, path)
    header = path.read_text().splitlines()[0].split(",")
    assert header[:3] == ["run_id", "model", "params"]
    assert header[-3:] == ["extra.hist", "extra.lr", "extra.note"]
    back = results.read_rows(path)
    assert back[0]["budget_flops"] == 10**20 + 1 and back[0]["extra"] == {"lr": 1e-4, "hist": [1, 2]}
    assert back[1]["accuracy"] is None and back[1]["extra"] == {"note": "oom"}


def test_bad_table_line_names_file_and_line(tmp_path):
    path = tmp_path / "t.jsonl"
    results.append_row(path, make_row("a"))
    bad = make_row("b")
    bad["tokens_seen"] = "498"
    with open(path, "a") as f:
        f.write(json.dumps(bad) + "\n")
    with pytest.raises(UserError, match=r"t.jsonl:2: results.tokens_seen: must be a number"):
        results.read_rows(path)
