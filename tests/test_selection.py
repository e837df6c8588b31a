"""Selection backtests: the within-group cut, the selection scores, and `backtest --decision model`."""

import json

import numpy as np
import pandas as pd
import pytest

from tokeff.errors import UserError
from tokeff.laws.selection import coverage, score_selection, within_group_cut


def test_the_cut_holds_out_the_top_of_each_group():
    order = np.array([1, 2, 3, 4, 10, 20, 30, 40, 50, 60.0])
    groups = np.array(["a"] * 4 + ["b"] * 6)
    held = within_group_cut(order, groups, 0.34)
    assert held.tolist() == [False, False, False, True] + [False] * 4 + [True, True]
    with pytest.raises(UserError, match="--frac"):
        within_group_cut(order, groups, 1.0)
    with pytest.raises(UserError, match="--group: group 'c'"):
        within_group_cut(np.array([1.0, 2.0]), np.array(["c", "c"]), 0.5)


def test_selection_scores_a_right_and_a_wrong_pick():
    rng = np.random.default_rng(0)
    observed = np.array([2.0, 1.5, 1.8, 2.4])
    right = observed[None, :] + 0.01 * rng.standard_normal((400, 4))
    s = score_selection(["a", "b", "c", "d"], right, observed, "loss")
    assert s.pick == "b" and s.pick_is_best and s.pick_rank == 1 and s.regret == 0.0
    assert s.pearson > 0.99 and s.spearman == pytest.approx(1.0) and s.p_best_pick > 0.99 and s.brier < 0.01
    wrong = right[:, [2, 0, 1, 3]]  # predicts c best (1.5), observed second-best (1.8)
    s = score_selection(["a", "b", "c", "d"], wrong, observed, "loss")
    assert s.pick == "c" and not s.pick_is_best and s.pick_rank == 2 and s.regret == pytest.approx(0.3)
    acc = score_selection(["a", "b"], np.array([[0.6, 0.7]] * 10), np.array([0.61, 0.72]), "accuracy")
    assert acc.pick == "b" and acc.pick_is_best


def test_coverage_levels():
    draws = np.random.default_rng(1).standard_normal((4000, 3))
    cov = coverage(draws, np.array([0.0, 1.0, 3.0]))
    assert cov == {"50%": pytest.approx(1 / 3), "90%": pytest.approx(2 / 3)}


def test_backtest_decision_model_cli(tmp_path, capsys):
    from tokeff.cli import main

    rng = np.random.default_rng(2)
    d = 200.0 * 2.0 ** np.arange(9)
    rows = []
    names = ("MBZUAI/LaMini-GPT-124M", "m1", "m2")  # a real model name, longer than any column was wide
    for name, e in zip(names, (1.0, 1.3, 1.6)):
        loss = (e + 1.0 / (1 + (d / 2e3) ** 0.45)) * np.exp(rng.normal(0, 0.005, d.shape))
        rows += [{"model": name, "n_examples": x, "eval_loss": y} for x, y in zip(d, loss)]
    pd.DataFrame(rows).to_csv(tmp_path / "curves.csv", index=False)
    code = main(["backtest", str(tmp_path / "curves.csv"), "--form", "finetune_data", "--decision", "model",
                 "--group", "model", "--by", "n_examples", "--frac", "0.25", "--method", "map",
                 "--likelihood", "student_t", "--out", str(tmp_path / "bt")])
    out = capsys.readouterr().out
    assert code == 0 and "pick MBZUAI/LaMini-GPT-124M" in out, out
    table = out.splitlines()[-4:]  # each group's predicted and observed far end, best observed first
    assert table[1].split()[0] == "MBZUAI/LaMini-GPT-124M" and [t.split()[0] for t in table[2:]] == ["m1", "m2"]
    report = json.load(open(tmp_path / "bt" / "backtest.json"))
    assert report["n_held_out"] == 6 and report["selection"]["pick_is_best"]
    assert report["selection"]["spearman"] == pytest.approx(1.0)


def test_run_draws_repeat_the_discrepancy_so_the_pick_does_not_move_with_its_noise():
    """`run_draws` draws the miss RUN_REPS times per posterior draw: two seeds then agree on the
    medians far better than one draw each does (the posterior draws are the same both times)."""
    from tokeff.laws.selection import run_draws

    class Fake:
        base = np.random.default_rng(0).normal(0.0, 0.01, (200, 1)) + np.array([[1.0, 1.02, 1.04]])

        def predictive(self, inputs, kind, *, seed=0, groups=None, new_groups=False, n_eval=None):
            assert kind == "new_run" and groups == ["a", "b", "c"]
            return self.base * np.exp(np.random.default_rng(seed).normal(0.0, 0.3, self.base.shape))

    fake, x = Fake(), {"D": np.ones(3)}
    one = [np.median(run_draws(fake, x, ["a", "b", "c"], seed=s, reps=1), axis=0) for s in range(20)]
    many = [np.median(run_draws(fake, x, ["a", "b", "c"], seed=s), axis=0) for s in range(20)]
    assert run_draws(fake, x, ["a", "b", "c"]).shape == (200 * 16, 3)
    assert np.std(many, axis=0).max() < 0.5 * np.std(one, axis=0).min()
