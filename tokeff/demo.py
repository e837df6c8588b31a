"""The embedded demo: the whole pipeline on one CPU — sweep, fit, compare, allocate, report.

1. a sweep (configs/demo.py): a real model fine-tuned under several FLOP budgets with the
   Lagasse et al. strategies, each run evaluated on held-out questions (resumable: it is a
   `tokeff sweep` in RUN/sweep);
2. the `volume` and `composition` laws fitted to its results table (NUTS), compared by LOO;
3. an allocation at a budget beyond the runs: which strategy to use, with its predicted
   accuracy interval and the probability that it is the best choice;
4. a report (stdout and RUN/report.txt), the results table (RUN/results.csv), fits
   (RUN/fits/*) and plots (RUN/*.png).

With one model in the grid, M is constant, so M^gamma is a constant the coefficient A absorbs:
the demo then fits the two laws at fixed M (`volume_at_one_model`, `composition_at_one_model`,
registered here as a user would register a form), which is the same law with gamma dropped.
"""

from __future__ import annotations

import json
import os

import numpy as np

from tokeff import results, sweep

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "demo.py")
STRATEGIES = ("few_long", "many_short", "balanced")


def run_demo(config_path: str | None, overrides: list[str], workdir: str) -> int:
    from tokeff.point import enable_compilation_cache
    from tokeff.train.config import load_config

    config = load_config(config_path or DEFAULT_CONFIG, overrides)
    enable_compilation_cache()
    os.makedirs(workdir, exist_ok=True)
    n_points = len(sweep.grid_points(config))
    print(f"tokeff demo: {n_points} fine-tunes of {', '.join(config.grid.models)} on {_dataset(config)}, "
          f"budgets {', '.join(f'{b:.3g}' for b in config.grid.budgets)} FLOPs; run folder {workdir}")

    rows = [r for r in sweep.run_sweep(config, os.path.join(workdir, "sweep")) if r["status"] == "ok"]
    results.write_csv(rows, os.path.join(workdir, "results.csv"))
    fits = fit_forms(rows, config.fit, os.path.join(workdir, "fits"))
    comparison = compare_loo(fits)
    verdict = composition_verdict(fits["composition"])
    budget = float(config.allocate.budget_factor) * max(r["budget_flops"] for r in rows)
    allocation = allocate_strategy(fits, comparison, config, budget)
    _write_json(os.path.join(workdir, "allocation.json"), allocation)
    plot_results(rows, os.path.join(workdir, "accuracy_vs_volume.png"))
    from tokeff.decide.plots import plot_budget_sweep

    plot_budget_sweep(allocation, os.path.join(workdir, "allocation.png"))
    report = format_report(rows, fits, comparison, verdict, allocation, workdir)
    _write_text(os.path.join(workdir, "report.txt"), report)
    print(report)
    return 0


def _dataset(config) -> str:
    data = config.train.data
    return f"MMLU ({data.subjects})" if data.source == "mmlu" else data.source


# ----------------------------------------------------------------------------- fits

def one_model_forms() -> dict[str, str]:
    """The built-in volume and composition laws at fixed M (one model: M^gamma absorbed into A)."""
    return {"volume": "volume_at_one_model", "composition": "composition_at_one_model"}


def fit_forms(rows, fit_config, out_dir: str) -> dict:
    """{"volume": Fit, "composition": Fit} fitted to the rows (saved under out_dir/<form>)."""
    import pandas as pd

    from tokeff.scaling.fit import fit

    table = pd.DataFrame(rows)
    names = {"volume": "volume", "composition": "composition"}
    if table["params"].nunique() == 1:
        names = one_model_forms()
    fits = {}
    for key, form in names.items():
        print(f"fitting {form} ({fit_config.method}, {fit_config.chains} chains x {fit_config.draws} draws)")
        fitted = fit(table, form, method=fit_config.method, chains=int(fit_config.chains),
                     draws=int(fit_config.draws), warmup=int(fit_config.warmup),
                     likelihood=fit_config.likelihood, chance=float(fit_config.chance),
                     target_accept=float(fit_config.target_accept), seed=0)
        fitted.save(os.path.join(out_dir, key), force=True)  # summary, posterior.nc, data, trace/pair/fit plots
        fits[key] = fitted
    return fits


def compare_loo(fits: dict) -> dict:
    """PSIS-LOO of each fit and the difference (elpd, its standard error), best first."""
    import warnings

    import arviz as az

    from tokeff.scaling.compare import compare_fits

    with warnings.catch_warnings():  # high Pareto k is reported below, not as a warning per call
        warnings.simplefilter("ignore", UserWarning)
        table = compare_fits(fits, ic="loo")
        loos = {k: az.loo(f.idata) for k, f in fits.items()}
    best, other = table.index[0], table.index[1]
    return {
        "best": best, "other": other,
        "elpd_diff": float(table.loc[other, "elpd_diff"]), "dse": float(table.loc[other, "dse"]),
        "elpd": {k: float(v.elpd_loo) for k, v in loos.items()},
        "max_pareto_k": {k: float(np.max(v.pareto_k)) for k, v in loos.items()},
    }


def composition_verdict(fit) -> dict:
    """Does composition matter beyond volume? The volume law is beta_N = beta_L; look at the gap."""
    gap_S = np.asarray(fit.samples["beta_L"]) - np.asarray(fit.samples["beta_N"])
    q05, q50, q95 = np.quantile(gap_S, [0.05, 0.5, 0.95])
    return {"gap_median": float(q50), "gap_q05": float(q05), "gap_q95": float(q95),
            "p_gap_positive": float(np.mean(gap_S > 0))}


# ----------------------------------------------------------------------------- allocation

def pool_lengths(train_config) -> np.ndarray:
    """Token lengths of every example the strategies could choose from (the train side, fitting a row)."""
    from tokeff.data.model_tokenizer import load_tokenizer
    from tokeff.train.dataset import training_task

    data, seed = train_config.data, int(train_config.seed)
    model = load_tokenizer(train_config.model)
    task = training_task(data, model.name, model.tokens, model.context_len, seed)
    row_len = int(data.row_len) if data.layout == "packed" and data.row_len else None
    return task.select("random", seed=seed, row_len=row_len).lengths


def allocate_strategy(fits: dict, comparison: dict, config, budget: float) -> dict:
    """Which strategy to run at `budget` under the LOO-preferred law (expected utility)."""
    from tokeff.decide.allocation import allocate_fit
    from tokeff.decide.options import DataPool, OptionSpace

    fit = fits[comparison["best"]]
    model = sweep.preset_for_spec(config.grid.models[0])
    space = OptionSpace(models=(model,), strategies=STRATEGIES, pool=DataPool(lengths=pool_lengths(config.train)))
    allocation = allocate_fit(fit, budget, space)
    allocation["law"] = comparison["best"]
    return allocation


# ----------------------------------------------------------------------------- report

def _interval(d: dict) -> str:
    return f"{d['median']:.3f} [{d['q05']:.3f}, {d['q95']:.3f}]"


def format_report(rows, fits, comparison, verdict, allocation, workdir: str) -> str:
    lines = ["", "== results (accuracy: held-out cloze, ±95% binomial; loss: nats/answer token)",
             sweep.summarize(rows), "", "== posterior (median [5%, 95%])"]
    for key, fit in fits.items():
        ok = "ok" if fit.diagnostics.get("ok") else "NOT OK: " + "; ".join(fit.diagnostics.get("problems") or [])
        params = ", ".join(f"{k} {v['median']:.3g} [{v['q05']:.3g}, {v['q95']:.3g}]"
                           for k, v in fit.summary["params"].items())
        lines.append(f"{fit.form.name}: {params}  (diagnostics {ok})")
    diff, dse = comparison["elpd_diff"], comparison["dse"]
    # Vehtari et al.: an elpd difference below ~4 is small whatever its standard error.
    decisive = diff > max(2 * dse, 4.0)
    size = "decisive" if decisive else ("negligible: < 4" if diff < 4 else "within 2 standard errors")
    lines += ["", "== does composition matter beyond total tokens?",
              f"LOO prefers {comparison['best']} by {diff:.2f} ± {dse:.2f} elpd ({size})"
              + (f"; Pareto k up to {max(comparison['max_pareto_k'].values()):.2f} > 0.7: some runs dominate "
                 "the LOO estimate" if max(comparison["max_pareto_k"].values()) > 0.7 else ""),
              f"beta_L - beta_N = {verdict['gap_median']:.3f} [{verdict['gap_q05']:.3f}, {verdict['gap_q95']:.3f}] "
              f"(volume law: 0); P(longer examples help more per token) = {verdict['p_gap_positive']:.2f}",
              "verdict: " + ("composition matters" if decisive and not verdict["gap_q05"] < 0 < verdict["gap_q95"]
                             else "not settled by these runs: the data cannot tell the laws apart")]
    d = allocation["decision"]
    lines += ["", f"== allocation at {allocation['budget_flops']:.3g} FLOPs (law: {allocation['law']})",
              f"run {d['label']}: {d['n_examples']} examples of {d['avg_tokens']:.0f} tokens on average, "
              f"{d['flops']:.3g} FLOPs; predicted accuracy {_interval(d['predicted'])}",
              f"P(best option) = {d['p_best']:.2f}, expected regret {d['expected_regret']:.4f}"
              + (f"; indistinguishable from the runner-up ({allocation['indistinguishable_reason']})"
                 if allocation["indistinguishable"] else "")]
    lines += [f"warning: {w}" for w in allocation["warnings"]]
    lines += ["", f"written to {workdir}: results.csv, report.txt, allocation.json, accuracy_vs_volume.png, "
                  "allocation.png, fits/{volume,composition}/ (posterior.nc and plots; notebooks/ read them)"]
    return "\n".join(lines)


def plot_results(rows, path: str) -> None:
    """Accuracy (95% Wilson interval) against dataset volume N*L, one colour per strategy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    from tokeff.eval.intervals import wilson_interval
    from tokeff.io import save_figure

    fig, ax = plt.subplots(figsize=(6, 4))
    for i, strategy in enumerate(sorted({r["strategy"] for r in rows})):
        mine = [r for r in rows if r["strategy"] == strategy]
        v = np.array([r["n_examples"] * r["avg_tokens"] for r in mine])
        acc = np.array([r["accuracy"] for r in mine])
        ci = np.array([wilson_interval(round(r["accuracy"] * r["n_eval"]), r["n_eval"]) for r in mine])
        nudge = 1 + 0.015 * (i - 1)  # equal volumes: side by side, not on top of each other
        ax.errorbar(v * nudge, acc, yerr=[acc - ci[:, 0], ci[:, 1] - acc], fmt="o", capsize=3, color=f"C{i}",
                    label=strategy)
    chance = [r["extra"].get("chance") for r in rows if r["extra"].get("chance") is not None]
    if chance:
        ax.axhline(float(np.mean(chance)), color="gray", ls="--", lw=0.8, label="chance")
    ax.set(xscale="log", xlabel="dataset volume N x L (tokens)", ylabel="held-out accuracy",
           title="fine-tuning runs (95% intervals)")
    volumes = [r["n_examples"] * r["avg_tokens"] for r in rows]
    if max(volumes) < 10 * min(volumes):  # within a decade a log axis labels no tick: label 1..9 x 10^k
        ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=range(1, 10)))
        ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.legend()
    save_figure(fig, path)


def _write_text(path: str, text: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(text + "\n")
    os.replace(tmp, path)


def _write_json(path: str, value) -> None:
    _write_text(path, json.dumps(value, indent=2, default=results._json_default))


