"""Does the fitting code tell the truth? Recovery, simulation-based calibration, extrapolation.

All three draw data through `simulate` (the same likelihood the fit assumes), so they test the
sampler, the parametrisation and the priors rather than a mismatch of noise models.
`bench/scaling_validation.py` runs the full versions and prints the tables; the tests run small ones.

- Recovery: published Chinchilla parameters, Chinchilla's range; is every parameter inside its 90%
  interval?
- Calibration (Talts et al. 2018): parameters drawn from the prior, data from those parameters, a
  fit per dataset; the 90% intervals should contain the drawn value 90% of the time. Fits whose
  chains did not converge (r-hat > 1.05) are excluded and counted: a stuck chain is a failure the
  diagnostics already report, not evidence about calibration.
- Extrapolation: fit the lower two-thirds of compute (C = 6ND), predict the top third; how often do
  the 90% posterior predictive intervals contain the held-out losses?
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from tokeff.laws.data import FitData
from tokeff.laws.forms import Form, get_form
from tokeff.laws.model import FAILURE_PROB_PRIOR, FAILURE_SCALE_PRIOR, FAILURE_SITES, Likelihood
from tokeff.laws.simulate import CHINCHILLA_PUBLISHED, design, prior_draw, simulate

R_HAT_EXCLUDE = 1.05


def chinchilla_table(n_points: int, *, seed: int, sigma: float = 0.02) -> dict[str, np.ndarray]:
    """`n_points` runs simulated from the published Chinchilla law (70M-16B params, 5B-500B tokens)."""
    form = get_form("chinchilla")
    d = simulate(form, CHINCHILLA_PUBLISHED, design(form, n_points, seed=seed), sigma=sigma, seed=seed + 1)
    return {"params": d["N"], "tokens_seen": d["D"], "eval_loss": d["y"]}


def recovery(method: str, *, n_points: int = 250, seed: int = 3, **fit_kwargs) -> dict:
    """Fit `method` to published-Chinchilla data: per parameter (q05, q95, true, inside), plus the Fit."""
    from tokeff.laws.fit import fit

    result = fit(chinchilla_table(n_points, seed=seed), "chinchilla", method=method, seed=0, **fit_kwargs)
    rows = {}
    for name, true in CHINCHILLA_PUBLISHED.items():
        p = result.summary["params"][name]
        rows[name] = (p["q05"], p["q95"], true, p["q05"] <= true <= p["q95"])
    return {"params": rows, "fit": result}


@dataclasses.dataclass
class Calibration:
    """Coverage of the `level` central intervals over the datasets kept (not excluded)."""

    form: str
    pooled: float
    per_param: dict[str, float]
    kept: int
    excluded: int
    seconds: float
    # One dict per dataset: truth, sigma, max_r_hat, divergences, excluded, hits (param -> bool).
    records: list = dataclasses.field(default_factory=list, repr=False)


def calibration(
    form: Form | str,
    *,
    n_datasets: int = 50,
    n_points: int = 40,
    chains: int = 2,
    steps: int = 1000,
    level: float = 0.9,
    n_eval: int = 200,
    seed: int = 0,
    progress: bool = False,
    likelihood: Likelihood | None = None,
) -> Calibration:
    """Simulation-based calibration of NUTS for `form` (see the module doc). One compiled sampler
    serves every dataset (same shapes, data passed as arguments; chains one after another, so run
    forms in separate processes to use several cores); `steps` is warmup = draws. `likelihood`
    (default: Normal) is both simulated and fitted; with "failures" the failure share and scale are
    drawn from their priors too, and their coverage is pooled with the form's parameters."""
    import jax
    from tqdm.auto import tqdm

    from tokeff.laws.diagnostics import split_r_hat
    from tokeff.laws.fit import resolve_init, run_nuts

    form = get_form(form) if isinstance(form, str) else form
    lik = likelihood or Likelihood()
    x = design(form, n_points, seed=seed)
    with_failures = form.target == "loss" and lik.kind == "failures"
    checked = form.param_names + (FAILURE_SITES if with_failures else ())
    hits: dict[str, list[bool]] = {p: [] for p in checked}
    excluded, mcmc, start, records = 0, None, time.perf_counter(), []
    tail = (1 - level) / 2
    for i in tqdm(range(n_datasets), desc=f"SBC {form.name}", disable=not progress):
        if i and i % 20 == 0:
            # numpyro re-jits part of every run (~1,000 memory maps each, measured); at ~65 fits the
            # process hits vm.max_map_count and LLVM aborts. Dropping JAX's caches frees them.
            jax.clear_caches()
            mcmc = None
        truth = prior_draw(form, seed + 1000 + i)
        sigma = float(lik.noise.to_numpyro().sample(jax.random.PRNGKey(seed + 5000 + i)))
        failures = None
        if with_failures:
            k1, k2 = jax.random.split(jax.random.PRNGKey(seed + 7000 + i))
            failures = (float(FAILURE_PROB_PRIOR.to_numpyro().sample(k1)), float(FAILURE_SCALE_PRIOR.to_numpyro().sample(k2)))
            truth = {**truth, **dict(zip(FAILURE_SITES, failures))}
        d = simulate(form, truth, x, sigma=sigma, n_eval=n_eval, seed=seed + i, likelihood=lik, failures=failures)
        data = FitData({k: d[k] for k in form.inputs}, d["y"], d.get("n_eval"), {})
        post, stats = run_nuts(form, lik, data, chains=chains, draws=steps, warmup=steps, seed=seed + i, mcmc=mcmc,
                               chain_method="sequential", init=resolve_init("auto", form))
        mcmc = stats["mcmc"]
        max_r_hat = max(split_r_hat(v) for v in post.values())
        record = {"truth": truth, "sigma": sigma, "max_r_hat": max_r_hat,
                  "divergences": int(stats["diverging"].sum()), "excluded": max_r_hat > R_HAT_EXCLUDE, "hits": {}}
        records.append(record)
        if record["excluded"]:
            excluded += 1
            continue
        for p in checked:
            lo, hi = np.quantile(post[p].reshape(-1), [tail, 1 - tail])
            record["hits"][p] = bool(lo <= truth[p] <= hi)
            hits[p].append(record["hits"][p])
    kept = n_datasets - excluded
    pooled = float(np.mean([h for v in hits.values() for h in v])) if kept else float("nan")
    per_param = {p: float(np.mean(v)) if v else float("nan") for p, v in hits.items()}
    return Calibration(form.name, pooled, per_param, kept, excluded, time.perf_counter() - start, records)


def extrapolation(*, n_points: int = 250, seed: int = 5, level: float = 0.9, **fit_kwargs) -> dict:
    """Fit chinchilla below the 2/3 quantile of log compute, predict above: coverage and width."""
    from tokeff.laws.fit import fit

    table = chinchilla_table(n_points, seed=seed)
    log_c = np.log(6 * table["params"] * table["tokens_seen"])
    cut = np.quantile(log_c, 2 / 3)
    low, high = log_c <= cut, log_c > cut
    result = fit({k: v[low] for k, v in table.items()}, "chinchilla", method="nuts", seed=0, **fit_kwargs)
    pred = result.predictive({"N": table["params"][high], "D": table["tokens_seen"][high]}, "observed")
    tail = (1 - level) / 2
    lo, hi = np.quantile(pred, [tail, 1 - tail], axis=0)
    y = table["eval_loss"][high]
    return {
        "coverage": float(np.mean((y >= lo) & (y <= hi))),
        "n_fit": int(low.sum()),
        "n_predicted": int(high.sum()),
        "cut_flops": float(np.exp(cut)),
        "median_width_percent": float(np.median(hi / lo - 1) * 100),
        "fit": result,
    }


def grouped_calibration(
    form: Form | str,
    *,
    n_datasets: int = 20,
    n_groups: int = 5,
    n_points: int = 8,
    chains: int = 2,
    steps: int = 500,
    level: float = 0.9,
    correlated: bool = False,
    seed: int = 0,
    progress: bool = False,
) -> Calibration:
    """Simulation-based calibration of the hierarchical model (`tokeff.laws.hierarchy`): population
    values, spreads and every group's parameters drawn from the model's own prior (Normal noise),
    `n_points` per group on the form's typical ranges, refitted by NUTS (one compiled sampler for
    every dataset); checked: each group's parameters, the population values and the spreads.
    `correlated`: the group effects correlated (LKJ), as `fit_grouped(..., correlated=True)`."""
    import jax
    import numpyro
    from numpyro.infer import MCMC, NUTS, Predictive, init_to_median
    from tqdm.auto import tqdm

    from tokeff.laws.diagnostics import split_r_hat
    from tokeff.laws.hierarchy import make_grouped_model, pop_site, spread_site
    from tokeff.laws.sampling_loop import share_sampling_loop

    share_sampling_loop()  # one compile of the sampling loop, not one per chain

    form = get_form(form) if isinstance(form, str) else form
    lik = Likelihood()
    pooled = form.param_names
    model = make_grouped_model(form, lik, n_groups, pooled, correlated)
    x = {k: jax.numpy.asarray(v, jax.numpy.float32) for k, v in design(form, n_groups * n_points, seed=seed).items()}
    group = jax.numpy.asarray(np.repeat(np.arange(n_groups), n_points))
    checked = list(form.param_names) + [pop_site(k) for k in pooled] + [spread_site(k) for k in pooled]
    mcmc = MCMC(NUTS(model, target_accept_prob=0.9, init_strategy=init_to_median(num_samples=15)), num_warmup=steps,
                num_samples=steps, num_chains=chains, chain_method="sequential", progress_bar=False,
                jit_model_args=True)
    hits: dict[str, list[bool]] = {p: [] for p in checked}
    excluded, records, start, tail = 0, [], time.perf_counter(), (1 - level) / 2
    for i in tqdm(range(n_datasets), desc=f"grouped SBC {form.name}", disable=not progress):
        prior = Predictive(model, num_samples=1)(jax.random.PRNGKey(seed + 1000 + i), x, group)
        truth = {k: np.asarray(prior[k][0]) for k in checked}
        obs = prior["obs"][0]
        if not np.isfinite(np.asarray(obs)).all():
            excluded += 1
            records.append({"excluded": True, "reason": "non-finite simulated data"})
            continue
        with numpyro.validation_enabled(False):
            mcmc.run(jax.random.PRNGKey(seed + i), x, group, None, obs)
        post = {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()}
        max_r_hat = max(split_r_hat(post[k][..., j] if post[k].ndim == 3 else post[k])
                        for k in checked for j in range(post[k].shape[-1] if post[k].ndim == 3 else 1))
        record = {"truth": {k: v.tolist() for k, v in truth.items()}, "max_r_hat": max_r_hat,
                  "excluded": max_r_hat > R_HAT_EXCLUDE, "hits": {}}
        records.append(record)
        if record["excluded"]:
            excluded += 1
            continue
        for k in checked:
            draws = post[k].reshape(-1, *post[k].shape[2:])
            lo, hi = np.quantile(draws, [tail, 1 - tail], axis=0)
            inside = np.atleast_1d((lo <= truth[k]) & (truth[k] <= hi))
            record["hits"][k] = inside.tolist()
            hits[k].extend(bool(h) for h in inside)
    kept = n_datasets - excluded
    pooled_cov = float(np.mean([h for v in hits.values() for h in v])) if kept else float("nan")
    per_param = {p: float(np.mean(v)) if v else float("nan") for p, v in hits.items()}
    return Calibration(f"{form.name} (grouped)", pooled_cov, per_param, kept, excluded, time.perf_counter() - start,
                       records)
