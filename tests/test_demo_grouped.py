"""The gpu demo config's grouped path on CPU, at smoke size (`smoke_models`: two tiny models): the
laws fitted per model, pooled; each top-budget run predicted at its own model's law; the report
says which model, with P(best) and expected regret. Runs are simulated rows (no training)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tokeff.errors import UserError

STRATEGIES = ("few_long", "many_short", "balanced")


def rows(config, seed: int = 0) -> list[dict]:
    """Sweep-like rows: tiny-qwen answers 25 points better than tiny at every budget and strategy."""
    from tokeff.models.config import get_preset

    rng = np.random.default_rng(seed)
    out = []
    for model, lift in (("tiny", 0.0), ("tiny-qwen", 0.25)):
        for budget in config.grid.budgets:
            for k, strategy in enumerate(STRATEGIES):
                n, length = int(budget / 1e7) // (k + 1), 10.0 * (k + 1)
                acc = float(np.clip(0.3 + lift + 0.02 * np.log(n * length / 100) + rng.normal(0, 0.01), 0.26, 0.99))
                loss = float((1.5 - lift) * (n * length) ** -0.05 * np.exp(rng.normal(0, 0.01)))
                out.append({"run_id": f"{model}-{budget:g}-{strategy}", "model": model,
                            "params": get_preset(model).params, "strategy": strategy, "seed": 0,
                            "n_examples": n, "avg_tokens": length, "budget_flops": float(budget),
                            "flops_used": float(budget), "eval_loss": loss, "accuracy": round(acc * 200) / 200,
                            "n_eval": 200, "status": "ok", "extra": {"chance": 0.25}})
    return out


@pytest.fixture(scope="module")
def config():
    from tokeff.demo.config import load_demo_config

    return load_demo_config(":smoke_models")


def test_gpu_config_groups_its_models():
    from tokeff.demo.config import load_demo_config

    gpu = load_demo_config(":gpu")
    assert gpu.group == "model" and len(gpu.grid.models) == 4
    assert load_demo_config(":smoke").group == ""  # the CPU demo and its smoke stay on one law
    with pytest.raises(UserError, match="config.group"):
        load_demo_config(":smoke", ["--config.group=model"])  # one model: nothing to group
    with pytest.raises(UserError, match="config.group"):
        load_demo_config(":smoke_models", ["--config.group=strategy"])


@pytest.mark.slow
def test_grouped_analysis_and_prediction_name_the_model(config, tmp_path):
    from tokeff.demo import analysis, prediction

    table = rows(config)
    report = analysis.analyse(table, config, str(tmp_path))
    allocation = json.loads((tmp_path / "allocation.json").read_text())
    which = allocation["by_group"]
    assert allocation["group_column"] == "model" and which["choice"] == "tiny-qwen", which
    assert which["groups"][0]["p_best"] > 0.9 and which["groups"][1]["expected_regret"] > 0.05
    assert "which model" in report and "choose model tiny-qwen" in report
    assert "per model (2, pooled; population)" in report and "LOO prefers" in report

    top = max(config.grid.budgets)
    lower = [r for r in table if r["budget_flops"] < top]
    fits = prediction.fit_laws(lower, config.fit, group="model")
    planned = [{k: r[k] for k in ("run_id", "model", "strategy", "seed", "budget_flops", "n_examples", "avg_tokens")}
               for r in table if r["budget_flops"] == top]
    predicted = prediction.predict_top_budget(fits, planned, n_eval=200, interval=0.9, chance=0.25,
                                              fitted_budgets=sorted(config.grid.budgets)[:-1])
    assert predicted["predicted_best"].startswith("tiny-qwen ")  # an option is a model and a strategy
    by_model = {p["model"]: p["loss"]["median"] for p in predicted["points"] if p["strategy"] == "few_long"}
    assert by_model["tiny-qwen"] < by_model["tiny"]  # each run at its own model's law
    check = prediction.check_predictions(predicted, table)
    assert check["observed_best"].startswith("tiny-qwen ")
    assert "model strategy" in prediction.format_check(predicted, check)
