"""MAP/Laplace: the mode by saddle-free Newton from several prior draws, then a Gaussian at the mode.

Compiled once per (form, likelihood, table size bucket) and reused for every later table: the data
are arguments of the compiled programs, and a table is padded up to the next power of two (at least
32 rows: `bucket`) with rows that carry weight zero in the likelihood. Why: a
default loss fit also refits an inner part of its own data (the discrepancy's leave-future-out), a
backtest refits per cut, a bench per seed; compiling BFGS (vmapped over 16 starts), the Newton
polish and the Hessian took 30-80 s every time on a shared 2-core CPU (measured), while running
them takes a fraction of a second. The optimiser is a fixed number of Newton steps with a
vectorised choice of step length (k <= 7 parameters: the Hessian is cheap), which compiles far
faster than BFGS's nested line-search loops and, in float32, stops where BFGS stalled on these
ridges.
Padding changes nothing: the likelihood ignores rows of weight zero, and they sit at the inputs'
geometric centre, which is what the centring (`tokeff.laws.model`) is computed from.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tokeff.laws.data import FitData
from tokeff.laws.forms import Form
from tokeff.laws.model import Likelihood, init_strategy, make_model, observed, padded_size, param_sites

N_STARTS = 16  # prior draws the optimiser starts from; the lowest energy wins
STEPS = 60
NEWTON_LENGTHS = np.array([1.0, 0.5, 0.25, 0.1, 0.03], np.float32)
GRADIENT_LENGTHS = np.array([1.0, 0.1, 0.01], np.float32)  # unconstrained units


def bucket(n: int) -> int:
    """Rows a table of `n` is padded to: the next power of two, at least 32 (`padded_size`, the
    padding every compiled program of the laws uses)."""
    return padded_size(n)


@dataclasses.dataclass
class _Programs:
    """The compiled pieces for one form and likelihood (one compile per bucket of rows)."""

    form: Form  # kept so that the ids in the cache key stay taken
    likelihood: Likelihood
    solve: object  # (keys, args) -> mode, energy, gradient, Hessian of the best start
    constrain: object  # ([S, k] unconstrained draws, args) -> {site: [S]}
    starts: object  # (keys, args) -> {site: [len(keys)]}: where `solve` descends from, constrained
    unravel: object  # flat unconstrained vector -> {latent site: value}, numpyro's unconstrained space


_CACHE: dict[tuple, _Programs] = {}


def _key(form: Form, lik: Likelihood) -> tuple:
    return (form.name, form.target, form.inputs, id(form.mean), id(form.log_mean_fn),
            tuple((k, str(p)) for k, p in form.params.items()), tuple((k, id(f)) for k, f in form.centring.items()),
            lik)


def _programs(form: Form, lik: Likelihood, args: tuple) -> _Programs:
    key = _key(form, lik)
    if key in _CACHE:
        return _CACHE[key]
    import jax
    import jax.numpy as jnp
    import numpyro
    from jax.flatten_util import ravel_pytree
    from numpyro.infer.util import constrain_fn, potential_energy, unconstrain_fn

    base = make_model(form, lik)

    class ObsWeight(numpyro.primitives.Messenger):
        """Scales each row's log-likelihood at the site "obs" by its weight (0 for padding)."""

        def __init__(self, weight):
            self.weight = weight
            super().__init__()

        def process_message(self, msg):
            if msg["name"] == "obs":
                msg["scale"] = self.weight if msg.get("scale") is None else msg["scale"] * self.weight

    def model(inputs, n_eval, obs, weight):
        with ObsWeight(weight):
            return base(inputs, n_eval, obs)

    def prior_draw(key):
        """A model seeded at `key` whose latent sites take the starts NUTS takes (`init_strategy`:
        prior draws, and the accuracy laws' improper lift h inside the values an accuracy can take)."""
        return numpyro.handlers.substitute(numpyro.handlers.seed(model, key), substitute_fn=init_strategy(form))

    def latent_values(a):
        trace = numpyro.handlers.trace(prior_draw(0)).get_trace(*a)
        return {k: s["value"] for k, s in trace.items() if s["type"] == "sample" and not s["is_observed"]}

    # The latent sites and their shapes, traced abstractly: run, the model's operations would each
    # compile on their own.
    shapes = jax.eval_shape(latent_values, args)
    latent = list(shapes)
    _, unravel = ravel_pytree({k: jnp.zeros(v.shape) for k, v in shapes.items()})
    energy = lambda flat, a: potential_energy(model, a, {}, unravel(flat))  # noqa: E731
    grad = jax.grad(energy)
    # The Hessian and the gradient from one forward-over-reverse pass (half the program of both).
    grad_and_hessian = jax.jacfwd(lambda x, a: (grad(x, a),) * 2, has_aux=True)

    def start(key, a):
        """A draw from the prior, in the unconstrained space the optimiser moves in."""
        tr = numpyro.handlers.trace(prior_draw(key)).get_trace(*a)
        return ravel_pytree(unconstrain_fn(model, a, {}, {k: tr[k]["value"] for k in latent}))[0]

    def step(i, state, a):
        """Saddle-free Newton (|eigenvalues| of the Hessian) or, failing that, a gradient step; the
        best of a few step lengths, kept only when it lowers the energy and `i` < STEPS (the last
        pass only records the Hessian and gradient where the descent ended). `state`: (x, its
        energy, and the Hessian and gradient at the x the step started from)."""
        x, ex, _, _ = state
        h, g = grad_and_hessian(x, a)
        w, v = jnp.linalg.eigh(0.5 * (h + h.T))
        newton = v @ ((v.T @ g) / jnp.maximum(jnp.abs(w), 1e-6))
        downhill = g / (jnp.linalg.norm(g) + 1e-12)
        trials = jnp.concatenate([x - NEWTON_LENGTHS[:, None] * newton, x - GRADIENT_LENGTHS[:, None] * downhill])
        e = jax.vmap(lambda t: energy(t, a))(trials)
        e = jnp.where(jnp.isfinite(e), e, jnp.inf)
        best = jnp.argmin(e)
        better = (e[best] < ex) & (i < STEPS)
        return jnp.where(better, trials[best], x), jnp.where(better, e[best], ex), h, g

    @jax.jit
    def solve(keys, a):
        # The Hessian at the mode comes out of the loop's last pass, not from a second copy of the
        # Hessian's program after it: that copy was about 30% of this program's compile time.
        def descend(x0):
            e0 = energy(x0, a)
            k = x0.shape[0]
            state = (x0, jnp.where(jnp.isfinite(e0), e0, jnp.inf), jnp.zeros((k, k), x0.dtype), jnp.zeros_like(x0))
            return jax.lax.fori_loop(0, STEPS + 1, lambda i, state: step(i, state, a), state)

        xs, es, hs, gs = jax.vmap(descend)(jax.vmap(lambda k: start(k, a))(keys))
        es = jnp.where(jnp.isfinite(es), es, jnp.inf)
        best = jnp.argmin(es)
        h = hs[best]
        return xs[best], es[best], gs[best], 0.5 * (h + h.T)

    @jax.jit
    def constrain(z, a):
        return jax.vmap(lambda flat: constrain_fn(model, a, {}, unravel(flat), return_deterministic=True))(z)

    @jax.jit
    def starts(keys, a):
        return constrain(jax.vmap(lambda k: start(k, a))(keys), a)

    programs = _Programs(form, lik, solve, constrain, starts, jax.jit(jax.vmap(unravel)))
    _CACHE[key] = programs
    return programs


def _padded_args(form: Form, data: FitData, rows: int) -> tuple:
    """Model arguments padded to `rows`: the padding rows sit at the inputs' geometric centre (so the
    centring, which uses that centre, is exactly the unpadded one) and carry weight zero."""
    import jax.numpy as jnp

    n = data.n_points
    pad = rows - n
    weight = np.r_[np.ones(n), np.zeros(pad)].astype(np.float32)
    centre = {k: np.exp(np.mean(np.log(v))) for k, v in data.inputs.items()}
    inputs = {k: jnp.asarray(np.r_[v, np.full(pad, centre[k])], jnp.float32) for k, v in data.inputs.items()}
    first = lambda v: np.r_[v, np.full(pad, v[0])]  # noqa: E731 - any finite value; weight zero
    n_eval = None if data.n_eval is None else jnp.asarray(first(data.n_eval), jnp.float32)
    obs = jnp.asarray(first(observed(form, data.y, data.n_eval)), jnp.float32)
    return inputs, n_eval, obs, jnp.asarray(weight)


def _mode_and_cov(form: Form, lik: Likelihood, data: FitData, *, seed: int, pad_to: int | None):
    """(program, padded args, mode, energy, gradient, covariance, Hessian positive definite)."""
    import jax

    args = _padded_args(form, data, max(pad_to or 0, bucket(data.n_points)))
    prog = _programs(form, lik, args)
    mode, energy, grad, hessian = (np.asarray(v, np.float64) for v in
                                   prog.solve(jax.random.split(jax.random.PRNGKey(seed), N_STARTS), args))
    eigvals = np.linalg.eigvalsh(hessian)
    hessian_ok = bool(np.isfinite(energy) and np.all(eigvals > 0))
    cov = np.linalg.inv(hessian) if hessian_ok else np.linalg.pinv(hessian + np.eye(mode.shape[0]) * 1e-3)
    return prog, args, mode, energy, grad, 0.5 * (cov + cov.T), hessian_ok


def _gaussian_draws(mode: np.ndarray, cov: np.ndarray, n: int, seed: int, scale: float = 1.0) -> np.ndarray:
    w, v = np.linalg.eigh(cov)
    eps = np.random.default_rng(seed + 1).standard_normal((n, mode.shape[0]))
    return mode + scale * eps @ (v * np.sqrt(np.clip(w, 0, None))).T


def laplace_starts(form: Form, lik: Likelihood, data: FitData, n: int, *, seed: int = 0,
                   scale: float = 2.0) -> dict[str, np.ndarray] | None:
    """`n` NUTS starts {latent site: [n, ...]} in numpyro's unconstrained space: draws from the
    Laplace approximation with its sd times `scale` (overdispersed, so r-hat still compares chains
    that started apart); None when the mode is not finite or its Hessian not positive definite."""
    prog, _, mode, energy, _, cov, hessian_ok = _mode_and_cov(form, lik, data, seed=seed, pad_to=None)
    if not hessian_ok:
        return None
    z = _gaussian_draws(mode, cov, n, seed, scale).astype(np.float32)
    return {k: np.asarray(v) for k, v in prog.unravel(z).items()}


def run_laplace(form: Form, lik: Likelihood, data: FitData, *, draws: int = 4000, seed: int = 0,
                pad_to: int | None = None):
    """(samples {site: [1, draws]}, point estimate, optimiser diagnostics); see the module doc.
    `pad_to`: pad to this many rows instead of `bucket(n)` (fits of several sizes, one program)."""
    prog, args, mode, energy, grad, cov, hessian_ok = _mode_and_cov(form, lik, data, seed=seed, pad_to=pad_to)
    z = _gaussian_draws(mode, cov, draws, seed)
    constrained = prog.constrain(np.concatenate([mode[None], z]).astype(np.float32), args)
    point = {k: float(v[0]) for k, v in constrained.items()}
    # Converged when the remaining Newton step is small against the posterior scale (< 0.1 sd):
    # scale-free, unlike a raw gradient tolerance in float32.
    newton_sd = float(np.sqrt(np.abs(grad @ cov @ grad)))
    converged = bool(np.isfinite(energy)) and newton_sd < 0.1
    samples = {k: np.asarray(v[1:])[None, :] for k, v in constrained.items() if k in param_sites(form, lik)}
    return samples, point, {"converged": converged, "hessian_ok": hessian_ok,
                            "extra": {"newton_step_in_sd": newton_sd}}
