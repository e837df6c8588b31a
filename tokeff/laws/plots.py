"""PNG plots of a fit: the law against the data with credible bands, the joint posterior, the traces.

The pair plot matters more than the marginals: coefficients and exponents trade off (a - alpha log N),
so a wide marginal can hide a narrow joint ridge.
"""

from __future__ import annotations

import os

import numpy as np

BAND = (0.05, 0.95)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def fit_vs_data(fit, path: str, *, n_grid: int = 60) -> None:
    """Target against the first input, one curve (median, 90% band of the mean) per level of the
    other inputs (their 10/50/90% quantiles in the data)."""
    plt = _pyplot()
    form, data = fit.form, fit.data
    first, others = form.inputs[0], form.inputs[1:]
    lo, hi = data.input_ranges()[first]
    grid = np.exp(np.linspace(np.log(lo), np.log(hi), n_grid))
    fig, ax = plt.subplots(figsize=(6, 4.5))
    color_by = data.inputs[others[0]] if others else None
    if color_by is not None:
        sc = ax.scatter(data.inputs[first], data.y, c=np.log10(color_by), s=12, cmap="viridis", zorder=3)
        fig.colorbar(sc, ax=ax, label=f"log10 {others[0]}")
    else:
        ax.scatter(data.inputs[first], data.y, c="k", s=12, zorder=3)
    levels = [0.1, 0.5, 0.9] if others else [0.5]
    cmap = plt.get_cmap("viridis")
    clo, chi = (np.log10(color_by.min()), np.log10(color_by.max())) if color_by is not None else (0, 1)
    for q in levels:
        x = {first: grid, **{k: np.full(n_grid, np.quantile(data.inputs[k], q)) for k in others}}
        mu = fit.predictive(x, "mean")
        color = cmap((np.log10(x[others[0]][0]) - clo) / max(chi - clo, 1e-9)) if others else "C0"
        ax.plot(grid, np.median(mu, 0), color=color)
        ax.fill_between(grid, *np.quantile(mu, BAND, axis=0), color=color, alpha=0.25)
    ax.set_xscale("log")
    if form.target == "loss":
        ax.set_yscale("log")
    ax.set_xlabel(f"{first} ({data.columns[first]})")
    ax.set_ylabel(f"{form.target} ({data.columns['target']})")
    ax.set_title(f"{form.name} ({fit.method}): median and 90% band of the mean")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def pair(fit, path: str, *, max_points: int = 1000) -> None:
    plt = _pyplot()
    names = list(fit.form.param_names)
    rng = np.random.default_rng(0)
    n = len(fit.samples[names[0]])
    idx = rng.choice(n, min(n, max_points), replace=False)
    k = len(names)
    fig, axes = plt.subplots(k, k, figsize=(1.9 * k, 1.9 * k), squeeze=False)
    for i, yi in enumerate(names):
        for j, xj in enumerate(names):
            ax = axes[i, j]
            if j > i:
                ax.axis("off")
                continue
            if i == j:
                ax.hist(fit.samples[xj][idx], bins=30, color="C0")
            else:
                ax.scatter(fit.samples[xj][idx], fit.samples[yi][idx], s=2, alpha=0.4)
            if i == k - 1:
                ax.set_xlabel(xj)
            if j == 0 and i > 0:
                ax.set_ylabel(yi)
            ax.tick_params(labelsize=6)
    fig.suptitle(f"{fit.form.name} ({fit.method}): joint posterior")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def trace(fit, path: str) -> None:
    plt = _pyplot()
    names = list(fit.form.param_names)
    post = fit.idata.posterior
    fig, axes = plt.subplots(len(names), 1, figsize=(7, 1.4 * len(names)), sharex=True, squeeze=False)
    for ax, name in zip(axes[:, 0], names):
        for c in range(post.sizes["chain"]):
            ax.plot(post[name].values[c], lw=0.5, alpha=0.7)
        ax.set_ylabel(name)
    axes[-1, 0].set_xlabel("draw" if fit.method == "nuts" else "draw / bootstrap resample")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def prior_draws(form, n_draws: int, *, seed: int = 0) -> dict[str, np.ndarray]:
    """[n_draws] samples of every parameter from the form's (possibly overridden) priors."""
    import jax

    keys = jax.random.split(jax.random.PRNGKey(seed), len(form.params))
    return {name: np.asarray(prior.to_numpyro().sample(k, (n_draws,)), np.float64)
            for k, (name, prior) in zip(keys, form.params.items())}


def prior_predictive(fit, path: str, *, n_draws: int = 500, n_lines: int = 40, n_grid: int = 60) -> None:
    """What the priors imply before seeing data: the law's mean under prior draws over the data's range
    of the first input (other inputs at their data median), as thin curves plus a 5-95% band, with the
    data on top. Data far outside the band means a prior rules out what was measured."""
    plt = _pyplot()
    form, data = fit.form, fit.data
    first, others = form.inputs[0], form.inputs[1:]
    lo, hi = data.input_ranges()[first]
    grid = np.exp(np.linspace(np.log(lo), np.log(hi), n_grid))
    x = {first: grid, **{k: np.full(n_grid, np.median(data.inputs[k])) for k in others}}
    from tokeff.laws.model import predictive

    mu = predictive(form, fit.likelihood, prior_draws(form, n_draws), x, "mean")
    mu = np.where(np.isfinite(mu), mu, np.nan)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for curve in mu[:n_lines]:
        ax.plot(grid, curve, color="C1", lw=0.6, alpha=0.4)
    band = np.nanquantile(mu, BAND, axis=0)
    ax.fill_between(grid, *band, color="C1", alpha=0.2, label="prior 90% band of the mean")
    ax.plot(grid, np.nanmedian(mu, 0), color="C1", lw=2, label="prior median")
    ax.scatter(data.inputs[first], data.y, s=10, color="k", zorder=3, label="data")
    ax.set_xscale("log")
    if form.target == "loss":
        ax.set_yscale("log")
        ys = np.concatenate([band[np.isfinite(band) & (band > 0)], data.y])
        ax.set_ylim(ys.min() / 1.5, ys.max() * 1.5)
    ax.set_xlabel(f"{first} ({data.columns[first]})")
    ax.set_ylabel(f"{form.target} ({data.columns['target']})")
    fixed = ", ".join(f"{k}={np.median(data.inputs[k]):.3g}" for k in others)
    ax.set_title(f"{form.name}: prior predictive of the mean" + (f" ({fixed})" if fixed else ""), fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def save_all(fit, directory: str) -> list[str]:
    paths = []
    for name, fn in (("fit.png", fit_vs_data), ("pair.png", pair), ("trace.png", trace),
                     ("prior_predictive.png", prior_predictive)):
        path = os.path.join(directory, name)
        fn(fit, path)
        paths.append(path)
    return paths
