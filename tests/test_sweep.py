"""Sweep orchestration: grid → run ids → rows; resume after SIGKILL without losing or duplicating rows."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from tokeff import results, sweep
from tokeff.errors import UserError

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")

SWEEP_CONFIG = '''
import ml_collections

def get_config():
    c = ml_collections.ConfigDict()
    c.runner = "fake_sweep_runner:run"
    c.train = ml_collections.ConfigDict(dict(
        model="tiny", budget_flops=0.0, seed=0, lr=1e-3,
        data=dict(dataset="mmlu", strategy="balanced", n_examples=0)))
    c.eval = ml_collections.ConfigDict(dict(max_questions=20))
    c.axis_keys = ml_collections.ConfigDict(dict(model="model", budget="budget_flops", seed="seed",
                                            composition="data"))
    c.grid = ml_collections.ConfigDict(dict(
        models=("tiny", "tiny-qwen"), budgets=(1e9, 2e9),
        compositions=[dict(strategy="few_long"), dict(strategy="many_short", n_examples=8)],
        seeds=(0, 1)))
    return c
'''


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "sweep_cfg.py"
    path.write_text(SWEEP_CONFIG)
    return path


def load(config_file, *overrides):
    from tokeff.train.config import load_config

    return load_config(str(config_file), list(overrides))


def test_grid_run_ids_are_stable_and_distinct(config_file):
    points = sweep.grid_points(load(config_file))
    assert len(points) == 16 and len({p.run_id for p in points}) == 16
    assert points[0].run_id.startswith("tiny_1e09_few_long_s0_")
    # A point's id depends on the point, not on the rest of the grid.
    fewer = sweep.grid_points(load(config_file, "--config.grid.seeds=(1,)"))
    assert {p.run_id for p in fewer} < {p.run_id for p in points}


def test_point_train_config_sets_axes(config_file):
    config = load(config_file)
    point = sweep.grid_points(config)[-1]
    train = sweep.point_train_config(config, point)
    assert (train.model, train.budget_flops, train.seed) == ("tiny-qwen", 2e9, 1)
    assert (train.data.strategy, train.data.n_examples) == ("many_short", 8)
    assert config.train.data.strategy == "balanced"  # the base config is untouched


def test_bad_sweep_configs_name_the_field(config_file):
    with pytest.raises(UserError, match="config.grid.budgets: must be a positive"):
        sweep.grid_points(load(config_file, "--config.grid.budgets=(0.0,)"))
    config = load(config_file)
    with config.unlocked():
        config.grid.compositions = [dict(n_examples=3)]
    with pytest.raises(UserError, match=r"config.grid.compositions\[0\].strategy: missing"):
        sweep.grid_points(config)
    config = load(config_file)
    with config.unlocked():
        config.train.distributed = dict(enabled=True)
    with pytest.raises(UserError, match="config.train.distributed.enabled: a sweep joins the processes once"):
        sweep.run_sweep(config, "unused", progress=False)
    config = load(config_file, "--config.axis_keys.budget=optim.budget")
    with pytest.raises(UserError, match="config.axis_keys: 'optim.budget': training config has no 'optim'"):
        sweep.point_train_config(config, sweep.grid_points(config)[0])


def test_sweep_runs_every_point_once_and_skips_on_rerun(config_file, tmp_path):
    sys.path.insert(0, FIXTURES)
    try:
        config = load(config_file, "--config.grid.models=('tiny',)", "--config.grid.seeds=(0,)")
        rows = sweep.run_sweep(config, str(tmp_path / "s"), progress=False)
        assert len(rows) == 4
        assert {r["strategy"] for r in rows} == {"few_long", "many_short"}
        assert all(r["flops_used"] <= r["budget_flops"] and r["extra"]["lr"] == 1e-3 for r in rows)
        calls = []
        again = sweep.run_sweep(config, str(tmp_path / "s"), progress=False,
                                runner=lambda *a: calls.append(a))
        assert calls == [] and again == rows
        # The grid changed under a finished run: refuse rather than mix configs.
        changed = load(config_file, "--config.grid.models=('tiny',)", "--config.grid.seeds=(0,)",
                       "--config.train.lr=0.5")
        os.remove(tmp_path / "s" / "results.jsonl")
        with pytest.raises(UserError, match="training config changed since the run started"):
            sweep.run_sweep(changed, str(tmp_path / "s"), progress=False)
    finally:
        sys.path.remove(FIXTURES)


def test_shards_split_the_grid_and_merge(config_file, tmp_path):
    sys.path.insert(0, FIXTURES)
    try:
        config = load(config_file, "--config.grid.seeds=(0,)")
        for i in range(3):
            sweep.run_sweep(config, str(tmp_path / "s"), shard=(i, 3), progress=False)
        names = sorted(os.listdir(tmp_path / "s"))
        assert [n for n in names if n.startswith("results")] == [
            "results-0-of-3.jsonl", "results-1-of-3.jsonl", "results-2-of-3.jsonl"]
        assert len(sweep.sweep_rows(str(tmp_path / "s"))) == 8
        with pytest.raises(UserError, match="--shard: must be I/N"):
            sweep.run_sweep(config, str(tmp_path / "s"), shard=(3, 3), progress=False)
    finally:
        sys.path.remove(FIXTURES)


def test_sigkill_at_random_moments_never_loses_or_duplicates_rows(config_file, tmp_path):
    sweep_dir = tmp_path / "s"
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {FIXTURES!r})
        from tokeff.train.config import load_config
        from tokeff import sweep
        sweep.run_sweep(load_config({str(config_file)!r}), {str(sweep_dir)!r}, progress=False)
    """)
    rng = random.Random(0)
    kills = 0
    marker = sweep_dir / "sweep.json"  # rewritten when run_sweep starts, after the imports
    for attempt in range(40):
        started = time.time()
        proc = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE)
        while proc.poll() is None and not (marker.exists() and marker.stat().st_mtime >= started - 1):
            time.sleep(0.01)
        # Kill at a random moment of the sweep's own work (startup time varies with the machine's load).
        time.sleep(rng.uniform(0.05, 0.6) * (1 + attempt // 5))
        if proc.poll() is not None:
            assert proc.returncode == 0, proc.stderr.read().decode()
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
    else:
        pytest.fail("the sweep never finished")
    assert kills >= 3
    raw = results.read_rows(sweep_dir / "results.jsonl", dedupe=False)
    ids = [r["run_id"] for r in raw]
    expected = {p.run_id for p in sweep.grid_points(load(config_file))}
    assert sorted(ids) == sorted(expected)  # every point exactly once
    for run_id in ids:
        steps = [int(s) for s in (sweep_dir / "runs" / run_id / "steps.log").read_text().split()]
        # Resumed from its checkpoint: at most the step in flight at a kill is repeated.
        assert set(steps) == set(range(1, 9)) and len(steps) <= 8 + kills


def test_points_file_replaces_the_grid(config_file, tmp_path, capsys):
    from tokeff import cli

    config = load(config_file)
    chosen = sweep.grid_points(config)[:3]
    points_file = tmp_path / "sweep_points.json"
    points_file.write_text(json.dumps({"points": [p.as_dict() for p in chosen]}))
    points = sweep.points_from_file(str(points_file))
    assert [p.run_id for p in points] == [p.run_id for p in chosen]
    sys.path.insert(0, FIXTURES)
    try:
        rows = sweep.run_sweep(config, str(tmp_path / "s"), points=points, progress=False)
    finally:
        sys.path.remove(FIXTURES)
    assert sorted(r["run_id"] for r in rows) == sorted(p.run_id for p in chosen)

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"points": [{"model": "tiny", "budget_flops": -1, "composition": {"strategy": "x"},
                                           "seed": 0}]}))
    tiny = os.path.join(os.path.dirname(FIXTURES), "..", "configs", "sweep_tiny.py")
    code = cli.main(["sweep", "--config", tiny, "--workdir", str(tmp_path / "t"), "--points", str(bad)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "points[0].budget_flops: must be a positive" in err
    assert not (tmp_path / "t").exists()
