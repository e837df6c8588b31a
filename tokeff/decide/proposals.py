"""Next-run proposals: which runs would make the allocation decision surer, per FLOP spent.

For a candidate run c we simulate its outcome under posterior draws and ask how much it would
shrink the decision's uncertainty:

    EIG(c) = U(w) - E_{y ~ p(y_c | data)} [ U(w * p(y_c | theta)) ]

where w are the current draw weights and U is the decision uncertainty -- the entropy of
"which option is best" for a discrete choice, or the 90%-interval width of log10 N_opt on a
frontier. The inner posterior is the current draws reweighted by the simulated outcome's
likelihood (importance reweighting): no refit per candidate, so hundreds of candidates score in
seconds. Candidates rank by EIG / FLOPs, each scored as the replicates of it that a common
FLOP horizon buys (`replicates`): one run each would favour cheap runs whose information
saturates; bench/proposal_efficiency.py validates this ranking. Outcomes are simulated and
scored with the fit's own predictive distribution: its observation model
(`tokeff.laws.model.observation_dist`: log loss ~ Normal or Student-t(sigma), or correct answers ~
Binomial(n_eval, accuracy)) around the law's mean plus, for loss forms, the fit's discrepancy
draws (what the law misses beyond the fitted range), as `Fit.predictive(kind="observed")` draws them.

`propose` is the whole `tokeff propose` computation: candidates in, ranked proposals and the
sweep points that run them out.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import json
from typing import Callable, Mapping

import numpy as np

from tokeff.decide.frontier import is_pretraining_form
from tokeff.decide.sweep_check import fit_frontier
from tokeff.decide.decision import decide_at, predict_options, run_predictive
from tokeff.decide.options import (
    MAX_COUNT, Option, OptionSpace, check_context, example_flops, group_preset, option_columns, strategy_options,
    with_groups,
)
from tokeff.decide.summaries import normalized_weights
from tokeff.errors import UserError
from tokeff.flops import check_budget
from tokeff.progress import PROPOSE_WORK, progress
from tokeff.resources import check_candidate_count
from tokeff.laws.model import Likelihood, observation_dist

Uncertainty = Callable[[np.ndarray], np.ndarray]  # weights [M, P] (rows sum to 1) -> U [M]


def simulate_outcomes(target: str, likelihood: Likelihood, location_M: np.ndarray, *, sigma_M=None,
                      n_eval: float | None = None, seed: int = 0) -> np.ndarray:
    """One observation per row from the fit's own observation model (`observation_dist`): log loss
    around `location_M` (the law's log mean, discrepancy included), or a count of correct answers.
    The distribution's own parameters are drawn from with numpy: JAX would compile its binomial and
    Student-t samplers (seconds each) for a few dozen draws."""
    rng = np.random.default_rng(seed)
    d = observation_dist(target, likelihood, np.asarray(location_M, np.float64),
                         sigma=None if sigma_M is None else np.asarray(sigma_M, np.float64), n_eval=n_eval)
    if target != "loss":
        return rng.binomial(int(round(n_eval)), np.asarray(d.probs, np.float64)).astype(np.float64)
    loc, scale = np.asarray(d.loc, np.float64), np.asarray(d.scale, np.float64)
    eps = rng.standard_normal(loc.shape) if likelihood.kind == "normal" else rng.standard_t(likelihood.df, loc.shape)
    return loc + scale * eps


def outcome_log_likelihood(target: str, likelihood: Likelihood, obs_M: np.ndarray, location_P: np.ndarray, *,
                           sigma_P=None, n_eval: float | None = None) -> np.ndarray:
    """log p(obs_m | draw s) for every pair, [M, P], from the same observation model (float64: many
    replicates make a sharp likelihood whose differences float32 would round away)."""
    import jax

    with jax.enable_x64(True):
        sigma = None if sigma_P is None else np.asarray(sigma_P, np.float64)[None, :]
        n = None if n_eval is None else np.float64(n_eval)
        log_prob = _log_prob(target, likelihood)
        return np.asarray(log_prob(np.asarray(obs_M, np.float64)[:, None], np.asarray(location_P, np.float64)[None, :],
                                   sigma, n), np.float64)


@functools.lru_cache(maxsize=16)
def _log_prob(target: str, likelihood: Likelihood):
    """`observation_dist(...).log_prob`, compiled once per observation model and shape (eager JAX
    would compile each of its operations separately on first use)."""
    import jax

    return jax.jit(lambda obs, loc, sigma, n: observation_dist(target, likelihood, loc, sigma=sigma, n_eval=n).log_prob(obs))


def reweight(weights_P: np.ndarray, log_lik_MxP: np.ndarray) -> np.ndarray:
    """Posterior weights after each row's observation: w * likelihood, normalised per row."""
    log_w = np.log(np.maximum(weights_P, 1e-300))[None, :] + log_lik_MxP
    log_w -= log_w.max(axis=1, keepdims=True)
    w = np.exp(log_w)
    return w / w.sum(axis=1, keepdims=True)


def option_entropy(utility_PxO: np.ndarray) -> Uncertainty:
    """U = entropy (nats) of which option is best; ties in a draw share the credit."""
    u = np.asarray(utility_PxO, np.float64)
    best = u.max(axis=1, keepdims=True)
    tie = u >= best - 1e-12 * np.maximum(1.0, np.abs(best))
    share_PxO = tie / tie.sum(axis=1, keepdims=True)

    def entropy(w_MxP: np.ndarray) -> np.ndarray:
        p = w_MxP @ share_PxO
        return -np.sum(np.where(p > 0, p * np.log(np.maximum(p, 1e-300)), 0.0), axis=1)

    return entropy


def interval_width(x_P: np.ndarray, level: float = 0.9) -> Uncertainty:
    """U = width of the central `level` credible interval of a scalar decision (e.g. log10 N_opt)."""
    order = np.argsort(x_P)
    x_sorted = np.asarray(x_P, np.float64)[order]
    lo_q, hi_q = (1 - level) / 2, (1 + level) / 2

    def width(w_MxP: np.ndarray) -> np.ndarray:
        cdf = np.cumsum(w_MxP[:, order], axis=1)
        lo = np.array([np.interp(lo_q, c, x_sorted) for c in cdf])
        hi = np.array([np.interp(hi_q, c, x_sorted) for c in cdf])
        return hi - lo

    return width


def expected_information(run_PxC: np.ndarray, target: str, likelihood: Likelihood, uncertainty: Uncertainty, *,
                         sigma_P: np.ndarray | None = None, n_eval_C: np.ndarray | None = None,
                         replicates_C: np.ndarray | None = None, weights_P: np.ndarray | None = None,
                         n_sims: int = 64, seed: int = 0) -> np.ndarray:
    """Expected reduction of the decision uncertainty from running each candidate r times: [C].

    run_PxC: what a run of each candidate would reach, per draw (`Fit.predictive(kind="new_run")`:
    the law's mean and, for loss forms, what the law misses there), so a draw is (theta, miss at c)
    and one run's outcome is distributed exactly as `Fit.predictive(kind="observed")` draws it.
    Outcomes are simulated from draws picked by their weights (the posterior predictive), then
    every draw is reweighted by each simulated outcome's likelihood. r replicates (new seeds) of
    a run share its miss and are scored as one run with sigma / sqrt(r) (loss) or r x n_eval
    questions (accuracy): their mean is what they add.
    """
    rng = np.random.default_rng(seed)
    n_draws, n_cand = run_PxC.shape
    w = normalized_weights(n_draws, weights_P)
    u_now = float(uncertainty(w[None, :])[0])
    location_PxC = np.asarray(run_PxC, np.float64)
    if target == "loss":
        location_PxC = np.log(location_PxC)
    eig_C = np.empty(n_cand)
    for c in progress(range(n_cand), desc="propose: scoring candidates", unit="candidate",
                      work=float(n_cand) * n_sims * n_draws, threshold=PROPOSE_WORK):
        sims = rng.choice(n_draws, size=n_sims, p=w)
        r = 1.0 if replicates_C is None else float(replicates_C[c])
        n_eval = None if n_eval_C is None else float(n_eval_C[c]) * r
        sigma_c = None if sigma_P is None else np.asarray(sigma_P, np.float64) / np.sqrt(r)
        obs_M = simulate_outcomes(target, likelihood, location_PxC[sims, c],
                                  sigma_M=None if sigma_c is None else sigma_c[sims], n_eval=n_eval,
                                  seed=int(rng.integers(2**31)))
        log_lik = outcome_log_likelihood(target, likelihood, obs_M, location_PxC[:, c], sigma_P=sigma_c, n_eval=n_eval)
        eig_C[c] = u_now - float(uncertainty(reweight(w, log_lik)).mean())
    return eig_C


@dataclasses.dataclass(frozen=True)
class Ranked:
    index: int
    eig: float
    flops: float

    @property
    def eig_per_flop(self) -> float:
        return self.eig / self.flops


def replicates(flops_C: np.ndarray, horizon: float) -> np.ndarray:
    """How many runs of each candidate fit in `horizon` FLOPs (at least 1).

    Scoring candidates at (nearly) equal spend makes the ranking less myopic: one cheap run can
    look informative per FLOP although no number of them pins down a large-scale decision
    (their information saturates); r replicates show that. Many replicates mean a sharp
    likelihood, which importance reweighting resolves only as finely as the draws allow: use
    enough draws (the effective sample size bounds how small an uncertainty can be measured).
    """
    return np.maximum(np.floor(horizon / np.asarray(flops_C, np.float64)), 1.0)


def rank(eig_C: np.ndarray, flops_C: np.ndarray) -> list[Ranked]:
    """Candidates by expected information per FLOP, best first (ties: the cheaper first)."""
    eig_C = np.maximum(eig_C, 0.0)  # Monte Carlo noise can make a useless run slightly negative
    order = np.lexsort((flops_C, -eig_C / flops_C))
    return [Ranked(int(i), float(eig_C[i]), float(flops_C[i])) for i in order]


def sweep_points(points: list[Mapping]) -> dict:
    """The config fragment for `tokeff sweep`: one entry per point, as `tokeff.sweep.Point.as_dict()`
    (model, budget_flops, composition {strategy, n_examples[, avg_tokens]}, seed)."""
    return {"points": [dict(p) for p in points]}


GRID_KEYS = ("models", "n_examples", "avg_tokens", "epochs", "seeds", "budgets", "strategies", "points")


def _read_grid(path: str) -> dict:
    from tokeff.io import read_user_text

    text = read_user_text(path, "--grid")
    try:
        if path.endswith((".yaml", ".yml")):
            import yaml

            grid = yaml.safe_load(text)
        else:
            grid = json.loads(text)
    except Exception as e:  # json.JSONDecodeError / yaml.YAMLError: report, do not trace back
        raise UserError(f"--grid: cannot parse {path}: {str(e).splitlines()[0]}") from None
    if not isinstance(grid, dict):
        raise UserError(f"--grid: {path}: expected a mapping at the top level")
    unknown = sorted(str(k) for k in grid if k not in GRID_KEYS)
    if unknown:  # a misspelt axis would otherwise fall back to its default silently
        raise UserError(f"--grid: {path}: unknown key {unknown[0]!r} (keys: {', '.join(GRID_KEYS)})")
    return grid


def _list(grid: dict, key: str, default=None) -> list:
    value = grid.get(key, default)
    if value is None:
        raise UserError(f"--grid: missing {key!r}")
    return list(value) if isinstance(value, (list, tuple)) else [value]


def candidates(grid_path: str | None, space: OptionSpace, *, groups=None, new_group: bool = False
               ) -> list[tuple[Option, int]]:
    """(Option, seed) pairs: the runs that could be proposed, with their exact FLOP costs, from a
    grid file (`--grid`) or, without one, the option-space flags. With a grouped fit's `groups`
    (`space` from `grouped_space`), a candidate's model is a group (default: the space's groups),
    costed by its preset; `new_group` admits groups the fit never saw."""
    from tokeff.models.config import get_preset

    def resolve(model) -> tuple[str, str | None]:
        """(preset, group) of a candidate's model."""
        if groups is None:
            get_preset(str(model))
            return str(model), None
        groups.lookup([str(model)], new_groups=new_group, field="--grid" if grid_path else "--group-value")
        return group_preset(str(model), groups.column, "--grid" if grid_path else "--group-value"), str(model)

    grid = _read_grid(grid_path) if grid_path else {
        "models": [g for g, _ in space.groups] or list(space.models), "n_examples": list(space.n_examples),
        "avg_tokens": list(space.lengths), "epochs": list(space.epochs)}
    out = []
    try:
        if "points" in grid:
            check_candidate_count(len(grid["points"]))
            raw = [(p["model"], int(p["n_examples"]), float(p["avg_tokens"]), int(p.get("epochs", 1)),
                    int(p.get("seed", 0))) for p in grid["points"]]
        elif "strategies" in grid:
            if space.pool.lengths is None:
                raise UserError("--grid: strategies need the dataset's example lengths (--lengths FILE)")
            pairs = tuple((str(m), resolve(m)[0]) for m in _list(grid, "models"))
            for budget, seed in itertools.product(_list(grid, "budgets"), _list(grid, "seeds", [0])):
                options, _ = strategy_options(check_budget(float(budget), "--grid: budgets"), list(dict.fromkeys(p for _, p in pairs)),
                                              _list(grid, "strategies"), space.pool.lengths,
                                              epochs=[int(e) for e in _list(grid, "epochs", [1])])
                if groups is not None:
                    options, _ = with_groups(options, [], pairs)
                out += [(o, int(seed)) for o in options]
            raw = []
        else:
            axes = [_list(grid, "models"), _list(grid, "n_examples"), _list(grid, "avg_tokens"),
                    _list(grid, "epochs", [1]), _list(grid, "seeds", [0])]
            check_candidate_count(math.prod(len(a) for a in axes))  # before building them
            raw = list(itertools.product(*axes))
        for model, n, length, epochs, seed in raw:
            preset, group = resolve(model)
            if int(n) < 1 or float(length) < 1 or int(epochs) < 1:
                raise UserError(f"--grid: n_examples, avg_tokens and epochs must be positive ({model}, {n}, {length})")
            if max(float(n), float(epochs)) > MAX_COUNT:
                raise UserError(f"--grid: n_examples and epochs must be at most {MAX_COUNT:.0e} ({model}, {n}, {epochs})")
            check_context(preset, float(length), "--grid")
            flops = int(epochs) * int(n) * example_flops(preset, int(round(float(length))))
            out.append((Option(preset, int(n), float(length), int(epochs), float(flops), group=group), int(seed)))
    except UserError:
        raise  # already one line naming the grid (too many candidates, a length past the context)
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"--grid: malformed candidate ({e})") from None
    if not out and groups is not None:
        raise UserError("--grid: no candidates: give a grid file, or --n-examples and --lengths-grid "
                        "(a grouped fit's groups are the models)")
    if not out:
        raise UserError("--grid: no candidates: give a grid file, or --models, --n-examples and --lengths-grid "
                        "(a pretraining law's N is the model's size and D its tokens, n_examples x length)")
    check_candidate_count(len(out))
    return out


def composition(proposal: dict) -> dict:
    """The sweep's composition keys (the training config's data.*, tokeff.data.composition):
    a strategy's first N examples, or N examples averaging L tokens. Epochs need no key: the
    trainer passes over the data until the point's budget (E x one pass) is spent."""
    if proposal["strategy"]:
        return {"strategy": proposal["strategy"], "n_examples": proposal["n_examples"]}
    return {"strategy": "random", "n_examples": proposal["n_examples"], "avg_tokens": proposal["avg_tokens"]}


def propose(fit, cands: list[tuple[Option, int]], space: OptionSpace, budget: float, *, n_eval: int | None = None,
            horizon: float | None = None, sims: int = 64, seed: int = 0, top: int = 5,
            new_group: bool = False) -> dict:
    """Rank `cands` by expected reduction of the decision's uncertainty at `budget` per FLOP.
    For a grouped fit the candidates' groups are the models decided between (`new_group`: some
    are new models, drawn from the population).

    Returns the proposals.json payload; its "sweep_points" entry is what `tokeff sweep --points`
    runs (one point per proposal)."""
    form, samples = fit.form, fit.samples
    predict = run_predictive(fit, new_groups=new_group)
    columns = option_columns(fit)
    # The decision the runs should inform, and its uncertainty U(weights).
    if is_pretraining_form(form):
        # The N_opt draws `allocate` decides on (the law's, carried to a sweep's optima when the fit has one).
        n_PxO = fit_frontier(fit, np.array([budget])).n_opt
        uncertainty = interval_width(np.log10(n_PxO[:, 0]))
        measure = "90%-interval width of log10 N_opt"
    else:
        # Choose among the candidates' models x lengths (or strategies), each spending the budget.
        decision_space = OptionSpace(
            models=tuple(sorted({o.model for o, _ in cands})),
            lengths=() if space.strategies else tuple(sorted({int(round(o.avg_tokens)) for o, _ in cands})),
            strategies=space.strategies, epochs=tuple(sorted({o.epochs for o, _ in cands})), pool=space.pool,
            groups=tuple(sorted({(o.group, o.model) for o, _ in cands if o.group is not None})))
        opts, _, metric_PxO, _ = decide_at(predict, form.target, decision_space, budget, columns=columns)
        if not opts:
            raise UserError(f"--budget: no feasible option at {budget:.3g} FLOPs to decide between")
        uncertainty = option_entropy(metric_PxO if form.target == "accuracy" else -metric_PxO)
        measure = f"entropy (nats) of which of {len(opts)} options is best"

    # Each candidate's run per draw: the law and what it misses there (the fit's discrepancy, loss forms).
    run_PxC = predict_options(predict, [o for o, _ in cands], columns, seed=seed)
    n_eval = n_eval or (int(np.median(fit.data.n_eval)) if fit.data.n_eval is not None else 200)
    flops_C = np.array([o.flops for o, _ in cands])
    horizon = horizon or float(flops_C.max())
    reps_C = replicates(flops_C, horizon)
    eig_C = expected_information(
        run_PxC, form.target, fit.likelihood, uncertainty,
        sigma_P=np.asarray(samples["sigma"]) if form.target == "loss" else None,
        n_eval_C=np.full(len(cands), n_eval), replicates_C=reps_C, n_sims=sims, seed=seed)
    ranked = rank(eig_C, reps_C * flops_C)[: top]
    n_draws = run_PxC.shape[0]
    u_now = float(uncertainty(np.full((1, n_draws), 1.0 / n_draws))[0])

    proposals = []
    for r in ranked:
        option, seed = cands[r.index]
        proposals.append({"model": option.model, "group": option.group, "n_examples": option.n_examples,
                          "avg_tokens": option.avg_tokens, "epochs": option.epochs, "strategy": option.strategy, "seed": seed, "flops": option.flops,
                          "replicates_scored": int(reps_C[r.index]), "expected_information": r.eig,
                          "information_per_pflop": r.eig_per_flop * 1e15})
    # A grouped fit's group is the model spec the sweep runs (e.g. hf:...); `model` is its preset.
    points = [{"model": p["group"] or p["model"], "budget_flops": p["flops"], "seed": p["seed"],
               "composition": composition(p)} for p in proposals]
    grouped = {} if getattr(fit, "groups", None) is None else {"group_column": fit.groups.column}
    return {"form": form.name, **grouped, "budget_flops": budget, "uncertainty": measure, "uncertainty_now": u_now,
            "horizon_flops": float(horizon), "n_candidates": len(cands), "proposals": proposals,
            "sweep_points": sweep_points(points)}


def format_proposals(result: dict) -> str:
    """The table `tokeff propose` prints (model names whole)."""
    column = "model" if "group_column" not in result else result["group_column"]
    w = max([len(p.get("group") or p["model"]) for p in result["proposals"]] + [len(column)]) + 1
    lines = [f"decision at {result['budget_flops']:.3g} FLOPs; uncertainty = {result['uncertainty']}: now "
             f"{result['uncertainty_now']:.3g}; {result['n_candidates']} candidates, each scored as the r runs "
             f"{result['horizon_flops']:.3g} FLOPs buy; top {len(result['proposals'])} by expected reduction per FLOP:",
             f"{'#':>2} {column:<{w}}{'N':>9}{'L':>7}{'ep':>4}{'seed':>5}{'FLOPs/run':>11}{'r':>6}{'E[dU] (r runs)':>16}"
             f"{'per PFLOP':>11}"]
    for i, p in enumerate(result["proposals"], 1):
        lines.append(f"{i:>2} {p.get('group') or p['model']:<{w}}{p['n_examples']:>9}{p['avg_tokens']:>7.0f}"
                     f"{p['epochs']:>4}{p['seed']:>5}{p['flops']:>11.3g}{p['replicates_scored']:>6}"
                     f"{p['expected_information']:>16.3g}{p['information_per_pflop']:>11.3g}")
    return "\n".join(lines)
