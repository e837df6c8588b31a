"""`tokeff predict`: intervals per row and group, P(best), the choice; grouped and ungrouped fits."""

import json
import pathlib
import sys

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent / "fixtures"))
from handmade_fit import save_fit_dir, save_grouped_fit_dir  # noqa: E402


@pytest.fixture(scope="module")
def grouped(tmp_path_factory):
    return save_grouped_fit_dir(tmp_path_factory.mktemp("g") / "fit")


def test_predict_grouped_names_the_best_group(grouped, tmp_path, capsys):
    from tokeff.cli import main

    assert main(["predict", grouped, "--at", "D=1.6e6", "--out", str(tmp_path / "p")]) == 0
    out = capsys.readouterr().out
    assert "choose m3" in out
    rows = pd.read_csv(tmp_path / "p" / "predictions.csv")
    assert list(rows["model"]) == ["m1", "m2", "m3"]
    for col in ("D", "median", "q05", "q25", "q75", "q95", "mean_median", "mean_q05", "mean_q95", "p_best",
                "expected_regret"):
        assert col in rows
    assert (rows["q05"] <= rows["q25"]).all() and (rows["q25"] <= rows["median"]).all()
    assert (rows["q75"] <= rows["q95"]).all()
    # A new observation is wider than the law's mean.
    assert ((rows["q95"] - rows["q05"]) > (rows["mean_q95"] - rows["mean_q05"])).all()
    assert rows["p_best"].iloc[2] > 0.99 and rows["p_best"].sum() == pytest.approx(1.0)
    assert rows["expected_regret"].iloc[2] < rows["expected_regret"].iloc[0]
    saved = json.load(open(tmp_path / "p" / "predictions.json"))
    assert saved["choices"][0]["choice"] == "m3" and not saved["choices"][0]["cannot_tell_apart"]


def test_predict_table_and_new_group(grouped, tmp_path, capsys):
    from tokeff.cli import main

    pd.DataFrame({"n_examples": [1e3, 1e6]}).to_csv(tmp_path / "points.csv", index=False)
    assert main(["predict", grouped, "--table", str(tmp_path / "points.csv"), "--group-value", "m1", "newbie",
                 "--new-group", "--out", str(tmp_path / "p")]) == 0
    rows = pd.read_csv(tmp_path / "p" / "predictions.csv")
    assert len(rows) == 4 and list(rows["new_group"]) == [False, True, False, True]
    width = rows["mean_q95"] - rows["mean_q05"]
    assert (width[rows["new_group"]].to_numpy() > 3 * width[~rows["new_group"]].to_numpy()).all()


def test_near_ties_cannot_be_told_apart(tmp_path, capsys):
    """Two groups with the same law: the choice is reported as a toss-up."""
    from tokeff.laws.fit import load_fit
    from tokeff.laws.predictions import format_predictions, predict_points

    fit = load_fit(save_grouped_fit_dir(tmp_path / "fit", groups=("a", "b")))
    fit.samples["E"][:, 1] = fit.samples["E"][:, 0][::-1]  # same floor distribution, other draws
    p = predict_points(fit, {"D": np.array([1e6])})
    assert p.choices[0]["cannot_tell_apart"]
    assert "cannot tell apart" in format_predictions(p)


def test_predict_ungrouped_fit(tmp_path, capsys):
    from tokeff.cli import main

    rng = np.random.default_rng(0)
    n, d = np.geomspace(1e8, 1e10, 8), np.geomspace(1e10, 1e11, 8)
    loss = 1.69 + 406.4 / n ** 0.34 + 410.7 / d ** 0.28
    draws = {k: v * np.exp(0.02 * rng.standard_normal(200))
             for k, v in dict(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28).items()}
    draws["sigma"] = np.full(200, 0.02)
    fit_dir = save_fit_dir(tmp_path / "fit", "chinchilla", draws, {"N": n, "D": d}, loss)
    assert main(["predict", fit_dir, "--at", "N=1e9", "D=2e10", "--out", str(tmp_path / "p")]) == 0
    rows = pd.read_csv(tmp_path / "p" / "predictions.csv")
    assert len(rows) == 1 and "model" not in rows
    expected = 1.69 + 406.4 / 1e9 ** 0.34 + 410.7 / 2e10 ** 0.28
    assert rows["mean_median"].iloc[0] == pytest.approx(expected, rel=0.02)


def test_long_group_labels_print_whole(tmp_path):
    """Model names as groups are printed whole by predict and by the grouped fit's table."""
    from tokeff.laws.fit import load_fit
    from tokeff.laws.hierarchy import format_grouped
    from tokeff.laws.predictions import format_predictions, predict_points

    names = ("EleutherAI/pythia-1.4b-deduped", "MBZUAI/LaMini-GPT-124M", "m3")
    fit = load_fit(save_grouped_fit_dir(tmp_path / "fit", groups=names))
    out = format_predictions(predict_points(fit, {"D": np.array([1e6])}))
    assert "choose m3" in out
    assert sum(line.split()[0] in names for line in out.splitlines()) == 3
    summary = {"population": {}, "shared": {}, "group": {"column": "model"},
               "groups": {n: {"n_points": 6, "params": {}} for n in names}}
    lines = format_grouped(summary).splitlines()
    assert [line.split()[0] for line in lines[2:]] == list(names)


def test_predict_refuses_a_table_too_large_for_memory(grouped, tmp_path, monkeypatch, capsys):
    """Rows x groups x draws is estimated before any draw: over the memory limit, one line and nothing written."""
    import tokeff.resources
    from tokeff.cli import main

    monkeypatch.setattr(tokeff.resources, "memory_budget", lambda: 2**20)  # 1 MiB
    pd.DataFrame({"n_examples": np.arange(1, 101) * 1e3}).to_csv(tmp_path / "points.csv", index=False)
    assert main(["predict", grouped, "--table", str(tmp_path / "points.csv"), "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--table" in err and "points (rows x groups)" in err, err
    assert not (tmp_path / "p").exists()


def test_predict_a_stack_of_two_fits(tmp_path):
    """A stacked fit has no draws of its own: predictions mix its members' (and are sized by them)."""
    from tokeff.laws.fit import load_fit
    from tokeff.laws.predictions import predict_points
    from tokeff.laws.stacking import StackedFit

    rng = np.random.default_rng(0)
    n, d = np.geomspace(1e8, 1e10, 8), np.geomspace(1e10, 1e11, 8)
    loss = 1.69 + 406.4 / n ** 0.34 + 410.7 / d ** 0.28
    members = []
    for k in range(2):
        draws = {p: v * np.exp(0.02 * rng.standard_normal(200))
                 for p, v in dict(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28).items()}
        draws["sigma"] = np.full(200, 0.02)
        members.append(load_fit(save_fit_dir(tmp_path / f"m{k}", "chinchilla", draws, {"N": n, "D": d}, loss)))
    stack = StackedFit(members=members, weights=np.array([0.5, 0.5]), summary={})
    pred = predict_points(stack, {"N": np.array([1e9]), "D": np.array([2e10])})
    assert len(pred.rows) == 1 and 2.0 < pred.rows[0]["median"] < 3.0
