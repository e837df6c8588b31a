"""`tokeff allocate` and `tokeff propose` on grouped fits: the groups are the models, each option is
a group x the option space, and the output says which model with P(best) and expected regret."""

import json
import pathlib
import sys

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent / "fixtures"))
from handmade_fit import save_grouped_fit_dir  # noqa: E402

LONG = "hf:HuggingFaceTB/SmolLM2-360M-Instruct"  # a label longer than any column was wide


@pytest.fixture(scope="module")
def grouped(tmp_path_factory):
    """Hand-made draws: the last group (qwen2.5-0.5b) has the lowest floor by 0.2 nats."""
    return save_grouped_fit_dir(tmp_path_factory.mktemp("g") / "fit", groups=("smollm2-135m", LONG, "qwen2.5-0.5b"))


def test_allocate_grouped_names_the_model(grouped, tmp_path, capsys):
    from tokeff.cli import main

    assert main(["allocate", grouped, "--budget", "1e16", "--lengths-grid", "64,256", "--out", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert "choose model qwen2.5-0.5b" in out and f"{LONG} N=" in out  # the long label printed whole
    result = json.load(open(tmp_path / "a" / "allocation.json"))
    assert result["group_column"] == "model"
    assert len(result["options"]) == 6 and {o["group"] for o in result["options"]} == {"smollm2-135m", LONG,
                                                                                       "qwen2.5-0.5b"}
    assert result["decision"]["group"] == "qwen2.5-0.5b" and result["decision"]["model"] == "qwen2.5-0.5b"
    # The options of one group are costed by its preset: the larger model buys fewer examples.
    n = {o["group"]: o["n_examples"] for o in result["options"] if o["avg_tokens"] == 64}
    assert n["smollm2-135m"] > n[LONG] > n["qwen2.5-0.5b"]
    which = result["by_group"]
    assert which["choice"] == "qwen2.5-0.5b" and not which["cannot_tell_apart"]
    assert [g["group"] for g in which["groups"]] == ["qwen2.5-0.5b", LONG, "smollm2-135m"]
    assert which["groups"][0]["p_best"] > 0.99 and which["groups"][0]["expected_regret"] < 1e-3
    assert which["groups"][2]["expected_regret"] > which["groups"][1]["expected_regret"] > 0.05
    assert all(p["group"] == "qwen2.5-0.5b" for p in result["budget_sweep"])


def test_allocate_grouped_new_model_is_wide_and_a_near_tie(grouped, tmp_path, capsys):
    """A model the fit never saw is drawn from the population: its interval is wide, and against a
    fitted model close to the population it cannot be told apart."""
    from tokeff.cli import main

    assert main(["allocate", grouped, "--budget", "1e16", "--lengths-grid", "64", "--group-value", LONG,
                 "smollm2-1.7b", "--new-group", "--out", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert "cannot tell apart" in out
    result = json.load(open(tmp_path / "a" / "allocation.json"))
    width = {o["group"]: o["predicted"]["q95"] - o["predicted"]["q05"] for o in result["options"]}
    assert width["smollm2-1.7b"] > 5 * width[LONG]
    assert result["by_group"]["cannot_tell_apart"]


def test_a_new_models_options_share_one_draw_of_it(grouped):
    """Two options of one new model are compared on the same draw of it, whatever else is asked."""
    from tokeff.laws.fit import load_fit

    fit = load_fit(grouped)
    x = {"D": np.array([1e4, 1e5, 1e4])}
    a = fit.predictive(x, "mean", groups=["new", "new", "qwen2.5-0.5b"], new_groups=True)
    b = fit.predictive({"D": np.array([1e4])}, "mean", groups=["new"], new_groups=True)
    np.testing.assert_allclose(a[:, 0], b[:, 0], rtol=1e-6)
    assert np.all(a[:, 1] <= a[:, 0] + 1e-9)  # more data never hurts, draw by draw: one curve per draw


def test_propose_grouped_points_run_the_groups(grouped, tmp_path, capsys):
    from tokeff.cli import main

    assert main(["propose", grouped, "--lengths-grid", "64", "--n-examples", "1000,10000", "--budget", "1e16",
                 "--sims", "8", "--out", str(tmp_path / "p")]) == 0
    out = capsys.readouterr().out
    assert LONG in out
    result = json.load(open(tmp_path / "p" / "proposals.json"))
    assert result["group_column"] == "model" and result["n_candidates"] == 6
    points = json.load(open(tmp_path / "p" / "sweep_points.json"))["points"]
    by_model = {p["model"] for p in points}
    assert LONG in by_model  # the sweep runs the group's own model spec, not its preset
    assert all(p["group"] in ("smollm2-135m", LONG, "qwen2.5-0.5b") for p in result["proposals"])


@pytest.mark.slow
def test_small_variational_grouped_fit_then_allocate_picks_the_best_model(monkeypatch):
    """A real (variational, shortened) grouped fit of simulated curves: the lowest-floor model wins."""
    from tokeff.decide.allocation import allocate_fit
    from tokeff.decide.options import OptionSpace
    from tokeff.laws import hierarchy

    monkeypatch.setattr(hierarchy, "VI_STEPS", 800)
    monkeypatch.setattr(hierarchy, "VI_RESTARTS", 1)
    rng = np.random.default_rng(0)
    rows = []
    for model, floor in (("smollm2-135m", 1.5), ("smollm2-360m", 1.2), ("qwen2.5-0.5b", 0.9)):
        d = np.geomspace(200, 2e5, 6)
        loss = (floor + 1.0 / (1 + (d / 3e3) ** 0.4)) * np.exp(rng.normal(0, 0.01, len(d)))
        rows += [{"model": model, "n_examples": x, "eval_loss": y} for x, y in zip(d, loss)]
    fit = hierarchy.fit_grouped(pd.DataFrame(rows), "finetune_data", "model", method="map", seed=0,
                                laplace_draws=400, discrepancy="none")
    result = allocate_fit(fit, 1e16, OptionSpace(models=(), lengths=(64,)))
    assert result["by_group"]["choice"] == "qwen2.5-0.5b", result["by_group"]
    assert result["by_group"]["groups"][0]["p_best"] > 0.9
    # propose on the same fit: candidates are the groups x N x L, scored on the same decision.
    from tokeff.decide.options import grouped_space
    from tokeff.decide.proposals import candidates, propose

    space = grouped_space(fit, OptionSpace(models=(), lengths=(64,), n_examples=(1000, 10000)))
    cands = candidates(None, space, groups=fit.groups)
    proposed = propose(fit, cands, space, 1e16, sims=8, top=6)
    assert proposed["n_candidates"] == 6 and proposed["group_column"] == "model"
    assert {p["group"] for p in proposed["proposals"]} == {"smollm2-135m", "smollm2-360m", "qwen2.5-0.5b"}
    assert all(p["expected_information"] >= 0 for p in proposed["proposals"])


def test_each_group_selects_from_its_own_pool():
    """Groups whose tokenizers count the same examples differently select from their own lengths."""
    from tokeff.decide.options import DataPool, OptionSpace

    short, long = DataPool(lengths=np.full(500, 10)), DataPool(lengths=np.full(500, 40))
    space = OptionSpace(models=("tiny",), strategies=("few_long",), pool=short,
                        groups=(("a", "tiny"), ("b", "tiny")), group_pools=(("b", long),))
    options, _ = space.at(1e10)
    by = {o.group: o for o in options}
    assert by["a"].avg_tokens == 10 and by["b"].avg_tokens == 40 and by["a"].n_examples > by["b"].n_examples
