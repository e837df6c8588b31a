"""The demo's analysis of every run: the accuracy laws fitted and compared, an allocation, the report.

The `volume` and `composition` laws are fitted to the results table (NUTS, binomial likelihood
with the chance floor) and compared by LOO; the LOO-preferred one allocates a budget beyond
the runs. With one model in the grid, M is constant, so M^gamma is a constant the coefficient A absorbs:
the demo then fits the two laws at fixed M (`volume_at_one_model`, `composition_at_one_model`,
registered here as a user would register a form), which is the same law with gamma dropped.
With `group = "model"` (the gpu config), the laws at fixed M are fitted per model, partially
pooled (`tokeff.laws.hierarchy`), and the allocation chooses among models x strategies: the report
says which model, with P(best) and expected regret.
"""

from __future__ import annotations

import os

import numpy as np

from tokeff import sweep

STRATEGIES = ("few_long", "many_short", "balanced")


# ----------------------------------------------------------------------------- fits

def one_model_forms() -> dict[str, str]:
    """The built-in volume and composition laws at fixed M (one model: M^gamma absorbed into A)."""
    return {"volume": "volume_at_one_model", "composition": "composition_at_one_model"}


def fit_forms(rows, fit_config, out_dir: str, group: str | None = None) -> dict:
    """{"volume": Fit, "composition": Fit} fitted to the rows (saved under out_dir/<form>); with
    `group` (a column, e.g. "model"), GroupedFits, one law per group, partially pooled. A fit
    already saved there from the same runs with the same settings is read back, not redone: a
    rerun of a finished or interrupted demo resumes its analysis too."""
    import pandas as pd

    from tokeff.laws.fit import fit
    from tokeff.laws.hierarchy import fit_grouped

    table = pd.DataFrame(rows)
    names = {"volume": "volume", "composition": "composition"}
    if group or table["params"].nunique() == 1:
        names = one_model_forms()
    fits = {}
    for key, form in names.items():
        path = os.path.join(out_dir, key)
        request = {"form": form, "method": str(fit_config.method), "chains": int(fit_config.chains),
                   "draws": int(fit_config.draws), "warmup": int(fit_config.warmup),
                   "chance": float(fit_config.chance), "target_accept": float(fit_config.target_accept), "seed": 0}
        if group:
            request["group"] = group
        saved = saved_fit(path, table, request)
        if saved is not None:
            print(f"{form}: the fit in {path} is of the same runs with the same settings: reused")
            fits[key] = saved
            continue
        per = f", one per {group}, pooled" if group else ""
        print(f"fitting {form} ({fit_config.method}, {fit_config.chains} chains x {fit_config.draws} draws{per})")
        if group:
            settings = {k: v for k, v in request.items() if k not in ("form", "group")}
            fitted = fit_grouped(table, form, group, **settings)
        else:
            fitted = fit(table, **request)
        fitted.summary["request"] = request  # what `saved_fit` compares on a rerun
        fitted.save(path, force=True)  # summary, posterior.nc, data, plots
        fits[key] = fitted
    return fits


def saved_fit(path: str, table, request: dict):
    """The Fit saved at `path` when it was made by `fit_forms` with `request` from exactly these
    runs (its data.csv equals what `table` gives), else None (also when it is missing or damaged)."""
    import json

    from tokeff.errors import UserError
    from tokeff.laws.data import prepare
    from tokeff.laws.fit import load_fit
    from tokeff.laws.forms import get_form

    try:
        with open(os.path.join(path, "summary.json")) as f:
            if json.load(f).get("request") != request:
                return None
        with open(os.path.join(path, "data.csv")) as f:
            saved_rows = f.read()
    except (OSError, ValueError):
        return None
    group = request.get("group")
    data = prepare(table, get_form(request["form"]), keep=(group,) if group else ())
    expected = data.to_frame()
    if group:  # as GroupedFit.save writes it
        expected[group] = np.asarray(data.extra[group]).astype(str)
    if saved_rows != expected.to_csv(index=False):  # priors play no part
        return None
    try:
        return load_fit(path)
    except UserError:
        return None


def compare_loo(fits: dict) -> dict:
    """PSIS-LOO of each fit and the difference (elpd, its standard error), best first."""
    import warnings

    import arviz as az

    from tokeff.laws.compare import compare_fits

    fits = {k: _loo_view(f) for k, f in fits.items()}
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


def _loo_view(fit):
    """A fit as LOO reads it: a grouped fit's draws with its rows' log-likelihood at their groups."""
    if getattr(fit, "groups", None) is None:
        return fit
    import types

    import arviz as az

    from tokeff.laws.model import observed

    chains = fit.idata.posterior.sizes["chain"]
    ll = fit.log_likelihood()
    idata = az.from_dict(posterior={"unused": np.zeros((chains, ll.shape[0] // chains))},
                         log_likelihood={"obs": ll.reshape(chains, ll.shape[0] // chains, -1)},
                         observed_data={"obs": observed(fit.form, fit.data.y, fit.data.n_eval)})
    return types.SimpleNamespace(data=fit.data, idata=idata)


def composition_verdict(fit) -> dict:
    """Does composition matter beyond volume? The volume law is beta_N = beta_L; look at the gap."""
    key = (lambda k: f"{k}_pop") if getattr(fit, "groups", None) is not None else (lambda k: k)  # the population's
    gap_S = np.asarray(fit.samples[key("beta_L")]) - np.asarray(fit.samples[key("beta_N")])
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
    """Which strategy to run at `budget` under the LOO-preferred law (expected utility); with a
    grouped fit, which model x strategy, each model's strategies selecting from the examples as its
    own tokenizer counts them."""
    import copy

    from tokeff.decide.allocation import allocate_fit
    from tokeff.decide.options import DataPool, OptionSpace

    fit = fits[comparison["best"]]
    grouped = getattr(fit, "groups", None) is not None
    models = () if grouped else (sweep.preset_for_spec(config.grid.models[0]),)
    pools = ()
    if grouped:
        trains = {m: copy.deepcopy(config.train) for m in fit.groups.labels}
        for m, train in trains.items():
            train.model = m
        pools = tuple((m, DataPool(lengths=pool_lengths(train))) for m, train in trains.items())
    space = OptionSpace(models=models, strategies=STRATEGIES, pool=DataPool(lengths=pool_lengths(config.train)),
                        group_pools=pools)
    allocation = allocate_fit(fit, budget, space)
    allocation["law"] = comparison["best"]
    return allocation


def analyse(rows, config, workdir: str) -> str:
    """Every run analysed: the accuracy laws fitted (under `workdir`/fits) and compared by LOO,
    the composition verdict, an allocation at `allocate.budget_factor` x the top budget (written
    to allocation.json), the plots; returns the report's analysis part."""
    from tokeff.decide.plots import plot_budget_sweep
    from tokeff.io import write_json

    fits = fit_forms(rows, config.fit, os.path.join(workdir, "fits"), group=config.group or None)
    comparison = compare_loo(fits)
    verdict = composition_verdict(fits["composition"])
    top = max(float(b) for b in config.grid.budgets)
    allocation = allocate_strategy(fits, comparison, config, float(config.allocate.budget_factor) * top)
    write_json(os.path.join(workdir, "allocation.json"), allocation)
    plot_results(rows, os.path.join(workdir, "accuracy_vs_volume.png"))
    plot_budget_sweep(allocation, os.path.join(workdir, "allocation.png"))
    return format_report(rows, fits, comparison, verdict, allocation, workdir, float(config.fit.chance))


# ----------------------------------------------------------------------------- report

def _interval(d: dict, floor: float = 0.0) -> str:
    """median [5%, 95%]; an accuracy is floored at chance, as the binomial likelihood floors it."""
    q = {k: max(floor, d[k]) for k in ("median", "q05", "q95")}
    return f"{q['median']:.3f} [{q['q05']:.3f}, {q['q95']:.3f}]"


def format_report(rows, fits, comparison, verdict, allocation, workdir: str, chance: float = 0.0) -> str:
    lines = ["", "== results (loss: nats per answer token; accuracy: held-out cloze, 95% Wilson interval)",
             results_table(rows), "", "== posterior of the accuracy laws (median [5%, 95%])"]
    for key, fit in fits.items():
        ok = "ok" if fit.diagnostics.get("ok") else "NOT OK: " + "; ".join(fit.diagnostics.get("problems") or [])
        grouped = "population" in fit.summary  # one law per group: the population's values
        params = ", ".join(f"{k} {v['median']:.3g} [{v['q05']:.3g}, {v['q95']:.3g}]"
                           for k, v in fit.summary["population" if grouped else "params"].items())
        per = f" per {fit.groups.column} ({len(fit.groups.labels)}, pooled; population)" if grouped else ""
        lines.append(f"{fit.form.name}{per}: {params}  (diagnostics {ok})")
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
              f"{d['flops']:.3g} FLOPs; predicted accuracy {_interval(d['predicted'], chance)}",
              f"P(best option) = {d['p_best']:.2f}, expected regret {d['expected_regret']:.4f}"
              + (f"; indistinguishable from the runner-up ({allocation['indistinguishable_reason']})"
                 if allocation["indistinguishable"] else "")]
    if "by_group" in allocation:
        from tokeff.decide.allocation import format_by_group

        lines += format_by_group(allocation["by_group"], allocation["group_column"])
    lines += [f"warning: {w}" for w in allocation["warnings"]]
    lines += ["", f"written to {workdir}: results.csv, report.txt, predictions.json, prediction_check.png, "
                  "allocation.json, accuracy_vs_volume.png, "
                  "allocation.png, fits/{volume,composition}/ (every run; posterior.nc and plots) and "
                  "fits/prediction/{loss,accuracy}/ (the runs below the top budget); notebooks/ read them"]
    return "\n".join(lines)


def results_table(rows) -> str:
    """One line per run: budget, (model, when several), strategy, seed, N, L, FLOPs used, loss, accuracy
    [Wilson 95%]."""
    from tokeff.eval.intervals import wilson_interval

    models = sorted({str(r["model"]) for r in rows})
    w = max(len(m) for m in models) + 1 if len(models) > 1 else 0  # a model column when there are several
    lines = [f"{'budget':>8} {'model' if w else '':<{w}}{'strategy':<11}{'seed':>4}{'N':>5}{'L':>7}{'used':>10}"
             f"{'loss':>8}  accuracy [95% Wilson]"]
    for r in sorted(rows, key=lambda r: (r["budget_flops"], str(r["model"]), r["strategy"], r["seed"])):
        k, n = round(r["accuracy"] * r["n_eval"]), int(r["n_eval"])
        lo, hi = wilson_interval(k, n)
        lines.append(f"{r['budget_flops']:>8.3g} {str(r['model']) if w else '':<{w}}{r['strategy']:<11}{r['seed']:>4}"
                     f"{r['n_examples']:>5}"
                     f"{r['avg_tokens']:>7.1f}{r['flops_used']:>10.3g}{r['eval_loss']:>8.4f}  "
                     f"{k / n:.3f} [{lo:.3f}, {hi:.3f}] ({k}/{n})")
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
