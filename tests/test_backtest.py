"""`tokeff backtest`: cuts, scores, outputs, and bad input (MAP fits on a small table: seconds)."""

import json
import os

import numpy as np
import pandas as pd
import pytest

from tokeff.cli import main
from tokeff.errors import UserError
from tokeff.laws.backtest import backtest, between_ties, origins
from tokeff.laws.forms import get_form, register_form
from tokeff.laws.simulate import design, simulate


@register_form(
    name="test_backtest_law",
    inputs=("N",),
    target="loss",
    params={"E": "lognormal(0.5, 0.5)", "A": "lognormal(4, 1.5)", "alpha": "uniform(0.05, 1)"},
    columns={"N": "params"},
    typical_ranges={"N": (1e6, 1e10)},
)
def _law(p, x):
    return p["E"] + p["A"] * x["N"] ** -p["alpha"]


@pytest.fixture(scope="module")
def csv(tmp_path_factory):
    form = get_form("test_backtest_law")
    d = simulate(form, {"E": 1.8, "A": 60.0, "alpha": 0.3}, design(form, 40, seed=0), sigma=0.01, seed=1)
    path = tmp_path_factory.mktemp("bt") / "runs.csv"
    budget = np.repeat(np.arange(8), 5)
    pd.DataFrame({"params": np.sort(d["N"]), "eval_loss": d["y"][np.argsort(d["N"])], "budget": budget}).to_csv(
        path, index=False)
    return path


def test_origins_roll_through_the_top_fraction():
    assert origins(100, frac=0.3) == [(70, 100)]
    assert origins(100, frac=0.3, cuts=3) == [(70, 80), (80, 90), (90, 100)]
    with pytest.raises(UserError, match="--frac"):
        origins(100, frac=0.0)


def test_cuts_fall_between_tied_values():
    budgets = np.repeat([1.0, 2.0, 3.0, 4.0], 5)  # 4 isoFLOP budgets of 5 runs
    assert between_ties([(13, 20)], budgets) == [(15, 20)]
    assert between_ties([(12, 20)], budgets) == [(10, 20)]
    assert between_ties([(13, 20)], budgets * (1 + 1e-15 * np.arange(20))) == [(15, 20)]  # rounding is a tie
    assert between_ties([(14, 16), (16, 18), (18, 20)], np.arange(20.0)) == [(14, 16), (16, 18), (18, 20)]
    with pytest.raises(UserError, match="--cuts"):
        between_ties([(13, 14), (14, 20)], budgets)  # both cuts land on 15
    with pytest.raises(UserError, match="--by: every row"):
        between_ties([(10, 20)], np.ones(20))


def test_backtest_keeps_a_budget_on_one_side_whatever_the_row_order(csv, tmp_path):
    """Ordered by the budget column (5 tied runs a budget), the top 30% would cut budget 5 at row 28:
    the cut moves to row 30, between budgets, and a shuffled copy of the table gives the same split."""
    shuffled = tmp_path / "shuffled.csv"
    pd.read_csv(csv).sample(frac=1.0, random_state=3).to_csv(shuffled, index=False)
    reports = [backtest(str(path), "test_backtest_law", by="budget", frac=0.3, method="map") for path in (csv, shuffled)]
    for report in reports:
        assert report["n_fit"] == 30 and report["n_held_out"] == 10
        assert max(report["fitted"]["order"]) < min(report["held_out"]["order"])
    assert sorted(reports[0]["held_out"]["observed"]) == sorted(reports[1]["held_out"]["observed"])


def test_backtest_scores_held_out_rows(csv):
    report = backtest(str(csv), "test_backtest_law", by="params", frac=0.25, method="map")
    assert report["n_held_out"] == 10 and report["n_fit"] == 30
    assert set(report["coverage"]) == {"0.5", "0.8", "0.9"}
    assert report["coverage"]["0.5"] <= report["coverage"]["0.8"] <= report["coverage"]["0.9"]
    assert report["extrapolation_factor"] > 1
    assert 0 <= report["median_abs_pct_error"] < 5
    da = report["decision_accuracy"]
    assert da["pairs"] > 0 and 0 <= da["all"] <= 1 and da["within_group_pairs"] > 0


def test_backtest_applies_the_exclusion_rule_unless_told_not_to(csv, tmp_path, capsys):
    """A diverged run (10x the loss) is left out and reported, as `tokeff fit` would; with
    `--no-exclude` (exclude=False) every row is fitted."""
    frame = pd.read_csv(csv)
    frame.loc[3, "eval_loss"] *= 10
    path = tmp_path / "diverged.csv"
    frame.to_csv(path, index=False)
    report = backtest(str(path), "test_backtest_law", by="params", frac=0.25, method="map")
    assert report["n_rows"] == 39 and [e["row"] for e in report["excluded"]] == [3]
    assert "diverged" in report["excluded"][0]["reason"]
    kept = backtest(str(path), "test_backtest_law", by="params", frac=0.25, method="map", exclude=False)
    assert kept["n_rows"] == 40 and kept["excluded"] == []
    assert main(["backtest", str(path), "--form", "test_backtest_law", "--method", "map", "--by", "params",
                 "--out", str(tmp_path / "bt"), "--no-plots"]) == 0
    assert "excluded 1 row(s) not drawn from the law: row 3 (eval_loss" in capsys.readouterr().out


def test_cli_backtest_writes_report_and_plot(csv, tmp_path, capsys):
    out = tmp_path / "bt"
    assert main(["backtest", str(csv), "--form", "test_backtest_law", "--method", "map", "--by", "params",
                 "--out", str(out)]) == 0
    report = json.loads((out / "backtest.json").read_text())
    assert report["method"] == "map" and report["n_fit"] + report["n_held_out"] == 40
    assert (out / "backtest.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "coverage" in printed and "scores    CRPS" in printed and "median 90% width" in printed
    sc = report["scores"]
    assert sc["crps_rel_pct"] > 0 and set(sc["interval_score_rel_pct"]) == {"0.5", "0.8", "0.9"}
    # The interval score is at least the width, and the 90% width is at least the 50% one.
    assert sc["interval_score_rel_pct"]["0.9"] >= sc["sharpness_90_pct"] * 0.5
    assert np.isfinite(sc["log_density"]) and len(report["held_out"]["crps_rel_pct"]) == report["n_held_out"]
    # The report's mean CRPS is the mean of the held-out runs' own.
    assert sc["crps_rel_pct"] == pytest.approx(np.mean(report["held_out"]["crps_rel_pct"]))


@pytest.mark.parametrize("flags, message", [
    (["--by", "missing"], "--by: column 'missing'"),
    (["--by", "params", "--frac", "1.5"], "--frac: must be in (0, 1)"),
    (["--by", "params", "--frac", "0.95"], "--frac: a cut leaves"),
])
def test_cli_backtest_bad_input_leaves_nothing(csv, tmp_path, capsys, flags, message):
    out = tmp_path / "bad"
    assert main(["backtest", str(csv), "--form", "test_backtest_law", "--method", "map", *flags,
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not os.path.exists(out) and os.listdir(tmp_path) == []


def test_bench_reads_epochs_extraction_as_all_runs_and_epochs_240(tmp_path):
    """`bench/backtest.py --real` on a CSV of the form of Epoch AI's extraction gives the whole table
    and Epoch's own selection (the 5 highest losses left out): the 240-run set issue 15 measured."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "bench_backtest", os.path.join(os.path.dirname(__file__), "..", "bench", "backtest.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    loss = np.linspace(2.0, 3.0, 12)
    loss[[1, 4, 6, 9, 10]] = [5.0, 4.7, 3.8, 3.77, 3.4]  # the five outliers, scattered through the rows
    n = np.geomspace(1e8, 1e10, 12)
    path = tmp_path / "svg_extracted_data.csv"
    pd.DataFrame({"Model Size": n, "Training FLOP": 6 * n * 20 * n, "loss": loss}).to_csv(path, index=False)
    tables = bench.real_tables(str(path))
    assert list(tables) == ["chinchilla", "chinchilla7"]
    np.testing.assert_allclose(tables["chinchilla"]["tokens_seen"], 20 * n, rtol=1e-12)
    kept = tables["chinchilla7"]
    assert kept["eval_loss"].max() <= 3.0 and len(kept["params"]) == 7
    np.testing.assert_array_equal(kept["params"], np.delete(n, [1, 4, 6, 9, 10]))


def test_bench_ranking_names_every_table_and_ranks_by_the_real_mean(capsys):
    """`bench/backtest.py`'s ranking prints each table with its source, the simulated and real means
    apart, and ranks by the real tables' mean (here the reverse of the simulated one and of the mean
    over all tables)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "bench_backtest", os.path.join(os.path.dirname(__file__), "..", "bench", "backtest.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

    def row(crps, cov90, error, width):
        return {"crps": crps, "coverage": {"0.9": cov90}, "error": error, "width": width}

    rows = {("kaplan", "a"): row(1.0, 0.9, 1.0, 4.0), ("kaplan", "b"): row(6.0, 0.5, 2.0, 4.0),
            ("real:t1", "a"): row(4.0, 0.99, 3.0, 30.0), ("real:t1", "b"): row(2.0, 0.85, 1.1, 5.0),
            ("real:t2", "a"): row(2.0, 0.85, 1.0, 4.0), ("real:t2", "b"): row(1.0, 0.85, 1.1, 5.0)}
    bench.print_ranking(rows, {"kaplan": "simulated: kaplan truth", "real:t1": "source one", "real:t2": "source two"})
    out = capsys.readouterr().out.splitlines()
    assert any(line.startswith("real:t1") and line.endswith("source one") for line in out)
    assert any(line.startswith("real:t2") and line.endswith("source two") for line in out)
    assert [line.split()[-4:] for line in out if line.startswith("mean, ")] == [
        ["1.000", "6.000", "1", "table(s)"], ["3.000", "1.500", "2", "table(s)"]]
    assert [line.split()[-2:] for line in out if line.startswith("rank (real)")] == [["2", "1"]]
    at = out.index("real tables meeting each target")
    assert out[at + 1].split()[-2:] == ["1/2", "2/2"]  # cov90 in band: a's 0.99 is out
    assert out[at + 2].split()[-2:] == ["1/2", "2/2"]  # |err| within 1.2x: a's 3.0 against 1.1
