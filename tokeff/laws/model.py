"""The NumPyro model behind every form, and posterior prediction.

Likelihoods:
- loss targets: log y ~ Normal(log mean, sigma) or StudentT(df, log mean, sigma). Working on log loss
  makes the noise multiplicative (a 1% wobble means the same at loss 2 and loss 8), as in the
  classic Huber-on-log-loss recipe.
- accuracy targets: correct ~ Binomial(n_eval, p), correct = round(accuracy * n_eval). The eval-set
  size is information: 27 questions say less than 1000. The form's mean is clipped to
  [chance + 1e-4, 1 - 1e-4] (a flat likelihood beyond the clip, rather than a squashing link, so the
  parameters keep the law's meaning; chance defaults to 0 and is 0.25 for 4-way multiple choice).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from functools import cache, partial

import jax
import jax.numpy as jnp
import numpy as np

from tokeff.errors import UserError
from tokeff.laws.forms import Form
from tokeff.laws.priors import Prior

LIKELIHOODS = ("normal", "student_t", "failures")
# "failures": Student-t (df 4) runs on log loss, plus a share `failure_prob` of runs that trained
# worse than the law says (half-diverged, stalled, an isoFLOP arm the form cannot follow):
# log y = log mean + noise + |shift|, shift ~ Normal(0, failure_scale). A run never trains *better*
# than the law because it failed, so the failure part is one-sided (a skew-normal: noise, taken as
# Normal, plus a half-normal shift). Such runs then neither bend the law (as they do a Normal fit)
# nor pull it up symmetrically (as they do a Student-t fit). A *new* run is predicted as one that
# trains as designed: the law, Student-t noise and the discrepancy (`tokeff.laws.discrepancy`);
# the fit reports the failure share. "auto" means "failures" for loss targets; the classic Huber
# recipe and accuracy targets (binomial) need no choice.
DEFAULT_LOSS_LIKELIHOOD = "failures"
FAILURE_PROB_PRIOR = Prior("uniform", (0.0, 0.5))  # failures are the minority of a sweep, by definition
FAILURE_SCALE_PRIOR = Prior("lognormal", (-1.5, 0.75))  # median 22% on the loss, 95%: 5%-100%
FAILURE_SITES = ("failure_prob", "failure_scale")


def resolve_likelihood(kind: str, target: str, method: str) -> str:
    """The likelihood `auto` means for a target and method."""
    if kind != "auto":
        return kind
    return DEFAULT_LOSS_LIKELIHOOD if target == "loss" and method != "classic" else "normal"
ACCURACY_EPS = 1e-4  # accuracies are kept this far inside [chance, 1] (log-likelihoods stay finite)


@dataclasses.dataclass(frozen=True)
class Likelihood:
    """Observation model. `noise` is the prior on sigma (log-loss scale); `df` for Student-t."""

    kind: str = "normal"
    noise: Prior = Prior("halfnormal", (0.1,))
    df: float = 4.0
    chance: float = 0.0

    def __post_init__(self):
        if self.kind not in LIKELIHOODS:
            raise UserError(f"likelihood: must be one of {LIKELIHOODS}, got '{self.kind}'")
        if not 0.0 <= self.chance < 1.0:
            raise UserError(f"chance: must be in [0, 1), got {self.chance}")
        object.__setattr__(self, "noise", Prior.parse(self.noise))

    def as_dict(self) -> dict:
        return {"kind": self.kind, "noise": str(self.noise), "df": self.df, "chance": self.chance}

    @classmethod
    def from_dict(cls, d: Mapping) -> "Likelihood":
        return cls(kind=d["kind"], noise=Prior.parse(d["noise"]), df=float(d["df"]), chance=float(d["chance"]))


def observed(form: Form, y: np.ndarray, n_eval: np.ndarray | None) -> np.ndarray:
    """The observation the likelihood scores: log loss, or correct counts."""
    if form.target == "loss":
        return np.log(y)
    return np.round(y * n_eval)


def clip_accuracy(mu, chance: float):
    return jnp.clip(mu, chance + ACCURACY_EPS, 1.0 - ACCURACY_EPS)


class LossWithFailures:
    """The "failures" likelihood of log loss: location + Student-t(df) noise, or, with probability
    `prob`, a failed run: location + Normal noise + a half-normal shift of scale `shift` (a
    skew-normal, so the density stays smooth for NUTS). The fit scores rows with `log_prob`;
    simulations draw with `sample`."""

    def __init__(self, df, loc, scale, prob, shift):
        self.df = df
        self.loc, self.scale, self.prob, self.shift = (jnp.asarray(v) for v in (loc, scale, prob, shift))

    def failed_log_prob(self, value):
        return _failed_log_prob(self.loc, self.scale, self.shift, value)

    def log_prob(self, value):
        return _failures_log_prob(self.df, self.loc, self.scale, self.prob, self.shift, value)

    def sample(self, key, sample_shape=()):
        shape = tuple(sample_shape) + jnp.broadcast_shapes(*(jnp.shape(v) for v in (self.loc, self.scale, self.prob, self.shift)))
        k_ok, k_noise, k_shift, k_which = jax.random.split(key, 4)
        ok = self.loc + self.scale * jax.random.t(k_ok, self.df, shape)
        failed = self.loc + self.scale * jax.random.normal(k_noise, shape) + self.shift * jnp.abs(jax.random.normal(k_shift, shape))
        return jnp.where(jax.random.uniform(k_which, shape) < self.prob, failed, ok)


# One compiled program per shape, not one per operation: outside a model (the discrepancy's grid of
# tau, coverage checks, log-likelihoods for the scores) these run eagerly, and each of their ~20
# operations would otherwise compile on its own for every new shape. Inside a model they are traced.
@jax.jit
def _failed_log_prob(loc, scale, shift, value):
    from jax.scipy.special import log_ndtr

    omega = jnp.sqrt(scale ** 2 + shift ** 2)
    z = (value - loc) / omega
    return jnp.log(2.0) - jnp.log(omega) - 0.5 * z ** 2 - 0.5 * jnp.log(2 * jnp.pi) + log_ndtr(z * shift / scale)


@partial(jax.jit, static_argnums=0)
def _failures_log_prob(df, loc, scale, prob, shift, value):
    import numpyro.distributions as dist

    ok = dist.StudentT(df, loc, scale).log_prob(value)
    return jnp.logaddexp(jnp.log1p(-prob) + ok, jnp.log(prob) + _failed_log_prob(loc, scale, shift, value))


@cache
def _failures_distribution():
    """`LossWithFailures` as a numpyro distribution class (what a model's observed site needs);
    built once, on first use, so that importing this module does not import numpyro."""
    import numpyro.distributions as dist
    from numpyro.distributions import constraints

    class WithFailures(dist.Distribution):
        support = constraints.real

        def __init__(self, df, loc, scale, prob, shift):
            self.impl = LossWithFailures(df, loc, scale, prob, shift)
            batch = jnp.broadcast_shapes(*(jnp.shape(v) for v in (loc, scale, prob, shift)))
            super().__init__(batch_shape=batch, validate_args=False)

        def log_prob(self, value):
            return self.impl.log_prob(value)

        def sample(self, key, sample_shape=()):
            return self.impl.sample(key, sample_shape)

    return WithFailures


def observation_dist(target: str, likelihood: Likelihood, location, *, sigma=None, n_eval=None, failures=None):
    """The distribution of one observation (what `observed` returns) given the law at a point: the
    likelihood, written once for the sampler (`make_model`) and the proposal simulator
    (`tokeff.decide.proposals`). `location` is the law's log mean for loss targets (log loss ~
    Normal or Student-t(df) around it, scale `sigma`) and its mean for accuracy targets (correct ~
    Binomial(n_eval, mean clipped to [chance, 1])). With the "failures" likelihood, `failures`
    (share, scale) gives the fitted rows' `LossWithFailures`; without it, a run that trains as
    designed (Student-t), which is what predictions and proposals simulate."""
    import numpyro.distributions as dist

    if target == "loss":
        if likelihood.kind == "normal":
            return dist.Normal(location, sigma)
        if likelihood.kind == "failures" and failures is not None:
            return _failures_distribution()(likelihood.df, location, sigma, *failures)
        return dist.StudentT(likelihood.df, location, sigma)
    return dist.Binomial(total_count=n_eval, probs=clip_accuracy(location, likelihood.chance))


def centred_site(name: str) -> str:
    """The sampled site behind a centred parameter (see `_sample_params`)."""
    return f"{name}_at_centre"


def _sample_params(form: Form, inputs: Mapping, centred: bool) -> dict:
    """Sample the form's parameters from their priors. With `centred`, each parameter in
    `form.centring` is sampled at the geometric centre x0 of the inputs, given the parameters before
    it: a coefficient (positive prior) as t = log(coef) + offset(p, x0), an exponent as
    t = value + offset(p, x0). t's prior is the parameter's (log-)prior shifted by the offset, so the
    joint prior is unchanged (a unit-Jacobian shear); the parameter itself is a deterministic site."""
    import numpyro
    import numpyro.distributions as dist
    from numpyro.distributions import transforms

    centre = {k: jnp.exp(jnp.mean(jnp.log(v))) for k, v in inputs.items()} if centred else None
    to_centre = [k for k in form.centring if centred and (form.params[k].positive() or form.params[k].shiftable())]
    lift = _lift_pair(form) if centred else None
    later = set(to_centre) | (set(lift) if lift else set())
    p = {name: numpyro.sample(name, prior.to_numpyro()) for name, prior in form.params.items() if name not in later}
    for name in to_centre:
        if lift and name in lift:
            continue
        prior, offset = form.params[name], form.centring[name](p, centre)
        if prior.positive():
            log_value = dist.TransformedDistribution(
                prior.to_numpyro(), [transforms.ExpTransform().inv, transforms.AffineTransform(offset, 1.0)]
            )
            t = numpyro.sample(centred_site(name), log_value)
            p[name] = numpyro.deterministic(name, jnp.exp(t - offset))
        else:
            t = numpyro.sample(centred_site(name), prior.shifted_numpyro(offset))
            p[name] = numpyro.deterministic(name, t - offset)
    if lift:
        _sample_lift(form, *lift, p, centre)
    return p


def _lift_pair(form: Form) -> tuple[str, str] | None:
    """(floor, lift coefficient) when `form.lift` applies: a uniform floor, a positive coefficient."""
    if form.lift is None or form.params[form.floor].dist != "uniform" or not form.params[form.lift].positive():
        return None
    return form.floor, form.lift


# Site names of the (h, s) parametrisation of an accuracy form's floor and lift (`Form.lift`).
LIFT_SITES = ("accuracy_at_centre_above_floor", "lift_share")


def _sample_lift(form: Form, floor: str, lift: str, p: dict, centre: Mapping) -> None:
    """Sample the floor E ~ uniform(lo, hi) and the lift coefficient A (its own prior) as
    h = mean(x0) - lo = E - lo + T0 and s = T0 / h, T0 = A x0-offset the term at the centre x0:
    E = lo + (1 - s) h, log A = log(s h) - offset. The prior density in (h, u), u in (0, 1) the
    position of s within the values that keep E < hi, is p_E(E) p_logA(log A) / s x (1 - s_min):
    the Jacobians of (h, s) -> (E, log A) (1/s) and of u -> s. The data inform h directly."""
    import numpyro
    import numpyro.distributions as dist
    from numpyro.distributions import constraints

    lo, hi = form.params[floor].args
    h = numpyro.sample(LIFT_SITES[0], dist.ImproperUniform(constraints.positive, (), ()))
    u = numpyro.sample(LIFT_SITES[1], dist.ImproperUniform(constraints.unit_interval, (), ()))
    s_min = jnp.clip(1.0 - (hi - lo) / h, 0.0, 1.0)  # below it, E = lo + (1 - s) h would pass hi
    s = s_min + (1.0 - s_min) * u
    log_a = jnp.log(s) + jnp.log(h) - form.centring[lift](p, centre)
    numpyro.factor("lift_prior", -jnp.log(hi - lo) + form.params[lift].to_numpyro().log_prob(jnp.exp(log_a)) + log_a
                   - jnp.log(s) + jnp.log1p(-s_min))
    p[floor] = numpyro.deterministic(floor, lo + (1.0 - s) * h)
    p[lift] = numpyro.deterministic(lift, jnp.exp(log_a))


def init_strategy(form: Form):
    """Where NUTS chains start: a prior draw of every site (`init_to_sample`), except the lift's h
    (`LIFT_SITES[0]`, improper, so numpyro would start it at exp(U(-2, 2)), up to 7.4): drawn
    uniformly over the values a law's accuracy at the centre can take, (0, 1 - floor's low end).
    Why: above 1 every clipped row's likelihood is flat, so a chain that starts where the law's
    mean exceeds 1 at most rows feels no gradient back and can stay there through warmup (measured:
    the one stuck chain of pilot tables 27 and 38, E 0.48 against accuracies of 0.28-0.43, 676-731
    divergences, r-hat 1.46-1.53). The target distribution is unchanged; only the start moves."""
    from numpyro.infer import init_to_sample

    lift = _lift_pair(form)
    if lift is None:
        return init_to_sample
    return partial(_init_lift, room=1.0 - form.params[lift[0]].args[0])  # numpyro wants a partial


def _init_lift(site=None, *, room: float):
    from numpyro.infer import init_to_sample

    if site is None:
        return partial(_init_lift, room=room)
    if site["type"] == "sample" and site["name"] == LIFT_SITES[0] and site["value"] is None:
        u = jax.random.uniform(site["kwargs"]["rng_key"], site["kwargs"].get("sample_shape") or ())
        return room * (0.01 + 0.98 * u)
    return init_to_sample(site)


def sample_noise(likelihood: Likelihood):
    """(sigma, failures) inside a loss model: the noise scale on log loss and, with the "failures"
    likelihood, the failures' (share, scale); failures is None otherwise."""
    import numpyro

    sigma = numpyro.sample("sigma", likelihood.noise.to_numpyro())
    if likelihood.kind != "failures":
        return sigma, None
    return sigma, (numpyro.sample(FAILURE_SITES[0], FAILURE_PROB_PRIOR.to_numpyro()),
                   numpyro.sample(FAILURE_SITES[1], FAILURE_SCALE_PRIOR.to_numpyro()))


def make_model(form: Form, likelihood: Likelihood, *, centred: bool = True):
    """A NumPyro model `model(inputs, n_eval, obs)`; arrays are arguments so one compiled sampler
    serves many datasets of the same shape (simulation-based calibration reuses it).
    `centred=False` samples every parameter directly: the plain parametrisation, whose joint density
    the centred one must equal (tested)."""
    import numpyro

    def loss_model(inputs: dict, n_eval=None, obs=None):
        p = _sample_params(form, inputs, centred)
        sigma, failures = sample_noise(likelihood)
        log_mu = form.log_mean(p, inputs)
        with numpyro.plate("points", log_mu.shape[-1]):
            return numpyro.sample("obs", observation_dist(form.target, likelihood, log_mu, sigma=sigma,
                                                          failures=failures), obs=obs)

    def accuracy_model(inputs: dict, n_eval=None, obs=None):
        p = _sample_params(form, inputs, centred)
        mu = form.mean(p, inputs)
        with numpyro.plate("points", mu.shape[-1]):
            return numpyro.sample("obs", observation_dist(form.target, likelihood, mu, n_eval=n_eval), obs=obs)

    return loss_model if form.target == "loss" else accuracy_model


def param_sites(form: Form, likelihood: Likelihood | None = None) -> tuple[str, ...]:
    """All sampled sites: the form's parameters, plus sigma for loss targets (and the failures' share
    and scale with the "failures" likelihood)."""
    if form.target != "loss":
        return form.param_names
    return form.param_names + ("sigma",) + (FAILURE_SITES if likelihood and likelihood.kind == "failures" else ())


# Evaluated outside a model (predictions, coverage checks, log-likelihoods for LOO, scores), the
# law and the likelihood run as compiled programs on padded shapes: run eagerly, each of their
# operations compiled on its own for every new shape (about 100 compiles in a cold fit).
def padded_size(n: int) -> int:
    """What an axis of `n` is padded to before it enters a compiled program: the next power of two,
    at least 32 (`tokeff.laws.laplace.bucket`), so that calls of nearby sizes share one program."""
    return max(32, 1 << max(0, int(n) - 1).bit_length())


def pad_edge(v: np.ndarray, size: int, axis: int) -> np.ndarray:
    """`v` padded along `axis` to `size` by repeating its last entry (a value the law takes, so
    the padding stays finite); the caller slices the padding off the result."""
    widths = [(0, 0)] * v.ndim
    widths[axis] = (0, size - v.shape[axis])
    return np.pad(v, widths, mode="edge")


_MEAN_PROGRAMS: dict[tuple, tuple[Form, object]] = {}


def _mean_program(form: Form, log: bool):
    """The form's (log) mean as one jitted program, broadcast to [draws, rows]."""
    key = (id(form.mean), id(form.log_mean_fn), form.inputs, form.param_names, log)
    if key not in _MEAN_PROGRAMS:
        fn = form.log_mean if log else form.mean

        @jax.jit
        def program(p, x):
            draws = next(iter(p.values())).shape[0]
            rows = next(iter(x.values())).shape[0]
            return jnp.broadcast_to(fn(p, x), (draws, rows))

        _MEAN_PROGRAMS[key] = (form, program)  # the form keeps the ids in the key taken
    return _MEAN_PROGRAMS[key][1]


def law_mean(form: Form, p: Mapping[str, np.ndarray], inputs: Mapping[str, np.ndarray], *,
             log: bool = False) -> np.ndarray:
    """[S, n] float32: the form's mean (or log mean) at `inputs` ([n] each) under parameter draws
    `p` ([S, 1], or [S, n] for one value per draw and row). One compiled program per form and padded
    shape (`padded_size` of S and of n): predictions, coverage checks and scores at ever new sizes
    then reuse a handful of programs. The padding repeats the last draw and row and is sliced off;
    a law's mean is elementwise in draws and rows, so it changes nothing."""
    x = {k: np.asarray(inputs[k], np.float32).reshape(-1) for k in form.inputs}
    p = {k: np.asarray(p[k], np.float32).reshape(np.shape(p[k])[0], -1) for k in form.param_names}
    n = next(iter(x.values())).shape[0] if x else 1
    s = next(iter(p.values())).shape[0]
    if n == 0 or s == 0 or not x:
        fn = form.log_mean if log else form.mean
        return np.asarray(jnp.broadcast_to(fn(p, x), (s, n)), np.float32)
    rows, draws = padded_size(n), padded_size(s)
    xp = {k: pad_edge(v, rows, 0) for k, v in x.items()}
    pp = {k: pad_edge(v if v.shape[1] == 1 or n == 1 else pad_edge(v, rows, 1), draws, 0) for k, v in p.items()}
    return np.asarray(_mean_program(form, log)(pp, xp))[:s, :n]


@partial(jax.jit, static_argnums=(0, 1))
def _observation_log_prob(target, likelihood, location, obs, sigma, n_eval, failures):
    return observation_dist(target, likelihood, location, sigma=sigma, n_eval=n_eval, failures=failures).log_prob(obs)


def observation_log_prob(target: str, likelihood: Likelihood, location: np.ndarray, obs: np.ndarray, *,
                         sigma: np.ndarray | None = None, n_eval: np.ndarray | None = None,
                         failures: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """[S, n] log-likelihood of each observation `obs` [n] (what `observed` returns) per draw: the
    fitted model's observation site (`observation_dist`) at the law's `location` [S, n], with the
    draws' `sigma` [S] and, with the "failures" likelihood, their (share, scale) `failures`. One
    compiled program per likelihood and padded shape (`padded_size`), sliced back to [S, n]."""
    location = np.asarray(location, np.float32)
    s, n = location.shape
    if s == 0 or n == 0:
        return np.zeros((s, n), np.float32)
    draws, rows = padded_size(s), padded_size(n)

    def per_draw(v):
        return None if v is None else pad_edge(np.asarray(v, np.float32).reshape(s, 1), draws, 0)

    def per_row(v):
        return None if v is None else pad_edge(np.asarray(v, np.float32).reshape(-1), rows, 0)

    out = _observation_log_prob(target, likelihood, pad_edge(pad_edge(location, rows, 1), draws, 0), per_row(obs),
                                per_draw(sigma), per_row(n_eval),
                                None if failures is None else tuple(per_draw(v) for v in failures))
    return np.asarray(out)[:s, :n]


def pointwise_log_likelihood(form: Form, likelihood: Likelihood, samples: Mapping[str, np.ndarray],
                             inputs: Mapping[str, np.ndarray], obs: np.ndarray, *,
                             n_eval: np.ndarray | None = None) -> np.ndarray:
    """[S, n] log-likelihood of each fitted row per draw (what LOO and WAIC need): the model's
    observed site with every parameter given by the draws. `samples`: each of the form's parameters
    [S] (or [S, n], one value per row, as a grouped fit has them), and the noise sites [S]."""
    loss = form.target == "loss"
    location = law_mean(form, {k: samples[k] for k in form.param_names}, inputs, log=loss)
    failures = tuple(samples[k] for k in FAILURE_SITES) if loss and likelihood.kind == "failures" else None
    return observation_log_prob(form.target, likelihood, location, obs, sigma=samples["sigma"] if loss else None,
                                 n_eval=n_eval, failures=failures)


PREDICTIVE_KINDS = ("mean", "new_run", "observed")


def predictive(
    form: Form,
    likelihood: Likelihood,
    samples: Mapping[str, np.ndarray],
    inputs: Mapping[str, np.ndarray],
    kind: str = "observed",
    *,
    n_eval: np.ndarray | float | None = None,
    seed: int = 0,
    discrepancy_sd: np.ndarray | None = None,
) -> np.ndarray:
    """Predictions at `inputs` for every draw, [S, n]: the law's mean under each draw of `samples`,
    then `predictive_from_mean` (`Fit.predictive` is the front door, with the fit's own
    discrepancy term)."""
    p = {k: np.asarray(samples[k], np.float32)[:, None] for k in form.param_names}
    return predictive_from_mean(form.target, likelihood, law_mean(form, p, inputs), kind, sigma=samples.get("sigma"),
                                n_eval=n_eval, seed=seed, discrepancy_sd=discrepancy_sd)


def predictive_from_mean(
    target: str,
    likelihood: Likelihood,
    mu: np.ndarray,
    kind: str = "observed",
    *,
    sigma: np.ndarray | None = None,
    n_eval: np.ndarray | float | None = None,
    seed: int = 0,
    discrepancy_sd: np.ndarray | None = None,
) -> np.ndarray:
    """Predictions from the law's mean `mu` ([S, n], one row per draw): the one place a mean
    becomes a prediction (grouped fits pass their per-group means).

    kind="mean": the law's mean (accuracy: clipped to [chance + eps, 1 - eps], as the likelihood
    clips it). "new_run": what a run there would really reach: the mean times exp(the law's miss),
    the miss ~ Normal(0, `discrepancy_sd`) ([S, n], log-loss scale, `tokeff.laws.discrepancy`;
    none without it, and none for accuracy). "observed": a new run's measured target: new_run plus
    the likelihood's observation noise (log loss: Normal or Student-t(`sigma` [S]); accuracy:
    correct / n_eval, Binomial). With the "failures" likelihood a new run is one that trains as
    designed (the failure share is reported, not drawn). One `seed` draws the miss the same way
    for new_run and observed: observed is new_run with its noise added."""
    if kind not in PREDICTIVE_KINDS:
        raise UserError(f"kind: must be one of {PREDICTIVE_KINDS}, got '{kind}'")
    mu = np.asarray(mu)
    if target != "loss":
        mu = np.asarray(clip_accuracy(mu, likelihood.chance))
        if kind != "observed":
            return mu
        if n_eval is None:
            raise UserError("n_eval: accuracy predictions need the eval-set size")
        n = np.broadcast_to(np.asarray(n_eval, np.float64), mu.shape)
        return np.random.default_rng(seed).binomial(n.astype(np.int64), mu) / n
    if kind == "mean":
        return mu
    # NumPy's generator, not jax.random: these draws are made outside any jit, and jax.random.t
    # compiles a program per shape (~2 s each on a 2-core CPU), more than the draws cost.
    rng_miss, rng_noise = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    log_y = np.log(mu)
    if discrepancy_sd is not None:
        log_y = log_y + discrepancy_sd * rng_miss.standard_normal(mu.shape)
    if kind == "observed":
        sigma = np.asarray(sigma)[:, None]
        if likelihood.kind == "normal":
            log_y = log_y + sigma * rng_noise.standard_normal(mu.shape)
        else:  # Student-t; with "failures", a new run that trains as designed (see above)
            log_y = log_y + sigma * rng_noise.standard_t(likelihood.df, mu.shape)
    return np.exp(log_y)
