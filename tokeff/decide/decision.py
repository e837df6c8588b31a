"""The decision among options: maximise expected utility over posterior draws.

Not the utility at a point estimate: the expected one, reported with the probability that the
chosen option is the best and its expected regret, so near-ties are visible instead of hidden.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Mapping

import numpy as np

from tokeff.decide.options import Option, OptionSpace, option_inputs
from tokeff.decide.summaries import effective_sample_size, interval, normalized_weights
from tokeff.errors import UserError


# The metric a run at each of O option inputs would reach, per posterior draw: [P, O]. For a fit,
# `run_predictive(fit)`: `fit.predictive(kind="new_run")` (the law and what it misses there); a
# grouped fit's also takes `groups=`, each option's group.
Predictive = Callable[..., np.ndarray]


def run_predictive(fit, *, new_groups: bool = False) -> Predictive:
    """What a run at each option would reach, per draw: the fit's own predictive, kind "new_run"
    (for a grouped fit, at each option's group; with `new_groups` a group the fit never saw is a
    new one drawn from the population)."""
    if getattr(fit, "groups", None) is None:
        return functools.partial(fit.predictive, kind="new_run")
    return functools.partial(fit.predictive, kind="new_run", new_groups=new_groups)


def predict_options(predict: Predictive, options: list[Option], columns: Mapping[str, str], **kw) -> np.ndarray:
    """[P, O]: `predict` at the options' inputs (and groups, when they have them)."""
    inputs = option_inputs(options, columns)
    if any(o.group is not None for o in options):
        return predict(inputs, groups=[o.group for o in options], **kw)
    return predict(inputs, **kw)


@dataclasses.dataclass
class Decision:
    """Expected-utility decision over K options from [P, O] utilities (higher is better)."""

    order: np.ndarray            # option indices, best expected utility first
    expected_utility: np.ndarray  # [O]
    p_best: np.ndarray           # [O] posterior probability that each option is the best
    expected_regret: np.ndarray  # [O] E[max_j u_j - u_k]
    p_first_beats_second: float  # pairwise posterior probability, best vs runner-up
    regret_gap_mc_se: float      # Monte Carlo standard error of the runner-up's extra regret
    indistinguishable: bool
    reason: str

    @property
    def best(self) -> int:
        return int(self.order[0])


def decide(utility_PxO: np.ndarray, weights_P: np.ndarray | None = None, *,
           p_threshold: float = 0.9) -> Decision:
    """Maximise expected utility; report P(best), expected regret and whether the top two differ.

    Ties within a draw share the "best" credit equally. The top two are called
    indistinguishable when the posterior probability that the first beats the second is below
    `p_threshold`, or when the runner-up's extra expected regret is within 2 Monte Carlo
    standard errors (using the effective sample size of the draws).
    """
    u = np.asarray(utility_PxO, np.float64)
    n_draws, k = u.shape
    w = normalized_weights(n_draws, weights_P)
    eu = w @ u
    best_u_P = u.max(axis=1)
    tie_PxO = u >= best_u_P[:, None] - 1e-12 * np.maximum(1.0, np.abs(best_u_P[:, None]))
    p_best = np.clip(w @ (tie_PxO / tie_PxO.sum(axis=1, keepdims=True)), 0.0, 1.0)
    regret = w @ (best_u_P[:, None] - u)
    order = np.argsort(-eu, kind="stable")
    if k == 1:
        return Decision(order, eu, p_best, regret, 1.0, 0.0, False, "only one feasible option")
    first, second = order[0], order[1]
    d_P = u[:, first] - u[:, second]  # = runner-up regret - best regret, per draw
    p12 = float(w @ (d_P > 0) + 0.5 * (w @ (d_P == 0)))
    mean_d = float(w @ d_P)
    se = float(np.sqrt(w @ (d_P - mean_d) ** 2 / effective_sample_size(w)))
    reasons = []
    if p12 < p_threshold:
        reasons.append(f"P(best beats runner-up) = {p12:.2f} < {p_threshold}")
    if mean_d <= 2 * se:
        reasons.append(f"regret difference {mean_d:.3g} within 2 MC s.e. ({se:.2g})")
    return Decision(order, eu, p_best, regret, p12, se, bool(reasons), "; ".join(reasons))


def decide_at(predict: Predictive, target: str, space: OptionSpace, budget: float, *,
              columns: Mapping[str, str], weights_P: np.ndarray | None = None):
    """Options at `budget`, their predicted metric [P, O] (`predict` at their inputs, `columns`
    naming the form's inputs), and the expected-utility decision (`target` "accuracy": higher
    is better; "loss": lower)."""
    options, infeasible = space.at(budget)
    if not options:
        return options, infeasible, None, None
    metric_PxO = predict_options(predict, options, columns)
    sign = 1.0 if target == "accuracy" else -1.0
    return options, infeasible, metric_PxO, decide(sign * metric_PxO, weights_P)


def _option_report(option: Option, metric_P: np.ndarray, decision: Decision, k: int,
                   weights_P: np.ndarray | None) -> dict:
    return {"label": option.label, **dataclasses.asdict(option),
            "predicted": interval(metric_P, weights_P),
            "expected_utility": float(decision.expected_utility[k]),
            "p_best": float(decision.p_best[k]), "expected_regret": float(decision.expected_regret[k])}


def by_group(options: list[Option], utility_PxO: np.ndarray, decision: Decision,
             weights_P: np.ndarray | None = None) -> dict:
    """Which group (model) to run: each group at its own best option (highest expected utility),
    the groups compared by `decide` on those options' utilities (P(best), expected regret, and
    whether the top two can be told apart). Best group first."""
    first = {}
    for k in decision.order:  # best expected utility first: a group's first option is its best
        first.setdefault(options[k].group, int(k))
    labels, rows = list(first), list(first.values())
    d = decide(utility_PxO[:, rows], weights_P)
    ranked = [{"group": labels[j], "model_preset": options[rows[j]].model, "best_option": options[rows[j]].label,
               "p_best": float(d.p_best[j]), "expected_regret": float(d.expected_regret[j])} for j in d.order]
    return {"choice": ranked[0]["group"], "runner_up": ranked[1]["group"] if len(ranked) > 1 else None,
            "cannot_tell_apart": d.indistinguishable, "reason": d.reason, "groups": ranked}


def allocate_finetuning(predict: Predictive, target: str, budget: float, space: OptionSpace, *,
                        columns: Mapping[str, str], n_budgets: int = 9,
                        weights_P: np.ndarray | None = None) -> dict:
    """The best option at `budget` (expected utility), all options ranked, and the decision
    across a range of budgets; arguments as in `decide_at`."""
    options, infeasible, metric_PxO, decision = decide_at(predict, target, space, budget, columns=columns,
                                                          weights_P=weights_P)
    if decision is None:
        reasons = "; ".join(f"{i.label}: {i.reason}" for i in infeasible[:3])
        raise UserError(f"budget: no feasible option at {budget:.3g} FLOPs ({reasons})")
    ranked = [_option_report(options[k], metric_PxO[:, k], decision, k, weights_P) for k in decision.order]
    sweep = []
    for c in np.geomspace(budget / 10, budget * 10, n_budgets):
        opts, _, m_PxO, d = decide_at(predict, target, space, float(c), columns=columns, weights_P=weights_P)
        if d is None:
            sweep.append({"budget_flops": float(c), "decision": None})
            continue
        sweep.append({"budget_flops": float(c), "decision": opts[d.best].label, "model": opts[d.best].model,
                      "group": opts[d.best].group,
                      "predicted": interval(m_PxO[:, d.best], weights_P), "p_best": float(d.p_best[d.best]),
                      "expected_regret": float(d.expected_regret[d.best]),
                      "indistinguishable": d.indistinguishable})
    sign = 1.0 if target == "accuracy" else -1.0
    grouped = ({"by_group": by_group(options, sign * metric_PxO, decision, weights_P)}
               if options[0].group is not None else {})
    return {"kind": "finetuning", "target": target, **grouped,
            "decision": ranked[0], "runner_up": ranked[1] if len(ranked) > 1 else None,
            "indistinguishable": decision.indistinguishable, "indistinguishable_reason": decision.reason,
            "p_best_beats_runner_up": decision.p_first_beats_second,
            "options": ranked, "infeasible": [dataclasses.asdict(i) for i in infeasible],
            "budget_sweep": sweep}
