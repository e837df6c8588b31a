"""Stacking of predictive distributions across forms: weights, the mixture, fit/save/load."""

import numpy as np
import pytest

from tokeff.errors import UserError
from tokeff.laws import stacking


def test_weights_sum_to_one_and_favour_the_form_that_predicts_the_future():
    rng = np.random.default_rng(0)
    y = rng.normal(0, 1, 200)
    from scipy.stats import norm

    good, biased, wide = norm.logpdf(y), norm.logpdf(y, 1.5, 1), norm.logpdf(y, 0, 5)
    w = stacking.stacking_weights(np.stack([biased, good, wide], axis=1))
    assert w.sum() == pytest.approx(1.0) and (w >= 0).all()
    assert w[1] > 0.9


def test_weights_are_the_maximum_of_the_log_score_by_hand():
    # Densities (rows: held-out runs; columns: forms) (1, 0.5) and (0.5, 1): symmetric, w = (0.5, 0.5).
    sym = np.log(np.array([[1.0, 0.5], [0.5, 1.0]]))
    np.testing.assert_allclose(stacking.stacking_weights(sym), [0.5, 0.5], atol=1e-6)
    # (2, 1) and (1, 1): log(2w + 1 - w) + log(1) = log(1 + w): w = 1.
    np.testing.assert_allclose(stacking.stacking_weights(np.log(np.array([[2.0, 1.0], [1.0, 1.0]]))), [1, 0], atol=1e-3)
    # A mix beats either form: (e^0, e^-10) on one row and (e^-10, e^0) on the other.
    mix = stacking.stacking_weights(np.array([[0.0, -10.0], [-10.0, 0.0], [0.0, -10.0]]))
    assert mix[0] == pytest.approx(2 / 3, abs=1e-3) and mix[1] == pytest.approx(1 / 3, abs=1e-3)


def test_a_form_that_could_not_predict_gets_no_weight():
    lp = np.array([[-1.0, -np.inf], [-1.2, -0.5]])
    w = stacking.stacking_weights(lp)
    assert w.tolist() == [1.0, 0.0]
    with pytest.raises(UserError, match="no stacked form"):
        stacking.stacking_weights(np.full((2, 2), -np.inf))


def test_mixture_counts_follow_the_weights_and_sum_to_the_total():
    assert stacking.mixture_counts(np.array([0.5, 0.3, 0.2]), 10).tolist() == [5, 3, 2]
    counts = stacking.mixture_counts(np.array([1 / 3, 1 / 3, 1 / 3]), 100)
    assert counts.sum() == 100 and sorted(counts.tolist()) == [33, 33, 34]
    assert stacking.mixture_counts(np.array([1.0, 0.0]), 7).tolist() == [7, 0]


def test_form_names_parse_and_refuse():
    assert stacking.form_names("chinchilla") is None
    assert stacking.form_names("chinchilla, kaplan,farseer") == ["chinchilla", "kaplan", "farseer"]
    with pytest.raises(UserError, match="--form"):
        stacking.form_names("chinchilla,chinchilla")
    with pytest.raises(UserError, match="share inputs"):
        stacking.member_forms(["chinchilla", "volume"])


@pytest.fixture(scope="module")
def kaplan_sweep():
    from tokeff.laws.simulate import isoflop_table

    t = isoflop_table("kaplan", seed=0, budgets=8, per_budget=6)
    return {k: t[k] for k in ("params", "tokens_seen", "eval_loss")}


@pytest.fixture(scope="module")
def stacked(kaplan_sweep):
    # MAP without the discrepancy term: the weights, not the intervals, are what is checked here.
    return stacking.fit_stacked(kaplan_sweep, "chinchilla,kaplan", method="map", discrepancy="none", laplace_draws=400)


@pytest.mark.slow
def test_a_kaplan_truth_gives_kaplan_most_of_the_weight(stacked):
    w = stacked.summary["weights"]
    assert sum(w.values()) == pytest.approx(1.0)
    assert w["kaplan"] > 0.8, w
    assert len(stacked.summary["inner_cuts"]) == stacking.INNER_CUTS
    assert stacked.diagnostics["ok"] and stacked.diagnostics["weights"] == w


@pytest.mark.slow
def test_the_stacked_predictive_mixes_members_by_weight_and_round_trips(stacked, tmp_path):
    x = {"N": np.array([1e9, 3e9]), "D": np.array([2e10, 6e10])}
    draws = stacked.predictive(x, "mean", seed=0)
    assert draws.shape == (400, 2) and np.isfinite(draws).all()
    # Every draw is one member's: count the draws that equal a member's own draws.
    own = {m.form.name: m.predictive(x, "mean", seed=k) for k, m in enumerate(stacked.members)}
    from_kaplan = np.isin(draws[:, 0], own["kaplan"][:, 0]).sum()
    assert from_kaplan == stacking.mixture_counts(stacked.weights, 400)[1]
    from tokeff.laws.fit import load_fit

    loaded = load_fit(stacked.save(str(tmp_path / "stack"), plots=False))
    assert isinstance(loaded, stacking.StackedFit) and loaded.forms == ["chinchilla", "kaplan"]
    np.testing.assert_allclose(loaded.weights, stacked.weights)
    np.testing.assert_allclose(loaded.predictive(x, "mean", seed=0), draws, rtol=1e-5)


@pytest.mark.parametrize("form, message", [
    ("chinchilla,volume", "--form: stacked forms must share inputs"),
    ("chinchilla,chinchilla", "--form: a stack needs two or more different forms"),
])
def test_cli_fit_refuses_a_bad_stack_and_writes_nothing(kaplan_sweep, tmp_path, capsys, form, message):
    import os

    import pandas as pd

    from tokeff.cli import main

    path = tmp_path / "runs.csv"
    pd.DataFrame(kaplan_sweep).to_csv(path, index=False)
    out = tmp_path / "fit"
    assert main(["fit", str(path), "--form", form, "--method", "map", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not os.path.exists(out)


@pytest.mark.slow
def test_predict_and_allocate_draw_from_the_stack(stacked):
    """`tokeff predict` and `allocate` take a stacked fit: predictions from the mixture, and the
    compute-optimal frontier from the members' frontiers mixed by the same weights."""
    from tokeff.decide.allocation import allocate_fit
    from tokeff.laws.predictions import predict_points

    pred = predict_points(stacked, {"N": np.array([1e9]), "D": np.array([2e10])})
    assert pred.form == "chinchilla,kaplan" and len(pred.rows) == 1
    out = allocate_fit(stacked, 1e21)
    assert out["form"] == "chinchilla,kaplan" and out["n_draws"] == 400
    tpp = out["decision"]["tokens_per_param"]
    assert 0 < tpp["q05"] <= tpp["median"] <= tpp["q95"]
    with pytest.raises(UserError, match="stacked fit"):
        stacking.refuse_stacked(stacked, "propose reweights")


@pytest.mark.slow
def test_cli_backtest_of_a_stack_reports_its_weights(kaplan_sweep, tmp_path, capsys):
    import json

    import pandas as pd

    from tokeff.cli import main

    path = tmp_path / "runs.csv"
    pd.DataFrame(kaplan_sweep).to_csv(path, index=False)
    out = tmp_path / "bt"
    assert main(["backtest", str(path), "--form", "chinchilla,kaplan", "--method", "map", "--discrepancy", "none",
                 "--by", "params*tokens_seen", "--out", str(out), "--no-plots"]) == 0
    report = json.loads((out / "backtest.json").read_text())
    assert report["form"] == "chinchilla,kaplan"
    weights = report["cuts"][0]["stacking_weights"]
    assert sum(weights.values()) == pytest.approx(1.0) and weights["kaplan"] > 0.5
    assert "cut 1 stacking weights: chinchilla" in capsys.readouterr().out
