"""Fit a form to a results table: NUTS (default), MAP/Laplace (quick look) or the classic baseline.

Every method ends in the same `Fit`: flattened parameter draws, an ArviZ InferenceData with
pointwise log-likelihoods (for LOO/WAIC), a summary and diagnostics. `Fit.save(dir)` writes
summary.json, posterior.nc, data.csv (and plots) atomically; `load_fit(dir)` rebuilds the Fit from
that directory alone, so notebooks and `tokeff allocate` never refit.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Mapping

import numpy as np

from tokeff.errors import UserError
from tokeff.io import output_dir, write_json
from tokeff.laws import diagnostics as diag_lib
from tokeff.laws.data import FitData, prepare
from tokeff.laws.forms import Form, get_form, is_builtin, list_forms
from tokeff.laws import discrepancy as discrepancy_lib
from tokeff.laws.laplace import run_laplace
from tokeff.laws.settings import FitSettings
from tokeff.progress import NUTS_STEPS, show_progress
from tokeff.resources import check_fit_size
from tokeff.usermodule import check_form_outputs
from tokeff.laws.model import (
    Likelihood, init_strategy, make_model, observed, param_sites, pointwise_log_likelihood, predictive,
    resolve_likelihood,
)

# A NUTS fit that fails its diagnostics is rerun once at this target acceptance (with twice the draws
# when the ESS was short); the summary's settings record it under "retried".
RETRY_TARGET_ACCEPT = 0.995


def resolve_init(init: str, form: Form) -> str:
    """The NUTS start `init` means for `form`. "laplace": overdispersed draws from the MAP/Laplace
    approximation (`tokeff.laws.laplace.laplace_starts`), the default for loss targets: from prior
    draws, which lie orders of magnitude from the data in A and B, a chain can settle in a minor
    mode and keep it (measured: porian3's failures fit, one chain apart on B and beta, r-hat 1.02 at
    1000 and at 2000 draws; from Laplace starts 1.001). "prior": `tokeff.laws.model.init_strategy`,
    kept for accuracy targets, whose own start rule converges on 40 of 40 pilot tables. "auto"
    picks by target."""
    if init != "auto":
        return init
    return "laplace" if form.target == "loss" else "prior"


@dataclasses.dataclass
class Fit:
    """A fitted form. `samples` holds flattened draws (name -> [S]); `idata` keeps chains apart."""

    form: Form
    method: str
    likelihood: Likelihood
    data: FitData
    samples: dict[str, np.ndarray]
    idata: object  # arviz.InferenceData
    summary: dict
    settings: FitSettings | None = None  # how it was fitted (None: a summary.json that predates the record)

    @property
    def diagnostics(self) -> dict:
        return self.summary["diagnostics"]

    def predictive(self, inputs: Mapping[str, np.ndarray], kind: str = "observed", *, n_eval=None,
                   seed: int = 0) -> np.ndarray:
        """[P, O] predictions at `inputs` (one row per posterior draw, one column per row of inputs):
        kind "mean" (the law), "new_run" (what a run there would reach: the law and what it misses
        there) or "observed" (what a run there would measure: new_run plus observation noise;
        accuracy needs `n_eval`). See `tokeff.laws.model.predictive`; every prediction, interval
        and decision is drawn through here."""
        missing = [k for k in self.form.inputs if k not in inputs]
        if missing:
            raise UserError(f"inputs: form {self.form.name} needs {list(self.form.inputs)}; missing {missing}")
        x = {k: np.asarray(inputs[k], np.float64) for k in self.form.inputs}
        sd = None if kind == "mean" else self.discrepancy_sd(x)
        return predictive(self.form, self.likelihood, self.samples, x, kind, n_eval=n_eval, seed=seed,
                          discrepancy_sd=sd)

    def discrepancy_sd(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray | None:
        """[S, n] sd (log-loss scale) of what the law misses at `inputs`, tau x the growth of the
        distance beyond the fitted range (`tokeff.laws.discrepancy`); None without that term."""
        if "tau" not in self.samples:
            return None
        d = discrepancy_lib.growth(self.summary["discrepancy"]["log_ranges"],
                                     {k: np.asarray(inputs[k], np.float64) for k in self.form.inputs})
        return self.samples["tau"][:, None] * d[None, :]

    def save(self, path: str, *, plots: bool = True, force: bool = False) -> str:
        """Write the fit to `path` (summary.json, posterior.nc, data.csv, plots), staged and moved
        into place; see `tokeff.io.output_dir` for what may already be there."""
        with output_dir(path, "fit", force=force) as tmp:
            write_json(os.path.join(tmp, "summary.json"), self.summary)
            self.idata.to_netcdf(os.path.join(tmp, "posterior.nc"))
            self.data.to_frame().to_csv(os.path.join(tmp, "data.csv"), index=False)
            if plots:
                from tokeff.laws import plots as plot_lib

                plot_lib.save_all(self, tmp)
        return os.path.abspath(path)


def load_fit(path: str) -> Fit:
    """Rebuild a Fit from a directory written by `Fit.save` (the form must be registered), or a
    `tokeff.laws.stacking.StackedFit` from one written by `StackedFit.save` (same `predictive`)."""
    import arviz as az
    import pandas as pd

    from tokeff.laws.stacking import STACK_FILE, load_stacked

    if os.path.exists(os.path.join(path, STACK_FILE)):
        return load_stacked(path)  # a stacked fit: one fit directory per form, and their weights
    for name in ("summary.json", "posterior.nc", "data.csv"):
        if not os.path.exists(os.path.join(path, name)):
            raise UserError(f"fit dir: {path} has no {name} (not a `tokeff fit` output)")
    where = os.path.join(path, "summary.json")
    try:
        with open(where) as f:
            summary = json.load(f)
        if isinstance(summary, dict) and isinstance(summary.get("form"), str) and summary["form"] not in list_forms():
            raise UserError(f"fit dir: {path} was fitted with form '{summary['form']}', which is not registered; "
                            "pass --module naming the module or .py file that registers it")
        if "group" in summary:
            from tokeff.laws.hierarchy import load_grouped

            return load_grouped(path, summary)
        form = get_form(summary["form"]).with_priors(summary.get("priors"))
        likelihood = Likelihood.from_dict(summary["likelihood"])
        where = os.path.join(path, "posterior.nc")
        idata = az.from_netcdf(where)
        sites = param_sites(form, likelihood) + (("tau",) if "tau" in idata.posterior else ())
        samples = {k: idata.posterior[k].values.reshape(-1) for k in sites}
        where = os.path.join(path, "data.csv")
        data = FitData.from_frame(pd.read_csv(where), summary["columns"])
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - a damaged file fails in its parser's own way (h5py, json, pandas)
        detail = str(e).strip().splitlines()[0][:120] if str(e).strip() else ""
        raise UserError(f"fit dir: {where} is damaged or truncated ({type(e).__name__}{': ' + detail if detail else ''});"
                        " refit") from None
    return Fit(form, summary["method"], likelihood, data, samples, idata, summary, _recorded_settings(summary))


def _recorded_settings(summary: Mapping) -> FitSettings | None:
    """The FitSettings summary.json records; None for a summary written before it recorded them
    (its "settings" held only the sampler's numbers, without the method)."""
    recorded = summary.get("settings") or {}
    return FitSettings.from_dict(recorded) if "method" in recorded else None


def _check_flags_apply(form: Form, s: FitSettings) -> None:
    """Refuse settings that cannot apply to this form, and warn once about sampler flags the method
    ignores (a flag that silently does nothing reads as if it had been used)."""
    import warnings

    if s.chance and form.target == "loss":
        raise UserError(f"--chance: applies to accuracy forms; {form.name} is a loss form")
    if s.likelihood != "auto" and form.target == "accuracy":
        raise UserError(f"--likelihood: applies to loss forms; {form.name} is an accuracy form (binomial counts)")
    default = FitSettings()
    used_by = {"chains": "nuts", "draws": "nuts", "warmup": "nuts", "target_accept": "nuts", "init": "nuts",
               "bootstrap": "classic"}
    ignored = [f"--{name.replace('_', '-')}" for name, method in used_by.items()
               if s.method != method and getattr(s, name) != getattr(default, name)]
    if ignored:
        warnings.warn(f"{', '.join(ignored)}: ignored by --method {s.method}", stacklevel=3)


def fit(
    table,
    form: Form | str,
    settings: FitSettings | None = None,
    *,
    mapping: Mapping[str, str] | None = None,
    target: str | None = None,
    progress: bool = False,
    pad_to: int | None = None,
    **overrides,
) -> Fit:
    """Fit `form` to `table` (DataFrame, dict of columns or a .csv/.jsonl path) with `settings`
    (default `FitSettings()`); keyword `overrides` replace single settings (`draws=200`). See the
    module doc. `pad_to` (MAP): the rows the compiled Laplace programs are padded to, when more than
    the table's own bucket, so that refits of one table at several sizes (backtest cuts, stacking's
    inner cuts) run one program; rows of weight zero, so the fit is the same."""
    settings = settings or FitSettings()
    if overrides:
        settings = settings.replace(**overrides)
    s = settings
    priors = s.prior_overrides
    form = get_form(form) if isinstance(form, str) else form
    _check_flags_apply(form, s)
    if form.target == "accuracy" and form.floor not in priors:
        form = form.above_chance(s.chance)
    form = form.with_priors(priors)
    init = resolve_init(s.init, form)
    lik = Likelihood(kind=resolve_likelihood(s.likelihood, form.target, s.method), chance=s.chance)
    data = table if isinstance(table, FitData) else prepare(
        table, form, mapping=mapping, target=target, drop_invalid=s.drop_invalid, exclude=s.exclude
    )
    if not is_builtin(form.name):
        check_form_outputs(form, data.inputs)  # a user's form that cannot be fitted: one line, not a LinAlgError
    method, chains, draws, warmup, seed, target_accept = s.method, s.chains, s.draws, s.warmup, s.seed, s.target_accept
    check_fit_size(method=method, chains=chains, draws=draws, n_params=len(form.params), n_points=data.n_points)

    start = time.perf_counter()
    run: dict = {}  # what the sampler did beyond `settings`: its start, a retry, the classic grid
    if method == "nuts":  # numpyro's bar when asked, or when the run is long (`tokeff.progress`)
        progress = progress or show_progress(chains * (warmup + draws), NUTS_STEPS)
        posterior, stats = run_nuts(form, lik, data, chains=chains, draws=draws, warmup=warmup, seed=seed,
                                    target_accept=target_accept, progress=progress, init=init)
        run["start"] = stats["init"]
        first = _quick_nuts_diagnostics(posterior, stats)
        if not first["ok"] and target_accept < RETRY_TARGET_ACCEPT:
            # Divergences mark steps too large for a curved region: smaller steps usually pass it;
            # more draws where the effective sample was short.
            more = 2 if first["min_ess"] < diag_lib.ESS_PER_CHAIN_MIN * chains else 1
            posterior, stats = run_nuts(form, lik, data, chains=chains, draws=draws * more, warmup=warmup,
                                        seed=seed + 1, target_accept=RETRY_TARGET_ACCEPT, progress=progress, init=init)
            run["retried"] = {"target_accept": RETRY_TARGET_ACCEPT, "draws": draws * more, "seed": seed + 1,
                              "first_problems": first["problems"]}
        point = None
    elif method == "map":
        posterior, point, opt_diag = run_laplace(form, lik, data, draws=s.laplace_draws, seed=seed, pad_to=pad_to)
        stats = None
    else:
        from tokeff.laws.classic import fit_classic

        result = fit_classic(form, data.inputs, data.y, bootstrap=s.bootstrap, seed=seed)
        posterior = {k: v[None, :] for k, v in result["samples"].items()}
        point = result["estimate"]
        stats = None
        run["grid_size"] = result["grid_size"]
    idata = _inference_data(form, lik, data, posterior, stats)
    sites = list(param_sites(form, lik))
    if method == "nuts":
        diagnostics = diag_lib.nuts_diagnostics(idata, sites)
    elif method == "map":
        diagnostics = diag_lib.optimiser_diagnostics(**opt_diag)
    else:
        from tokeff.laws.classic import MAX_DROPPED_SHARE, dropped_text

        diagnostics = diag_lib.optimiser_diagnostics(
            converged=result["converged"], extra={"bootstrap_converged_fraction": result["converged_fraction"],
                                                  "bootstrap_dropped": result["dropped"],
                                                  "bootstrap_refits": result["bootstrap"]}
        )
        if result["dropped"]:  # dropped refits never reach a prediction; their share is reported
            text = f"dropped {dropped_text(result['dropped'], result['bootstrap'])} that failed or gave non-finite predictions"
            if result["dropped"] > MAX_DROPPED_SHARE * result["bootstrap"]:
                diagnostics["ok"] = False
                diagnostics["problems"].append(f"{text}: over {MAX_DROPPED_SHARE:.0%}, so the interval is not the bootstrap's")
                diagnostics["advice"].append("check the data for failed runs, or use --method nuts")
            diagnostics["note"] = text
    samples = {k: idata.posterior[k].values.reshape(-1) for k in sites}
    _check_finite(form, lik, samples, data, diagnostics)
    _check_coverage(form, lik, samples, data, diagnostics, seed)
    summary = _summary(form, method, lik, data, idata, sites, diagnostics, settings.as_dict() | run, point)
    summary["discrepancy"] = {"mode": "none"}
    if s.discrepancy == "extrapolation" and form.target == "loss" and method != "classic":
        tau, info = discrepancy_lib.learn_tau(form, lik, data, n_draws=samples["sigma"].shape[0], seed=seed,
                                              pad_to=pad_to)
        samples["tau"] = tau
        idata.posterior["tau"] = (("chain", "draw"), tau.reshape(idata.posterior.sizes["chain"], -1))
        summary["discrepancy"] = {"mode": s.discrepancy, "log_ranges": discrepancy_lib.log_ranges(data.inputs),
                                  "tau": info}
    summary["wall_seconds"] = time.perf_counter() - start
    return Fit(form, method, lik, data, samples, idata, summary, settings)


def _quick_nuts_diagnostics(posterior: dict, stats: dict) -> dict:
    import arviz as az

    idata = az.from_dict(posterior=posterior, sample_stats={"diverging": stats["diverging"], "energy": stats["energy"]})
    return diag_lib.nuts_diagnostics(idata, list(posterior))


def _check_finite(form: Form, lik: Likelihood, samples: dict, data: FitData, diagnostics: dict) -> None:
    """A fit whose predictions at its own data are not finite is not ok, whatever the optimiser said."""
    mean = predictive(form, lik, samples, data.inputs, "mean")
    bad = ~np.isfinite(mean).all(axis=1)
    bad |= ~np.isfinite(np.stack([samples[k] for k in samples], axis=1)).all(axis=1)
    if bad.any():
        diagnostics["ok"] = False
        diagnostics["problems"].append(f"{int(bad.sum())} of {bad.size} draws ({100 * bad.mean():.2g}%) give non-finite predictions")
        diagnostics["advice"].append("check the data for failed runs (huge or zero losses), or use --method nuts")
    diagnostics["nonfinite_draws"] = int(bad.sum())


# A fit whose posterior predictive leaves more than this share of its own points outside their
# 90% intervals (about a tenth are expected outside) does not describe its data: not ok.
MAX_OUTSIDE_90 = 0.5
# ... or puts so many of them on one side of their predictive medians (half expected) that a sign
# test gives less than this chance (16 points: 15 or more on one side; 11 points: all).
MAX_SIGN_TEST_P = 1e-3


def _sign_test_p(n: int, k: int) -> float:
    """Two-sided sign test: the chance of k or more of n fair coin flips landing on one side."""
    from math import comb

    return min(1.0, 2 * sum(comb(n, j) for j in range(k, n + 1)) / 2**n) if n else 1.0


def _check_coverage(form: Form, lik, samples: dict, data: FitData, diagnostics: dict, seed: int) -> None:
    """A fit that misses the data it saw (a prior that excludes it, a wrong form) is not ok, even
    when the sampler converged: count the fitted points outside their own 90% predictive interval."""
    if diagnostics.get("nonfinite_draws"):
        return
    try:
        draws = predictive(form, lik, samples, data.inputs, "observed", n_eval=data.n_eval, seed=seed)
    except Exception:  # noqa: BLE001 - the check must not turn a fit into a crash
        return
    lo, median, hi = np.nanquantile(draws, [0.05, 0.5, 0.95], axis=0)
    outside = float(np.mean((data.y < lo) | (data.y > hi)))
    one_side = float(max(np.mean(data.y < median), np.mean(data.y > median)))
    diagnostics["outside_90"] = outside
    diagnostics["one_side_of_median"] = one_side
    problem = None
    if outside > MAX_OUTSIDE_90:
        problem = (f"{outside:.0%} of the fitted points lie outside their own 90% predictive interval "
                   "(about 10% expected): the fit misses its data")
    elif _sign_test_p(data.n_points, round(one_side * data.n_points)) < MAX_SIGN_TEST_P:
        problem = (f"{one_side:.0%} of the fitted points lie on one side of their own predictive median "
                   "(about half expected): the fit is biased against its data")
    if problem:
        diagnostics["ok"] = False
        diagnostics["problems"].append(problem)
        diagnostics["advice"].append("widen the priors (--prior) to cover the data's range, or change the form")


def _model_args(form: Form, data: FitData):
    import jax.numpy as jnp

    inputs = {k: jnp.asarray(v, jnp.float32) for k, v in data.inputs.items()}
    n_eval = None if data.n_eval is None else jnp.asarray(data.n_eval, jnp.float32)
    return inputs, n_eval, jnp.asarray(observed(form, data.y, data.n_eval), jnp.float32)


def run_nuts(form, lik, data, *, chains, draws, warmup, seed, target_accept=0.98, progress=False, mcmc=None,
             chain_method=None, init="prior"):
    """NUTS with a dense mass matrix (power-law coefficients and exponents are strongly correlated;
    a diagonal one needed ~30x more leapfrog steps per draw on Chinchilla data).
    Chains run in parallel, one per JAX device, in waves when there are more chains than devices
    (`tokeff fit` splits the CPU into one device per chain: `tokeff.devices`). On a single CPU
    device they run one after another through one compiled kernel: vectorised chains all pay for the
    longest tree of every step (measured 25 s sequential vs 44 s vectorised for 4 x 2000 steps,
    250 points); accelerators keep the vectorised batch.
    Pass a previous `mcmc` (returned in stats) to reuse its compiled sampler for new data; for many
    fits in one process also pass `chain_method="sequential"`: numpyro re-compiles parallel chains on
    every run (~4 s each), sequential ones reuse the kernel. Either way ~1,000 memory maps stay behind
    per run; see `tokeff.laws.validation.calibration` for the `jax.clear_caches()` that frees them.
    `init` ("prior" or "laplace", `NUTS_INITS`): where the chains start; stats["init"] says where
    they did ("prior" when the Laplace approximation had no positive-definite Hessian)."""
    import jax
    import numpyro
    from numpyro.infer import MCMC, NUTS

    from tokeff.laws.sampling_loop import share_sampling_loop

    share_sampling_loop()  # one compile of the sampling loop, not one per chain

    devices = jax.local_device_count()
    if chain_method is None and devices > 1 and chains > 1:
        chain_method, per_wave = "parallel", min(devices, chains)
    else:
        chain_method = chain_method or ("sequential" if jax.default_backend() == "cpu" else "vectorized")
        per_wave = chains

    def sampler(n_chains):
        kernel = NUTS(make_model(form, lik), target_accept_prob=target_accept, dense_mass=True,
                      init_strategy=init_strategy(form))
        return MCMC(kernel, num_warmup=warmup, num_samples=draws, num_chains=n_chains, chain_method=chain_method,
                    progress_bar=progress and chain_method != "vectorized", jit_model_args=True)

    if mcmc is None or mcmc.num_chains != per_wave:
        mcmc = sampler(per_wave)
    sites, args = param_sites(form, lik), _model_args(form, data)
    starts = None
    if init == "laplace":
        from tokeff.laws.laplace import laplace_starts

        starts = laplace_starts(form, lik, data, chains, seed=seed)
        init = "laplace" if starts is not None else "prior (no Laplace start: Hessian not positive definite)"
    waves = []
    for i, start in enumerate(range(0, chains, per_wave)):
        wave_mcmc = mcmc if chains - start >= per_wave else sampler(chains - start)
        n_wave = min(per_wave, chains - start)
        init_params = None if starts is None else {
            k: (v[start] if n_wave == 1 else v[start:start + n_wave]) for k, v in starts.items()}
        with numpyro.validation_enabled(False):
            wave_mcmc.run(jax.random.fold_in(jax.random.PRNGKey(seed), i), *args, extra_fields=("diverging", "energy"),
                          init_params=init_params)
        extra = wave_mcmc.get_extra_fields(group_by_chain=True)
        waves.append({
            **{k: np.asarray(v) for k, v in wave_mcmc.get_samples(group_by_chain=True).items() if k in sites},
            "diverging": np.asarray(extra["diverging"]),
            "energy": np.asarray(extra["energy"]),
        })
    joined = {k: np.concatenate([w[k] for w in waves]) for k in waves[0]}
    stats = {"diverging": joined.pop("diverging"), "energy": joined.pop("energy"), "mcmc": mcmc, "init": init}
    return joined, stats


def _inference_data(form, lik, data, posterior, stats):
    """ArviZ InferenceData with pointwise log-likelihood (site `obs`) for LOO/WAIC."""
    import arviz as az

    n_chains, n_draws = next(iter(posterior.values())).shape[:2]
    flat = {k: np.asarray(v).reshape(n_chains * n_draws) for k, v in posterior.items()}
    obs = observed(form, data.y, data.n_eval).astype(np.float32)
    ll = pointwise_log_likelihood(form, lik, flat, data.inputs, obs, n_eval=data.n_eval)
    ll = ll.reshape(n_chains, n_draws, -1)
    kwargs = {}
    if stats is not None:
        kwargs["sample_stats"] = {"diverging": stats["diverging"], "energy": stats["energy"]}
    return az.from_dict(
        posterior=posterior,
        log_likelihood={"obs": ll},
        observed_data={"obs": np.asarray(obs)},
        constant_data={k: np.asarray(v) for k, v in data.inputs.items()},
        dims={"obs": ["point"], **{k: ["point"] for k in data.inputs}},
        **kwargs,
    )


def summary_header(form: Form, method: str, lik: Likelihood, data: FitData) -> dict:
    """What every summary.json (plain or grouped fit) opens with: the form, the method, the data
    it saw and the model it assumed."""
    return {
        "form": form.name,
        "method": method,
        "target": form.target,
        "inputs": list(form.inputs),
        "columns": data.columns,
        "n_points": data.n_points,
        # Rows the exclusion rule left out (tokeff.laws.data): row, value and reason each.
        "excluded": list(data.excluded),
        "input_ranges": data.input_ranges(),
        "target_range": [float(data.y.min()), float(data.y.max())],
        "likelihood": lik.as_dict(),
        "priors": {k: str(p) for k, p in form.params.items()},
    }


def _summary(form, method, lik, data, idata, sites, diagnostics, settings, point) -> dict:
    import arviz as az

    n_chains = idata.posterior.sizes["chain"]
    r_hat = az.rhat(idata, var_names=sites) if n_chains > 1 else None
    ess_bulk = az.ess(idata, var_names=sites, method="bulk") if method == "nuts" else None
    ess_tail = az.ess(idata, var_names=sites, method="tail") if method == "nuts" else None
    params = {}
    for k in sites:
        v = idata.posterior[k].values.reshape(-1)
        params[k] = {
            "mean": float(v.mean()),
            "median": float(np.median(v)),
            "sd": float(v.std()),
            "q05": float(np.quantile(v, 0.05)),
            "q95": float(np.quantile(v, 0.95)),
            "r_hat": float(r_hat[k]) if r_hat is not None else None,
            "ess_bulk": float(ess_bulk[k]) if ess_bulk is not None else None,
            "ess_tail": float(ess_tail[k]) if ess_tail is not None else None,
            "prior": str(form.params[k]) if k in form.params else str(lik.noise),
        }
        if point is not None and k in point:
            params[k]["estimate"] = point[k]
    return {
        **summary_header(form, method, lik, data),
        "params": params,
        "diagnostics": diagnostics,
        "settings": settings,
    }

