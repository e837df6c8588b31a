"""Hierarchical (grouped) fits: a small pooled fit, a thin group carried by the population, a new
group's wider interval, save/load, the CLI, and a small SBC of the hierarchical model."""

import contextlib
import io
import json
import os

import numpy as np
import pandas as pd
import pytest

from tokeff.errors import UserError
from tokeff.laws.hierarchy import fit_grouped, group_column, parse_pool

from tokeff.laws.forms import get_form

BETA = 0.45


def curves(n_groups=5, n_points=9, *, seed=0, thin=None, top=1.6e6):
    """Curves of the finetune_data law with a shared exponent and per-group floors and lifts."""
    rng = np.random.default_rng(seed)
    rows = []
    for g in range(n_groups):
        e, a, d0 = 1.0 + 0.1 * g, np.exp(rng.normal(0.2, 0.2)), np.exp(rng.normal(8, 0.5))
        d = np.geomspace(200, top, n_points)
        if thin is not None and g == thin:
            d = d[:3]
        loss = (e + a / (1 + (d / d0) ** BETA)) * np.exp(rng.normal(0, 0.01, len(d)))
        rows += [{"model": f"m{g}", "n_examples": x, "eval_loss": y} for x, y in zip(d, loss)]
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def pooled():
    table = curves(thin=4)
    return table, fit_grouped(table, "finetune_data", "model", chains=2, draws=300, warmup=300, seed=1,
                              likelihood="student_t")


def test_pooled_fit_recovers_the_shared_exponent_and_the_curves(pooled):
    table, fit = pooled
    s = fit.summary
    assert set(s["groups"]) == {f"m{g}" for g in range(5)} and s["group"]["pooled"] == ["E", "A", "D0", "beta"]
    assert s["diagnostics"]["divergences"] <= 5, s["diagnostics"]
    beta = s["population"]["beta"]
    assert beta["q05"] < BETA < beta["q95"], beta
    # Every fitted row inside its group's 90% new-observation interval, but for a few.
    draws = fit.predictive({"D": table["n_examples"].to_numpy()}, "observed", groups=list(table["model"]))
    lo, hi = np.quantile(draws, [0.05, 0.95], axis=0)
    inside = (table["eval_loss"] >= lo) & (table["eval_loss"] <= hi)
    assert inside.mean() >= 0.8, inside.mean()


def test_a_thin_group_is_carried_by_the_population_and_a_new_group_is_wider(pooled):
    table, fit = pooled
    far = {"D": np.array([1.6e6, 1.6e6, 1.6e6])}
    draws = fit.predictive(far, "mean", groups=["m3", "m4", "unseen"], new_groups=True)
    width = np.diff(np.quantile(draws, [0.05, 0.95], axis=0), axis=0)[0]
    assert width[0] < width[1] < width[2], width  # full curve < 3-point curve < a model never seen
    assert np.isfinite(draws).all()
    truth_m4 = 1.4  # E of group 4 plus what its lift has left at 1.6M examples: near the floor
    assert np.quantile(draws[:, 1], 0.05) < truth_m4 + 0.2
    with pytest.raises(UserError, match="--group-value.*new-group"):
        fit.predictive(far, "mean", groups=["m3", "m4", "unseen"])


def test_save_and_load_keep_the_draws(pooled, tmp_path):
    from tokeff.laws.fit import load_fit

    _, fit = pooled
    path = fit.save(str(tmp_path / "fit"))
    assert os.path.exists(os.path.join(path, "groups.png"))
    again = load_fit(path)
    assert again.groups.labels == fit.groups.labels and again.pooled == fit.pooled
    x = {"D": np.array([1e5])}
    np.testing.assert_allclose(again.predictive(x, "mean", groups=["m2"]), fit.predictive(x, "mean", groups=["m2"]),
                               rtol=1e-6)
    summary = json.load(open(os.path.join(path, "summary.json")))
    assert summary["population"]["beta"]["spread"]["median"] > 0 and summary["shared"]["sigma"]["median"] > 0


@pytest.fixture(scope="module")
def cli_map_fit(tmp_path_factory):
    """(exit code, stdout, the saved fit's folder) of `tokeff fit --group model --pool E,A --method map`
    on three curves: one grouped MAP fit serves the CLI's test and the unpooled parameters' test."""
    from tokeff.cli import main

    root = tmp_path_factory.mktemp("grouped_map")
    curves(n_groups=3, n_points=7, seed=3).to_csv(root / "curves.csv", index=False)
    with contextlib.redirect_stdout(io.StringIO()) as out:
        code = main(["fit", str(root / "curves.csv"), "--form", "finetune_data", "--group", "model", "--pool", "E,A",
                     "--method", "map", "--likelihood", "student_t", "--out", str(root / "fit"), "--no-plots"])
    return code, out.getvalue(), root / "fit"


def test_unpooled_parameters_are_shared_and_map_also_fits(cli_map_fit):
    from tokeff.laws.fit import load_fit

    fit = load_fit(str(cli_map_fit[2]))
    assert fit.method == "map" and fit.pooled == ("E", "A")
    beta = fit.samples["beta"]
    np.testing.assert_allclose(beta[:, 0], beta[:, 2])  # shared: one value for every group
    assert "spread" not in fit.summary["population"]["beta"]
    assert abs(fit.summary["population"]["beta"]["median"] - BETA) < 0.1, fit.summary["population"]["beta"]


def test_group_column_and_pool_refusals():
    frame = pd.DataFrame({"model": ["a", "a"], "x": [1, 2]})
    with pytest.raises(UserError, match="--group: column 'nope'"):
        group_column(frame, "nope")
    with pytest.raises(UserError, match="--group: .*single value"):
        group_column(frame, "model")
    with pytest.raises(UserError, match="--pool"):
        parse_pool("alpha", get_form("finetune_data"))


def test_cli_fit_group(cli_map_fit):
    code, out, _ = cli_map_fit
    assert code == 0 and "3 groups" in out and "population" in out and "m2" in out


@pytest.mark.slow
def test_grouped_calibration_small():
    from tokeff.laws import validation

    c = validation.grouped_calibration("finetune_data", n_datasets=3, n_groups=3, n_points=6, chains=2, steps=200,
                                       seed=1)
    assert c.kept >= 2, c
    # 3 groups x 4 parameters + 4 population values + 4 spreads = 20 checks per dataset at a nominal 90%.
    assert 0.7 <= c.pooled <= 1.0, c


def test_correlated_effects_draw_groups_with_the_population_correlation():
    """With `correlated=True` the pooled parameters' group effects are jointly normal: the model's
    prior draws carry an LKJ Cholesky factor, and a new group drawn from the population follows the
    correlation of that factor (here 0.9 between log E and log A effects), not independent ones."""
    import jax
    import jax.numpy as jnp
    from numpyro.infer import Predictive

    from tokeff.laws.hierarchy import CORR_SITE, GroupedFit, Groups, make_grouped_model, pop_site, spread_site
    from tokeff.laws.model import Likelihood

    form = get_form("finetune_data")
    model = make_grouped_model(form, Likelihood(), 4, ("E", "A"), correlated=True)
    x = {"D": jnp.asarray(np.tile(np.geomspace(200, 1e5, 5), 4), jnp.float32)}
    prior = Predictive(model, num_samples=3)(jax.random.PRNGKey(0), x, jnp.asarray(np.repeat(np.arange(4), 5)))
    assert prior[CORR_SITE].shape == (3, 2, 2) and prior["E"].shape == (3, 4)
    assert np.isfinite(np.asarray(prior["obs"])).all()

    s = 4000
    chol = np.linalg.cholesky(np.array([[1.0, 0.9], [0.9, 1.0]]))
    samples = {pop_site(k): np.full(s, v) for k, v in {"E": 1.0, "A": 2.0, "D0": 1e3, "beta": 0.4}.items()}
    samples |= {spread_site("E"): np.full(s, 0.3), spread_site("A"): np.full(s, 0.3), CORR_SITE: np.tile(chol, (s, 1, 1))}
    fit = GroupedFit(form, "nuts", Likelihood(), None, Groups("model", ("a", "b"), np.zeros(2, np.int64)), ("E", "A"),
                     samples, None, {"centre": {"D": 1e3}})
    drawn = fit.new_group_params(1, seed=0)
    assert np.allclose(drawn["beta"], 0.4) and np.allclose(drawn["D0"], 1e3)  # not pooled: the population value
    log_e = np.log(drawn["E"][:, 0])
    assert abs(np.std(log_e) - 0.3) < 0.03
    # A is pooled at the data's centre (its term's log there), so its effect is the log of A times
    # the (fixed) turn factor: the correlation carries over to log A.
    r = np.corrcoef(log_e, np.log(drawn["A"][:, 0]))[0, 1]
    assert 0.85 < r < 0.95, r


def test_a_library_grouped_fit_refuses_an_init_it_would_ignore():
    table = pd.DataFrame({"N": [1e6] * 4, "D": [1e9] * 4, "eval_loss": [3.0] * 4, "model": ["a", "a", "b", "b"]})
    with pytest.raises(UserError, match="--init"):
        fit_grouped(table, "chinchilla", "model", init="laplace")
