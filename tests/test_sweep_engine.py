"""The warm sweep engine: several points in one process, each shape compiled once, same rows as cold."""

from __future__ import annotations

import collections
import json
import os

import pytest

from tokeff import sweep
from tokeff.sweep.engine import WarmEngine, train_and_evaluate_cold

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMPARED = ("n_examples", "avg_tokens", "tokens_seen", "flops_used", "steps", "n_eval")
CLOSE = ("eval_loss", "accuracy")


def tiny_config():
    from tokeff.train.config import load_config

    return load_config(os.path.join(ROOT, "configs", "sweep_tiny.py"),
                       ["--config.grid.budgets=(2e9,3e9)", "--config.eval.max_questions=16",
                        "--config.train.checkpoint.every_steps=0"])


class TraceCounter:
    """How many times each jitted function was traced (a trace precedes every compile)."""

    def __init__(self):
        import jax

        self.counts = collections.Counter()
        self.active = True
        jax.monitoring.register_event_duration_secs_listener(self._on_event)

    def _on_event(self, event, duration, **kwargs):
        if self.active and event == "/jax/core/compile/jaxpr_trace_duration":
            self.counts[kwargs.get("fun_name")] += 1


def step_shapes(workdir) -> set:
    return {(r["rows"], r["row_len"]) for r in map(json.loads, open(os.path.join(workdir, "metrics.jsonl")))}


@pytest.mark.slow
def test_warm_engine_compiles_each_shape_once_and_matches_points_run_one_by_one(tmp_path):
    config = tiny_config()
    engine = WarmEngine()
    traces = TraceCounter()
    after_first = {}

    def runner(point, *args, **kwargs):
        metrics = engine(point, *args, **kwargs)
        if not after_first:
            after_first.update(traces.counts)
        return metrics

    warm = sweep.run_sweep(config, str(tmp_path / "warm"), runner=runner, progress=False)
    traces.active = False
    assert len(warm) == 4
    shapes = set().union(*(step_shapes(tmp_path / "warm" / "runs" / r["run_id"]) for r in warm))
    assert len(shapes) >= 3  # the budgets end on different short batches...
    # ...which all run in one shape (one row per microbatch): two compiles for every point.
    assert traces.counts["step"] == 2
    for name, count in traces.counts.items():  # everything else (scoring, resets): at the first point only
        if name != "step":
            assert count == after_first.get(name, 0), name
    kinds = collections.Counter(key[0] for key in engine._cache)
    assert kinds["model"] == 1 and kinds["pool"] == 1 and kinds["step"] == 1

    # The last point alone, cold (loaded, compiled, checkpointed and reloaded): it ran warm after
    # three others, so anything one point leaves behind in the engine would show in its row.
    alone = sweep.grid_points(config)[-1:]
    cold = sweep.run_sweep(config, str(tmp_path / "cold"), runner=train_and_evaluate_cold, points=alone,
                           progress=False)
    by_id = {r["run_id"]: r for r in cold}
    assert len(by_id) == 1 and len([r for r in warm if r["run_id"] in by_id]) == 1
    for row in (r for r in warm if r["run_id"] in by_id):
        other = by_id[row["run_id"]]
        assert {k: row[k] for k in COMPARED} == {k: other[k] for k in COMPARED}
        for key in CLOSE:
            assert row[key] == pytest.approx(other[key], rel=1e-5, abs=1e-6), key
        assert row["extra"]["final_train_loss"] == pytest.approx(other["extra"]["final_train_loss"], rel=1e-5)
    # The warm runs keep no final weights; a rerun reads every point back from the table.
    assert not [p for r in warm for p in (tmp_path / "warm" / "runs" / r["run_id"] / "checkpoints").glob("[0-9]*")]
    again = sweep.run_sweep(config, str(tmp_path / "warm"), runner=engine, progress=False)
    assert again == warm
