"""Plots of allocation decisions: the frontier with credible bands, and decisions across budgets.

Both read the allocation.json payload (tokeff.decide.allocation), so a saved decision can be
re-plotted without the posterior.
"""

from __future__ import annotations

import numpy as np

from tokeff.decide.frontier import chinchilla_frontier
from tokeff.io import save_figure
from tokeff.published import CHINCHILLA_RUN, PUBLISHED_CHINCHILLA as PUBLISHED


def _figure(ncols: int):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=(5.5 * ncols, 4.2))
    return fig, np.atleast_1d(axes)


def plot_frontier(allocation: dict, path: str) -> None:
    """N_opt and D_opt against compute: posterior median, 50% and 90% bands, the asked budget,
    and the published Chinchilla / Epoch AI frontiers plus Chinchilla's own run as reference."""
    fig, (ax_n, ax_d) = _figure(2)
    curves = allocation["frontier"]
    c_U = np.array([p["budget_flops"] for p in curves])
    for ax, key in ((ax_n, "N_opt"), (ax_d, "D_opt")):
        q = {k: np.array([p[key][k] for p in curves]) for k in ("q05", "q10", "median", "q90", "q95")}
        ax.fill_between(c_U, q["q05"], q["q95"], alpha=0.2, color="C0", label="90% credible")
        ax.fill_between(c_U, q["q10"], q["q90"], alpha=0.3, color="C0", label="80% credible")
        ax.plot(c_U, q["median"], color="C0", label=f"posterior median ({allocation['form']})")
        for i, (name, values) in enumerate(PUBLISHED.items()):
            n_ref, d_ref = chinchilla_frontier({k: np.array([v]) for k, v in values.items()}, c_U)
            ax.plot(c_U, (n_ref if key == "N_opt" else d_ref)[0], ls="--", color=f"C{i + 1}", label=name)
        ax.scatter([CHINCHILLA_RUN["C"]], [CHINCHILLA_RUN["N" if key == "N_opt" else "D"]], marker="*",
                   s=120, color="k", zorder=5, label="Chinchilla 70B run")
        ax.axvline(allocation["budget_flops"], color="gray", lw=0.8)
        ax.set(xscale="log", yscale="log", xlabel="compute C (FLOPs, C = 6ND)", ylabel=key)
    ax_n.set_title("compute-optimal parameters")
    ax_d.set_title("compute-optimal tokens")
    ax_n.legend(fontsize=7)
    save_figure(fig, path)


def plot_budget_sweep(allocation: dict, path: str) -> None:
    """The chosen option's predicted metric (90% band) across budgets, marked by model, and the
    probability that the choice is the best option."""
    fig, (ax_m, ax_p) = _figure(2)
    sweep = [p for p in allocation["budget_sweep"] if p["decision"] is not None]
    c = np.array([p["budget_flops"] for p in sweep])
    med = np.array([p["predicted"]["median"] for p in sweep])
    ax_m.fill_between(c, [p["predicted"]["q05"] for p in sweep], [p["predicted"]["q95"] for p in sweep],
                      alpha=0.25, color="C0", label="90% credible")
    ax_m.plot(c, med, color="C0")
    for i, model in enumerate(dict.fromkeys(p["model"] for p in sweep)):
        at = np.array([p["model"] == model for p in sweep])
        ax_m.scatter(c[at], med[at], color=f"C{i + 1}", zorder=5, label=f"choose {model}")
        ax_p.scatter(c[at], [p["p_best"] for p, a in zip(sweep, at) if a], color=f"C{i + 1}", label=model)
    for ax in (ax_m, ax_p):
        ax.axvline(allocation["budget_flops"], color="gray", lw=0.8)
        ax.set(xscale="log", xlabel="budget (training FLOPs)")
    ax_m.set(ylabel=f"predicted {allocation['target']} of the decision", title="decision across budgets")
    ax_p.set(ylabel="P(decision is the best option)", ylim=(0, 1.02), title="how sure")
    ax_m.legend(fontsize=7)
    save_figure(fig, path)
