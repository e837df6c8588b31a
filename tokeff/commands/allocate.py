"""`tokeff allocate`: what to run at a FLOP budget, with credible intervals, from a fit."""

from __future__ import annotations

import argparse
import os
import sys

from tokeff.commands._option_flags import add_option_space_arguments, option_space_from_args, refuse_new_group_alone
from tokeff.errors import UserError

MIN_BUDGET = 1e6

HELP = ("decide what to run at a FLOP budget from a fit: frontier or model x N x L (a grouped fit's groups are "
        "the models), with P(best) and regret")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("fit_dir", metavar="FIT_DIR", help="a directory written by `tokeff fit`")
    parser.add_argument("--budget", required=True, help="training FLOPs to allocate, e.g. 1e18")
    parser.add_argument("--out", required=True,
                        help="where allocation.json and the plot go: a new or empty directory, or one tokeff wrote")
    parser.add_argument("--force", action="store_true", help="allocate even if the fit's diagnostics are not ok")
    parser.add_argument("--module", action="append", default=[], metavar="MODULE",
                        help="import this module or .py file first (the fit's form is your own)")
    parser.add_argument("--frontier", choices=["auto", "law"], default="auto",
                        help="pretraining: auto carries the law's frontier to the isoFLOP optima the fit data shows"
                             " (when it is a sweep); law: the law's parameters alone")
    add_option_space_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from tokeff.decide.allocation import allocate_fit, check_fit_dir, format_table, load_checked_fit
    from tokeff.decide.options import parse_flops
    from tokeff.decide.plots import plot_budget_sweep, plot_frontier
    from tokeff.io import claim_output_dir, output_dir, write_json

    refuse_new_group_alone(args)
    budget = parse_flops(args.budget, "--budget")
    if budget < MIN_BUDGET:
        raise UserError(f"--budget: {budget:.3g} FLOPs is below the smallest budget allocated, {MIN_BUDGET:.0e} "
                        "(one token through a million-parameter model)")
    space = option_space_from_args(args)
    out = args.out
    check_fit_dir(args.fit_dir)
    # Ownership of --out, and its lock, before the fit is read: a second allocate on the same --out
    # is refused at once (held until the command returns).
    claim_output_dir(out, "allocation", allow_existing=True)
    from tokeff.laws.forms import import_form_modules

    import_form_modules(args.module)
    fit = load_checked_fit(args.fit_dir, force=args.force)
    result = allocate_fit(fit, budget, space, frontier_source=args.frontier, group_values=args.group_value,
                          new_group=args.new_group)
    for w in result["warnings"]:  # once, on stderr (the table on stdout leaves them out)
        print(f"tokeff allocate: warning: {w}", file=sys.stderr)
    plot = "frontier.png" if result["kind"] == "pretraining" else "allocation_budgets.png"
    with output_dir(out, "allocation", allow_existing=True) as tmp:
        (plot_frontier if result["kind"] == "pretraining" else plot_budget_sweep)(result, os.path.join(tmp, plot))
        write_json(os.path.join(tmp, "allocation.json"), result)
    print(format_table(result))
    print(f"wrote {os.path.join(out, 'allocation.json')} and {os.path.join(out, plot)}")
    return 0
