"""Hierarchical (grouped) fits: one law per group (e.g. per pretrained model), partially pooled.

Why: fine-tuning curves of different models have alike shapes (exponents, floors), and a cheap,
short curve says little about its own exponent. Fitted alone each curve extrapolates from its own
noise; fitted together each group borrows what the others say about the parameters they share in
distribution, and a group with few rows is carried by the population.

The model, built from any registered form (built-in or a user's):
- every pooled parameter k has a population value theta_k (the form's prior) and a spread s_k
  (`SPREAD_PRIOR`, in unconstrained units: log units for positive parameters, logit units for
  bounded ones); group g's value is T(u_k + s_k z_gk), z_gk ~ Normal(0, 1) (non-centred: the
  sampler moves in z, so a small spread is no funnel), u_k = T^-1(theta_k), T the bijection from
  the real line to the prior's support;
- a parameter the form centres (`Form.centring`, e.g. a coefficient whose log trades off against
  its exponent) is pooled as its term's log at the whole data's geometric centre x0: the population
  value is sampled there as in an ungrouped fit, and group g's coefficient is
  exp(t_g - offset(p_g, x0)), t_g = t_pop + s z_g;
- parameters not pooled (`pool`) are one value shared by every group; the observation noise
  (sigma, and the failures' share and scale) is always shared;
- with `correlated=True` the pooled parameters' effects are jointly normal, delta_g = diag(s) L z_g
  with L the Cholesky factor of their correlation (`LKJ_ETA`), z_g ~ Normal(0, I) (off by default:
  measured, it moved r and the pick on real curves by no more than NUTS's own noise).

A group the fit never saw (a new model) is drawn from the population: z ~ Normal(0, 1) per draw,
so its interval carries the spread between groups (wider than any fitted group's).
Predictions come from `GroupedFit.predictive`, the grouped twin of `Fit.predictive`. Loss fits carry
the extrapolation discrepancy (`tokeff.laws.discrepancy`, `--discrepancy extrapolation`, the
default): one tau, learned by internal leave-future-out within each group
(`learn_tau_grouped`), times d^2, d the distance beyond *that group's* fitted range (beyond the
whole data's range for a new group).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Mapping, Sequence

import numpy as np

from tokeff.commalist import comma_items
from tokeff.errors import UserError
from tokeff.laws import discrepancy as discrepancy_lib
from tokeff.laws.data import FitData, prepare, read_table
from tokeff.laws.forms import Form, get_form, is_builtin
from tokeff.laws.model import (
    FAILURE_SITES, Likelihood, law_mean, observation_dist, observed, pad_edge, padded_size, pointwise_log_likelihood,
    predictive_from_mean, resolve_likelihood, sample_noise,
)
from tokeff.laws.priors import Prior
from tokeff.laws.settings import FitSettings
from tokeff.progress import NUTS_STEPS, show_progress
from tokeff.usermodule import check_form_outputs

# Spread of a pooled parameter between groups, in unconstrained units: median 0.34 (groups' log
# coefficients ~40% apart), 95% below 1.1.
SPREAD_PRIOR = Prior("halfnormal", (0.5,))
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
# Correlated group effects: LKJ(eta) on the correlation of the pooled parameters' effects;
# eta = 2 leans mildly towards independence, so 30 groups can show a correlation but 3 cannot invent one.
LKJ_ETA = 2.0
CORR_SITE = "pooled_corr_chol"
CORRELATED = False  # fit_grouped's default (measured: docs/notes/2026-12-finetune-selection.md)


def pop_site(name: str) -> str:
    return f"{name}_pop"


def spread_site(name: str) -> str:
    return f"{name}_spread"


def _z_site(name: str) -> str:
    return f"{name}_z"


def _centred(form: Form, name: str) -> bool:
    prior = form.params[name]
    return name in form.centring and (prior.positive() or prior.shiftable())


def _order(form: Form) -> list[str]:
    """Parameters in sampling order: those not centred first, then the centred ones in the order
    their offsets are declared (an offset may use the parameters before it)."""
    return [k for k in form.params if not _centred(form, k)] + [k for k in form.centring if _centred(form, k)]


def _bijection(prior: Prior):
    from numpyro.distributions.transforms import biject_to

    return biject_to(prior.to_numpyro().support)


def _to_value(form: Form, name: str, t, p: Mapping, centre: Mapping):
    """A parameter's value from its unconstrained (or, centred, its at-centre) coordinate t."""
    import jax.numpy as jnp

    if _centred(form, name):
        offset = form.centring[name](p, centre)
        return jnp.exp(t - offset) if form.params[name].positive() else t - offset
    return _bijection(form.params[name])(t)


def _to_coordinate(form: Form, name: str, value, p: Mapping, centre: Mapping):
    """Inverse of `_to_value`."""
    import jax.numpy as jnp

    if _centred(form, name):
        offset = form.centring[name](p, centre)
        return (jnp.log(value) if form.params[name].positive() else value) + offset
    return _bijection(form.params[name]).inv(value)


def pooled_order(form: Form, pooled: Sequence[str]) -> list[str]:
    """The pooled parameters in sampling order: the axes of the correlated group effects."""
    return [k for k in _order(form) if k in pooled]


_NEW_GROUP_PROGRAMS: dict[tuple, tuple[Form, object]] = {}


def _new_group_program(form: Form, pooled: Sequence[str]):
    """`GroupedFit.new_group_params`'s transform as one jitted program ({pop site: [S, 1]},
    {pooled: spread [S, 1]}, z [S, n, pooled], centre) -> {name: [S, n]}: run eagerly, its
    operations compiled one by one for every new shape."""
    import jax
    import jax.numpy as jnp

    key = (id(form.mean), tuple((k, str(p)) for k, p in form.params.items()),
           tuple((k, id(f)) for k, f in form.centring.items()), tuple(pooled))
    if key not in _NEW_GROUP_PROGRAMS:
        axes = pooled_order(form, pooled)

        @jax.jit
        def program(pop, spreads, z, centre):
            shape = z.shape[:2]
            new: dict = {}
            for name in _order(form):
                if name not in pooled:
                    new[name] = jnp.broadcast_to(pop[name], shape)
                    continue
                t_pop = _to_coordinate(form, name, pop[name], pop, centre)
                new[name] = _to_value(form, name, t_pop + spreads[name] * z[:, :, axes.index(name)], new, centre)
            return new

        _NEW_GROUP_PROGRAMS[key] = (form, program)  # the form keeps the ids in the key taken
    return _NEW_GROUP_PROGRAMS[key][1]


def make_grouped_model(form: Form, likelihood: Likelihood, n_groups: int, pooled: Sequence[str],
                       correlated: bool = False):
    """A NumPyro model `model(inputs, group, n_eval, obs)`; `group` is each row's group index."""
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    from numpyro.distributions import transforms

    axes = pooled_order(form, pooled)
    joint = correlated and len(axes) >= 2

    def model(inputs: dict, group, n_eval=None, obs=None):
        centre = {k: jnp.exp(jnp.mean(jnp.log(v))) for k, v in inputs.items()}
        pop, per_group = {}, {}
        if joint:
            # Correlated effects, non-centred: delta_g = diag(s) L z_g, L the Cholesky factor of
            # the correlation (LKJ), z_g ~ Normal(0, I).
            spreads = jnp.stack([numpyro.sample(spread_site(k), SPREAD_PRIOR.to_numpyro()) for k in axes])
            chol = numpyro.sample(CORR_SITE, dist.LKJCholesky(len(axes), LKJ_ETA))
            z = numpyro.sample(_z_site("pooled"), dist.Normal(0.0, 1.0).expand([n_groups, len(axes)]).to_event(2))
            delta = (z @ chol.T) * spreads
        for name in _order(form):
            prior = form.params[name]
            if _centred(form, name):
                offset = form.centring[name](pop, centre)
                if prior.positive():
                    base = dist.TransformedDistribution(
                        prior.to_numpyro(), [transforms.ExpTransform().inv, transforms.AffineTransform(offset, 1.0)])
                else:
                    base = prior.shifted_numpyro(offset)
                t_pop = numpyro.sample(f"{pop_site(name)}_at_centre", base)
                pop[name] = numpyro.deterministic(pop_site(name), _to_value(form, name, t_pop, pop, centre))
            else:
                pop[name] = numpyro.sample(pop_site(name), prior.to_numpyro())
                t_pop = _to_coordinate(form, name, pop[name], pop, centre)
            if joint and name in pooled:
                value = _to_value(form, name, t_pop + delta[:, axes.index(name)], per_group, centre)
            elif name in pooled:
                spread = numpyro.sample(spread_site(name), SPREAD_PRIOR.to_numpyro())
                z = numpyro.sample(_z_site(name), dist.Normal(0.0, 1.0).expand([n_groups]).to_event(1))
                value = _to_value(form, name, t_pop + spread * z, per_group, centre)
            else:
                value = jnp.broadcast_to(pop[name], (n_groups,))
            per_group[name] = numpyro.deterministic(name, value)
        p = {k: v[group] for k, v in per_group.items()}
        if form.target == "loss":
            sigma, failures = sample_noise(likelihood)
            location = form.log_mean(p, inputs)
            with numpyro.plate("points", location.shape[-1]):
                return numpyro.sample("obs", observation_dist("loss", likelihood, location, sigma=sigma,
                                                              failures=failures), obs=obs)
        location = form.mean(p, inputs)
        with numpyro.plate("points", location.shape[-1]):
            return numpyro.sample("obs", observation_dist("accuracy", likelihood, location, n_eval=n_eval), obs=obs)

    return model


def shared_sites(form: Form, likelihood: Likelihood) -> tuple[str, ...]:
    if form.target != "loss":
        return ()
    return ("sigma",) + (FAILURE_SITES if likelihood.kind == "failures" else ())


def kept_sites(form: Form, likelihood: Likelihood, pooled: Sequence[str], correlated: bool = False) -> tuple[str, ...]:
    """Every site a grouped fit keeps: per-group values, population values and spreads, shared noise
    (and the correlation's Cholesky factor, which diagnostics skip: its diagonal is constant)."""
    return (tuple(form.param_names) + tuple(pop_site(k) for k in form.param_names)
            + tuple(spread_site(k) for k in pooled) + shared_sites(form, likelihood)
            + ((CORR_SITE,) if correlated and len(pooled) >= 2 else ()))


@dataclasses.dataclass(frozen=True)
class Groups:
    """The group column of a grouped fit: its name, the labels (sorted) and each row's index."""

    column: str
    labels: tuple[str, ...]
    index: np.ndarray

    def lookup(self, labels: Sequence[str], *, new_groups: bool = False, field: str = "--group-value") -> np.ndarray:
        """Index of each label; -1 for a label the fit never saw (only with `new_groups`)."""
        where = {g: i for i, g in enumerate(self.labels)}
        unknown = [str(g) for g in labels if str(g) not in where]
        if unknown and not new_groups:
            raise UserError(f"{field}: unknown {self.column} {unknown[:3]} (fitted: {', '.join(self.labels[:8])}"
                            f"{', ...' if len(self.labels) > 8 else ''}); pass --new-group to draw it from the population")
        return np.array([where.get(str(g), -1) for g in labels], np.int64)


def group_column(frame, column: str) -> Groups:
    """Groups of `frame` by `column` (labels as strings); refuses a missing or single-valued column."""
    if column not in frame.columns:
        raise UserError(f"--group: column '{column}' not in the data (columns: {', '.join(map(str, frame.columns))})")
    values = frame[column]
    if values.isna().any():
        raise UserError(f"--group: column '{column}' has {int(values.isna().sum())} empty value(s)")
    labels = values.astype(str).to_numpy()
    unique = tuple(sorted(set(labels)))
    if len(unique) < 2:
        raise UserError(f"--group: column '{column}' has a single value ('{unique[0]}'); a grouped fit needs at least two groups")
    where = {g: i for i, g in enumerate(unique)}
    return Groups(column, unique, np.array([where[g] for g in labels], np.int64))


def parse_pool(pool: "str | Sequence[str] | None", form: Form) -> tuple[str, ...]:
    """The pooled parameters: all of the form's by default; `--pool beta,E` names some."""
    if pool is None:
        return tuple(form.param_names)
    names = comma_items(pool, "--pool", what="parameter name",
                        hint=f"name parameters of form {form.name} (has {', '.join(form.params)})")
    unknown = [p for p in names if p not in form.params]
    twice = sorted({p for p in names if names.count(p) > 1})
    if twice:
        raise UserError(f"--pool: {', '.join(twice)} named twice")
    if unknown:
        raise UserError(f"--pool: {', '.join(unknown)} not parameters of form {form.name} (has {', '.join(form.params)})")
    return tuple(k for k in form.param_names if k in names)


@dataclasses.dataclass
class GroupedFit:
    """A fitted hierarchical law. `samples`: per-group parameters name -> [S, G]; population values
    `name_pop` and spreads `name_spread` -> [S]; shared noise sites -> [S]."""

    form: Form
    method: str
    likelihood: Likelihood
    data: FitData
    groups: Groups
    pooled: tuple[str, ...]
    samples: dict[str, np.ndarray]
    idata: object
    summary: dict

    @property
    def diagnostics(self) -> dict:
        return self.summary["diagnostics"]

    @property
    def centre(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.summary["centre"].items()}

    def group_params(self, index: np.ndarray, *, seed: int = 0, labels: Sequence | None = None) -> dict[str, np.ndarray]:
        """Parameter draws name -> [S, O] for group indices `index` (-1: a new group, drawn from the
        population, one fresh group per draw and row; with `labels`, one per draw and label, the same
        for a label whatever else is asked: a new model's options are compared on one draw of it)."""
        index = np.asarray(index, np.int64)
        known = np.where(index >= 0, index, 0)
        out = {k: np.asarray(self.samples[k])[:, known] for k in self.form.param_names}
        new = index < 0
        if new.any() and labels is None:
            drawn = self.new_group_params(int(new.sum()), seed=seed)
            for k in out:
                out[k][:, new] = drawn[k]
        elif new.any():
            import zlib

            names = np.asarray([str(g) for g in labels], object)
            for name in dict.fromkeys(names[new]):
                drawn = self.new_group_params(1, seed=seed + zlib.crc32(name.encode()) % 2**30)
                rows = new & (names == name)
                for k in out:
                    out[k][:, rows] = drawn[k]
        return out

    def new_group_params(self, n: int, *, seed: int = 0) -> dict[str, np.ndarray]:
        """name -> [S, n]: n groups the fit never saw, drawn from the population for each draw."""
        rng = np.random.default_rng(seed + 17)
        centre = {k: np.float32(v) for k, v in self.centre.items()}
        pop = {k: np.asarray(self.samples[pop_site(k)], np.float32)[:, None] for k in self.form.param_names}
        axes = pooled_order(self.form, self.pooled)
        n_draws = next(iter(pop.values())).shape[0]
        z = rng.standard_normal((n_draws, n, len(axes)))
        if CORR_SITE in self.samples:  # correlated effects: z_g -> L z_g (the draw's Cholesky factor)
            z = np.einsum("sij,snj->sni", np.asarray(self.samples[CORR_SITE], np.float64), z)
        if n == 0 or n_draws == 0:
            return {k: np.zeros((n_draws, n)) for k in self.form.param_names}
        spreads = {k: np.asarray(self.samples[spread_site(k)], np.float32)[:, None] for k in axes}
        draws, rows = padded_size(n_draws), padded_size(n)
        new = _new_group_program(self.form, self.pooled)(
            {k: pad_edge(v, draws, 0) for k, v in pop.items()}, {k: pad_edge(v, draws, 0) for k, v in spreads.items()},
            pad_edge(pad_edge(z.astype(np.float32), rows, 1), draws, 0), centre)
        return {k: np.asarray(v, np.float64)[:n_draws, :n] for k, v in new.items()}

    def predictive(self, inputs: Mapping[str, np.ndarray], kind: str = "observed", *, groups: Sequence | None = None,
                   new_groups: bool = False, n_eval=None, seed: int = 0) -> np.ndarray:
        """[S, O] draws at `inputs` (O rows) for the group labelled `groups[o]` in row o: "mean" the
        law's mean, "new_run" times what the law misses there (the discrepancy), "observed" plus the
        likelihood's observation noise. A label the fit never saw needs `new_groups` (drawn from
        the population)."""
        if groups is None:
            raise UserError(f"groups: a grouped fit predicts per {self.groups.column}; pass one label per row")
        x = {k: np.asarray(inputs[k], np.float64).reshape(-1) for k in self.form.inputs}
        n_rows = next(iter(x.values())).shape[0]
        if len(groups) != n_rows:
            raise UserError(f"groups: {len(groups)} labels for {n_rows} rows")
        index = self.groups.lookup(groups, new_groups=new_groups)
        p = self.group_params(index, seed=seed, labels=groups)
        mu = np.asarray(law_mean(self.form, p, x), np.float64)
        sd = None if kind == "mean" else self.discrepancy_sd(x, index)
        return predictive_from_mean(self.form.target, self.likelihood, mu, kind, sigma=self.samples.get("sigma"),
                                    n_eval=n_eval, seed=seed, discrepancy_sd=sd)

    def discrepancy_sd(self, inputs: Mapping[str, np.ndarray], index: np.ndarray) -> np.ndarray | None:
        """[S, O] sd (log-loss scale) of what the law misses: tau x the growth of the distance beyond
        each row's group's fitted range (the whole data's for a new group); None without the term."""
        if "tau" not in self.samples:
            return None
        ranges = self.summary["discrepancy"]["log_ranges"]
        d = np.zeros(len(index))
        for i, g in enumerate(index):
            r = ranges["all"] if g < 0 else ranges["groups"][self.groups.labels[g]]
            d[i] = discrepancy_lib.growth(r, {k: v[i:i + 1] for k, v in inputs.items()})[0]
        return self.samples["tau"][:, None] * d[None, :]

    def log_likelihood(self) -> np.ndarray:
        """[S, n]: each fitted row's log-likelihood per draw, at its group's parameters (for LOO)."""
        samples = {k: np.asarray(v) for k, v in self.samples.items()}
        p = {k: samples[k][:, self.groups.index] for k in self.form.param_names}
        obs = observed(self.form, self.data.y, self.data.n_eval)
        ll = pointwise_log_likelihood(self.form, self.likelihood, samples | p, self.data.inputs, obs,
                                      n_eval=self.data.n_eval)
        return np.asarray(ll, np.float64)

    def save(self, path: str, *, plots: bool = True, force: bool = False) -> str:
        from tokeff.io import output_dir, write_json

        with output_dir(path, "fit", force=force) as tmp:
            write_json(os.path.join(tmp, "summary.json"), self.summary)
            self.idata.to_netcdf(os.path.join(tmp, "posterior.nc"))
            frame = self.data.to_frame()
            frame[self.groups.column] = np.asarray(self.groups.labels)[self.groups.index]
            frame.to_csv(os.path.join(tmp, "data.csv"), index=False)
            if plots:
                group_grid(self, os.path.join(tmp, "groups.png"))
        return os.path.abspath(path)


def load_grouped(path: str, summary: dict) -> GroupedFit:
    """The GroupedFit saved at `path` (`tokeff.laws.fit.load_fit` dispatches here)."""
    import arviz as az
    import pandas as pd

    group = summary["group"]
    form = get_form(summary["form"]).with_priors(summary.get("priors"))
    likelihood = Likelihood.from_dict(summary["likelihood"])
    pooled = tuple(group["pooled"])
    idata = az.from_netcdf(os.path.join(path, "posterior.nc"))
    samples = {}
    for k in kept_sites(form, likelihood, pooled, CORR_SITE in idata.posterior) + (("tau",) if "tau" in idata.posterior else ()):
        v = idata.posterior[k].values
        samples[k] = v.reshape(v.shape[0] * v.shape[1], *v.shape[2:])
    frame = pd.read_csv(os.path.join(path, "data.csv"))
    labels = tuple(str(g) for g in group["labels"])
    where = {g: i for i, g in enumerate(labels)}
    index = np.array([where[str(g)] for g in frame.pop(group["column"]).astype(str)], np.int64)
    data = FitData.from_frame(frame, summary["columns"])
    return GroupedFit(form, summary["method"], likelihood, data, Groups(group["column"], labels, index), pooled,
                      samples, idata, summary)


def _model_args(form: Form, data: FitData, groups: Groups):
    import jax.numpy as jnp

    inputs = {k: jnp.asarray(v, jnp.float32) for k, v in data.inputs.items()}
    n_eval = None if data.n_eval is None else jnp.asarray(data.n_eval, jnp.float32)
    return inputs, jnp.asarray(groups.index), n_eval, jnp.asarray(observed(form, data.y, data.n_eval), jnp.float32)


def _run_nuts(model, args, *, chains, draws, warmup, seed, target_accept, progress, init_values=None):
    import jax
    import numpyro
    from numpyro.infer import MCMC, NUTS, init_to_median, init_to_value

    from tokeff.laws.sampling_loop import share_sampling_loop

    share_sampling_loop()  # one compile of the sampling loop, not one per chain

    devices = jax.local_device_count()
    chain_method = "parallel" if devices >= chains > 1 else "sequential"
    init = init_to_median(num_samples=15) if init_values is None else init_to_value(values=init_values)
    kernel = NUTS(model, target_accept_prob=target_accept, dense_mass=False, init_strategy=init)
    mcmc = MCMC(kernel, num_warmup=warmup, num_samples=draws, num_chains=chains, chain_method=chain_method,
                progress_bar=progress)
    with numpyro.validation_enabled(False):
        mcmc.run(jax.random.PRNGKey(seed), *args, extra_fields=("diverging", "energy"))
    extra = mcmc.get_extra_fields(group_by_chain=True)
    posterior = {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()}
    return posterior, {"diverging": np.asarray(extra["diverging"]), "energy": np.asarray(extra["energy"])}


VI_STEPS = 4000
VI_RESTARTS = 3


def _run_map(model, args, *, draws, seed):
    """The "map" method of a grouped fit: a Gaussian in numpyro's unconstrained space fitted by
    variational inference (AutoMultivariateNormal, Adam, `VI_STEPS` steps; the best ELBO of
    `VI_RESTARTS` seeds), started at the prior medians. Why not the mode and its Hessian, as an
    ungrouped MAP fit does: a hierarchical posterior has no useful mode, since the joint density
    grows without bound as a spread shrinks towards 0 with every group at the population value
    (measured: 3 curves of 7 points, spreads at 1e-4 and an indefinite Hessian)."""
    import jax
    import numpyro
    import optax
    from numpyro.infer import SVI, Trace_ELBO, init_to_median
    from numpyro.infer.autoguide import AutoMultivariateNormal

    best = None
    for restart in range(VI_RESTARTS):
        guide = AutoMultivariateNormal(model, init_loc_fn=init_to_median(num_samples=15), init_scale=0.05)
        svi = SVI(model, guide, optax.adam(optax.exponential_decay(0.02, VI_STEPS, 0.1)), Trace_ELBO(num_particles=4))
        with numpyro.validation_enabled(False):
            result = svi.run(jax.random.PRNGKey(seed + restart), VI_STEPS, *args, progress_bar=False)
        losses = np.asarray(result.losses)
        final = float(np.mean(losses[-200:]))
        if np.isfinite(final) and (best is None or final < best[0]):
            best = (final, guide, result.params, losses)
    if best is None:
        return None, {}
    final, guide, params, losses = best
    drawn = guide.sample_posterior(jax.random.PRNGKey(seed + 99), params, *args, sample_shape=(draws,))
    from numpyro.infer import Predictive

    with numpyro.validation_enabled(False):
        full = Predictive(model, posterior_samples=drawn, return_sites=None)(jax.random.PRNGKey(seed + 7), *args)
    posterior = {k: np.asarray(v)[None] for k, v in {**full, **drawn}.items() if k != "obs"}
    # Converged when the ELBO stopped moving: over the last 10% of steps, the two halves' means
    # differ by less than 3 standard errors of the (Monte Carlo) ELBO noise, or by < 0.1%.
    tail = losses[-VI_STEPS // 10:]
    half = len(tail) // 2
    drift = abs(float(np.mean(tail[:half]) - np.mean(tail[half:])))
    se = float(np.std(tail) * np.sqrt(2.0 / half))
    converged = bool(np.isfinite(final) and (drift < 3 * se or drift < 1e-3 * abs(final)))
    return posterior, {"converged": converged, "extra": {"elbo": -final, "elbo_drift": drift}}


def fit_grouped(
    table,
    form: Form | str,
    group: str,
    settings: FitSettings | None = None,
    *,
    pool: "str | Sequence[str] | None" = None,
    correlated: bool | None = None,
    window: "str | int | None" = None,
    mapping: Mapping[str, str] | None = None,
    target: str | None = None,
    progress: bool = False,
    **overrides,
) -> GroupedFit:
    """Fit `form` per group of `table[group]`, partially pooled (module doc), with `settings`
    (default `FitSettings()`; keyword `overrides` replace single ones). Methods: nuts, map;
    NUTS starts at the prior medians (every group at the population). `window`: which of each
    group's rows the law is fitted to, "all", K (each group's top K) or "auto" (chosen by
    leave-future-out within the rows, `tokeff.laws.window`; default `window.DEFAULT`); the discrepancy's
    tau is learned from every row."""
    import pandas as pd

    from tokeff.laws import diagnostics as diag_lib
    from tokeff.laws.window import apply_window, parse_window

    window = parse_window(window)  # a bad window fails before anything else
    s = (settings or FitSettings()).replace(**overrides) if overrides else (settings or FitSettings())
    if s.method not in ("nuts", "map"):
        raise UserError(f"--method: a grouped fit runs nuts or map, got '{s.method}'")
    if s.init != "auto":  # it would be ignored: NUTS starts every group at the prior medians
        raise UserError("--init: a hierarchical fit's chains start at the prior medians; it takes no --init")
    method, chains, draws, warmup, seed = s.method, s.chains, s.draws, s.warmup, s.seed
    priors = s.prior_overrides
    form = get_form(form) if isinstance(form, str) else form
    if form.target == "accuracy" and form.floor not in priors:
        form = form.above_chance(s.chance)
    form = form.with_priors(priors)
    pooled = parse_pool(pool, form)
    lik = Likelihood(kind=resolve_likelihood(s.likelihood, form.target, method), chance=s.chance)
    if isinstance(table, (str, os.PathLike)):
        table = read_table(os.fspath(table))
    elif not isinstance(table, pd.DataFrame):
        table = pd.DataFrame(table)
    group_column(table, group)  # a missing or single-valued column fails before anything else
    data = prepare(table, form, mapping=mapping, target=target, drop_invalid=s.drop_invalid, exclude=s.exclude,
                   keep=(group,))
    if not is_builtin(form.name):
        check_form_outputs(form, data.inputs)  # a user's form that cannot be fitted: one line, before sampling
    fitted = {col: var for var, col in data.columns.items()}
    if group in fitted:  # grouping by what the law fits or predicts: one row per group, nothing to pool
        what = "target" if fitted[group] == "target" else f"input {fitted[group]}"
        raise UserError(f"--group: column '{group}' is the fit's {what}; group by a column that names "
                        "the runs' model (or task), not by a fitted value")
    groups = group_column(pd.DataFrame({group: data.extra.pop(group)}), group)

    start = time.perf_counter()
    every_row, every_index = data, groups.index
    keep, window_record = apply_window(form, lik, data, groups.index, window, seed=seed)
    if not keep.all():
        data, groups = data.take(keep), Groups(groups.column, groups.labels, groups.index[keep])
    correlated = CORRELATED if correlated is None else bool(correlated)
    model = make_grouped_model(form, lik, len(groups.labels), pooled, correlated)
    args = _model_args(form, data, groups)
    sites = kept_sites(form, lik, pooled, correlated)
    if method == "nuts":
        progress = progress or show_progress(chains * (warmup + draws), NUTS_STEPS)  # a long run shows a bar
        posterior, stats = _run_nuts(model, args, chains=chains, draws=draws, warmup=warmup, seed=seed,
                                     target_accept=s.target_accept, progress=progress)
    else:
        posterior, opt = _run_map(model, args, draws=s.laplace_draws, seed=seed)
        if posterior is None:
            raise UserError("--method: the grouped map fit found no finite approximation; use --method nuts")
        stats = None
    idata = _inference_data(posterior, stats, sites, groups)
    if method == "nuts":
        diagnostics = diag_lib.nuts_diagnostics(idata, [k for k in sites if k != CORR_SITE])
    else:
        diagnostics = diag_lib.optimiser_diagnostics(**opt)
    samples = {}
    for k in sites:
        v = idata.posterior[k].values
        samples[k] = v.reshape(v.shape[0] * v.shape[1], *v.shape[2:])
    summary = _summary(form, method, lik, data, groups, pooled, idata, samples, diagnostics, s.as_dict())
    summary["window"] = window_record
    if s.discrepancy == "extrapolation" and form.target == "loss":
        # From every row: the inner refits need the rows a short window leaves out (with six per
        # group tau kept its prior), and refits of every row miss by more, so tau errs wide.
        tau, info = discrepancy_lib.learn_tau_grouped(form, lik, every_row, every_index,
                                                      n_draws=samples["sigma"].shape[0], seed=seed)
        samples["tau"] = tau
        idata.posterior["tau"] = (("chain", "draw"), tau.reshape(idata.posterior.sizes["chain"], -1))
        summary["discrepancy"] = {
            "mode": s.discrepancy, "tau": info,
            "log_ranges": {"all": discrepancy_lib.log_ranges(data.inputs),
                           "groups": {label: discrepancy_lib.log_ranges(data.take(groups.index == g).inputs)
                                      for g, label in enumerate(groups.labels)}}}
    summary["wall_seconds"] = time.perf_counter() - start
    return GroupedFit(form, method, lik, data, groups, pooled, samples, idata, summary)


def _inference_data(posterior: dict, stats: dict | None, sites: Sequence[str], groups: Groups):
    import arviz as az

    kept = {k: posterior[k] for k in sites}
    dims = {k: ["group"] for k, v in kept.items() if v.ndim == 3}
    kwargs = {}
    if stats is not None:
        kwargs["sample_stats"] = {"diverging": stats["diverging"], "energy": stats["energy"]}
    return az.from_dict(posterior=kept, coords={"group": list(groups.labels)}, dims=dims, **kwargs)


def _stats(v: np.ndarray) -> dict:
    return {"mean": float(v.mean()), "median": float(np.median(v)), "sd": float(v.std()),
            "q05": float(np.quantile(v, 0.05)), "q95": float(np.quantile(v, 0.95))}


def _summary(form, method, lik, data, groups, pooled, idata, samples, diagnostics, settings) -> dict:
    import arviz as az

    r_hat = az.rhat(idata) if idata.posterior.sizes["chain"] > 1 else None
    ess = az.ess(idata, method="bulk") if method == "nuts" else None

    def check(k, g=None):
        sel = {} if g is None else {"group": groups.labels[g]}
        return {"r_hat": float(r_hat[k].sel(**sel)) if r_hat is not None else None,
                "ess_bulk": float(ess[k].sel(**sel)) if ess is not None else None}

    per_group = {}
    for g, label in enumerate(groups.labels):
        rows = int((groups.index == g).sum())
        per_group[label] = {"n_points": rows,
                            "params": {k: {**_stats(samples[k][:, g]), **check(k, g)} for k in form.param_names}}
    population = {}
    for k in form.param_names:
        population[k] = {**_stats(samples[pop_site(k)]), **check(pop_site(k)), "prior": str(form.params[k]),
                         "pooled": k in pooled}
        if k in pooled:
            population[k]["spread"] = {**_stats(samples[spread_site(k)]), **check(spread_site(k)),
                                       "prior": str(SPREAD_PRIOR)}
    shared = {k: {**_stats(samples[k]), **check(k), "prior": str(lik.noise) if k == "sigma" else ""}
              for k in shared_sites(form, lik)}
    correlation = None
    if CORR_SITE in samples:
        chol = np.asarray(samples[CORR_SITE], np.float64)
        corr = np.einsum("sij,skj->sik", chol, chol)
        correlation = {"axes": pooled_order(form, pooled), "prior": f"lkj({LKJ_ETA:g})",
                       "median": np.round(np.median(corr, axis=0), 4).tolist(),
                       "q05": np.round(np.quantile(corr, 0.05, axis=0), 4).tolist(),
                       "q95": np.round(np.quantile(corr, 0.95, axis=0), 4).tolist()}
    from tokeff.laws.fit import summary_header

    return {
        **summary_header(form, method, lik, data),
        "group": {"column": groups.column, "labels": list(groups.labels), "pooled": list(pooled),
                  "spread_prior": str(SPREAD_PRIOR), "correlated": CORR_SITE in samples},
        "centre": {k: float(np.exp(np.mean(np.log(v)))) for k, v in data.inputs.items()},
        "population": population,
        "groups": per_group,
        "shared": shared,
        "correlation": correlation,
        "diagnostics": diagnostics,
        "settings": settings,
        "discrepancy": {"mode": "none"},
    }


def group_grid(fit: GroupedFit, path: str, *, n_grid: int = 50, max_groups: int = 36) -> None:
    """One panel per group: its rows and the median and 90% band of its law's mean and of a new
    observation, against the form's first input (others at the group's median)."""
    from tokeff.laws.plots import _pyplot

    plt = _pyplot()
    form, data, groups = fit.form, fit.data, fit.groups
    first = form.inputs[0]
    shown = groups.labels[:max_groups]
    cols = int(np.ceil(np.sqrt(len(shown))))
    rows = int(np.ceil(len(shown) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.2 * rows), sharex=True, sharey=True, squeeze=False)
    lo, hi = data.input_ranges()[first]
    grid = np.exp(np.linspace(np.log(lo), np.log(hi), n_grid))
    for ax, label in zip(axes.flat, shown):
        g = groups.labels.index(label)
        mine = groups.index == g
        x = {first: grid, **{k: np.full(n_grid, np.median(data.inputs[k][mine])) for k in form.inputs[1:]}}
        n_eval = None if data.n_eval is None else float(np.median(data.n_eval[mine]))
        mean = fit.predictive(x, "mean", groups=[label] * n_grid)
        obs = fit.predictive(x, "observed", groups=[label] * n_grid, n_eval=n_eval)
        ax.fill_between(grid, *np.quantile(obs, [0.05, 0.95], axis=0), color="C0", alpha=0.15, lw=0)
        ax.fill_between(grid, *np.quantile(mean, [0.05, 0.95], axis=0), color="C0", alpha=0.35, lw=0)
        ax.plot(grid, np.median(mean, 0), color="C0", lw=1)
        ax.scatter(data.inputs[first][mine], data.y[mine], s=8, c="k", zorder=3)
        ax.set_title(f"{label} ({int(mine.sum())})", fontsize=8)
        ax.set_xscale("log")
        if form.target == "loss":
            ax.set_yscale("log")
    for ax in list(axes.flat)[len(shown):]:
        ax.axis("off")
    fig.suptitle(f"{form.name} per {groups.column} ({fit.method}): mean and new-observation 90% bands", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def format_grouped(summary: dict, *, shown: int = 12) -> str:
    """The CLI's table: population medians (90% intervals) and spreads, then each group's medians."""
    params = list(summary["population"])
    lines = [f"{'population':<13} {'median':>11} {'q05':>11} {'q95':>11} {'spread':>8}"]
    for k, p in summary["population"].items():
        spread = f"{p['spread']['median']:8.3g}" if "spread" in p else f"{'shared':>8}"
        lines.append(f"{k:<13} {p['median']:11.4g} {p['q05']:11.4g} {p['q95']:11.4g} {spread}")
    for k, p in summary["shared"].items():
        lines.append(f"{k:<13} {p['median']:11.4g} {p['q05']:11.4g} {p['q95']:11.4g} {'shared':>8}")
    column = summary["group"]["column"]
    groups = list(summary["groups"].items())
    w = max([len(str(label)) for label, _ in groups[:shown]] + [len(column), 13])  # labels whole
    lines.append(f"{column:<{w}} {'rows':>5} " + " ".join(f"{k:>10}" for k in params) + "   (medians)")
    for label, g in groups[:shown]:
        lines.append(f"{str(label):<{w}} {g['n_points']:5d} "
                     + " ".join(f"{g['params'][k]['median']:10.4g}" for k in params))
    if len(groups) > shown:
        lines.append(f"... and {len(groups) - shown} more (summary.json: groups)")
    return "\n".join(lines)
