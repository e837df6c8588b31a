"""The fit window of grouped fits (`tokeff.laws.window`): which of each curve's rows the law sees."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from tokeff.errors import UserError


def family(rising_start: bool, *, n_groups: int = 6, n_sizes: int = 12, seed: int = 0) -> pd.DataFrame:
    """Curves of the finetune_data law, sizes by doublings from 200, 0.3% noise; with `rising_start`
    the first four sizes climb towards the fifth instead (loss falling with fewer examples: a start
    the form cannot bend to)."""
    rng = np.random.default_rng(seed)
    d = 200.0 * 2.0 ** np.arange(n_sizes)
    rows = []
    for g in range(n_groups):
        e, a, d0 = np.exp(rng.normal(0.3, 0.2)), np.exp(rng.normal(0.5, 0.2)), np.exp(rng.normal(np.log(3e3), 0.5))
        loss = e + a / (1 + (d / d0) ** 0.45)
        if rising_start:
            loss[:4] = loss[4] * (1 - 0.06 * np.arange(4, 0, -1))
        loss = loss * np.exp(rng.normal(0, 0.003, d.shape))
        rows += [{"model": f"m{g}", "n_examples": x, "eval_loss": y} for x, y in zip(d, loss)]
    return pd.DataFrame(rows)


def _choose(table: pd.DataFrame):
    from tokeff.laws.data import prepare
    from tokeff.laws.forms import get_form
    from tokeff.laws.hierarchy import group_column
    from tokeff.laws.model import Likelihood
    from tokeff.laws.window import apply_window

    form = get_form("finetune_data")
    data = prepare(table, form, keep=("model",))
    return apply_window(form, Likelihood(kind="student_t"), data, group_column(table, "model").index, "auto"), data


def test_auto_leaves_out_a_start_the_form_does_not_describe():
    (keep, record), data = _choose(family(rising_start=True, n_sizes=12))
    choice = record["choice"]
    # 12 rows per group, the top 4 or 3 held out inside: windows of 4..9 rows below the inner cut.
    assert choice["windows"] == list(range(4, 10))
    assert record["k"] is not None and record["k"] <= 6, choice
    # Every row (the window reaching into the rising start) predicted the inner future worse.
    assert choice["mse_log"][-1] > 1.5 * min(choice["mse_log"]), choice
    # The rows kept are each group's top k sizes.
    kept = pd.DataFrame({"model": data.extra["model"], "D": data.inputs["D"]})[keep]
    assert (kept.groupby("model").size() == record["k"]).all()
    assert (kept.groupby("model")["D"].min() == 200.0 * 2.0 ** (12 - record["k"])).all()


def test_auto_keeps_every_row_where_the_form_is_right():
    # 8 curves: with few, a dropped start row costs the form so little that the choice is noise.
    (keep, record), _ = _choose(family(rising_start=False, n_groups=8))
    assert record["k"] is None and keep.all(), record["choice"]
    assert record["choice"]["chosen"] == record["choice"]["windows"][-1]


def test_window_values():
    from tokeff.laws.window import parse_window

    assert str(parse_window(None)) == "auto"  # the default: chosen by the data
    assert str(parse_window("AUTO")) == "auto" and str(parse_window(" all ")) == "all"
    assert parse_window("5").k == 5 and parse_window(3).k == 3
    for bad in ("2", "0", "-4", "4.5", "six", "", True):
        with pytest.raises(UserError, match="^--window"):
            parse_window(bad)


def test_a_fixed_window_keeps_each_groups_top_rows():
    from tokeff.laws.data import FitData
    from tokeff.laws.window import top_rows

    d = np.array([400.0, 100, 200, 800, 50, 100, 200, 400, 800, 1600])
    g = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
    data = FitData({"D": d}, np.ones(10), None, {"D": "n_examples"})
    keep = top_rows(data, g, 3)
    assert keep.tolist() == [True, False, True, True, False, False, False, True, True, True]


CURVES = ["{T}/curves.csv", "--form", "finetune_data", "--method", "map", "--out", "{T}/out"]


@pytest.mark.parametrize("argv", [
    ["fit", *CURVES, "--group", "model", "--window", "2"],
    ["fit", *CURVES, "--group", "model", "--window", "4.5"],
    ["fit", *CURVES, "--group", "model", "--window", "wide"],
    ["fit", *CURVES, "--window", "auto"],
    ["backtest", *CURVES, "--by", "n_examples", "--window", "4"],
    ["backtest", *CURVES, "--by", "n_examples", "--decision", "model", "--group", "model", "--window", "1"],
], ids=["fit-2", "fit-4.5", "fit-word", "fit-no-group", "backtest-no-model", "backtest-1"])
def test_bad_window_exits_2_with_one_line_and_writes_nothing(argv, tmp_path, capsys):
    from tokeff.cli import main

    family(rising_start=False, n_groups=3).to_csv(tmp_path / "curves.csv", index=False)
    capsys.readouterr()
    try:
        code = main([a.replace("{T}", str(tmp_path)) for a in argv])
    except SystemExit as e:
        code = e.code
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(err) == 1 and "--window" in err[0], err
    assert sorted(os.listdir(tmp_path)) == ["curves.csv"]


def test_auto_on_a_form_of_two_inputs_orders_rows_by_their_product():
    """finetune_multiplicative (inputs X and Df, four parameters): each curve's rows are ordered by
    X * Df, not by either input alone, and its start (the four rows of least X * Df, flattened the
    way `family`'s rising start is) is left out."""
    from tokeff.laws.data import prepare
    from tokeff.laws.forms import get_form
    from tokeff.laws.hierarchy import group_column
    from tokeff.laws.model import Likelihood
    from tokeff.laws.window import apply_window

    rng = np.random.default_rng(0)
    rows = []
    for g in range(2):
        x, df = np.exp(rng.uniform(np.log(1e8), np.log(1e10), 12)), np.exp(rng.uniform(np.log(1e5), np.log(1e8), 12))
        loss = np.exp(rng.normal(0.3, 0.2)) + np.exp(rng.normal(np.log(300), 0.3)) * x**-0.2 * df**-0.15
        order = np.argsort(np.log(x) + np.log(df))
        loss[order[:4]] = loss[order[4]] * (1 - 0.06 * np.arange(4, 0, -1))
        loss = loss * np.exp(rng.normal(0, 0.003, 12))
        rows += [{"model": f"m{g}", "params": a, "tokens_seen": b, "eval_loss": c} for a, b, c in zip(x, df, loss)]
    table = pd.DataFrame(rows)
    form = get_form("finetune_multiplicative")
    data = prepare(table, form, keep=("model",))
    keep, record = apply_window(form, Likelihood(kind="student_t"), data, group_column(table, "model").index, "auto")
    choice = record["choice"]
    assert choice["windows"] == list(range(4, 10)) and np.isfinite(choice["mse_log"]).all(), choice
    assert record["k"] is not None and record["k"] <= 8, choice
    product = np.log(data.inputs["X"]) + np.log(data.inputs["Df"])
    for g in ("m0", "m1"):
        mine = data.extra["model"] == g
        top = np.sort(product[mine])[-record["k"]:]
        assert np.array_equal(np.sort(product[mine & keep]), top)
        # Neither input alone gives these rows (the curves' X and Df are drawn independently).
        for name in ("X", "Df"):
            alone = np.argsort(data.inputs[name][mine])[-record["k"]:]
            assert not np.array_equal(np.sort(product[mine][alone]), top)
