"""`tokeff backtest --decision frontier`: the split against a simulated isoFLOP sweep's own optima."""

import json

import numpy as np
import pandas as pd
import pytest

from tokeff.cli import main
from tokeff.decide.allocation_backtest import allocation_backtest
from tokeff.errors import UserError
from tokeff.laws.simulate import isoflop_table, true_loss


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    # A Kaplan-like truth (N and D inside one power, no irreducible loss): chinchilla's own frontier
    # misses its optima beyond the fit, the sweep's optima do not. One MAP fit, through the CLI.
    table = isoflop_table("kaplan", seed=0)
    d = tmp_path_factory.mktemp("abt")
    pd.DataFrame(table).to_csv(d / "sweep.csv", index=False)
    assert main(["backtest", str(d / "sweep.csv"), "--form", "chinchilla", "--method", "map", "--decision", "frontier",
                 "--by", "params*tokens_seen", "--frac", "0.33", "--out", str(d / "out")]) == 0
    assert (d / "out" / "backtest.png").stat().st_size > 0
    return json.loads((d / "out" / "backtest.json").read_text())


@pytest.mark.slow
def test_frontier_backtest_scores_the_held_out_budgets(report):
    assert report["n_budgets"] == 12 and report["n_held_out_budgets"] == 4
    assert report["fit_max_budget"] < min(b["budget_flops"] for b in report["budgets"])
    for b in report["budgets"]:
        s = b["sweep"]
        assert s["interior"]
        grid = np.geomspace(1e7, 1e12, 50001)
        true = grid[np.argmin(true_loss("kaplan", grid, b["budget_flops"] / 6 / grid))]
        assert abs(np.log(s["n_opt"] / true)) < 0.35  # the parabola finds the truth's optimum
        for key in ("tokeff", "law", "approach2", "approach2_bayes"):
            assert b[key]["abs_log_error"] == pytest.approx(abs(np.log(b[key]["N_opt"] / s["n_opt"])))
            assert b[key]["regret_pct"] >= -1e-9  # nothing beats the parabola's own minimum
    scores = report["scores"]
    # The law's own frontier is off by ~1.6x with intervals that miss; carried to the sweep's optima
    # the decision is as accurate as Approach 2 and its intervals hold.
    assert scores["law"]["mean_abs_log_error"] > 0.3 and scores["law"]["holds"] <= 1
    assert scores["tokeff"]["mean_abs_log_error"] < 0.15
    assert scores["tokeff"]["holds"] >= 3
    assert scores["tokeff"]["mean_abs_log_error"] < scores["approach2"]["mean_abs_log_error"] + 0.05
    assert all(b["tokeff"]["source"] == "law+sweep" for b in report["budgets"])


def test_frontier_backtest_refuses_bad_input(tmp_path):
    table = isoflop_table("chinchilla", seed=0, budgets=4)
    with pytest.raises(UserError, match="--frac"):
        allocation_backtest(table, "chinchilla", by="budget", frac=0.2, method="map")
    with pytest.raises(UserError, match="pretraining"):
        allocation_backtest(table, "finetune_multiplicative", by="budget", method="map")


def test_choice_backtest_on_a_pilot_table(tmp_path):
    # A simulated pilot (volume-law truth, bigger models never worse): at the held-out budget the
    # choice takes the largest model, and the report says whether a miss of the observed best is
    # beyond the eval set's binomial noise.
    from tokeff.laws.pilot import pilot_table

    pd.DataFrame(pilot_table(0)).to_csv(tmp_path / "pilot.csv", index=False)
    assert main(["backtest", str(tmp_path / "pilot.csv"), "--form", "volume", "--method", "map", "--decision", "choice",
                 "--by", "budget_tokens", "--out", str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out" / "backtest.json").read_text())
    assert report["n_held_out_budgets"] == 1 and report["scores"]["of"] == 1
    b = report["budgets"][0]
    models = np.asarray(b["options"]["M"])
    assert models[b["chosen"]] == models.max()
    assert 0 <= b["observed_regret"] <= b["observed_spread"]
    assert b["miss_beyond_noise"] == (b["observed_regret"] > 2 * b["noise_sd"])
