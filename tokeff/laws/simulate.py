"""Synthetic results tables from a form with known parameters: the ground truth validation needs.

`design` lays inputs on a log-uniform random design over a form's typical ranges; `simulate` draws
targets through the same likelihood the fit uses (log-normal loss noise, binomial accuracy counts),
so recovery and calibration test the fitting code, not a mismatch of noise models.
"""

from __future__ import annotations

import numpy as np

from tokeff.laws.forms import Form
from tokeff.laws.model import Likelihood, clip_accuracy
from tokeff.published import CHINCHILLA_UNROUNDED as CHINCHILLA_PUBLISHED



def design(form: Form, n_points: int, *, seed: int = 0, ranges: dict | None = None) -> dict[str, np.ndarray]:
    """Log-uniform random inputs over `ranges` (default: the form's typical ranges)."""
    rng = np.random.default_rng(seed)
    ranges = ranges or form.typical_ranges
    return {
        k: np.exp(rng.uniform(np.log(ranges[k][0]), np.log(ranges[k][1]), n_points)) for k in form.inputs
    }


def simulate(
    form: Form,
    params: dict[str, float],
    inputs: dict[str, np.ndarray],
    *,
    sigma: float = 0.02,
    n_eval: int | np.ndarray = 200,
    chance: float = 0.0,
    seed: int = 0,
    likelihood: Likelihood | None = None,
    failures: tuple[float, float] | None = None,
) -> dict[str, np.ndarray]:
    """Columns of a table: the inputs, plus `y` (loss or accuracy) and, for accuracy, `n_eval`.
    Loss noise is log-normal, or drawn from `likelihood` (Student-t; with "failures", a share
    `failures[0]` of failed runs shifted up at scale `failures[1]`, as `tokeff.laws.model` fits it)."""
    import jax.numpy as jnp

    rng = np.random.default_rng(seed)
    p = {k: jnp.float32(v) for k, v in params.items()}
    x = {k: jnp.asarray(v, jnp.float32) for k, v in inputs.items()}
    n = next(iter(inputs.values())).shape[0]
    out = {k: np.asarray(v, np.float64) for k, v in inputs.items()}
    if form.target == "loss":
        log_mu = np.asarray(form.log_mean(p, x), np.float64)
        kind = likelihood.kind if likelihood else "normal"
        eps = rng.standard_normal(n) if kind == "normal" else rng.standard_t(likelihood.df, n)
        if kind == "failures":
            failed = rng.uniform(size=n) < failures[0]
            eps = np.where(failed, rng.standard_normal(n), eps)  # a failed run: Normal noise + |shift|
            log_mu = log_mu + failed * failures[1] * np.abs(rng.standard_normal(n))
        out["y"] = np.exp(log_mu + sigma * eps)
    else:
        probs = np.asarray(clip_accuracy(form.mean(p, x), chance), np.float64)
        counts = np.broadcast_to(np.asarray(n_eval), (n,)).astype(np.int64)
        out["y"] = rng.binomial(counts, probs) / counts
        out["n_eval"] = counts.astype(np.float64)
    return out


def prior_draw(form: Form, seed: int) -> dict[str, float]:
    """One parameter set drawn from the form's priors."""
    import jax

    key = jax.random.PRNGKey(seed)
    keys = jax.random.split(key, len(form.params))
    return {name: float(prior.to_numpyro().sample(k)) for k, (name, prior) in zip(keys, form.params.items())}


# --- truths that are not the fitted form ------------------------------------------------------

KAPLAN_PUBLISHED = {"Nc": 6.4e13, "Dc": 1.8e13, "alpha_N": 0.076, "alpha_D": 0.103}
TRUTHS = ("chinchilla", "kaplan", "farseer")


def true_loss(truth: str, n: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Loss surfaces for misspecification checks: published Chinchilla (the fitted form itself: the
    control), published Kaplan (no irreducible loss; N and D interact inside one power), and a
    Farseer-like surface L = E + U(N) + V(D) + H(N, D) (Li et al. 2025), here Chinchilla's terms with a
    data exponent that grows with model size, beta(N) = beta + 0.01 log(N / 1e8)."""
    n, d = np.asarray(n, np.float64), np.asarray(d, np.float64)
    if truth == "chinchilla":
        p = CHINCHILLA_PUBLISHED
        return p["E"] + p["A"] * n ** -p["alpha"] + p["B"] * d ** -p["beta"]
    if truth == "kaplan":
        p = KAPLAN_PUBLISHED
        return ((p["Nc"] / n) ** (p["alpha_N"] / p["alpha_D"]) + p["Dc"] / d) ** p["alpha_D"]
    if truth == "farseer":
        p = CHINCHILLA_PUBLISHED
        beta_n = p["beta"] + 0.01 * np.log(n / 1e8)
        return p["E"] + p["A"] * n ** -p["alpha"] + p["B"] * d ** -beta_n
    raise ValueError(f"truth: one of {TRUTHS}, got {truth!r}")


def isoflop_table(
    truth: str,
    *,
    seed: int = 0,
    budgets: int = 12,
    per_budget: int = 7,
    flops: tuple[float, float] = (1e18, 1e21),
    sigma: float = 0.005,
    group_sigma: float = 0.005,
    diverged: float = 0.0,
    stalled: float = 0.0,
) -> dict[str, np.ndarray]:
    """An isoFLOP sweep like a real one: `budgets` compute budgets log-spaced over `flops`, at each
    `per_budget` model sizes within 4x of a 20-tokens-per-parameter optimum (D = C / 6N), loss drawn
    from `true_loss` with log-normal noise `sigma` per run plus a shared offset `group_sigma` per
    budget (runs of one sweep share data order, code and hardware: correlated residuals), and a
    fraction `diverged` of runs whose loss is 1.3-3x what it should be (a failed run left in), and a
    fraction `stalled` that trained 2-30% worse than the law (a loss spike, a bad schedule: inside
    the exclusion fence, so only the likelihood can tell them apart)."""
    rng = np.random.default_rng(seed)
    c = np.repeat(np.exp(np.linspace(np.log(flops[0]), np.log(flops[1]), budgets)), per_budget)
    n_opt = np.sqrt(c / 6 / 20)
    n = n_opt * np.exp(np.tile(np.linspace(-np.log(4), np.log(4), per_budget), budgets)
                       + rng.normal(0, 0.05, c.shape))
    d = c / (6 * n)
    group = np.repeat(np.arange(budgets), per_budget)
    log_loss = np.log(true_loss(truth, n, d)) + rng.normal(0, group_sigma, budgets)[group] + rng.normal(0, sigma, c.shape)
    bad = rng.uniform(size=c.shape) < diverged
    log_loss[bad] += np.log(rng.uniform(1.3, 3.0, bad.sum()))
    slow = ~bad & (rng.uniform(size=c.shape) < stalled)
    log_loss[slow] += np.log(rng.uniform(1.02, 1.3, slow.sum()))
    return {"params": n, "tokens_seen": d, "eval_loss": np.exp(log_loss), "budget": c, "diverged": bad.astype(float),
            "stalled": slow.astype(float)}
