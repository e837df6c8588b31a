"""The demo's prediction check: fit on the lower budgets, predict the top one, then look.

`predict_top_budget` fits the loss law (primary: answer-token loss has little noise) and the
accuracy law (binomial likelihood, chance floor) to the runs below the top budget, and
predicts every top-budget run from the composition its strategy will select there (the same
selection code the run uses, from the data task). `write_predictions` stores that before the
top budget is trained or scored; `check_predictions` compares afterwards.

Loss intervals are posterior-predictive (law uncertainty plus run-to-run noise), so "inside"
is a fair test of a single run. Accuracy predictions are the law's probability of a correct
answer, floored at chance; "inside" for an observed accuracy uses the posterior-predictive
counts (binomial noise of the n held-out questions added).

With `group = "model"` (the gpu config) both laws are fitted per model, partially pooled, each run
is predicted at its own model's law, and the best option is a model and strategy.
"""

from __future__ import annotations

from statistics import NormalDist

import datetime
import os

import jax.numpy as jnp
import numpy as np

from tokeff import sweep
from tokeff.errors import UserError
from tokeff.laws.forms import Form, register_form

LOSS_FORM = "loss_composition_at_one_model"
ACCURACY_FORM = "composition_at_one_model"


def _loss_composition_mean(p, x):
    return p["E"] + jnp.exp(jnp.log(p["A"]) - p["beta_N"] * jnp.log(x["N"]) - p["beta_L"] * jnp.log(x["L"]))


# Registered as a user registers a form: the held-out answer loss of one fine-tuned model falls
# with the examples N and their length L separately (beta_N = beta_L is the volume law).
register_form(Form(
    name=LOSS_FORM, inputs=("N", "L"), target="loss",
    params={"E": "lognormal(0.5, 1)", "A": "lognormal(-1, 2)", "beta_N": "uniform(-0.5, 1)",
            "beta_L": "uniform(-1, 1)"},
    mean=_loss_composition_mean,
    centring={"A": lambda p, x: -p["beta_N"] * jnp.log(x["N"]) - p["beta_L"] * jnp.log(x["L"])},
    columns={"N": "n_examples", "L": "avg_tokens"},
    typical_ranges={"N": (5, 500), "L": (20, 200)},
    description="answer loss = E + A N^-beta_N L^-beta_L at one model size",
))


def planned_inputs(config, points) -> list[dict]:
    """N and L each point's strategy selects (from the data task, without training)."""
    from tokeff.data.model_tokenizer import load_tokenizer
    from tokeff.train.dataset import compose, training_task

    planned, tokenizers = [], {}
    for point in points:
        train = sweep.point_train_config(config, point)
        model = tokenizers.get(point.model) or tokenizers.setdefault(point.model, load_tokenizer(point.model))
        task = training_task(train.data, model.name, model.tokens, model.context_len, point.seed)
        selection = compose(task, train.data, point.seed).selection
        planned.append({"run_id": point.run_id, "model": point.model, "strategy": point.strategy, "seed": point.seed,
                        "budget_flops": point.budget_flops, "n_examples": selection["n_examples"],
                        "avg_tokens": selection["avg_tokens"]})
    return planned


def fit_laws(rows, fit_config, out_dir: str | None = None, group: str | None = None) -> dict:
    """{"loss": Fit, "accuracy": Fit}: the composition laws fitted to `rows` (NUTS); with `group`
    (e.g. "model"), one law per group, partially pooled (GroupedFits)."""
    import pandas as pd

    from tokeff.laws.fit import fit
    from tokeff.laws.hierarchy import fit_grouped
    from tokeff.laws.settings import FitSettings

    table = pd.DataFrame(rows)
    settings = FitSettings.from_dict(fit_config.to_dict(), where="config.fit")

    def fit_one(table, form, settings, **kw):
        return fit_grouped(table, form, group, settings, **kw) if group else fit(table, form, settings, **kw)

    fits = {}
    for target, form in (("loss", LOSS_FORM), ("accuracy", ACCURACY_FORM)):
        per = f", one per {group}, pooled" if group else ""
        print(f"fitting {form} to {len(rows)} runs ({fit_config.chains} chains x {fit_config.draws} draws{per})")
        if target == "loss":  # the chance floor is the accuracy law's
            fits[target] = fit_one(table, form, settings.replace(chance=0.0), target="eval_loss")
        else:
            fits[target] = fit_one(table, form, settings)
        if out_dir:
            fits[target].save(os.path.join(out_dir, target), plots=False, force=True)  # the notebooks plot
    return fits


def option_of(point: dict, grouped: bool) -> str:
    """What a run's choice is: its strategy, or with one law per model, its model and strategy."""
    return f"{point['model']} {point['strategy']}" if grouped else point["strategy"]


def predict_top_budget(fits: dict, planned: list[dict], *, n_eval: int, interval: float, chance: float,
                       fitted_budgets) -> dict:
    """predictions.json's payload: every planned run's loss and accuracy intervals, and the best strategy."""
    lo_q, hi_q = (1 - interval) / 2, 1 - (1 - interval) / 2
    inputs = {"N": np.array([p["n_examples"] for p in planned], float),
              "L": np.array([p["avg_tokens"] for p in planned], float)}
    grouped = getattr(fits["loss"], "groups", None) is not None
    at = {"groups": [p["model"] for p in planned]} if grouped else {}  # each run at its own model's law
    loss_obs = fits["loss"].predictive(inputs, "observed", seed=1, **at)  # [S, n]
    loss_mean = fits["loss"].predictive(inputs, "mean", **at)
    acc_mean = fits["accuracy"].predictive(inputs, "mean", **at)  # a probability, clipped to above chance
    acc_obs = fits["accuracy"].predictive(inputs, "observed", n_eval=n_eval, seed=2, **at)

    def quantiles(draws):
        q = np.quantile(draws, [lo_q, 0.5, hi_q], axis=0)
        return [{"low": float(a), "median": float(b), "high": float(c)} for a, b, c in q.T]

    points = [{**p, "option": option_of(p, grouped), "loss": lq, "accuracy": aq, "accuracy_observed": oq}
              for p, lq, aq, oq in zip(planned, quantiles(loss_obs), quantiles(acc_mean), quantiles(acc_obs))]
    strategies = sorted({p["option"] for p in points})
    # Each option's (strategy's, or model and strategy's) expected loss: its runs (seeds) averaged, per draw.
    by_strategy = np.stack([loss_mean[:, [i for i, p in enumerate(points) if p["option"] == s]].mean(axis=1)
                            for s in strategies], axis=1)  # [S, options]
    p_best = np.bincount(by_strategy.argmin(axis=1), minlength=len(strategies)) / by_strategy.shape[0]
    best = strategies[int(np.argmax(p_best))]
    return {
        "written_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "interval": interval,
        "fitted_on_budgets": [float(b) for b in fitted_budgets],
        "predicted_budget": float(planned[0]["budget_flops"]),
        "n_eval": int(n_eval),
        "chance": chance,
        "loss_law": LOSS_FORM,
        "accuracy_law": ACCURACY_FORM,
        "points": points,
        "p_best_loss": {s: float(v) for s, v in zip(strategies, p_best)},
        "predicted_best": best,
    }


def check_predictions(predictions: dict, rows) -> dict:
    """Observed against predicted for every predicted run: inside or not, and the best strategy."""
    from tokeff.eval.intervals import wilson_interval

    by_id = {r["run_id"]: r for r in rows}
    missing = [p["run_id"] for p in predictions["points"] if p["run_id"] not in by_id]
    if missing:
        raise UserError(f"predictions.json: runs {', '.join(missing)} have no result; rerun the demo")
    checked = []
    for p in predictions["points"]:
        row = by_id[p["run_id"]]
        k, n = round(row["accuracy"] * row["n_eval"]), int(row["n_eval"])
        checked.append({
            **p, "observed_loss": row["eval_loss"], "observed_accuracy": k / n,
            "observed_accuracy_ci95": list(wilson_interval(k, n)),
            "loss_inside": p["loss"]["low"] <= row["eval_loss"] <= p["loss"]["high"],
            "accuracy_inside": p["accuracy_observed"]["low"] <= k / n <= p["accuracy_observed"]["high"],
        })
    for c in checked:
        c.setdefault("option", c["strategy"])
    strategies = sorted({c["option"] for c in checked})
    observed = {s: float(np.mean([c["observed_loss"] for c in checked if c["option"] == s])) for s in strategies}
    seeds_sd = [np.std([c["observed_loss"] for c in checked if c["option"] == s], ddof=1)
                for s in strategies if sum(c["option"] == s for c in checked) > 1]
    ordered = sorted(observed, key=observed.get)
    z = NormalDist().inv_cdf(0.5 + float(predictions["interval"]) / 2)
    law_sd = float(np.median([(c["loss"]["high"] - c["loss"]["low"]) / (2 * z) for c in checked]))
    return {
        "points": checked,
        "loss_inside": sum(c["loss_inside"] for c in checked),
        "accuracy_inside": sum(c["accuracy_inside"] for c in checked),
        "n": len(checked),
        "observed_loss_by_strategy": observed,
        "observed_best": ordered[0],
        "observed_gap": observed[ordered[1]] - observed[ordered[0]] if len(ordered) > 1 else 0.0,
        "seed_sd": float(np.mean(seeds_sd)) if seeds_sd else None,
        "law_sd": law_sd,  # the loss law's predictive spread of one run: the yardstick with one seed
        "predicted_best": predictions["predicted_best"],
        "best_agrees": predictions["predicted_best"] == ordered[0],
    }


def predict_and_write(config, lower_rows, path: str, fits_dir: str | None = None) -> dict:
    """Fit the laws to the runs below the top budget (saved under `fits_dir`/loss and /accuracy),
    predict every top-budget run, and write `predictions.json` at `path` (before any top-budget
    run is scored)."""
    from tokeff.io import write_json

    budgets = sorted(float(b) for b in config.grid.budgets)
    top_points = [p for p in sweep.grid_points(config) if p.budget_flops == budgets[-1]]
    fits = fit_laws(lower_rows, config.fit, fits_dir, group=config.group or None)
    predictions = predict_top_budget(
        fits, planned_inputs(config, top_points), n_eval=int(lower_rows[0]["n_eval"]),
        interval=float(config.check.interval), chance=float(config.fit.chance), fitted_budgets=budgets[:-1])
    write_json(path, predictions)
    return predictions


def read_predictions(path: str, config) -> dict | None:
    """The `predictions.json` an earlier run of this demo wrote at `path` (None if there is none);
    one written for another grid is refused."""
    import json

    if not os.path.exists(path):
        return None
    with open(path) as f:
        predictions = json.load(f)
    top = max(float(b) for b in config.grid.budgets)
    wanted = sorted(p.run_id for p in sweep.grid_points(config) if p.budget_flops == top)
    if sorted(p["run_id"] for p in predictions["points"]) != wanted:
        raise UserError(f"{path}: written for another grid; use a new --workdir")
    return predictions


def check_and_plot(predictions: dict, rows, workdir: str) -> dict:
    """`check_predictions`, written to `prediction_check.json` and plotted to `prediction_check.png`."""
    from tokeff.io import write_json

    check = check_predictions(predictions, rows)
    write_json(os.path.join(workdir, "prediction_check.json"), check)
    plot_check(check, os.path.join(workdir, "prediction_check.png"))
    return check


def format_check(predictions: dict, check: dict) -> str:
    """The table and verdict of the prediction check."""
    pct = round(100 * predictions["interval"])
    grouped = any(c["option"] != c["strategy"] for c in check["points"])  # options are model and strategy
    w = max([len(c["option"]) for c in check["points"]] + [11])  # whole
    lines = [f"== prediction check at {predictions['predicted_budget']:.3g} FLOPs (fitted on "
             f"{', '.join(f'{b:.3g}' for b in predictions['fitted_on_budgets'])}; predictions.json written "
             f"{predictions['written_at']}, before these runs were scored)",
             f"{'model strategy' if grouped else 'strategy':<{w}}{'seed':>4}{'N':>5}{'L':>7}  {'loss predicted [' + str(pct) + '%]':<26}{'observed':>9}  "
             f"{'accuracy: law [' + str(pct) + '%]':<24}{'a new score [' + str(pct) + '%]':<18}"
             f"{'observed [95% Wilson]':<24}"]
    for c in check["points"]:
        lp, ap, op = c["loss"], c["accuracy"], c["accuracy_observed"]
        lo, hi = c["observed_accuracy_ci95"]
        lines.append(
            f"{c['option']:<{w}}{c['seed']:>4}{c['n_examples']:>5}{c['avg_tokens']:>7.1f}  "
            f"{lp['median']:.4f} [{lp['low']:.4f}, {lp['high']:.4f}]{'' :<2}{c['observed_loss']:>9.4f}"
            f"{' in ' if c['loss_inside'] else ' OUT'} "
            f"{ap['median']:.3f} [{ap['low']:.3f}, {ap['high']:.3f}]{'':<3}"
            f"[{op['low']:.3f}, {op['high']:.3f}]{'':<4}"
            f"{c['observed_accuracy']:.3f} [{lo:.3f}, {hi:.3f}]{' in' if c['accuracy_inside'] else ' OUT'}")
    n = check["n"]
    gap, sd = check["observed_gap"], check["seed_sd"]
    lines += [
        f"inside the {pct}% intervals: loss {check['loss_inside']}/{n}, accuracy {check['accuracy_inside']}/{n} "
        f"(expected about {predictions['interval'] * n:.0f}/{n} if the intervals are calibrated; an observed "
        f"accuracy is checked against the interval of a new score on {predictions['n_eval']} questions, the "
        f"law's interval for the accuracy itself being narrower)",
        f"best {'option' if grouped else 'strategy'} by loss: predicted {check['predicted_best']} (P(best) "
        f"{predictions['p_best_loss'][check['predicted_best']]:.2f}), observed {check['observed_best']} -> "
        + ("agrees" if check["best_agrees"] else "disagrees"),
        "verdict: " + _verdict(check, predictions, gap, sd, check.get("law_sd")),
    ]
    return "\n".join(lines)


def _verdict(check, predictions, gap: float, sd: float | None, law_sd: float | None) -> str:
    n_eval = predictions["n_eval"]
    width = 2 * 1.96 * np.sqrt(0.25 * 0.75 / n_eval)  # a 95% interval's width near chance
    parts = [f"the loss law predicted {check['loss_inside']} of {check['n']} held-out runs inside its intervals"]
    if sd is not None and sd > 0:
        settled = gap > 2 * sd
        parts.append(f"the observed best strategy leads by {gap:.4f} nats, {gap / sd:.1f}x the seed-to-seed "
                     f"spread ({sd:.4f}): " + ("large enough to call" if settled else "too small to call"))
    elif law_sd:
        settled = gap > 2 * law_sd
        parts.append(f"the observed best strategy leads by {gap:.4f} nats, {gap / law_sd:.1f}x the loss law's "
                     f"predictive spread of one run ({law_sd:.4f}; one seed, so no seed-to-seed spread): "
                     + ("large enough to call" if settled else "too small to call"))
    else:
        parts.append(f"the observed best strategy leads by {gap:.4f} nats (one seed: no spread to compare with)")
    parts.append(f"accuracy on {n_eval} questions has a 95% interval about {width:.2f} wide, so accuracy "
                 "differences of a few points between strategies cannot be settled by these runs")
    return "; ".join(parts)


def plot_check(check: dict, path: str) -> None:
    """Observed against predicted loss at the top budget, one colour per strategy (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tokeff.io import save_figure

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    strategies = sorted({c["strategy"] for c in check["points"]})
    for ax, key, observed, label in ((axes[0], "loss", "observed_loss", "answer loss (nats/token)"),
                                     (axes[1], "accuracy_observed", "observed_accuracy", "cloze accuracy")):
        for i, c in enumerate(check["points"]):
            s = strategies.index(c["strategy"])
            q = c[key]
            ax.errorbar(i, q["median"], yerr=[[q["median"] - q["low"]], [q["high"] - q["median"]]],
                        fmt="s", color=f"C{s}", alpha=0.5, capsize=3)
            ax.plot(i, c[observed], "o", color=f"C{s}", markeredgecolor="black")
        ax.set(xticks=range(len(check["points"])), ylabel=label,
               xticklabels=[f"{c['strategy']}\ns{c['seed']}" for c in check["points"]])
        ax.tick_params(axis="x", labelsize=7)
    axes[0].set_title("predicted interval (square) vs observed (circle)")
    axes[1].set_title("accuracy: predictive interval vs observed")
    save_figure(fig, path)
