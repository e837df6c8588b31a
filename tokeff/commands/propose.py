"""`tokeff propose`: rank candidate runs by expected information about the decision per FLOP."""

from __future__ import annotations

import argparse
import itertools
import json
import os

from tokeff.errors import UserError

HELP = "rank candidate runs (model x N x L) by expected information about the allocation per FLOP"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from tokeff.commands.allocate import add_option_space_arguments

    parser.add_argument("fit_dir", metavar="FIT_DIR", help="a directory written by `tokeff fit`")
    parser.add_argument("--grid", metavar="FILE", help="candidates (.json/.yaml): {models, n_examples, "
                        "avg_tokens, epochs, seeds} as a product, {models, budgets, strategies, seeds} "
                        "(needs --lengths), or {points: [...]}; default: the --models/--n-examples/"
                        "--lengths-grid/--epochs flags")
    parser.add_argument("--top", type=int, default=5, help="how many proposals to print and write (default 5)")
    parser.add_argument("--budget", help="the budget whose decision the runs should inform "
                        "(default: the most expensive candidate's cost)")
    parser.add_argument("--n-eval", type=int, help="eval-set size of a proposed run (accuracy fits; "
                        "default: the fit's median)")
    parser.add_argument("--horizon", help="score each candidate as the replicates of it that this many FLOPs "
                        "buy (default: the most expensive candidate's cost; less myopic than one run each)")
    parser.add_argument("--sims", type=int, default=64, help="simulated outcomes per candidate (default 64)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="where proposals.json and sweep_points.json go (default: FIT_DIR)")
    parser.add_argument("--force", action="store_true", help="propose even if the fit's diagnostics are not ok")
    add_option_space_arguments(parser)


def _read_grid(path: str) -> dict:
    if not os.path.isfile(path):
        raise UserError(f"--grid: file not found: {path}")
    with open(path) as f:
        text = f.read()
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
    return grid


def _list(grid: dict, key: str, default=None) -> list:
    value = grid.get(key, default)
    if value is None:
        raise UserError(f"--grid: missing {key!r}")
    return list(value) if isinstance(value, (list, tuple)) else [value]


def candidates(args: argparse.Namespace, space) -> list[tuple]:
    """(Option, seed) pairs: the runs that could be proposed, with their exact FLOP costs."""
    from tokeff.models.config import get_preset
    from tokeff.scaling.allocate import Option, example_flops, strategy_options

    grid = _read_grid(args.grid) if args.grid else {
        "models": list(space.models), "n_examples": list(space.n_examples),
        "avg_tokens": list(space.lengths), "epochs": list(space.epochs)}
    out = []
    try:
        if "points" in grid:
            raw = [(p["model"], int(p["n_examples"]), float(p["avg_tokens"]), int(p.get("epochs", 1)),
                    int(p.get("seed", 0))) for p in grid["points"]]
        elif "strategies" in grid:
            if space.pool.lengths is None:
                raise UserError("--grid: strategies need the dataset's example lengths (--lengths FILE)")
            for budget, seed in itertools.product(_list(grid, "budgets"), _list(grid, "seeds", [0])):
                options, _ = strategy_options(float(budget), [str(m) for m in _list(grid, "models")],
                                              _list(grid, "strategies"), space.pool.lengths,
                                              epochs=[int(e) for e in _list(grid, "epochs", [1])])
                out += [(o, int(seed)) for o in options]
            raw = []
        else:
            raw = list(itertools.product(_list(grid, "models"), _list(grid, "n_examples"), _list(grid, "avg_tokens"),
                                         _list(grid, "epochs", [1]), _list(grid, "seeds", [0])))
        for model, n, length, epochs, seed in raw:
            get_preset(str(model))
            if int(n) < 1 or float(length) < 1 or int(epochs) < 1:
                raise UserError(f"--grid: n_examples, avg_tokens and epochs must be positive ({model}, {n}, {length})")
            flops = int(epochs) * int(n) * example_flops(str(model), int(round(float(length))))
            out.append((Option(str(model), int(n), float(length), int(epochs), float(flops)), int(seed)))
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"--grid: malformed candidate ({e})") from None
    if not out:
        raise UserError("--grid: no candidates (give a grid file, or --models, --n-examples and --lengths-grid)")
    return out


def composition(proposal: dict) -> dict:
    """The sweep's composition keys (the training config's data.*, tokeff.data.composition):
    a strategy's first N examples, or N examples averaging L tokens. Epochs need no key: the
    trainer passes over the data until the point's budget (E x one pass) is spent."""
    if proposal["strategy"]:
        return {"strategy": proposal["strategy"], "n_examples": proposal["n_examples"]}
    return {"strategy": "random", "n_examples": proposal["n_examples"], "avg_tokens": proposal["avg_tokens"]}


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from tokeff.commands.allocate import option_space, positive_float
    from tokeff.io import claim_output_dir, output_dir, write_json
    from tokeff.scaling import allocate as al
    from tokeff.scaling import propose as pr

    if args.top < 1:
        raise UserError(f"--top: must be positive, got {args.top}")
    if args.sims < 2:
        raise UserError(f"--sims: must be at least 2, got {args.sims}")
    space = option_space(args)
    cands = candidates(args, space)
    budget = positive_float(args.budget, "--budget") if args.budget else max(o.flops for o, _ in cands)
    out = args.out or args.fit_dir
    claim_output_dir(out, "proposals", allow_existing=True)
    fit = al.load_checked_fit(args.fit_dir, force=args.force)
    form, samples = fit.form, fit.samples

    # The decision the runs should inform, and its uncertainty U(weights).
    if al.is_pretraining_form(form):
        n_SxK, _ = al.frontier(form, samples, np.array([budget]))
        uncertainty = pr.interval_width(np.log10(n_SxK[:, 0]))
        measure = "90%-interval width of log10 N_opt"
    else:
        # Choose among the candidates' models x lengths (or strategies), each spending the budget.
        decision_space = al.OptionSpace(
            models=tuple(sorted({o.model for o, _ in cands})),
            lengths=() if space.strategies else tuple(sorted({int(round(o.avg_tokens)) for o, _ in cands})),
            strategies=space.strategies, epochs=tuple(sorted({o.epochs for o, _ in cands})), pool=space.pool)
        opts, _, metric_SxK, _ = al.decide_at(form, samples, decision_space, budget, columns=fit.data.columns)
        if not opts:
            raise UserError(f"--budget: no feasible option at {budget:.3g} FLOPs to decide between")
        uncertainty = pr.option_entropy(metric_SxK if form.target == "accuracy" else -metric_SxK)
        measure = f"entropy (nats) of which of {len(opts)} options is best"

    lik = fit.likelihood
    noise = pr.Noise(form.target, lik.kind, lik.df, lik.chance)
    inputs_C = al.option_inputs([o for o, _ in cands], fit.data.columns)
    mean_SxC = al.predicted_metric(form.mean, samples, inputs_C)
    n_eval = args.n_eval or (int(np.median(fit.data.n_eval)) if fit.data.n_eval is not None else 200)
    flops_C = np.array([o.flops for o, _ in cands])
    horizon = positive_float(args.horizon, "--horizon") if args.horizon else flops_C.max()
    reps_C = pr.replicates(flops_C, horizon)
    eig_C = pr.expected_information(
        mean_SxC, noise, uncertainty, sigma_S=np.asarray(samples["sigma"]) if form.target == "loss" else None,
        n_eval_C=np.full(len(cands), n_eval), replicates_C=reps_C, n_sims=args.sims, seed=args.seed)
    ranked = pr.rank(eig_C, reps_C * flops_C)[: args.top]
    n_draws = mean_SxC.shape[0]
    u_now = float(uncertainty(np.full((1, n_draws), 1.0 / n_draws))[0])

    proposals = []
    for r in ranked:
        option, seed = cands[r.index]
        proposals.append({"model": option.model, "n_examples": option.n_examples, "avg_tokens": option.avg_tokens,
                          "epochs": option.epochs, "strategy": option.strategy, "seed": seed, "flops": option.flops,
                          "replicates_scored": int(reps_C[r.index]), "expected_information": r.eig,
                          "information_per_pflop": r.eig_per_flop * 1e15})
    points = [{"model": p["model"], "budget_flops": p["flops"], "seed": p["seed"], "composition": composition(p)}
              for p in proposals]
    with output_dir(out, "proposals", allow_existing=True) as tmp:
        write_json(os.path.join(tmp, "proposals.json"), {
            "form": form.name, "budget_flops": budget, "uncertainty": measure, "uncertainty_now": u_now,
            "n_candidates": len(cands), "proposals": proposals})
        write_json(os.path.join(tmp, "sweep_points.json"), pr.sweep_points(points))

    print(f"decision at {budget:.3g} FLOPs; uncertainty = {measure}: now {u_now:.3g}; "
          f"{len(cands)} candidates, each scored as the r runs {horizon:.3g} FLOPs buy; "
          f"top {len(proposals)} by expected reduction per FLOP:")
    print(f"{'#':>2} {'model':<16}{'N':>9}{'L':>7}{'ep':>4}{'seed':>5}{'FLOPs/run':>11}{'r':>6}{'E[dU] (r runs)':>16}"
          f"{'per PFLOP':>11}")
    for i, p in enumerate(proposals, 1):
        print(f"{i:>2} {p['model']:<16}{p['n_examples']:>9}{p['avg_tokens']:>7.0f}{p['epochs']:>4}{p['seed']:>5}"
              f"{p['flops']:>11.3g}{p['replicates_scored']:>6}{p['expected_information']:>16.3g}"
              f"{p['information_per_pflop']:>11.3g}")
    print(f"wrote {os.path.join(out, 'proposals.json')} and {os.path.join(out, 'sweep_points.json')}")
    return 0
