"""The classic baseline: Hoffmann et al.'s Huber/L-BFGS fit with Epoch AI-style bootstrap intervals.

Recipe (Hoffmann et al. 2022, as Besiroglu et al. 2024 reproduce it): minimise
sum_i Huber_delta(log y_i - log mean(x_i)) with delta = 1e-3 (summed,
not averaged: averaging shrinks the gradient so L-BFGS stops early), from every point of an
initialisation grid, keeping the best. Positive coefficients are optimised as logs (a = log A, ...).
For chinchilla `log mean` is the log-sum-exp form and the grid is the published one.

Bootstrap (Besiroglu et al. 2024): resample the points with replacement B times and refit each,
starting from the full-data optimum (refitting all grid points per resample would cost 4500x more
and, for resamples this close to the data, lands in the same basin). Everything is one jitted
L-BFGS (optax) vmapped over grid points, then over resamples: resample weights are multinomial
counts, so every resample has the same shapes.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np

from tokeff.errors import UserError
from tokeff.laws.forms import Form
from tokeff.progress import BOOTSTRAP_REFITS, progress, show_progress

HUBER_DELTA = 1e-3
STALL_RTOL = 1e-5
# A bootstrap refit that fails (non-finite objective or parameters) or whose law is not finite at
# the fitted inputs or 1000x beyond them is dropped: one NaN draw makes every predictive quantile
# NaN. Dropped refits are not a random subset (they are the resamples the recipe cannot fit), so
# above this share the interval is not the bootstrap's and the fit is not ok.
MAX_DROPPED_SHARE = 0.05
PROBE_FACTOR = 1e3


def _to_params(form: Form, theta):
    """Optimisation vector -> parameter dict (exp for positive coefficients)."""
    return {
        name: (jnp.exp(theta[i]) if prior.positive() else theta[i]) for i, (name, prior) in enumerate(form.params.items())
    }


def _grid(form: Form) -> np.ndarray:
    if form.classic_grid is not None:
        axes = [form.classic_grid[name] for name in form.param_names]
    else:
        axes = []
        for prior in form.params.values():
            q = prior.quantiles([0.1, 0.5, 0.9])
            axes.append(np.log(q) if prior.positive() else q)
    return np.array(list(itertools.product(*axes)), dtype=np.float32)


def _huber(r, delta):
    a = jnp.abs(r)
    return jnp.where(a <= delta, 0.5 * r**2, delta * (a - 0.5 * delta))


def _make_solver(form: Form, log_x: dict, log_y, *, delta: float, tol: float):
    """`solve(theta0, weights, max_iter) -> (theta, objective, grad_norm)`: L-BFGS on the weighted
    Huber sum, at most `max_iter` iterations (an argument, not a constant: the grid's short runs and
    the bootstrap's long ones are then one compiled program).

    The ridge between a coefficient and its exponent (a - alpha log N, log N ~ 20) is so ill-conditioned
    that plain L-BFGS stops long before the minimum (we saw bootstrap refits move 1e-4 where the true
    refit optimum is 1e-1 away). So each start is preconditioned by the damped Gauss-Newton metric of the
    residuals there: L-BFGS runs in u with theta = theta0 + P u, P = (J^T J + damping)^(-1/2). A linear
    change of variables: same objective, same minima. The objective is divided by delta (same minimiser,
    gradients of order one for the tolerance)."""
    import optax

    x = {k: jnp.exp(v) for k, v in log_x.items()}

    def residuals(theta):
        return log_y - form.log_mean(_to_params(form, theta), x)

    def objective(theta, weights):
        return jnp.sum(weights * _huber(residuals(theta), delta)) / delta

    def preconditioner(theta0, weights):
        jac = jax.jacfwd(residuals)(theta0) * jnp.sqrt(weights)[:, None]
        metric = jac.T @ jac
        k = metric.shape[0]
        metric = metric + (1e-6 * jnp.trace(metric) / k + 1e-8) * jnp.eye(k)
        eigval, eigvec = jnp.linalg.eigh(metric)
        return eigvec @ jnp.diag(jnp.maximum(eigval, 1e-12) ** -0.5) @ eigvec.T

    def solve(theta0, weights, max_iter):
        precond = preconditioner(theta0, weights)
        fun = lambda u: objective(theta0 + precond @ u, weights)  # noqa: E731
        opt = optax.lbfgs(linesearch=optax.scale_by_backtracking_linesearch(max_backtracking_steps=30, store_grad=True))
        value_and_grad = optax.value_and_grad_from_state(fun)

        def step(carry):
            u, state = carry
            value, grad = value_and_grad(u, state=state)
            updates, state = opt.update(grad, state, u, value=value, grad=grad, value_fn=fun)
            return optax.apply_updates(u, updates), state

        def keep_going(carry):
            _, state = carry
            count = optax.tree.get(state, "count")
            grad_norm = optax.tree.norm(optax.tree.get(state, "grad"))
            return (count == 0) | ((count < max_iter) & (grad_norm >= tol))

        u0 = jnp.zeros_like(theta0)
        u, _ = jax.lax.while_loop(keep_going, step, (u0, opt.init(u0)))
        value = fun(u)
        grad_norm = optax.tree.norm(jax.grad(fun)(u))
        theta = theta0 + precond @ u
        ok = jnp.isfinite(value) & jnp.all(jnp.isfinite(theta))
        return jnp.where(ok, theta, theta0), jnp.where(ok, value * delta, jnp.inf), grad_norm

    return solve


def fit_classic(
    form: Form,
    inputs: dict,
    y: np.ndarray,
    *,
    bootstrap: int = 4000,
    seed: int = 0,
    delta: float = HUBER_DELTA,
    grid_iter: int = 30,
    max_iter: int = 100,
    n_polish: int = 16,
    tol: float = 1e-4,
    chunk: int = 500,
) -> dict:
    """Grid + L-BFGS fit and bootstrap. Every grid point gets `grid_iter` L-BFGS iterations; the best
    `n_polish` continue to convergence. Returns `estimate` (name -> value), `samples` (name -> [B]
    bootstrap estimates, incl. sigma = residual sd of log loss), convergence flags and `grid_size`."""
    if form.target != "loss":
        raise UserError(f"--method classic: form {form.name} predicts {form.target}; the Huber recipe fits losses")
    log_x = {k: jnp.asarray(np.log(v), jnp.float32) for k, v in inputs.items()}
    log_y = jnp.asarray(np.log(y), jnp.float32)
    n = log_y.shape[0]
    ones = jnp.ones((n,), jnp.float32)

    # One solver for every stage, max_iter an argument: the grid and the bootstrap (`chunk` starts at
    # a time) run one compiled program; the polish of the best `n_polish` starts a second (a shape of
    # its own: padded to `chunk`, its 100-iteration runs cost more than the compile they would save).
    solve_chunk = jax.jit(jax.vmap(_make_solver(form, log_x, log_y, delta=delta, tol=tol), in_axes=(0, 0, None)))

    def batched(max_iter_):
        return lambda th0, weights: solve_chunk(th0, weights, jnp.int32(max_iter_))

    def run_chunked(solve_many, starts, weights_fn, desc=None):
        """Apply `solve_many` in fixed-size chunks (one compiled shape; the last chunk is padded with
        copies of its last start, which stop when it stops); with a `desc`, a progress bar when there
        are many (`tokeff.progress`)."""
        outs = []
        chunks = enumerate(range(0, starts.shape[0], chunk))
        shown = desc is not None and show_progress(starts.shape[0], BOOTSTRAP_REFITS)
        if shown:
            chunks = progress(chunks, desc=desc, total=-(-starts.shape[0] // chunk), unit="chunk",
                              work=starts.shape[0], threshold=BOOTSTRAP_REFITS)
        for i, start in chunks:
            th0 = starts[start : start + chunk]
            keep = th0.shape[0]
            th0 = jnp.concatenate([th0, jnp.repeat(th0[-1:], chunk - keep, axis=0)])
            res = solve_many(th0, weights_fn(i))
            if shown:  # JAX dispatches asynchronously: wait, so the bar moves with the work
                jax.block_until_ready(res)
            outs.append([r[:keep] for r in res] + [weights_fn(i)[:keep]])
        return [jnp.concatenate(parts) for parts in zip(*outs)]

    all_ones = lambda i: jnp.broadcast_to(ones, (chunk, n))  # noqa: E731
    grid = jnp.asarray(_grid(form))
    thetas, values, _, _ = run_chunked(batched(grid_iter), grid, all_ones)
    order = jnp.argsort(values)[:n_polish]
    polish = batched(max_iter)
    th, val, _ = polish(thetas[order], jnp.broadcast_to(ones, (order.shape[0], n)))
    best = int(jnp.argmin(val))
    theta_hat = th[best]
    # Converged = a fresh L-BFGS run from the solution finds nothing better (relative 1e-5). Not a
    # gradient-norm test: with delta = 1e-3 the Huber loss is almost L1, whose gradient does not
    # vanish at the optimum (a tolerance test there failed on half of well-converged refits).
    restart_val = polish(jnp.broadcast_to(theta_hat, th.shape), jnp.broadcast_to(ones, (th.shape[0], n)))[1][0]
    converged = bool(restart_val >= val[best] - STALL_RTOL * abs(val[best]))

    def residual_sd(theta, weights):
        r = log_y - form.log_mean(_to_params(form, theta), {k: jnp.exp(v) for k, v in log_x.items()})
        return jnp.sqrt(jnp.sum(weights * r**2) / jnp.sum(weights))

    keys = jax.random.split(jax.random.PRNGKey(seed), max(1, -(-bootstrap // chunk)))

    def resample_weights(i):
        idx = jax.random.randint(keys[i], (chunk, n), 0, n)
        return jax.vmap(lambda row: jnp.zeros((n,), jnp.float32).at[row].add(1.0))(idx)

    starts = jnp.broadcast_to(theta_hat, (bootstrap, theta_hat.shape[0]))
    boot_theta, boot_val, _, boot_w = run_chunked(polish, starts, resample_weights,
                                                  desc=f"classic: {bootstrap} bootstrap refits")
    # The same restart test on (up to) the first `chunk` refits.
    n_check = min(chunk, bootstrap)
    check_w = jnp.concatenate([boot_w[:n_check], jnp.broadcast_to(ones, (chunk - n_check, n))])
    check_val = run_chunked(polish, boot_theta[:n_check], lambda i: check_w)[1]
    stalled = check_val >= boot_val[:n_check] - STALL_RTOL * jnp.abs(boot_val[:n_check])
    estimate = {k: float(v) for k, v in _to_params(form, theta_hat).items()}
    estimate["sigma"] = float(residual_sd(theta_hat, ones))
    samples = {k: np.asarray(v) for k, v in jax.vmap(lambda t: _to_params(form, t))(boot_theta).items()}
    samples["sigma"] = np.asarray(jax.vmap(residual_sd)(boot_theta, boot_w))
    keep = usable_refits(form, samples, np.asarray(boot_val), inputs)
    if not keep.any():  # nothing usable: the full-data estimate alone, so predictions stay finite
        samples = {k: np.asarray([v], np.float32) for k, v in estimate.items()}
    else:
        samples = {k: v[keep] for k, v in samples.items()}
    return {
        "estimate": estimate,
        "samples": samples,
        "converged": converged,
        "converged_fraction": float(np.mean(np.asarray(stalled))),
        "dropped": int((~keep).sum()),
        "bootstrap": int(bootstrap),
        "grid_size": int(grid.shape[0]),
        "objective": float(val[best]),
    }


def usable_refits(form: Form, samples: dict, objective: np.ndarray, inputs: dict) -> np.ndarray:
    """[B] bool: the refits to keep (see `MAX_DROPPED_SHARE`): a finite objective, finite parameters
    and sigma, and a finite law at the fitted inputs, at `PROBE_FACTOR` times them and at
    1 / `PROBE_FACTOR` times them (an extrapolation must not overflow either)."""
    from tokeff.laws.model import Likelihood, predictive

    keep = np.isfinite(objective)
    for v in samples.values():
        keep &= np.isfinite(v)
    x = {k: np.asarray(v, np.float64) for k, v in inputs.items()}
    safe = {k: np.where(keep, v, 1.0) for k, v in samples.items()}  # a NaN draw must not poison its neighbours' check
    for factor in (1.0, PROBE_FACTOR, 1.0 / PROBE_FACTOR):
        mean = predictive(form, Likelihood(), safe, {k: v * factor for k, v in x.items()}, "mean")
        keep &= np.isfinite(mean).all(axis=1) & (mean > 0).all(axis=1)
    return keep


def dropped_text(dropped: int, total: int) -> str:
    """`3 of 4000 bootstrap refits (0.075%)`: the count first, so a real failure never reads 0.0%."""
    return f"{dropped} of {total} bootstrap refits ({100 * dropped / total:.2g}%)"
