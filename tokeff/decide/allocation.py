"""`allocate_fit`: the allocation.json payload for a fit at a budget, with its warnings.

Routes by the form: a pretraining law gets the compute-optimal frontier (tokeff.decide.frontier),
a fine-tuning law a choice among options (tokeff.decide.decision). Decisions drawn from a
sampler that did not converge are refused unless forced, and every input outside the fitted
range is reported with its extrapolation factor: laws are least trustworthy exactly there.
"""

from __future__ import annotations

import os
from typing import Mapping

import numpy as np

from tokeff.decide.decision import allocate_finetuning, run_predictive
from tokeff.decide.frontier import allocate_pretraining, is_pretraining_form
from tokeff.decide.options import Option, OptionSpace, grouped_space, option_columns, option_inputs
from tokeff.errors import UserError
from tokeff.flops import check_budget
from tokeff.laws.predictions import choice_sentence


def check_fit_dir(fit_dir: str) -> None:
    """Refuse a FIT_DIR that is not a directory, at once: before --out is claimed, so a mistyped
    FIT_DIR is named as such."""
    if not os.path.isdir(fit_dir):
        raise UserError(f"FIT_DIR: not a directory: {fit_dir}")


def load_checked_fit(fit_dir: str, *, force: bool = False):
    """`load_fit(fit_dir)`, refusing a fit whose diagnostics failed unless `force`: a decision
    drawn from a sampler that did not converge is not one to act on."""
    from tokeff.laws.fit import load_fit

    check_fit_dir(fit_dir)
    fit = load_fit(fit_dir)
    diagnostics = fit.diagnostics or {}
    if not diagnostics.get("ok", False) and not force:
        detail = "; ".join(diagnostics.get("problems") or []) or "no diagnostics recorded"
        raise UserError(f"FIT_DIR: diagnostics not ok ({detail}); refit, or pass --force")
    return fit


def extrapolation_factor(value: float, lo: float, hi: float) -> float:
    """How far outside [lo, hi] a value is, as a ratio (1.0 = inside)."""
    return max(1.0, value / hi, lo / value)


def _beyond(factor: float) -> str:
    """How far a value lies outside the fitted range, in words a reader can weigh."""
    return f"{(factor - 1) * 100:.1f}% beyond it" if factor < 1.1 else f"extrapolating by {factor:.3g}x"


def budget_warnings(fit, budget: float, chosen_inputs: Mapping[str, float] | None = None) -> list[str]:
    """Warnings for a budget (or a chosen option's inputs) outside what the fit saw, each with
    its extrapolation factor: laws are least trustworthy exactly where they are extrapolated."""
    inputs = fit.data.inputs
    out = []
    if {"N", "D"} <= set(inputs):
        compute_of_runs = 6.0 * np.asarray(inputs["N"]) * np.asarray(inputs["D"])
        factor = extrapolation_factor(budget, compute_of_runs.min(), compute_of_runs.max())
        if factor > 1.0:
            out.append(f"budget {budget:.3g} FLOPs is outside the fit's range of 6ND "
                       f"[{compute_of_runs.min():.3g}, {compute_of_runs.max():.3g}]: {_beyond(factor)}")
    for name, value in (chosen_inputs or {}).items():
        x = np.asarray(inputs[name])
        factor = extrapolation_factor(value, x.min(), x.max())
        if factor > 1.0:
            out.append(f"budget {budget:.3g} FLOPs: the decision's {name}={value:.3g} is outside the "
                       f"fit's range [{x.min():.3g}, {x.max():.3g}]: {_beyond(factor)}")
    return out


def refuse_grouped_pretraining(fit, what: str) -> None:
    """One line for a grouped fit of a pretraining law: its frontier (and the sweep check that
    carries it to a sweep's optima) is one law's, not a choice among groups."""
    if getattr(fit, "groups", None) is not None and is_pretraining_form(fit.form):
        raise UserError(f"FIT_DIR: a grouped fit of pretraining law {fit.form.name} (per {fit.groups.column}): "
                        f"{what} one law's compute-optimal frontier; fit it without --group, or compare the "
                        "groups at fixed inputs with `tokeff predict`")


def allocate_fit(fit, budget: float, space: OptionSpace | None = None, *, frontier_source: str = "auto",
                 group_values=None, new_group: bool = False) -> dict:
    """The allocation.json payload for a fit at a budget (pretraining frontier or fine-tuning
    choice, by the form's inputs), with its extrapolation warnings. A pretraining fit whose data is
    an isoFLOP sweep decides on the law's frontier carried to the sweep's own optima
    (`tokeff.decide.sweep_check`; `frontier_source="law"`: the law's alone). A grouped fit chooses
    among its groups (models) x the option space (`grouped_space`; `group_values`, `new_group`
    as in `tokeff predict`), and says which model with P(best) (`by_group`)."""
    form = fit.form
    budget = check_budget(budget, "budget")
    grouped = getattr(fit, "groups", None) is not None
    refuse_grouped_pretraining(fit, "allocate decides on")
    if not grouped and (group_values or new_group):
        raise UserError("--group-value: the fit is not grouped (fit with --group COLUMN)")
    if is_pretraining_form(form):
        given = [flag for flag, value in (("--models", space and space.models), ("--lengths-grid", space and space.lengths),
                                          ("--strategies", space and space.strategies),
                                          ("--n-examples", space and space.n_examples),
                                          ("--epochs", space and space.epochs not in ((), (1,))),
                                          ("--lengths", space and space.pool.lengths is not None),
                                          ("--max-examples", space and space.pool.max_examples is not None)) if value]
        if given:
            raise UserError(f"{given[0]}: form {form.name} is a pretraining law (a compute-optimal frontier "
                            "over N and D); it chooses no models, lengths, epochs or strategies: drop the flag")
        from tokeff.decide.sweep_check import fit_frontier
        from tokeff.decide.summaries import interval

        compute_of_runs = 6.0 * np.asarray(fit.data.inputs["N"]) * np.asarray(fit.data.inputs["D"])
        used = {}

        def checked(budgets_U):
            used["draws"] = fit_frontier(fit, budgets_U, source=frontier_source)
            return used["draws"].n_opt, used["draws"].d_opt

        result = allocate_pretraining(form, fit.samples, budget, budget_range=(compute_of_runs.min(), compute_of_runs.max()),
                                      frontier_fn=checked)
        draws = used["draws"]
        at = int(np.argmin(np.abs(np.log(np.array([p["budget_flops"] for p in result["frontier"]]) / budget))))
        result["frontier_source"] = draws.source
        result["law_N_opt"] = interval(draws.law_n_opt[:, at])
        result["sweep_correction"] = draws.correction
        warnings = budget_warnings(fit, budget)
        if draws.source == "law+sweep":
            q, law = result["decision"]["N_opt"], result["law_N_opt"]["median"]
            if not q["q05"] <= law <= q["q95"]:
                warnings.append(f"the law's own N_opt {law:.3g} is outside the decision's 90% interval "
                                f"[{q['q05']:.3g}, {q['q95']:.3g}]: the form misses the sweep's optima")
    else:
        from tokeff.laws.stacking import refuse_stacked

        if frontier_source != "auto":
            raise UserError(f"--frontier: applies to pretraining laws; form {form.name} chooses among options, "
                            "with no compute-optimal frontier")
        refuse_stacked(fit, "a fine-tuning choice reweights")
        if grouped:
            space = grouped_space(fit, space or OptionSpace(models=()), group_values, new_group=new_group)
        elif space is None or not space.models:
            raise UserError(f"models: form {form.name} chooses among models; give candidates (--models)")
        result = allocate_finetuning(run_predictive(fit, new_groups=new_group), form.target, budget, space,
                                     columns=option_columns(fit))
        if grouped:
            result["group_column"] = fit.groups.column
        best = Option(**{k: result["decision"][k] for k in
                         ("model", "n_examples", "avg_tokens", "epochs", "flops", "strategy", "group")})
        chosen = {k: float(v[0]) for k, v in option_inputs([best], option_columns(fit)).items()}
        warnings = budget_warnings(fit, budget, chosen)
    return {"form": form.name, "target": form.target, "budget_flops": float(budget),
            "n_draws": int(used["draws"].n_opt.shape[0]) if is_pretraining_form(form)
            else int(len(next(iter(fit.samples.values())))), "warnings": warnings, **result}


def _fmt_interval(q: dict) -> str:
    return f"{q['median']:.4g} [{q['q05']:.4g}, {q['q95']:.4g}]"


def format_table(result: dict) -> str:
    lines = [f"form {result['form']} ({result['target']}), budget {result['budget_flops']:.3g} FLOPs, "
             f"{result['n_draws']} posterior draws"]
    if result["kind"] == "pretraining":
        lines.append(f"{'quantity':<18}{'median':>11}{'q05':>11}{'q10':>11}{'q90':>11}{'q95':>11}")
        for key, q in result["decision"].items():
            lines.append(f"{key:<18}" + "".join(f"{q[k]:>11.3g}" for k in ("median", "q05", "q10", "q90", "q95")))
        if result.get("frontier_source") == "law+sweep":
            lines.append(f"  N_opt: the law's frontier carried to the sweep's own optima (the law alone: "
                         f"{_fmt_interval(result['law_N_opt'])})")
        for name, ref in result["reference_at_budget"].items():
            lines.append(f"  reference {name}: N_opt {ref['N_opt']:.3g}, D_opt {ref['D_opt']:.3g}, "
                         f"tokens/param {ref['tokens_per_param']:.3g}")
    else:
        shown = result["options"][:10]
        w = max([len(o["label"]) for o in shown] + [6])  # labels whole: model names can be long
        lines.append(f"{'#':>2} {'option':<{w}}{'FLOPs':>10}  {'predicted median [q05, q95]':<30}"
                     f"{'P(best)':>8}{'E[regret]':>11}")
        for i, o in enumerate(shown, 1):
            lines.append(f"{i:>2} {o['label']:<{w}}{o['flops']:>10.3g}  {_fmt_interval(o['predicted']):<30}"
                         f"{o['p_best']:>8.2f}{o['expected_regret']:>11.3g}")
        if len(result["options"]) > 10:
            lines.append(f"   ... {len(result['options']) - 10} more options in allocation.json")
        if result["infeasible"]:
            lines.append(f"   {len(result['infeasible'])} infeasible option(s), e.g. "
                         f"{result['infeasible'][0]['label']}: {result['infeasible'][0]['reason']}")
        d = result["decision"]
        lines.append(f"decision: {d['label']} (P(best) {d['p_best']:.2f}, expected regret "
                     f"{d['expected_regret']:.3g}, predicted {result['target']} {_fmt_interval(d['predicted'])})")
        if result["indistinguishable"]:
            lines.append(f"  indistinguishable from the runner-up {result['runner_up']['label']}: "
                         f"{result['indistinguishable_reason']}")
        if "by_group" in result:
            lines += format_by_group(result["by_group"], result.get("group_column", "group"))
        lines.append("across budgets:")
        w = max([len(p["decision"]) for p in result["budget_sweep"] if p["decision"]] + [6])
        for p in result["budget_sweep"]:
            if p["decision"] is None:
                lines.append(f"  {p['budget_flops']:>10.3g}  no feasible option")
            else:
                tie = "  (~tie)" if p["indistinguishable"] else ""
                lines.append(f"  {p['budget_flops']:>10.3g}  {p['decision']:<{w}} P(best) {p['p_best']:.2f}  "
                             f"{_fmt_interval(p['predicted'])}{tie}")
    return "\n".join(lines)


def format_by_group(by_group: dict, column: str) -> list[str]:
    """Which model: each group at its best option, P(best) and expected regret, and the choice
    (or "cannot tell apart"), as `tokeff predict` words it."""
    w = max([len(g["group"]) for g in by_group["groups"]] + [len(column)])
    lines = [f"which {column} (each at its best option):", f"   {column:<{w}}  {'P(best)':>7} {'E[regret]':>10}  best option"]
    for g in by_group["groups"]:
        lines.append(f"   {g['group']:<{w}}  {g['p_best']:>7.2f} {g['expected_regret']:>10.3g}  {g['best_option']}")
    first = by_group["groups"][0]
    leader = {**by_group, "p_best": first["p_best"], "expected_regret": first["expected_regret"]}
    lines.append("  " + choice_sentence(leader, what=f"{column} "))
    return lines
