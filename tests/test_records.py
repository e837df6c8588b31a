"""The typed records that cross stages: RunSummary (train -> sweep), EvalResult (eval -> sweep),
the row built from them, and the warm engine's cache keys."""

from __future__ import annotations

import json

import ml_collections
import numpy as np
import pytest

from tokeff import results
from tokeff.errors import UserError
from tokeff.eval.multiple_choice import MCResult
from tokeff.eval.result import EvalResult
from tokeff.train.summary import RunSummary

# The keys of summary.json and eval.json as tokeff has always written them (files stay readable).
SUMMARY_KEYS = [
    "status", "model", "params", "non_embedding_params", "dtype", "dataset", "strategy", "seed", "n_examples",
    "avg_tokens", "unique_tokens", "dataset_tokens", "tokens_seen", "epochs", "budget_flops", "budget_tokens",
    "budget_epochs", "flops_used", "steps", "planned_steps", "final_loss", "wall_seconds", "compile_seconds",
    "flops_per_second", "mesh", "devices", "device_kind", "batch_granularity_rows", "selection",
    "attention", "mfu",
]
EVAL_KEYS = ["method", "accuracy", "stderr", "n", "ci95", "chance", "flops", "loss", "loss_tokens"]


def summary(**changes) -> RunSummary:
    values = dict(
        status="completed", model="preset:tiny", params=1000, non_embedding_params=800, dtype="float32",
        dataset="mmlu", strategy="balanced", seed=0, n_examples=12, avg_tokens=np.float64(40.5), unique_tokens=480,
        dataset_tokens=486, tokens_seen=900, epochs=900 / 486, budget_flops=10**9, budget_tokens=0, budget_epochs=0,
        flops_used=9 * 10**8, steps=3, planned_steps=3, final_loss=2.5, wall_seconds=1.5, compile_seconds=0.5,
        flops_per_second=1e9, mesh={"data": 1, "fsdp": 1, "tensor": 1}, devices=1, device_kind="cpu",
        batch_granularity_rows=1, selection={"n_examples": 12, "avg_tokens": 40.5, "unique_tokens": 486})
    values.update(changes)
    return RunSummary(**values)


def evaluation(**changes) -> EvalResult:
    values = dict(method="cloze", accuracy=0.5, stderr=0.1, n=16, ci95=(0.28, 0.72), chance=0.25, flops=123,
                  loss=1.25, loss_tokens=40)
    values.update(changes)
    return EvalResult(**values)


def test_summary_json_keeps_its_keys_and_round_trips(tmp_path):
    record = summary()
    record.write(tmp_path / "summary.json")
    raw = json.loads((tmp_path / "summary.json").read_text())
    assert list(raw) == SUMMARY_KEYS
    assert isinstance(raw["avg_tokens"], float)  # numpy values come out as plain JSON numbers
    back = RunSummary.read(tmp_path / "summary.json")
    assert back.as_dict() == raw and back.completed
    assert RunSummary.read(tmp_path / "missing.json") is None
    # A summary written before the attention path and the MFU were recorded still reads.
    del raw["attention"], raw["mfu"]
    (tmp_path / "old.json").write_text(json.dumps(raw))
    old = RunSummary.read(tmp_path / "old.json")
    assert old.attention == "reference" and old.mfu is None


def test_eval_json_keeps_its_keys_and_round_trips(tmp_path):
    record = evaluation()
    record.write(tmp_path / "eval.json")
    raw = json.loads((tmp_path / "eval.json").read_text())
    assert list(raw) == EVAL_KEYS and raw["ci95"] == [0.28, 0.72]
    assert EvalResult.read(tmp_path / "eval.json") == record


@pytest.mark.parametrize("kind", ["summary", "eval"])
def test_a_renamed_key_is_refused_naming_file_and_field(tmp_path, kind):
    path = tmp_path / f"{kind}.json"
    raw = (summary() if kind == "summary" else evaluation()).as_dict()
    raw["acc" if kind == "eval" else "flops"] = raw.pop("accuracy" if kind == "eval" else "flops_used")
    path.write_text(json.dumps(raw))
    reader = RunSummary if kind == "summary" else EvalResult
    with pytest.raises(UserError, match=f"{path}: missing field '{'accuracy' if kind == 'eval' else 'flops_used'}'"):
        reader.read(path)
    raw["accuracy" if kind == "eval" else "flops_used"] = 1
    path.write_text(json.dumps(raw))
    with pytest.raises(UserError, match="unknown field"):
        reader.read(path)


def test_mc_result_record_is_its_scalar_part():
    full = MCResult(method="letter", accuracy=0.25, stderr=0.1, n=4, ci95=(0.05, 0.7), chance=0.25, flops=7,
                    correct=np.array([1, 0, 0, 0], bool), predicted=np.zeros(4, int), scores=np.zeros((4, 4)))
    record = full.record()
    assert type(record) is EvalResult and record.loss is None
    assert list(record.as_dict()) == EVAL_KEYS


def test_the_results_row_is_built_from_the_two_records():
    from tokeff.sweep.engine import row_metrics

    config = ml_collections.ConfigDict({"data": {"source": "mmlu", "subjects": "medical"}})
    metrics = row_metrics(summary(), evaluation(), config, score_seconds=2.0, point_seconds=5.0)
    row = results.validate_row({"run_id": "r", "model": "preset:tiny", "strategy": "balanced", "budget_flops": 1e9,
                                "seed": 0, "status": "ok", "wall_seconds": 5.0, **metrics})
    assert row["dataset"] == "mmlu:medical" and row["eval_loss"] == 1.25 and row["n_eval"] == 16
    assert row["extra"]["accuracy_ci95"] == [0.28, 0.72] and row["extra"]["time_train_steps"] == pytest.approx(0.9)


def test_engine_keys_separate_what_changes_the_compiled_step():
    from tokeff.sweep.engine import PointKeys
    from tokeff.train.defaults import base_config

    config = base_config()
    keys = PointKeys.of(config, None, 16)
    same = base_config()
    same.optim.lr, same.budget.flops, same.optim.warmup_steps = 1e-4, 5e9, 2  # the schedule and budget only
    assert PointKeys.of(same, None, 16).layout == keys.layout
    other = base_config()
    other.optim.b2 = 0.99
    assert PointKeys.of(other, None, 16).layout != keys.layout
    splash = base_config()
    splash.attention = "splash"  # another attention path is another compiled step
    assert PointKeys.of(splash, None, 16).layout != keys.layout
    unlocked = base_config()
    unlocked.unlock()
    unlocked.optim.nesterov = True  # an optimizer option added later separates steps by default
    assert PointKeys.of(unlocked, None, 16).tx != keys.tx
    assert PointKeys.of(config, None, 32).eval != keys.eval
    assert hash(keys) == hash(PointKeys.of(base_config(), None, 16))  # usable as a dict key, deterministic
