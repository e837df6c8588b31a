"""`tokeff demo` end to end on its smoke config (tiny model, generated sums): sweep, prediction
check, fits, LOO, allocation, report and run folder; a second run resumes instead of retraining."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tokeff import results

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLI = ["-m", "tokeff.cli", "demo"]  # the real `tokeff demo` entry point


def demo(workdir, *overrides):
    return subprocess.run([sys.executable, *CLI, "--config", ":smoke",
                           "--workdir", str(workdir), *overrides], cwd=ROOT, capture_output=True, text=True,
                          timeout=900)


@pytest.mark.slow
def test_demo_smoke_end_to_end_and_resume(tmp_path):
    run = demo(tmp_path / "demo")
    assert run.returncode == 0, run.stderr[-4000:]
    out = run.stdout
    for heading in ("== results", "== posterior", "== does composition matter", "== allocation at"):
        assert heading in out
    assert "LOO prefers" in out and "P(best option)" in out
    assert "== prediction check at 2e+09 FLOPs" in out and "inside the 90% intervals: loss" in out
    rows = results.read_rows(tmp_path / "demo" / "results.csv")
    predictions = json.loads((tmp_path / "demo" / "predictions.json").read_text())
    top = [r for r in rows if r["budget_flops"] == max(r["budget_flops"] for r in rows)]
    assert sorted(p["run_id"] for p in predictions["points"]) == sorted(r["run_id"] for r in top)
    for p in predictions["points"]:  # a predicted accuracy is a probability, never below chance
        assert predictions["chance"] <= p["accuracy"]["low"] <= p["accuracy"]["high"] <= 1
        # written before the top budget was scored: before its eval.json existed
        written = os.path.getmtime(tmp_path / "demo" / "predictions.json")
        assert written < os.path.getmtime(tmp_path / "demo" / "sweep" / "runs" / p["run_id"] / "eval.json")
    assert len(rows) == 9 and {r["strategy"] for r in rows} == {"few_long", "many_short", "balanced"}
    for row in rows:  # every run stopped at its budget, less than one step short
        assert 0.9 * row["budget_flops"] < row["flops_used"] <= row["budget_flops"]
    allocation = json.loads((tmp_path / "demo" / "allocation.json").read_text())
    assert allocation["decision"]["strategy"] in ("few_long", "many_short", "balanced")
    assert allocation["decision"]["flops"] <= allocation["budget_flops"]
    for name in ("report.txt", "prediction_check.png", "accuracy_vs_volume.png", "allocation.png", "fits/volume/posterior.nc",
                 "fits/composition/summary.json", "fits/prediction/loss/posterior.nc", "fits/prediction/accuracy/data.csv"):
        assert (tmp_path / "demo" / name).exists(), name

    # A rerun resumes: finished points are not retrained, the predictions are kept, and the analysis
    # fits (same runs, same settings) are read back rather than redone.
    predicted = (tmp_path / "demo" / "predictions.json").read_bytes()
    posterior = tmp_path / "demo" / "fits" / "volume" / "posterior.nc"
    fitted_at = posterior.stat().st_mtime_ns
    again = demo(tmp_path / "demo")
    assert again.returncode == 0, again.stderr[-4000:]
    assert "predictions.json written" in again.stdout and "reused" in again.stdout
    assert again.stdout.count("with the same settings: reused") == 2 and "fitting " not in again.stdout
    assert posterior.stat().st_mtime_ns == fitted_at
    assert (tmp_path / "demo" / "predictions.json").read_bytes() == predicted
    assert len(results.read_rows(tmp_path / "demo" / "sweep" / "results.jsonl", dedupe=False)) == 9

    # Other settings or other runs are refitted: the saved fit is not what they would give.
    import pandas as pd

    from tokeff.demo.analysis import saved_fit

    saved = json.loads((posterior.parent / "summary.json").read_text())
    request, table = saved["request"], pd.DataFrame(rows)
    assert saved_fit(str(posterior.parent), table, request) is not None
    assert saved_fit(str(posterior.parent), table, {**request, "draws": request["draws"] + 1}) is None
    assert saved_fit(str(posterior.parent), table.iloc[1:], request) is None
