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

import contextlib
import copy
import os
import time

from tokeff import results, sweep
from tokeff.io import write_text


def run_demo(config_path: str | None, overrides: list[str], workdir: str) -> int:
    """The demo (config file, `--config.KEY=VALUE` overrides) in the run folder `workdir`."""
    from tokeff.cache import enable_compilation_cache
    from tokeff.demo import analysis, prediction
    from tokeff.demo.config import load_demo_config

    config = load_demo_config(config_path, overrides)
    enable_compilation_cache()
    clock = _Clock()
    budgets = sorted(float(b) for b in config.grid.budgets)
    print(f"tokeff demo: {len(sweep.grid_points(config))} fine-tunes of {', '.join(config.grid.models)} on "
          f"{config.train.data.source}:{config.train.data.subjects}, budgets "
          f"{', '.join(f'{b:.3g}' for b in budgets)} FLOPs; run folder {workdir}")
    _claim_workdir(workdir)
    sweep_dir, predictions_path = os.path.join(workdir, "sweep"), os.path.join(workdir, "predictions.json")

    predictions = prediction.read_predictions(predictions_path, config)
    if predictions is not None:
        print(f"predictions.json written {predictions['written_at']}: reused")
    else:
        with clock("sweep below the top budget"):
            lower_rows = _sweep(config, budgets[:-1], sweep_dir)
        with clock("fit + predict"):
            predictions = prediction.predict_and_write(config, lower_rows, predictions_path,
                                                       os.path.join(workdir, "fits", "prediction"))
        print(f"predictions.json written: best strategy by loss at {budgets[-1]:.3g} FLOPs predicted "
              f"{predictions['predicted_best']}")
    with clock("sweep at the top budget"):
        rows = _sweep(config, budgets, sweep_dir)
    check = prediction.check_and_plot(predictions, rows, workdir)
    results.write_csv(rows, os.path.join(workdir, "results.csv"))
    with clock("analysis (fits, LOO, allocation, plots)"):
        analysed = analysis.analyse(rows, config, workdir)
    report = "\n".join([analysed, "", prediction.format_check(predictions, check), "", clock.line()])
    write_text(os.path.join(workdir, "report.txt"), report + "\n")
    print(report)
    return 0


class _Clock:
    """Seconds per stage, and in all since it was made: the report's `time:` line."""

    def __init__(self):
        self.started, self.stages = time.time(), {}

    @contextlib.contextmanager
    def __call__(self, stage: str):
        t = time.time()
        yield
        self.stages[stage] = time.time() - t

    def line(self) -> str:
        stages = {**self.stages, "total": time.time() - self.started}
        return "time: " + ", ".join(f"{k} {v:.0f} s" for k, v in stages.items())


def _sweep(config, budgets, sweep_dir: str) -> list[dict]:
    """The ok rows of the demo's sweep run at `budgets` only (run ids do not depend on the grid)."""
    part = config
    if set(budgets) != {float(b) for b in config.grid.budgets}:
        part = copy.deepcopy(config)
        with part.unlocked():
            part.grid.budgets = tuple(budgets)
    return [r for r in sweep.run_sweep(part, sweep_dir) if r["status"] == "ok" and float(r["budget_flops"]) in budgets]


DEMO_OUTPUTS = ("predictions.json", "prediction_check.json", "prediction_check.png", "results.csv",
                "allocation.json", "accuracy_vs_volume.png", "allocation.png", "report.txt")


def _claim_workdir(workdir: str) -> None:
    """The run folder is new, empty, or a demo's run folder (resumed): a folder of the user's own files is refused
    (the demo writes report.txt, results.csv, ... there), and the folder is marked as tokeff's.

    The demo writes its files in place, not staged (`tokeff.io.output_dir` checks each staged file
    against the manifest), so another tokeff output (a fit, a backtest) is refused too: files the
    user added there beside tokeff's could bear the demo's names."""
    from tokeff.errors import UserError
    from tokeff.io import MANIFEST, claim_output_dir, read_manifest, write_json
    from tokeff.ownership import release_output_lock

    path = claim_output_dir(workdir, "demo", field="--workdir", allow_existing=True)
    manifest = read_manifest(path)
    if manifest is not None and manifest.get("kind") != "demo":
        release_output_lock(path)
        raise UserError(f"--workdir: {path} holds a tokeff {manifest.get('kind', 'output')}, not a demo run folder; "
                        "choose a new directory")
    os.makedirs(path, exist_ok=True)
    if manifest is None:
        write_json(os.path.join(path, MANIFEST), {"kind": "demo", "files": list(DEMO_OUTPUTS)})
