"""Forms registry, priors, data validation: fast checks with no sampling."""

import numpy as np
import pytest

from tokeff.errors import UserError
from tokeff.laws.data import prepare
from tokeff.laws.forms import Form, get_form, list_forms, register_form
from tokeff.laws.priors import Prior
from tokeff.laws.simulate import CHINCHILLA_PUBLISHED, design, simulate

BUILT_IN = ["bootstrapped", "chinchilla", "composition", "farseer", "finetune_data", "finetune_multiplicative", "kaplan",
            "repeated", "volume"]


@register_form(
    name="test_single_power",
    inputs=("N",),
    target="loss",
    params={"E": "lognormal(0.5, 0.5)", "A": "lognormal(3, 1)", "alpha": "uniform(0.05, 1)"},
    columns={"N": "params"},
)
def single_power(p, x):
    return p["E"] + p["A"] * x["N"] ** -p["alpha"]


def test_builtin_forms_registered_and_user_form_added():
    assert set(BUILT_IN) <= set(list_forms())
    assert "test_single_power" in list_forms()
    f = get_form("test_single_power")
    assert f.inputs == ("N",) and f.params["A"] == Prior("lognormal", (3.0, 1.0))


def test_unknown_form_lists_registered():
    with pytest.raises(UserError, match="registered: .*chinchilla"):
        get_form("chinchila")


@pytest.mark.parametrize("name", BUILT_IN)
def test_builtin_mean_is_finite_over_typical_ranges(name):
    from tokeff.laws.simulate import prior_draw

    form = get_form(name)
    x = design(form, 50, seed=0)
    for seed in range(5):
        data = simulate(form, prior_draw(form, seed), x, seed=seed)
        assert np.isfinite(data["y"]).all()


def test_chinchilla_mean_matches_published_and_lse():
    f = get_form("chinchilla")
    p, x = CHINCHILLA_PUBLISHED, {"N": np.array([70e9]), "D": np.array([1.4e12])}
    expected = p["E"] + p["A"] / 70e9 ** p["alpha"] + p["B"] / 1.4e12 ** p["beta"]
    assert float(f.mean(p, x)[0]) == pytest.approx(expected, rel=1e-5)
    assert float(np.exp(f.log_mean(p, x)[0])) == pytest.approx(expected, rel=1e-5)


def test_farseer_is_chinchilla_at_gamma_zero_and_the_simulated_farseer_truth_otherwise():
    from tokeff.laws.simulate import true_loss

    f = get_form("farseer")
    x = {"N": np.array([1e8, 1e9, 3e10]), "D": np.array([2e9, 2e10, 6e11])}
    chin = dict(CHINCHILLA_PUBLISHED)
    np.testing.assert_allclose(np.asarray(f.mean({**chin, "gamma": 0.0}, x)),
                               np.asarray(get_form("chinchilla").mean(chin, x)), rtol=1e-5)
    # The bench's farseer truth: beta(N) = beta + 0.01 log(N / 1e8), i.e. beta + 0.01 log 10 at 1e9.
    p = {**chin, "beta": chin["beta"] + 0.01 * np.log(10.0), "gamma": 0.01}
    np.testing.assert_allclose(np.asarray(f.mean(p, x)), true_loss("farseer", x["N"], x["D"]), rtol=1e-5)


def test_chinchilla_allocation_closed_form():
    f = get_form("chinchilla")
    out = f.allocate(CHINCHILLA_PUBLISHED, 5.76e23)  # Chinchilla's own budget
    assert float(out["N_opt"] * out["D_opt"] * 6) == pytest.approx(5.76e23, rel=1e-3)
    # Published fit (approach 3) puts ~Chinchilla's 70B model in the tens of billions.
    assert 1e10 < float(out["N_opt"]) < 1e11


def test_prior_parse_and_override():
    assert str(Prior.parse("uniform(0, 2)")) == "uniform(0, 2)"
    with pytest.raises(UserError, match="cannot parse"):
        Prior.parse("uniform 0 2")
    f = get_form("chinchilla").with_priors({"alpha": "uniform(0.2, 0.5)"})
    assert f.params["alpha"].args == (0.2, 0.5) and get_form("chinchilla").params["alpha"].args != (0.2, 0.5)
    with pytest.raises(UserError, match="unknown parameter"):
        get_form("chinchilla").with_priors({"gamma": "normal(0, 1)"})


def test_reserved_parameter_names_refused():
    with pytest.raises(UserError, match="clash"):
        Form(name="bad", inputs=("N",), target="loss", params={"sigma": "halfnormal(1)"}, mean=lambda p, x: x["N"])


def _table(n=20):
    rng = np.random.default_rng(0)
    return {
        "params": np.exp(rng.uniform(18, 23, n)),
        "tokens_seen": np.exp(rng.uniform(22, 26, n)),
        "eval_loss": rng.uniform(2, 3, n),
    }


def test_prepare_maps_columns_and_reports_ranges():
    t = _table()
    t["toks"] = t.pop("tokens_seen")
    data = prepare(t, get_form("chinchilla"), mapping={"D": "toks"})
    assert data.columns == {"N": "params", "D": "toks", "target": "eval_loss"}
    assert data.input_ranges()["N"][0] == pytest.approx(t["params"].min())


@pytest.mark.parametrize(
    "mutate, kwargs, message",
    [
        (lambda t: t.pop("tokens_seen"), {}, r"column 'tokens_seen' not in the data \(columns: params, eval_loss"),
        (lambda t: t["params"].__setitem__(0, -1.0), {}, "non-positive"),
        (lambda t: t["eval_loss"].__setitem__(slice(0, 3), np.nan), {"exclude": False}, "3 row.*NaN/inf.*--drop-invalid"),
        (lambda t: t["params"].__setitem__(slice(0, 3), np.nan), {}, "3 row.*NaN/inf.*--drop-invalid"),
        (lambda t: t["params"].__setitem__(slice(None), 1e9), {}, "constant in the data.*not identified"),
        (lambda t: None, {"mapping": {"Q": "params"}}, "not inputs of form"),
    ],
)
def test_prepare_bad_input(mutate, kwargs, message):
    t = _table()
    mutate(t)
    with pytest.raises(UserError, match=message):
        prepare(t, get_form("chinchilla"), **kwargs)


def test_prepare_drop_invalid_and_too_few_points():
    t = _table()
    t["eval_loss"][:3] = np.inf
    assert prepare(t, get_form("chinchilla"), drop_invalid=True).n_points == 17
    with pytest.raises(UserError, match="need at least 7"):
        prepare({k: v[:5] for k, v in _table().items()}, get_form("chinchilla"))


def test_prepare_accuracy_needs_counts():
    rng = np.random.default_rng(0)
    t = {"n_examples": rng.uniform(100, 1000, 10), "avg_tokens": rng.uniform(50, 500, 10),
         "params": rng.uniform(1e8, 1e9, 10), "accuracy": rng.uniform(0.3, 0.6, 10)}
    with pytest.raises(UserError, match="n_eval"):
        prepare(t, get_form("volume"))
    t["n_eval"] = np.full(10, 100.0)
    data = prepare(t, get_form("volume"))
    np.testing.assert_allclose(data.inputs["V"], t["n_examples"] * t["avg_tokens"])


@pytest.mark.parametrize("name", BUILT_IN + ["volume_at_one_model", "composition_at_one_model"])
def test_centring_offsets_match_the_mean_and_keep_the_prior(name):
    """Each declared offset is the rest of its term's log: d mean / d log(coef) is the term itself,
    exp(log coef + offset). And the centred model's joint density is the plain one times the Jacobian
    of log(coef): the same posterior, sampled in other coordinates."""
    import jax
    import jax.numpy as jnp
    from numpyro.infer.util import log_density

    from tokeff.laws.model import LIFT_SITES, Likelihood, _lift_pair, centred_site, make_model, observed
    from tokeff.laws.simulate import prior_draw

    form = get_form(name)
    assert form.centring or name == "kaplan", f"{name} declares no centring"
    x = {k: jnp.asarray(v, jnp.float32) for k, v in design(form, 30, seed=0).items()}
    p = {k: jnp.float32(v) for k, v in prior_draw(form, 3).items()}
    for coef, offset in form.centring.items():
        if not form.params[coef].positive():
            continue  # an exponent's offset: covered by the density check below
        grad = jax.jacfwd(lambda log_c: form.mean({**p, coef: jnp.exp(log_c)}, x))(jnp.log(p[coef]))
        np.testing.assert_allclose(grad, jnp.exp(jnp.log(p[coef]) + offset(p, x)), rtol=1e-3)

    data = simulate(form, {k: float(v) for k, v in p.items()}, {k: np.asarray(v) for k, v in x.items()}, seed=0)
    obs = jnp.asarray(observed(form, data["y"], data.get("n_eval")), jnp.float32)
    n_eval = jnp.asarray(data["n_eval"], jnp.float32) if "n_eval" in data else None
    values = {**p, **({"sigma": jnp.float32(0.05)} if form.target == "loss" else {})}
    plain, _ = log_density(make_model(form, Likelihood(), centred=False), (x, n_eval, obs), {}, values)
    centre = {k: jnp.exp(jnp.mean(jnp.log(v))) for k, v in x.items()}
    centred_values = {k: v for k, v in values.items() if k not in form.centring}
    jacobian = 0.0
    for coef, offset in form.centring.items():
        if form.params[coef].positive():
            centred_values[centred_site(coef)] = jnp.log(p[coef]) + offset(p, centre)
            jacobian += float(jnp.log(p[coef]))
        else:
            centred_values[centred_site(coef)] = p[coef] + offset(p, centre)
    lift = _lift_pair(form)
    if lift:  # floor and lift sampled as (h, u): the density gains -log s + log(1 - s_min) (model.py)
        floor, coef = lift
        lo, hi = form.params[floor].args
        t0 = p[coef] * jnp.exp(form.centring[coef](p, centre))
        h = p[floor] - lo + t0
        s, s_min = t0 / h, jnp.clip(1.0 - (hi - lo) / h, 0.0, 1.0)
        del centred_values[centred_site(coef)], centred_values[floor]
        centred_values |= {LIFT_SITES[0]: h, LIFT_SITES[1]: (s - s_min) / (1.0 - s_min)}
        jacobian += float(-jnp.log(s) + jnp.log1p(-s_min))
    centred, _ = log_density(make_model(form, Likelihood()), (x, n_eval, obs), {}, centred_values)
    assert float(centred) == pytest.approx(float(plain) + jacobian, rel=1e-5, abs=1e-3)


def test_manual_user_form_registers_and_its_centring_is_right():
    """The manual's "Adding a form" block (docs/laws.md), executed as written."""
    import os
    import re

    import jax
    import jax.numpy as jnp

    manual = open(os.path.join(os.path.dirname(__file__), "..", "docs", "laws.md")).read()
    block = re.search(r"```python\n(# my_forms\.py.*?)```", manual, re.S).group(1)
    exec(compile(block, "docs/laws.md:my_forms.py", "exec"), {})
    form = get_form("logistic_power")
    assert form.inputs == ("N", "D") and set(form.centring) == {"A", "B"}
    p = {"E": 1.7, "A": 400.0, "B": 410.0, "alpha": 0.34, "beta": 0.28}
    x = {"N": jnp.asarray([1e8, 1e9, 1e10]), "D": jnp.asarray([1e9, 1e10, 1e11])}
    for coef, offset in form.centring.items():
        grad = jax.jacfwd(lambda log_c: form.mean({**p, coef: jnp.exp(log_c)}, x))(jnp.log(p[coef]))
        np.testing.assert_allclose(grad, jnp.exp(jnp.log(p[coef]) + offset(p, x)), rtol=1e-4)


def test_finetune_data_is_the_rectified_law_flat_then_a_power_law():
    """E + A / (1 + (D/D0)^beta) is Lin et al.'s E + B / (D_l + D^beta) with B = A D0^beta,
    D_l = D0^beta: flat at E + A well below D0, a power law of slope -beta in (L - E) well above."""
    f = get_form("finetune_data")
    p = {"E": 1.2, "A": 0.8, "D0": 3e3, "beta": 0.45}
    d = np.array([1e-2, 10.0, 3e3, 1e8, 1e10])
    got = np.asarray(f.mean(p, {"D": d}), np.float64)
    b, d_l = p["A"] * p["D0"] ** p["beta"], p["D0"] ** p["beta"]
    np.testing.assert_allclose(got, p["E"] + b / (d_l + d ** p["beta"]), rtol=1e-4)
    assert got[0] == pytest.approx(p["E"] + p["A"], rel=0.02)
    slope = np.diff(np.log(got[3:] - p["E"])) / np.diff(np.log(d[3:]))
    assert slope[0] == pytest.approx(-p["beta"], rel=0.02)
