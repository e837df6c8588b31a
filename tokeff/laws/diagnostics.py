"""Convergence diagnostics, printed rather than hidden: a non-converged fit must not look like a result.

Thresholds follow Vehtari et al. 2021 (rank-normalised split r-hat <= 1.01, bulk and tail ESS >= 100
per chain) and Betancourt 2016 (E-BFMI >= 0.3); any divergence fails the fit.
"""

from __future__ import annotations

import numpy as np

R_HAT_MAX = 1.01
ESS_PER_CHAIN_MIN = 100
BFMI_MIN = 0.3

ADVICE = {
    "divergences": "raise target_accept_prob (e.g. --target-accept 0.99), tighten priors, or reparametrise",
    "r_hat": "run longer (--warmup/--draws) or more chains; chains may sit in different modes",
    "ess": "run more draws (--draws), or more warmup (--warmup) so the mass matrix adapts",
    "bfmi": "run more warmup (--warmup); the posterior may need a reparametrisation (heavy tails)",
    "not_converged": "check the data scale and the priors, or use --method nuts (the optimiser stopped early)",
    "hessian": "use --method nuts (the Laplace approximation is not valid here: a flat or non-convex posterior)",
}


def split_r_hat(draws: np.ndarray) -> float:
    """Rank-normalised split r-hat of one scalar parameter's [chains, draws] array."""
    import arviz as az

    return float(az.rhat(np.asarray(draws)))


def nuts_diagnostics(idata, var_names: list[str]) -> dict:
    """Diagnostics of an MCMC InferenceData: divergences, r-hat, bulk/tail ESS, BFMI, and `ok`."""
    import arviz as az

    n_chains = idata.posterior.sizes["chain"]
    r_hat = az.rhat(idata, var_names=var_names)
    ess_bulk = az.ess(idata, var_names=var_names, method="bulk")
    ess_tail = az.ess(idata, var_names=var_names, method="tail")
    divergences = int(idata.sample_stats["diverging"].values.sum())
    bfmi = az.bfmi(idata) if "energy" in idata.sample_stats else np.array([np.nan])
    max_r_hat = float(max(r_hat[v].values.max() for v in var_names))
    min_bulk = float(min(ess_bulk[v].values.min() for v in var_names))
    min_tail = float(min(ess_tail[v].values.min() for v in var_names))
    ess_min = ESS_PER_CHAIN_MIN * n_chains
    problems = []
    if divergences:
        problems.append(("divergences", f"{divergences} divergent transition(s)"))
    if n_chains > 1 and not max_r_hat <= R_HAT_MAX:
        problems.append(("r_hat", f"max r_hat {max_r_hat:.3f} > {R_HAT_MAX}"))
    if not min(min_bulk, min_tail) >= ess_min:
        problems.append(("ess", f"min ESS bulk {min_bulk:.0f} / tail {min_tail:.0f} < {ess_min}"))
    if np.nanmin(bfmi) < BFMI_MIN:
        problems.append(("bfmi", f"min E-BFMI {np.nanmin(bfmi):.2f} < {BFMI_MIN}"))
    return {
        "divergences": divergences,
        "max_r_hat": max_r_hat,
        "min_ess": min(min_bulk, min_tail),
        "min_ess_bulk": min_bulk,
        "min_ess_tail": min_tail,
        "min_bfmi": float(np.nanmin(bfmi)),
        "chains": int(n_chains),
        "ok": not problems,
        "problems": [msg for _, msg in problems],
        "advice": [ADVICE[key] for key, _ in problems],
    }


def optimiser_diagnostics(*, converged: bool, hessian_ok: bool | None = None, extra: dict | None = None) -> dict:
    """Diagnostics of MAP/Laplace and classic fits (no chains: r-hat and ESS do not apply)."""
    problems = []
    if not converged:
        problems.append(("not_converged", "optimiser did not converge"))
    if hessian_ok is False:
        problems.append(("hessian", "Hessian at the mode is not positive definite"))
    return {
        "divergences": 0,
        "max_r_hat": None,
        "min_ess": None,
        "converged": bool(converged),
        **({"hessian_ok": bool(hessian_ok)} if hessian_ok is not None else {}),
        **(extra or {}),
        "ok": not problems,
        "problems": [msg for _, msg in problems],
        "advice": [ADVICE[key] for key, _ in problems],
    }


def format_diagnostics(diag: dict) -> str:
    """A few lines for the CLI: OK, or what failed and what to try."""
    if diag["ok"]:
        parts = ["diagnostics: ok"]
        if diag.get("max_r_hat") is not None:
            parts.append(f"(max r_hat {diag['max_r_hat']:.3f}, min ESS {diag['min_ess']:.0f}, 0 divergences)")
        if diag.get("note"):  # e.g. the classic fit's dropped bootstrap refits, below its threshold
            parts.append(f"({diag['note']})")
        return " ".join(parts)
    lines = ["diagnostics: NOT OK"]
    for problem, advice in zip(diag["problems"], diag["advice"]):
        lines.append(f"  - {problem}: try to {advice}")
    return "\n".join(lines)
