"""Stacking of predictive distributions across forms (Yao et al. 2018): form uncertainty.

One form's interval says how unsure its parameters are, not how unsure the *form* is; published
reanalyses put tokens per parameter at a budget orders of magnitude apart by form alone. A stacked
fit (`--form chinchilla,kaplan,farseer`) fits every form to the same rows and mixes their
predictive distributions with weights w (w_k >= 0, sum 1) that maximise the leave-future-out log
score of the mixture, sum_i log sum_k w_k p_k(y_i):

- inner cuts by compute (the product of the inputs, e.g. N D) on the fitted rows: `INNER_CUTS`
  rolling origins through the top `INNER_FRAC` of them (`tokeff.laws.backtest.origins`, never
  splitting tied rows); each form is refitted below a cut with the same settings and predicts the
  block above it as new observations (`Fit.predictive(kind="observed")`);
- p_k(y_i): the kernel density of those predictive draws at the held-out y_i
  (`tokeff.laws.scores.log_density`), so every form is scored by its own predictive alike;
- w: the maximum of that concave objective on the simplex, by EM on the mixture weights.

Stacking scores what extrapolation needs (the future, not the fitted rows: a flexible form that
fits every row but extrapolates badly gets little weight). `StackedFit.predictive` is the mixture:
each member's draws in proportion to its weight, so predict, backtest and decisions use it as they
use one fit's predictive. A stacked fit saves as a directory with `stack.json` and one member fit
directory per form; `tokeff.laws.fit.load_fit` reads it back.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping

import numpy as np

from tokeff.commalist import comma_items
from tokeff.errors import UserError
from tokeff.laws.data import FitData, prepare
from tokeff.laws.forms import Form, get_form

INNER_FRAC = 1 / 3
INNER_CUTS = 2
STACK_FILE = "stack.json"
EM_ITERATIONS = 2000
EM_TOLERANCE = 1e-10


def form_names(spec: "str | Form") -> list[str] | None:
    """The member forms of a stacked `--form a,b,c`, or None for one form; an empty `--form` or an
    empty name in the list (`a,,b`, an unset shell variable) is refused rather than dropped."""
    if isinstance(spec, str) and not spec.strip():
        raise UserError("--form: empty; name a registered form, or a,b,c for a stack of forms")
    if not isinstance(spec, str) or "," not in spec:
        return None
    names = comma_items(spec, "--form", what="form name", hint="name registered forms, as in a,b,c")
    if len(names) < 2 or len(set(names)) != len(names):
        raise UserError(f"--form: a stack needs two or more different forms, got '{spec}'")
    return names


def member_forms(names: list[str]) -> list[Form]:
    """The registered forms, checked to predict one target from the same inputs."""
    forms = [get_form(n) for n in names]
    first = forms[0]
    for f in forms[1:]:
        if set(f.inputs) != set(first.inputs) or f.target != first.target:
            raise UserError(f"--form: stacked forms must share inputs and target; {first.name} has"
                            f" {list(first.inputs)} -> {first.target}, {f.name} {list(f.inputs)} -> {f.target}")
    return forms


def stacking_weights(log_density: np.ndarray) -> np.ndarray:
    """[K] weights maximising sum_i log sum_k w_k exp(log_density[i, k]) over the simplex (EM on
    the mixture weights: each step raises the objective; it is concave, so the limit is the
    maximum). A column that is not finite (a form that could not predict) gets weight 0."""
    lp = np.asarray(log_density, np.float64)
    usable = np.isfinite(lp).all(axis=0)
    if not usable.any():
        raise UserError("--form: no stacked form gave finite leave-future-out predictions")
    lp = np.where(usable[None, :], lp, -np.inf)
    w = usable / usable.sum()
    dens = np.exp(lp - lp[:, usable].max(axis=1, keepdims=True))  # per-row scale cancels in EM
    previous = -np.inf
    for _ in range(EM_ITERATIONS):
        mix = dens @ w
        objective = float(np.sum(np.log(mix)))
        w = w * np.mean(dens / mix[:, None], axis=0)
        w = w / w.sum()
        if objective - previous < EM_TOLERANCE * max(1.0, abs(objective)):
            break
        previous = objective
    return np.where(usable, w, 0.0)


def mixture_counts(weights: np.ndarray, total: int) -> np.ndarray:
    """[K] draw counts summing to `total`, in proportion to `weights` (largest remainders)."""
    raw = np.asarray(weights, np.float64) * total
    counts = np.floor(raw).astype(int)
    counts[np.argsort(raw - counts)[::-1][: total - counts.sum()]] += 1
    return counts


@dataclasses.dataclass
class StackedFit:
    """Member fits (one per form, on the same rows) and their stacking weights."""

    members: list
    weights: np.ndarray
    summary: dict

    @property
    def forms(self) -> list[str]:
        return [m.form.name for m in self.members]

    @property
    def name(self) -> str:
        return ",".join(self.forms)

    @property
    def data(self) -> FitData:
        return self.members[0].data

    @property
    def method(self) -> str:
        return self.members[0].method

    @property
    def form(self) -> Form:
        """The first member's form under the stack's name: its inputs, target and columns are every
        member's (`member_forms`), which is what predictions and decisions read from it."""
        return dataclasses.replace(self.members[0].form, name=self.name)

    @property
    def samples(self) -> dict:
        """No parameter draws of its own (the members' parameters differ); decisions mix the
        members' own (`mix`, e.g. `tokeff.decide.sweep_check.fit_frontier`)."""
        return {}

    @property
    def diagnostics(self) -> dict:
        """ok when every member with weight is ok; problems and advice name the member."""
        problems, advice = [], []
        for m, w in zip(self.members, self.weights):
            if w > 0 and not m.diagnostics["ok"]:
                problems += [f"{m.form.name}: {p}" for p in m.diagnostics["problems"]]
                advice += m.diagnostics["advice"]
        return {"ok": not problems, "problems": problems, "advice": advice,
                "weights": dict(zip(self.forms, map(float, self.weights)))}

    def predictive(self, inputs: Mapping[str, np.ndarray], kind: str = "observed", *, n_eval=None,
                   seed: int = 0) -> np.ndarray:
        """[P, O] draws of the mixture of the members' predictives (`mix`)."""
        return self.mix(lambda m, k: m.predictive(inputs, kind, n_eval=n_eval, seed=seed + k), seed=seed)

    def mix(self, draw, *, seed: int = 0) -> np.ndarray:
        """Rows of `draw(member, k)` ([P_k, ...] per member k) mixed by the weights: P = the fewest
        rows of a member with weight, each member giving its weight's share of them (a random subset
        of its own rows). Predictions and decisions (e.g. compute-optimal N per draw) mix alike."""
        rng = np.random.default_rng(seed)
        parts = {k: draw(m, k) for k, m in enumerate(self.members) if self.weights[k] > 0}
        total = min(p.shape[0] for p in parts.values())
        counts = mixture_counts(self.weights[list(parts)], total)
        return np.concatenate([p[rng.choice(p.shape[0], c, replace=False)] for p, c in zip(parts.values(), counts)])

    def save(self, path: str, *, plots: bool = True, force: bool = False) -> str:
        """`stack.json` (forms, weights, the leave-future-out record) and one fit directory per form."""
        from tokeff.io import output_dir, write_json

        with output_dir(path, "fit", force=force) as tmp:
            write_json(os.path.join(tmp, STACK_FILE), self.summary)
            for m in self.members:
                m.save(os.path.join(tmp, m.form.name), plots=plots)
        return os.path.abspath(path)


def refuse_stacked(fit, what: str) -> None:
    """A one-line error where a command needs one form's parameter draws (`what` it does), not a
    mixture: name a member's directory instead."""
    if isinstance(fit, StackedFit):
        raise UserError(f"FIT_DIR: a stacked fit ({fit.name}); {what} one form's parameter draws:"
                        f" give one member's directory (FIT_DIR/{fit.forms[0]}, ...)")


def load_stacked(path: str) -> StackedFit:
    """Rebuild a StackedFit from a directory written by `StackedFit.save`."""
    from tokeff.laws.fit import load_fit

    where = os.path.join(path, STACK_FILE)
    try:
        with open(where) as f:
            summary = json.load(f)
        names = list(summary["weights"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"fit dir: {where} is damaged or truncated ({type(e).__name__}); refit") from None
    members = [load_fit(os.path.join(path, n)) for n in names]
    return StackedFit(members, np.array([summary["weights"][n] for n in names], np.float64), summary)


def compute_order(data: FitData) -> np.ndarray:
    """Each row's compute proxy for the inner cuts: the product of its inputs (N D for N, D forms)."""
    return np.exp(np.sum([np.log(v) for v in data.inputs.values()], axis=0))


def _member_settings(settings, form: Form):
    """`settings` with only the prior overrides that name `form`'s parameters."""
    return settings.replace(priors=tuple((k, v) for k, v in settings.priors if k in form.params))


def lfo_log_densities(data: FitData, forms: list[Form], settings,
                      pad_to: int | None = None) -> tuple[np.ndarray, list[dict]]:
    """([n, K] log predictive density of each inner held-out row under each form, one record per
    inner cut): the inner cuts of the module doc. The refits are padded as the whole table is (or
    to `pad_to` when larger), so they run the members' own compiled programs."""
    from tokeff.laws.backtest import between_ties, origins
    from tokeff.laws.fit import fit
    from tokeff.laws.laplace import bucket
    from tokeff.laws.scores import log_density

    order = compute_order(data)
    rows = np.argsort(order, kind="stable")
    try:
        plan = between_ties(origins(data.n_points, frac=INNER_FRAC, cuts=INNER_CUTS), order[rows])
    except UserError:
        raise UserError(f"--form: {data.n_points} rows leave no inner cut by compute to weight the stacked forms") from None
    needed = max(len(f.params) for f in forms) + 2
    if plan[0][0] < needed:
        raise UserError(f"--form: stacking refits every form on the lowest {plan[0][0]} of {data.n_points} rows"
                        f" by compute; they need at least {needed}")
    blocks, record = [], []
    for i, (n_fit, end) in enumerate(plan):
        fitted, held = data.take(rows[:n_fit]), data.take(rows[n_fit:end])
        block = []
        for f in forms:
            member = fit(fitted, f, _member_settings(settings, f).replace(seed=settings.seed + 101 + i),
                         pad_to=max(bucket(data.n_points), pad_to or 0))
            draws = member.predictive(held.inputs, "observed", n_eval=held.n_eval, seed=settings.seed + i)
            ok = np.isfinite(draws).all(axis=0)
            lp = np.full(held.n_points, -np.inf)
            if ok.any():
                lp[ok] = log_density(draws[:, ok], held.y[ok], log_scale=f.target == "loss")
            block.append(lp)
        blocks.append(np.stack(block, axis=1))
        record.append({"n_fit": int(n_fit), "n_held_out": int(end - n_fit),
                       "mean_log_density": {f.name: float(np.mean(b)) if np.isfinite(b).all() else None
                                            for f, b in zip(forms, block)}})
    return np.concatenate(blocks), record


def fit_stacked(table, forms: "str | list[str]", settings=None, *, mapping: Mapping[str, str] | None = None,
                target: str | None = None, pad_to: int | None = None, **overrides) -> StackedFit:
    """Fit every form to `table` and weight them by stacking (module doc). The rows are prepared
    once, with the first form's default columns and `mapping`, and every form sees the same rows.
    `pad_to`: as `tokeff.laws.fit.fit`'s, for every member fit and inner refit."""
    from tokeff.laws.fit import fit
    from tokeff.laws.settings import FitSettings

    names = form_names(forms) if isinstance(forms, str) else list(forms)
    members_f = member_forms(names)
    settings = settings or FitSettings()
    if overrides:
        settings = settings.replace(**overrides)
    unknown = {k for k, _ in settings.priors} - {p for f in members_f for p in f.params}
    if unknown:
        raise UserError(f"--prior: {sorted(unknown)} is a parameter of none of the stacked forms {names}")
    data = table if isinstance(table, FitData) else prepare(
        table, members_f[0], mapping=mapping, target=target, drop_invalid=settings.drop_invalid,
        exclude=settings.exclude)
    log_dens, record = lfo_log_densities(data, members_f, settings, pad_to)
    weights = stacking_weights(log_dens)
    members = [fit(data, f, _member_settings(settings, f), pad_to=pad_to) for f in members_f]
    summary = {
        "stacked": True,
        "forms": names,
        "weights": dict(zip(names, map(float, weights))),
        "inner_cuts": record,
        "inner_frac": INNER_FRAC,
        "settings": settings.as_dict(),
    }
    return StackedFit(members, weights, summary)
