"""Do proposals buy a sure decision with fewer FLOPs than a uniform grid? A synthetic world says.

World: the Chinchilla law with its published (unrounded) parameters; a run at (N, D) costs
6ND FLOPs and returns its loss with log-normal noise (sigma = 0.02 on log loss). Decision:
log10 N_opt at C = 1e22 FLOPs (7x beyond the largest candidate). Both designers choose runs
one at a time from the same candidate grid (N x D at small scale, every point repeatable with fresh noise) and stop as soon
as the 90% credible interval of log10 N_opt is narrower than the target width:

- uniform: the whole grid in a random order, then again (a space-filling design, replicated);
- proposals: each step, the candidate with the largest expected interval-width reduction per
  FLOP (tokeff.decide.proposals.expected_information), each candidate scored as the replicates
  of it that the most expensive candidate's FLOPs buy (propose.replicates), so that cheap runs
  whose information saturates do not win on a myopic ratio.

Fitter (fast, so the bench runs in minutes): sequential Monte Carlo over the chinchilla form's
own priors -- prior draws reweighted by each observation's likelihood, resampled and moved with
25 random-walk Metropolis steps on the full-data posterior when the effective sample size
halves (with 8 steps the particles collapsed on one seed and faked a narrow interval). Prints
the FLOPs each design spent, the ratio, and whether each final 90% interval covers the truth.

Usage: .venv/bin/python bench/proposal_efficiency.py [--seeds 5] [--target 0.3] [--particles 8000]
(about 3-4 minutes per seed on a 2-core CPU; the target is a ratio >= 2x.)
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from tokeff.decide.frontier import chinchilla_frontier
from tokeff.decide.summaries import effective_sample_size
from tokeff.decide.proposals import expected_information, interval_width, outcome_log_likelihood, replicates, reweight
from tokeff.laws.model import Likelihood
from tokeff.laws.simulate import CHINCHILLA_PUBLISHED

SIGMA = 0.02
C_TARGET = 1e22
N_GRID = np.geomspace(2e7, 1.6e9, 6)
D_GRID = np.geomspace(4e8, 1.6e11, 6)


def loss(p, n, d):
    return p["E"] + p["A"] * n ** -p["alpha"] + p["B"] * d ** -p["beta"]


# Unconstrained coordinates z for the chinchilla form's priors (tokeff.laws.forms):
# E ~ lognormal(0.5, 0.5), A ~ lognormal(6, 1.5), B ~ lognormal(7, 1.5), alpha, beta ~ U(0.01, 0.8),
# and sigma ~ halfnormal(0.1) (the fit's default noise prior).
_LOGNORMAL = {"E": (0.5, 0.5), "A": (6.0, 1.5), "B": (7.0, 1.5)}


def sample_prior(n: int, rng) -> np.ndarray:
    z = np.empty((n, 6))
    for i, k in enumerate(("E", "A", "B")):
        z[:, i] = rng.normal(*_LOGNORMAL[k], n)
    u = rng.uniform(0.01, 0.8, (n, 2))
    z[:, 3:5] = np.log((u - 0.01) / (0.8 - u))
    z[:, 5] = np.log(np.abs(rng.normal(0, 0.1, n)))
    return z


def params(z: np.ndarray) -> dict:
    s = 1 / (1 + np.exp(-z[:, 3:5]))
    return {"E": np.exp(z[:, 0]), "A": np.exp(z[:, 1]), "B": np.exp(z[:, 2]),
            "alpha": 0.01 + 0.79 * s[:, 0], "beta": 0.01 + 0.79 * s[:, 1], "sigma": np.exp(z[:, 5])}


def log_prior(z: np.ndarray) -> np.ndarray:
    lp = sum(-0.5 * ((z[:, i] - _LOGNORMAL[k][0]) / _LOGNORMAL[k][1]) ** 2 for i, k in enumerate(("E", "A", "B")))
    lp = lp - np.sum(np.logaddexp(0, -z[:, 3:5]) + np.logaddexp(0, z[:, 3:5]), axis=1)  # logit Jacobian
    sigma = np.exp(z[:, 5])
    return lp - 0.5 * (sigma / 0.1) ** 2 + z[:, 5]


def log_lik(z: np.ndarray, data: list[tuple[float, float, float]]) -> np.ndarray:
    p = params(z)
    out = np.zeros(len(z))
    for n, d, log_y in data:
        out += outcome_log_likelihood("loss", Likelihood(), np.array([log_y]), np.log(loss(p, n, d)), sigma_P=p["sigma"])[0]
    return out


def move(z: np.ndarray, data, rng, steps: int = 25) -> np.ndarray:
    """Random-walk Metropolis on the full-data posterior, proposal scaled to the particle cloud."""
    cov = np.cov(z.T) * (2.38**2 / z.shape[1]) * 0.5 + 1e-10 * np.eye(z.shape[1])
    chol = np.linalg.cholesky(cov)
    lp = log_prior(z) + log_lik(z, data)
    for _ in range(steps):
        z_new = z + rng.standard_normal(z.shape) @ chol.T
        lp_new = log_prior(z_new) + log_lik(z_new, data)
        accept = np.log(rng.uniform(size=len(z))) < lp_new - lp
        z = np.where(accept[:, None], z_new, z)
        lp = np.where(accept, lp_new, lp)
    return z


class Posterior:
    """Weighted particles; `observe` adds one run and keeps the effective sample size healthy."""

    def __init__(self, n: int, rng):
        self.rng = rng
        self.z = sample_prior(n, rng)
        self.w = np.full(n, 1.0 / n)
        self.data: list[tuple[float, float, float]] = []

    def log10_n_opt(self) -> np.ndarray:
        n_opt, _ = chinchilla_frontier(params(self.z), np.array([C_TARGET]))
        return np.log10(n_opt[:, 0])

    def width(self) -> float:
        return float(interval_width(self.log10_n_opt())(self.w[None, :])[0])

    def observe(self, n: float, d: float, log_y: float) -> None:
        self.data.append((n, d, log_y))
        self.w = reweight(self.w, log_lik(self.z, [(n, d, log_y)])[None, :])[0]
        if effective_sample_size(self.w) < 0.5 * len(self.w):
            idx = self.rng.choice(len(self.w), size=len(self.w), p=self.w)
            self.z = move(self.z[idx], self.data, self.rng)
            self.w = np.full(len(self.w), 1.0 / len(self.w))


TRUE_LOG10_N_OPT = float(np.log10(chinchilla_frontier(
    {k: np.array([v]) for k, v in CHINCHILLA_PUBLISHED.items()}, np.array([C_TARGET]))[0][0, 0]))


def candidates():
    nn, dd = np.meshgrid(N_GRID, D_GRID, indexing="ij")
    return nn.ravel(), dd.ravel(), 6 * nn.ravel() * dd.ravel()


def run_design(design: str, seed: int, target: float, particles: int, max_runs: int):
    """FLOPs spent, runs, the final width and posterior median of log10 N_opt, once the 90%
    interval of log10 N_opt is below `target` (or after max_runs)."""
    rng = np.random.default_rng(seed)
    world_rng = np.random.default_rng(10_000 + seed)
    truth = {k: np.array([v]) for k, v in CHINCHILLA_PUBLISHED.items()}
    n_c, d_c, cost_c = candidates()
    post = Posterior(particles, rng)
    order = []
    spent = 0.0
    for step in range(max_runs):
        if design == "uniform":
            if not order:
                order = list(rng.permutation(len(n_c)))
            c = order.pop()
        else:
            sub = rng.choice(len(post.w), size=min(4000, len(post.w)), p=post.w)  # equally weighted subsample
            p = params(post.z[sub])
            mean_SxC = loss({k: v[:, None] for k, v in p.items()}, n_c[None, :], d_c[None, :])
            n_opt, _ = chinchilla_frontier(p, np.array([C_TARGET]))
            reps = replicates(cost_c, cost_c.max())
            eig = expected_information(mean_SxC, "loss", Likelihood(), interval_width(np.log10(n_opt[:, 0])),
                                       sigma_P=p["sigma"], replicates_C=reps, n_sims=32, seed=seed * 1000 + step)
            c = int(np.argmax(np.maximum(eig, 0) / (reps * cost_c)))
        log_y = float(np.log(loss(truth, n_c[c], d_c[c])[0]) + SIGMA * world_rng.standard_normal())
        post.observe(n_c[c], d_c[c], log_y)
        spent += cost_c[c]
        if len(post.data) >= 3 and post.width() < target:
            break
    else:
        spent = float("inf")
    x = post.log10_n_opt()
    lo, median, hi = np.interp([0.05, 0.5, 0.95], np.cumsum(post.w[np.argsort(x)]), np.sort(x))
    return spent, len(post.data), post.width(), float(median), bool(lo <= TRUE_LOG10_N_OPT <= hi)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--target", type=float, default=0.3, help="90%%-interval width of log10 N_opt to reach")
    ap.add_argument("--particles", type=int, default=8000)
    ap.add_argument("--max-runs", type=int, default=150)
    args = ap.parse_args()
    t0 = time.time()
    print(f"world: chinchilla (published), sigma {SIGMA}; decision log10 N_opt at C={C_TARGET:.0e} "
          f"(true {TRUE_LOG10_N_OPT:.3f}); target 90% width {args.target} dex; "
          f"{len(N_GRID) * len(D_GRID)} candidates, cost 6ND in "
          f"[{candidates()[2].min():.2g}, {candidates()[2].max():.2g}]")
    ratios = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        uni = run_design("uniform", seed, args.target, args.particles, args.max_runs)
        pro = run_design("proposals", seed, args.target, args.particles, args.max_runs)
        ratio = uni[0] / pro[0]
        ratios.append(ratio)
        covered = lambda r: "covers truth" if r[4] else "MISSES truth"  # noqa: E731
        print(f"seed {seed}: uniform {uni[0]:.3g} FLOPs ({uni[1]} runs, median {uni[3]:.3f}, {covered(uni)}) | "
              f"proposals {pro[0]:.3g} FLOPs ({pro[1]} runs, median {pro[3]:.3f}, {covered(pro)}) | "
              f"ratio {ratio:.2f}x", flush=True)
    finite = [r for r in ratios if np.isfinite(r) and r > 0]
    gmean = float(np.exp(np.mean(np.log(finite)))) if finite else float("nan")
    print(f"ratio uniform/proposals FLOPs: geometric mean {gmean:.2f}x, min {min(ratios):.2f}x, "
          f"max {max(ratios):.2f}x over {args.seeds} seeds (target >= 2x); {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
