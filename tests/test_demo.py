"""`tokeff demo` end to end on its smoke config (tiny model, generated sums): sweep, prediction
check, fits, LOO, allocation, report and run folder; a second run resumes instead of retraining.
Both notebooks then execute top to bottom on that run's fits, as `make notebooks` runs them on the
demo's (no network), so they cannot rot. One demo run serves every test here: its fits are the
costly part (NUTS, compiled per form)."""

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


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """(the workdir's parent, the first run's completed process): the smoke demo in a fresh folder."""
    root = tmp_path_factory.mktemp("smoke")
    return root, demo(root / "demo")


@pytest.mark.slow
def test_demo_smoke_end_to_end_and_resume(first_run):
    root, run = first_run
    assert run.returncode == 0, run.stderr[-4000:]
    out = run.stdout
    for heading in ("== results", "== posterior", "== does composition matter", "== allocation at"):
        assert heading in out
    assert "LOO prefers" in out and "P(best option)" in out
    assert "== prediction check at 2e+09 FLOPs" in out and "inside the 90% intervals: loss" in out
    rows = results.read_rows(root / "demo" / "results.csv")
    predictions = json.loads((root / "demo" / "predictions.json").read_text())
    top = [r for r in rows if r["budget_flops"] == max(r["budget_flops"] for r in rows)]
    assert sorted(p["run_id"] for p in predictions["points"]) == sorted(r["run_id"] for r in top)
    for p in predictions["points"]:  # a predicted accuracy is a probability, never below chance
        assert predictions["chance"] <= p["accuracy"]["low"] <= p["accuracy"]["high"] <= 1
        # written before the top budget was scored: before its eval.json existed
        written = os.path.getmtime(root / "demo" / "predictions.json")
        assert written < os.path.getmtime(root / "demo" / "sweep" / "runs" / p["run_id"] / "eval.json")
    assert len(rows) == 9 and {r["strategy"] for r in rows} == {"few_long", "many_short", "balanced"}
    for row in rows:  # every run stopped at its budget, less than one step short
        assert 0.9 * row["budget_flops"] < row["flops_used"] <= row["budget_flops"]
    allocation = json.loads((root / "demo" / "allocation.json").read_text())
    assert allocation["decision"]["strategy"] in ("few_long", "many_short", "balanced")
    assert allocation["decision"]["flops"] <= allocation["budget_flops"]
    for name in ("report.txt", "prediction_check.png", "accuracy_vs_volume.png", "allocation.png", "fits/volume/posterior.nc",
                 "fits/composition/summary.json", "fits/prediction/loss/posterior.nc", "fits/prediction/accuracy/data.csv"):
        assert (root / "demo" / name).exists(), name

    # A rerun resumes: finished points are not retrained, the predictions are kept, and the analysis
    # fits (same runs, same settings) are read back rather than redone.
    predicted = (root / "demo" / "predictions.json").read_bytes()
    posterior = root / "demo" / "fits" / "volume" / "posterior.nc"
    fitted_at = posterior.stat().st_mtime_ns
    again = demo(root / "demo")
    assert again.returncode == 0, again.stderr[-4000:]
    assert "predictions.json written" in again.stdout and "reused" in again.stdout
    assert again.stdout.count("with the same settings: reused") == 2 and "fitting " not in again.stdout
    assert posterior.stat().st_mtime_ns == fitted_at
    assert (root / "demo" / "predictions.json").read_bytes() == predicted
    assert len(results.read_rows(root / "demo" / "sweep" / "results.jsonl", dedupe=False)) == 9

    # Other settings or other runs are refitted: the saved fit is not what they would give.
    import pandas as pd

    from tokeff.demo.analysis import saved_fit

    saved = json.loads((posterior.parent / "summary.json").read_text())
    request, table = saved["request"], pd.DataFrame(rows)
    assert saved_fit(str(posterior.parent), table, request) is not None
    assert saved_fit(str(posterior.parent), table, {**request, "draws": request["draws"] + 1}) is None
    assert saved_fit(str(posterior.parent), table.iloc[1:], request) is None


def run_notebook(name: str, env: dict[str, str], tmp_path) -> None:
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(os.path.join(ROOT, "notebooks", name), as_version=4)
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel inherits this process's environment
    try:
        NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors


@pytest.fixture(scope="module")
def fits(first_run):
    """The demo's fits folder: volume and composition (accuracy), prediction/loss (its loss law)."""
    root, run = first_run
    assert run.returncode == 0, run.stderr[-4000:]
    return root / "demo" / "fits"


@pytest.mark.slow
def test_posterior_inspection_notebook(fits, tmp_path):
    run_notebook("posterior_inspection.ipynb", {
        "TOKEFF_FIT_DIRS": f"{fits / 'prediction' / 'loss'},{fits / 'composition'}", "MPLBACKEND": "Agg"}, tmp_path)


@pytest.mark.slow
def test_allocation_notebook(fits, tmp_path):
    run_notebook("allocation.ipynb", {"TOKEFF_FIT_DIR": str(fits / "volume"), "TOKEFF_NOTEBOOK_OUT": str(tmp_path),
                                      "MPLBACKEND": "Agg"}, tmp_path)
    assert (tmp_path / "notebook_allocation.png").exists()
