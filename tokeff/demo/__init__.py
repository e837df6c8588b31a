"""The embedded demo: the seed paper's experiment on one CPU, checking its own prediction.

1. a sweep (tokeff/demo/configs/demo.py) of a real model fine-tuned with the Lagasse et al. strategies
   under FLOP budgets, every run scored on the same held-out questions (answer-token loss and
   cloze accuracy); it is a `tokeff sweep` in RUN/sweep, so a rerun resumes;
2. the prediction check (`tokeff.demo.prediction`): the loss and accuracy laws fitted to the
   runs below the top budget predict every top-budget run, `predictions.json` is written, and
   only then are the top-budget runs trained and scored and compared with it;
3. the analysis of every run (`tokeff.demo.analysis`): accuracy laws compared by LOO, an
   allocation beyond the runs, the report (stdout and RUN/report.txt) and plots.
"""

from __future__ import annotations

import copy
import json
import os
import time

from tokeff import results, sweep
from tokeff.io import write_json, write_text

def run_demo(config_path: str | None, overrides: list[str], workdir: str) -> int:
    from tokeff.demo.config import load_demo_config
    from tokeff.demo import analysis, prediction
    from tokeff.errors import UserError
    from tokeff.cache import enable_compilation_cache

    config = load_demo_config(config_path, overrides)
    started = time.time()
    enable_compilation_cache()
    budgets = sorted(float(b) for b in config.grid.budgets)
    lower, top = _with_budgets(config, budgets[:-1]), _with_budgets(config, budgets[-1:])
    top_points = sweep.grid_points(top)
    print(f"tokeff demo: {len(sweep.grid_points(config))} fine-tunes of {', '.join(config.grid.models)} on "
          f"{config.train.data.source}:{config.train.data.subjects}, budgets "
          f"{', '.join(f'{b:.3g}' for b in budgets)} FLOPs; run folder {workdir}")
    sweep_dir = os.path.join(workdir, "sweep")
    predictions_path = os.path.join(workdir, "predictions.json")
    _claim_workdir(workdir)

    timings = {}
    if os.path.exists(predictions_path):
        with open(predictions_path) as f:
            predictions = json.load(f)
        if sorted(p["run_id"] for p in predictions["points"]) != sorted(p.run_id for p in top_points):
            raise UserError(f"{predictions_path}: written for another grid; use a new --workdir")
        print(f"predictions.json written {predictions['written_at']}: reused")
    else:
        t = time.time()
        lower_rows = _ok(sweep.run_sweep(lower, sweep_dir), budgets[:-1])
        timings["sweep below the top budget"] = time.time() - t
        t = time.time()
        fits = prediction.fit_laws(lower_rows, config.fit)
        planned = prediction.planned_inputs(config, top_points)
        predictions = prediction.predict_top_budget(
            fits, planned, n_eval=int(lower_rows[0]["n_eval"]), interval=float(config.check.interval),
            chance=float(config.fit.chance), fitted_budgets=budgets[:-1])
        write_json(predictions_path, predictions)  # before any top-budget run is scored
        timings["fit + predict"] = time.time() - t
        print(f"predictions.json written: best strategy by loss at {budgets[-1]:.3g} FLOPs predicted "
              f"{predictions['predicted_best']}")

    t = time.time()
    rows = _ok(sweep.run_sweep(config, sweep_dir), budgets)
    timings["sweep at the top budget"] = time.time() - t
    check = prediction.check_predictions(predictions, rows)
    write_json(os.path.join(workdir, "prediction_check.json"), check)
    prediction.plot_check(check, os.path.join(workdir, "prediction_check.png"))
    results.write_csv(rows, os.path.join(workdir, "results.csv"))

    t = time.time()
    fits = analysis.fit_forms(rows, config.fit, os.path.join(workdir, "fits"))
    comparison = analysis.compare_loo(fits)
    verdict = analysis.composition_verdict(fits["composition"])
    allocation = analysis.allocate_strategy(fits, comparison, config,
                                            float(config.allocate.budget_factor) * budgets[-1])
    write_json(os.path.join(workdir, "allocation.json"), allocation)
    analysis.plot_results(rows, os.path.join(workdir, "accuracy_vs_volume.png"))
    from tokeff.decide.plots import plot_budget_sweep

    plot_budget_sweep(allocation, os.path.join(workdir, "allocation.png"))
    timings["analysis (fits, LOO, allocation, plots)"] = time.time() - t
    timings["total"] = time.time() - started
    report = "\n".join([
        analysis.format_report(rows, fits, comparison, verdict, allocation, workdir, float(config.fit.chance)), "",
        prediction.format_check(predictions, check), "",
        "time: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()),
    ])
    write_text(os.path.join(workdir, "report.txt"), report + "\n")
    print(report)
    return 0


def _with_budgets(config, budgets):
    """The demo config with only `budgets` in its grid (run ids do not depend on the grid)."""
    part = copy.deepcopy(config)
    with part.unlocked():
        part.grid.budgets = tuple(budgets)
    return part


def _ok(rows, budgets) -> list[dict]:
    wanted = set(budgets)
    return [r for r in rows if r["status"] == "ok" and float(r["budget_flops"]) in wanted]


DEMO_OUTPUTS = ("predictions.json", "prediction_check.json", "prediction_check.png", "results.csv",
                "allocation.json", "accuracy_vs_volume.png", "allocation.png", "report.txt")


def _claim_workdir(workdir: str) -> None:
    """The run folder is new, empty, or an earlier demo's: a folder of the user's own files is refused
    (the demo writes report.txt, results.csv, ... there), and the folder is marked as tokeff's."""
    from tokeff.io import MANIFEST, claim_output_dir, read_manifest, write_json

    claim_output_dir(workdir, "demo", field="--workdir", allow_existing=True)
    os.makedirs(workdir, exist_ok=True)
    if read_manifest(workdir) is None:
        write_json(os.path.join(workdir, MANIFEST), {"kind": "demo", "files": list(DEMO_OUTPUTS)})
