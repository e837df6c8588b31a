"""The sweep's own optimum: per-budget parabolas against a known optimum, and the line through them."""

import numpy as np
import pytest

from tokeff.decide import isoflop
from tokeff.errors import UserError
from tokeff.laws.simulate import isoflop_table, true_loss


def _true_optimum(truth: str, budget: float) -> float:
    grid = np.geomspace(1e6, 1e12, 60001)
    return float(grid[np.argmin(true_loss(truth, grid, budget / 6 / grid))])


def test_parabola_recovers_a_noiseless_optimum():
    # Chinchilla's surface, no noise: the vertex of the 5 runs around the lowest is the optimum
    # to within the parabola's approximation of a non-quadratic curve (a few percent).
    c = 1e20
    n = _true_optimum("chinchilla", c) * np.geomspace(1 / 4, 4, 9)
    opt = isoflop.budget_optimum(n, true_loss("chinchilla", n, c / 6 / n), budget=c, bootstrap=200)
    assert opt.interior
    assert opt.n_opt == pytest.approx(_true_optimum("chinchilla", c), rel=0.05)
    assert opt.loss_at(opt.n_opt) == pytest.approx(opt.loss_opt)


@pytest.mark.parametrize("truth", ["chinchilla", "kaplan"])
def test_parabola_interval_covers_the_true_optimum(truth):
    # Simulated sweeps (0.5% noise per run, 9 sizes within 4x of the design optimum): the 90%
    # bootstrap interval holds the true optimum at most budgets, and the estimate is unbiased.
    inside, errors = [], []
    for seed in range(3):
        t = isoflop_table(truth, seed=seed, per_budget=9)
        for o in isoflop.sweep_optima(6 * t["params"] * t["tokens_seen"], t["params"], t["eval_loss"], bootstrap=400):
            if o.interior:
                true = _true_optimum(truth, o.budget)
                inside.append(o.q05 <= true <= o.q95)
                errors.append(np.log(o.n_opt / true))
    assert len(inside) >= 30
    assert 0.8 <= np.mean(inside) <= 1.0
    assert abs(np.mean(errors)) < 0.1


def test_edge_optimum_is_not_interior():
    # Every run above the optimum: the lowest loss is the smallest model, the vertex lies outside.
    c = 1e20
    n = _true_optimum("chinchilla", c) * np.geomspace(3, 30, 6)
    opt = isoflop.budget_optimum(n, true_loss("chinchilla", n, c / 6 / n), budget=c, bootstrap=100)
    assert not opt.interior
    with pytest.raises(UserError, match="at least"):
        isoflop.budget_optimum(n[:3], np.ones(3))


def test_group_budgets_within_tolerance():
    labels = isoflop.group_budgets(np.array([1e18, 1.02e18, 2e18, 0.99e18, 2.05e18, 4e18]))
    assert labels.tolist() == [0, 0, 1, 0, 1, 2]


def _exact_optima(budgets, slope=0.5, scale=0.1, log_sd=0.01):
    return [isoflop.BudgetOptimum(c, scale * c**slope, 0, 0, log_sd, 1.0, (0, 0, 1), (1, 1), True, 7)
            for c in budgets]


def test_line_on_an_exact_power_law():
    budgets = np.geomspace(1e17, 1e19, 6)
    optima = _exact_optima(budgets)
    a, b = isoflop.approach2(optima)
    assert b == pytest.approx(0.5, abs=1e-9)
    line = isoflop.OptimumLine.fit(optima, draws=2000)
    far = line.n_opt_draws([1e21])[:, 0]
    assert np.median(line.b) == pytest.approx(0.5, abs=0.01)
    assert np.median(far) == pytest.approx(0.1 * 1e21**0.5, rel=0.05)
    assert np.median(line.s) < 0.05  # no scatter beyond the optima's own error


def test_line_interval_covers_scattered_optima():
    # Optima scattered 0.1 (log) about a power law: the predictive 90% interval at 10x beyond the
    # fitted budgets holds a new budget's optimum about 90% of the time.
    rng = np.random.default_rng(0)
    budgets, hits = np.geomspace(1e17, 1e19, 8), []
    for rep in range(60):
        optima = [isoflop.BudgetOptimum(c, 0.1 * c**0.5 * np.exp(0.1 * rng.standard_normal()), 0, 0, 0.02, 1.0,
                                        (0, 0, 1), (1, 1), True, 7) for c in budgets]
        draws = isoflop.OptimumLine.fit(optima, draws=1000, seed=rep).n_opt_draws([1e20], seed=rep)[:, 0]
        new = 0.1 * 1e20**0.5 * np.exp(0.1 * rng.standard_normal())
        hits.append(np.quantile(draws, 0.05) <= new <= np.quantile(draws, 0.95))
    assert 0.78 <= np.mean(hits) <= 0.99


def test_line_needs_three_interior_budgets():
    with pytest.raises(UserError, match="needs 3"):
        isoflop.OptimumLine.fit(_exact_optima([1e17, 1e18]))


def test_frontier_carried_to_the_sweep_optima():
    # A chinchilla posterior (published values, 2% spread) and fit data that is a Kaplan-truth isoFLOP
    # sweep: the law's frontier misses the sweep's optima; carried to them, N_opt at 10x beyond the
    # sweep follows the sweep's own line. Without a sweep in the data the law's frontier is kept.
    import types

    from tokeff.decide.sweep_check import fit_frontier
    from tokeff.laws.forms import get_form
    from tokeff.laws.simulate import CHINCHILLA_PUBLISHED

    rng = np.random.default_rng(0)
    samples = {k: v * np.exp(0.02 * rng.standard_normal(1000)) for k, v in CHINCHILLA_PUBLISHED.items()}
    t = isoflop_table("kaplan", seed=0)
    data = types.SimpleNamespace(inputs={"N": t["params"], "D": t["tokens_seen"]}, y=t["eval_loss"])
    fit = types.SimpleNamespace(form=get_form("chinchilla"), samples=samples, data=data)
    c = 1e22
    auto, law = fit_frontier(fit, [c]), fit_frontier(fit, [c], source="law")
    assert auto.source == "law+sweep" and law.source == "law"
    np.testing.assert_allclose(law.n_opt, auto.law_n_opt)
    line = isoflop.OptimumLine.fit(isoflop.sweep_optima(6 * t["params"] * t["tokens_seen"], t["params"], t["eval_loss"]))
    sweep_line = np.median(line.n_opt_draws([c])[:, 0])
    assert abs(np.log(np.median(auto.n_opt) / sweep_line)) < 0.1
    assert abs(np.log(np.median(law.n_opt) / sweep_line)) > 0.3
    np.testing.assert_allclose(6 * auto.n_opt * auto.d_opt, c, rtol=1e-9)
    scattered = types.SimpleNamespace(inputs={"N": t["params"], "D": t["tokens_seen"] * rng.uniform(0.2, 5, len(t["params"]))},
                                      y=t["eval_loss"])
    assert fit_frontier(types.SimpleNamespace(form=fit.form, samples=samples, data=scattered), [c]).source == "law"
    with pytest.raises(UserError, match="--frontier"):
        fit_frontier(fit, [c], source="sweep")
