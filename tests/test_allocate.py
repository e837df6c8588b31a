"""Allocation math on hand-built posteriors: the frontier, P(best)/regret, feasibility."""

import numpy as np
import pytest

from tokeff.errors import UserError
from tokeff.decide import decision, frontier, options, summaries
from tokeff.laws.forms import get_form

PUBLISHED = dict(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)
GOPHER_BUDGET = 5.76e23


def _draws(center: dict, n: int = 2000, rel: float = 0.01, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {k: v * np.exp(rel * rng.standard_normal(n)) for k, v in center.items()}


def test_chinchilla_frontier_at_gopher_budget():
    # With the published (rounded) parameters the closed form gives N_opt = 3.22e10 and
    # D_opt = 2.98e12 at Gopher's 5.76e23 FLOPs (6 N D = C exactly). That is Hoffmann et al.'s
    # "approach 3" (their parametric fit), which is known to call for a smaller model than the
    # 70B / 1.4T tokens Chinchilla actually trained (approaches 1-2); we assert the formula's value.
    n, d = frontier.chinchilla_frontier({k: np.array([v]) for k, v in PUBLISHED.items()}, np.array([GOPHER_BUDGET]))
    assert n[0, 0] == pytest.approx(3.219e10, rel=1e-3)
    assert 6 * n[0, 0] * d[0, 0] == pytest.approx(GOPHER_BUDGET, rel=1e-9)
    # Rounding matters: the unrounded fit (alpha 0.33917, beta 0.28491, ...) gives 4.04e10.
    from tokeff.laws.simulate import CHINCHILLA_PUBLISHED

    n_unrounded, _ = frontier.chinchilla_frontier({k: np.array([v]) for k, v in CHINCHILLA_PUBLISHED.items()},
                                            np.array([GOPHER_BUDGET]))
    assert n_unrounded[0, 0] == pytest.approx(4.036e10, rel=1e-3)
    # Draws concentrated (1% log-sd) on the published values: the posterior median is within
    # 5% of the point value (1% on each of 5 parameters moves N_opt by a few percent at most:
    # N_opt's log is ~1.6x log(alpha A / beta B) plus small terms), and the 90% band brackets it.
    result = frontier.allocate_pretraining(get_form("chinchilla"), _draws(PUBLISHED), GOPHER_BUDGET)
    q = result["decision"]["N_opt"]
    assert q["median"] == pytest.approx(3.219e10, rel=0.05)
    assert q["q05"] < 3.219e10 < q["q95"]
    assert q["q05"] <= q["q10"] <= q["median"] <= q["q90"] <= q["q95"]
    ref = result["reference_at_budget"]["Chinchilla (Hoffmann et al. 2022)"]
    assert ref["N_opt"] == pytest.approx(3.219e10, rel=1e-3)
    assert result["decision"]["tokens_per_param"]["median"] == pytest.approx(2.98e12 / 3.219e10, rel=0.1)


def test_numeric_frontier_matches_closed_form():
    draws = _draws(PUBLISHED, n=300, rel=0.05, seed=1)
    budgets = np.geomspace(1e19, 1e25, 4)
    n_closed, d_closed = frontier.chinchilla_frontier(draws, budgets)
    n_num, d_num = frontier.numeric_frontier(get_form("chinchilla").mean, draws, budgets)
    # float32 JAX mean: the loss is flat at the optimum, so log N is resolved to ~1e-2.
    np.testing.assert_allclose(n_num, n_closed, rtol=2e-2)
    np.testing.assert_allclose(d_num, d_closed, rtol=2e-2)


def test_kaplan_numeric_frontier_is_the_minimum():
    form = get_form("kaplan")
    draws = {"Nc": np.array([6.4e13]), "Dc": np.array([1.8e13]),
             "alpha_N": np.array([0.076]), "alpha_D": np.array([0.103])}
    n_opt, d_opt = frontier.frontier(form, draws, np.array([1e21]))
    # Brute force along C = 6ND in float64.
    n_grid = np.geomspace(1e5, 1e13, 200_001)
    d_grid = 1e21 / 6 / n_grid
    loss = ((6.4e13 / n_grid) ** (0.076 / 0.103) + 1.8e13 / d_grid) ** 0.103
    assert n_opt[0, 0] == pytest.approx(n_grid[np.argmin(loss)], rel=2e-2)
    assert 6 * n_opt[0, 0] * d_opt[0, 0] == pytest.approx(1e21)


def test_decide_hand_case():
    # Three options, four equally likely draws (utility = accuracy).
    u = np.array([[0.60, 0.50, 0.55],
                  [0.40, 0.50, 0.55],
                  [0.60, 0.50, 0.55],
                  [0.50, 0.50, 0.45]])
    d = decision.decide(u)
    np.testing.assert_allclose(d.expected_utility, [0.525, 0.5, 0.525])
    # draw 4: options 0 and 1 tie at 0.50 and share the credit.
    np.testing.assert_allclose(d.p_best, [0.5 + 0.125, 0.125, 0.25])
    np.testing.assert_allclose(d.expected_regret, [(0 + 0.15 + 0 + 0) / 4, (0.1 + 0.05 + 0.1 + 0) / 4,
                                                   (0.05 + 0 + 0.05 + 0.05) / 4])
    assert d.best == 0  # ties in expected utility keep the first
    assert d.indistinguishable  # option 2 has the same expected utility
    # Regret = E[max] - E[u]: the expected-utility choice is also the least-regret choice.
    assert np.argmin(d.expected_regret) in (0, 2)


def test_decide_clear_winner_and_weights():
    rng = np.random.default_rng(0)
    u = np.stack([1.0 + 0.01 * rng.standard_normal(4000), 0.5 + 0.01 * rng.standard_normal(4000)], axis=1)
    d = decision.decide(u)
    assert d.best == 0 and d.p_best[0] == pytest.approx(1.0) and not d.indistinguishable
    assert d.expected_regret[0] == 0.0 and d.expected_regret[1] == pytest.approx(0.5, abs=1e-3)
    # Importance weights that put all mass on draws where option 1 wins flip the decision.
    u2 = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert decision.decide(u2, np.array([0.0, 1.0])).best == 1


def test_weighted_interval():
    x = np.arange(1000.0)
    q = summaries.interval(x)
    assert q["median"] == pytest.approx(499.5) and q["q05"] == pytest.approx(49.95)
    qw = summaries.interval(x, np.where(x < 500, 1.0, 0.0))
    assert qw["q95"] < 500


def test_data_pool_feasibility():
    pool = options.DataPool(lengths=np.array([10, 20, 30, 40, 100]))
    assert pool.check(3, 30) is None
    assert "only 5 available" in pool.check(6, 30)
    # the 2 longest average 70: nothing averages 200 tokens, nor 5 tokens.
    assert "possible" in pool.check(2, 200)
    assert "possible" in pool.check(2, 5)
    assert options.DataPool(max_examples=10).check(11, 50) is not None


def test_grid_options_exclude_infeasible():
    from tokeff.flops import example_training_flops
    from tokeff.models.config import get_preset

    per = example_training_flops(get_preset("tiny"), 64)
    budget = 100.5 * per
    feasible, infeasible = options.grid_options(budget, ["tiny"], [64], epochs=(1, 2),
                                           pool=options.DataPool(max_examples=80))
    # 1 epoch needs 100 examples (only 80 exist): infeasible; 2 epochs needs 50: feasible.
    assert [(o.n_examples, o.epochs) for o in feasible] == [(50, 2)]
    assert feasible[0].flops == 2 * 50 * per <= budget
    assert len(infeasible) == 1 and "only 80 available" in infeasible[0].reason
    # Explicit example counts over budget are excluded with the reason.
    feasible, infeasible = options.grid_options(budget, ["tiny"], [64], n_examples=[10, 200])
    assert [o.n_examples for o in feasible] == [10]
    assert "> budget" in infeasible[0].reason


def test_attention_makes_long_examples_cost_more():
    # Same tokens, longer examples: fewer examples fit the budget (the quadratic attention term).
    feasible, _ = options.grid_options(1e12, ["tiny"], [32, 256])
    short, long = feasible
    assert short.n_examples * 32 > long.n_examples * 256


def test_strategy_options_spend_at_most_the_budget():
    from tokeff.flops import example_training_flops
    from tokeff.models.config import get_preset

    lengths = np.array([5, 50, 20, 80, 10, 40, 30, 60])
    cost = {int(L): example_training_flops(get_preset("tiny"), int(L)) for L in lengths}
    budget = cost[80] + cost[60] + 0.5 * cost[50]
    feasible, _ = options.strategy_options(budget, ["tiny"], ["few_long", "many_short"], lengths)
    few_long, many_short = feasible
    assert (few_long.n_examples, few_long.avg_tokens) == (2, 70.0)
    assert few_long.flops == cost[80] + cost[60] <= budget
    assert many_short.n_examples > few_long.n_examples and many_short.flops <= budget
    with pytest.raises(UserError, match="strategy"):
        options.strategy_order(lengths, "longest")


def _new_run(form, draws):
    """What a run at given inputs would reach under hand-built draws (no discrepancy term)."""
    import functools

    from tokeff.laws.model import Likelihood, predictive

    return functools.partial(predictive, form, Likelihood(), draws, kind="new_run")


def _loss_fit_with_discrepancy():
    """A fine-tuning loss law (loss = E + A V^-beta M^-gamma) as a Fit with a discrepancy term:
    runs beyond the fitted V range are predicted with what the law misses there."""
    import arviz as az

    from tokeff.laws import discrepancy
    from tokeff.laws.data import FitData
    from tokeff.laws.fit import Fit
    from tokeff.laws.forms import Form
    from tokeff.laws.model import Likelihood

    form = Form(name="test_volume_loss", inputs=("V", "M"), target="loss",
                params={"E": "lognormal(0.5, 1)", "A": "lognormal(1, 2)", "beta": "uniform(0, 1)",
                        "gamma": "uniform(0, 1)"},
                mean=lambda p, x: p["E"] + p["A"] * x["V"] ** -p["beta"] * x["M"] ** -p["gamma"],
                columns={"V": "n_examples*avg_tokens", "M": "params"})
    draws = {**_draws(dict(E=1.5, A=50.0, beta=0.15, gamma=0.1), n=400, rel=0.02),
             "sigma": np.full(400, 0.02), "tau": np.full(400, 0.05)}
    inputs = {"V": np.geomspace(1e3, 1e5, 12), "M": np.full(12, 1e6)}
    y = np.asarray(form.mean({k: np.float64(v[0]) for k, v in draws.items()}, inputs))
    columns = {**form.columns, "target": "eval_loss"}
    summary = {"discrepancy": {"mode": "extrapolation", "log_ranges": discrepancy.log_ranges(inputs)}}
    idata = az.from_dict(posterior={k: v[None, :] for k, v in draws.items()})
    return Fit(form, "nuts", Likelihood(kind="student_t"), FitData(inputs, y, None, columns), draws, idata, summary)


def test_allocate_intervals_are_the_fits_new_run_predictive():
    # One predictive: the option intervals allocate reports are the quantiles of
    # Fit.predictive(kind="new_run") at the same inputs, discrepancy (extrapolation) included.
    from tokeff.decide.allocation import allocate_fit

    fit = _loss_fit_with_discrepancy()
    space = options.OptionSpace(models=("tiny", "ladder-2m"), lengths=(64, 512))
    budget = 1e14
    result = allocate_fit(fit, budget, space)
    opts, _ = space.at(budget)
    draws_PxO = fit.predictive(options.option_inputs(opts, fit.data.columns), "new_run")
    assert np.std(np.log(draws_PxO / fit.predictive(options.option_inputs(opts, fit.data.columns), "mean"))) > 0.01
    by_label = {o["label"]: o["predicted"] for o in result["options"]}
    assert len(by_label) == len(opts) == 4
    for k, option in enumerate(opts):
        q = np.quantile(draws_PxO[:, k], [0.05, 0.5, 0.95])
        got = by_label[option.label]
        np.testing.assert_allclose([got["q05"], got["median"], got["q95"]], q, rtol=1e-12)


def test_predictive_kinds():
    # mean: the law only; new_run: plus what the law misses (beyond the fitted range only);
    # observed: plus noise, so wider again. Accuracy means are clipped inside [chance, 1].
    fit = _loss_fit_with_discrepancy()
    inside = {"V": np.array([1e4]), "M": np.array([1e6])}
    beyond = {"V": np.array([1e7]), "M": np.array([1e6])}
    width = lambda d: float(np.diff(np.quantile(np.log(d[:, 0]), [0.05, 0.95]))[0])  # noqa: E731
    mean = fit.predictive(beyond, "mean")
    truth = np.asarray(fit.form.mean({k: v[:, None] for k, v in fit.samples.items()}, beyond))
    np.testing.assert_allclose(mean, truth, rtol=1e-5)  # no discrepancy, no noise
    np.testing.assert_allclose(fit.predictive(inside, "new_run"), fit.predictive(inside, "mean"))
    new_run, observed = fit.predictive(beyond, "new_run"), fit.predictive(beyond, "observed")
    # Each kind adds its own spread to the one before (the draws' shared spread is far larger, so
    # the ratios are what is checked): the law's miss, then the observation noise.
    assert width(new_run / mean) > 0.01 and width(observed / new_run) > 0.01
    assert width(fit.predictive(inside, "observed")) > width(fit.predictive(inside, "new_run"))
    with pytest.raises(UserError, match="kind"):
        fit.predictive(beyond, "median")
    with pytest.raises(UserError, match="missing"):
        fit.predictive({"V": np.array([1e4])}, "mean")

    from tokeff.laws.model import ACCURACY_EPS, Likelihood, predictive

    form = get_form("volume")
    draws = _draws(dict(A=1.0, beta=0.3, gamma=0.3, E=0.25), n=100)  # a law far above 1 here
    x = {"V": np.array([1e2, 1e9]), "M": np.array([1e6, 1e9])}
    acc = predictive(form, Likelihood(chance=0.25), draws, x, "mean")
    assert acc.max() == pytest.approx(1 - ACCURACY_EPS) and acc.min() >= 0.25 + ACCURACY_EPS
    np.testing.assert_array_equal(predictive(form, Likelihood(chance=0.25), draws, x, "new_run"), acc)
    counts = predictive(form, Likelihood(chance=0.25), draws, x, "observed", n_eval=50) * 50
    assert np.allclose(counts, np.round(counts)) and counts.max() <= 50


def test_finetuning_decision_prefers_what_the_law_says():
    # Volume law, acc = A V^beta M^gamma + E. ladder-2m has ~12x tiny's parameters and costs
    # ~12x more per token, so at a fixed budget it sees ~12x fewer tokens: it wins iff
    # gamma > beta. Both ways round, and P(best), regret and intervals come with the decision.
    form = get_form("volume")
    draws = _draws(dict(A=1e-3, beta=0.1, gamma=0.3, E=0.25), n=500, rel=0.02)
    space = options.OptionSpace(models=("tiny", "ladder-2m"), lengths=(64, 128))
    result = decision.allocate_finetuning(_new_run(form, draws), form.target, 1e14, space, columns=form.columns)
    assert result["decision"]["model"] == "ladder-2m"
    assert result["decision"]["p_best"] > 0.9
    assert result["decision"]["expected_regret"] < 1e-3
    assert [o["expected_utility"] for o in result["options"]] == sorted(
        (o["expected_utility"] for o in result["options"]), reverse=True)
    assert len(result["budget_sweep"]) == 9
    draws = _draws(dict(A=1e-3, beta=0.3, gamma=0.1, E=0.25), n=500, rel=0.02)
    assert decision.allocate_finetuning(_new_run(form, draws), form.target, 1e14, space,
                                        columns=form.columns)["decision"]["model"] == "tiny"


def test_packed_strategy_options_are_the_selection_a_packed_sweep_trains():
    """Under PackedRows an option is the composition a sweep point would select: the strategy's
    greedy fill of the tokens its budget buys (same seeded tie-break), costing the whole budget."""
    from tokeff.data.composition import select

    lengths = np.random.default_rng(3).integers(8, 90, 400)
    budget = 3e11
    cost = options.PackedRows(row_len=128, fill=0.97)
    feasible, infeasible = options.strategy_options(budget, ["smollm2-135m"], options.STRATEGIES, lengths,
                                                    seed=5, cost=cost)
    assert not infeasible and [o.strategy for o in feasible] == list(options.STRATEGIES)
    tokens = options.packed_token_budget("smollm2-135m", 128, budget, 0.97)
    for option in feasible:
        chosen = select(lengths, option.strategy, token_budget=tokens, seed=5, context_len=128)
        assert option.n_examples == chosen.lengths.size
        assert option.avg_tokens == pytest.approx(chosen.lengths.mean())
        assert option.flops == budget and chosen.lengths.sum() <= tokens
    few_long, many_short, _ = feasible
    assert few_long.avg_tokens > many_short.avg_tokens and few_long.n_examples < many_short.n_examples


def test_packed_options_cost_what_the_sweep_point_selects():
    """The sweep's point config and the decision's option agree on the tokens a budget buys."""
    import ml_collections

    from tokeff import sweep

    config = ml_collections.ConfigDict({"train": {"model": "gguf:smollm2-135m-instruct", "seed": 0,
                                                  "budget": {"flops": 0.0}, "data": {"layout": "packed",
                                                  "row_len": 128, "strategy": "", "token_budget": 0}},
                                        "axis_keys": {"model": "model", "budget": "budget.flops", "seed": "seed",
                                                      "composition": "data"},
                                        "token_budget_fill": 0.9})
    point = sweep.Point("gguf:smollm2-135m-instruct", 2e12, (("strategy", "few_long"),), 0)
    train_config = sweep.point_train_config(config, point)
    assert train_config.data.token_budget == options.packed_token_budget("gguf:smollm2-135m-instruct", 128, 2e12, 0.9)
