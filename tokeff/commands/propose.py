"""`tokeff propose`: rank candidate runs by expected information about the decision per FLOP."""

from __future__ import annotations

import argparse
import os

from tokeff.commands._option_flags import add_option_space_arguments, option_space_from_args, refuse_new_group_alone
from tokeff.errors import UserError

HELP = ("rank candidate runs (model x N x L; a grouped fit's groups are the models) by expected information "
        "about the allocation per FLOP")


def add_arguments(parser: argparse.ArgumentParser) -> None:
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
    parser.add_argument("--out", required=True, help="where proposals.json and sweep_points.json go: a new or empty"
                        " directory, or one tokeff wrote")
    parser.add_argument("--force", action="store_true", help="propose even if the fit's diagnostics are not ok")
    parser.add_argument("--module", action="append", default=[], metavar="MODULE",
                        help="import this module or .py file first (the fit's form is your own)")
    add_option_space_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from tokeff.decide.allocation import check_fit_dir, load_checked_fit
    from tokeff.decide.options import parse_flops
    from tokeff.decide.proposals import candidates, format_proposals, propose
    from tokeff.io import claim_output_dir, output_dir, write_json
    from tokeff.resources import check_propose_size, check_seed

    refuse_new_group_alone(args)
    if args.top < 1:
        raise UserError(f"--top: must be positive, got {args.top}")
    if args.n_eval is not None and args.n_eval < 1:
        raise UserError(f"--n-eval: must be a positive number of questions, got {args.n_eval}")
    check_seed(args.seed, "--seed")
    if args.sims < 2:
        raise UserError(f"--sims: must be at least 2, got {args.sims}")
    if args.grid:  # the grid file lists the candidates; these flags would be ignored (--strategies is
        # not: it makes the decision the runs inform one among strategies)
        given = [flag for flag, value in (("--models", args.models), ("--n-examples", args.n_examples),
                                          ("--lengths-grid", args.lengths_grid), ("--epochs", args.epochs))
                 if value is not None]
        if given:
            raise UserError(f"{given[0]}: the --grid file lists the candidates; give one or the other")
    space = option_space_from_args(args)
    budget = parse_flops(args.budget, "--budget") if args.budget else None
    horizon = parse_flops(args.horizon, "--horizon") if args.horizon else None
    out = args.out
    check_fit_dir(args.fit_dir)
    # Ownership of --out, and its lock, before the fit is read and the candidates are built: a
    # second propose on the same --out is refused at once (held until the command returns).
    claim_output_dir(out, "proposals", allow_existing=True)
    from tokeff.laws.forms import import_form_modules

    import_form_modules(args.module)
    fit = load_checked_fit(args.fit_dir, force=args.force)
    from tokeff.decide.allocation import refuse_grouped_pretraining
    from tokeff.laws.stacking import refuse_stacked

    refuse_stacked(fit, "propose reweights")
    refuse_grouped_pretraining(fit, "propose informs")
    if args.n_eval is not None and fit.form.target != "accuracy":
        raise UserError(f"--n-eval: applies to accuracy fits; {fit.form.name} is a loss form")
    groups = getattr(fit, "groups", None)
    if groups is not None:
        from tokeff.decide.options import grouped_space

        space = grouped_space(fit, space, args.group_value, new_group=args.new_group)
    elif args.group_value or args.new_group:
        raise UserError("--group-value: the fit is not grouped (fit with --group COLUMN)")
    cands = candidates(args.grid, space, groups=groups, new_group=args.new_group)
    budget = budget if budget is not None else max(o.flops for o, _ in cands)
    n_draws = len(next(iter(fit.samples.values())))
    check_propose_size(n_candidates=len(cands), sims=args.sims, n_draws=n_draws)
    result = propose(fit, cands, space, budget, n_eval=args.n_eval, horizon=horizon, sims=args.sims,
                     seed=args.seed, top=args.top, new_group=args.new_group)
    points = result.pop("sweep_points")
    with output_dir(out, "proposals", allow_existing=True) as tmp:
        write_json(os.path.join(tmp, "proposals.json"), result)
        write_json(os.path.join(tmp, "sweep_points.json"), points)
    print(format_proposals(result))
    print(f"wrote {os.path.join(out, 'proposals.json')} and {os.path.join(out, 'sweep_points.json')}")
    return 0
