"""`tokeff predict FIT_DIR (--at VAR=VALUE ... | --table CSV) --out DIR`: predictions with intervals,
per group, and which group to pick."""

from __future__ import annotations

import argparse

from tokeff.commands._option_flags import refuse_new_group_alone

HELP = "predict a fitted law at given inputs (per group for grouped fits): intervals, P(best), the choice"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("fit_dir", help="a directory written by `tokeff fit`")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--at", nargs="+", metavar="VAR=VALUE", help="one point, every input of the form, e.g. --at D=1.6e6")
    where.add_argument("--table", metavar="CSV", help="a CSV of points: one column per input (named as the input or its fit column)")
    parser.add_argument("--group-value", nargs="+", metavar="G",
                        help="grouped fits: predict these groups only (default: every fitted group)")
    parser.add_argument("--new-group", action="store_true",
                        help="grouped fits: a --group-value the fit never saw is a new group drawn from the population")
    parser.add_argument("--n-eval", type=float, help="accuracy forms: eval-set size of a new observation, a whole"
                        " positive number (default: the fit data's median)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True,
                        help="output directory: new or empty (a tokeff predict already there needs --force)")
    parser.add_argument("--force", action="store_true", help="replace the tokeff predict already at --out (only the"
                        " files tokeff wrote; another kind of output is refused)")
    parser.add_argument("--module", action="append", default=[], help="import this module first (custom forms)")


def run(args: argparse.Namespace) -> int:
    from tokeff.io import claim_output_dir
    from tokeff.laws.forms import import_form_modules

    refuse_new_group_alone(args)
    claim_output_dir(args.out, "predict", force=args.force)
    import_form_modules(args.module)
    from tokeff.laws.data import read_table
    from tokeff.laws.fit import load_fit
    from tokeff.laws.predictions import format_predictions, parse_at, predict_points, save_predictions, table_inputs

    fit = load_fit(args.fit_dir)
    if args.at:
        inputs = parse_at(args.at, fit.form)
    else:
        from tokeff.errors import UserError

        try:
            frame = read_table(args.table)
        except UserError as e:
            raise UserError(f"--table: {e}") from None
        groups = getattr(fit, "groups", None)
        inputs = table_inputs(frame, fit.form, fit.data.columns, groups.column if groups is not None else None)
    result = predict_points(fit, inputs, group_values=args.group_value, new_group=args.new_group,
                            n_eval=args.n_eval, seed=args.seed)
    path = save_predictions(result, args.out, force=args.force)
    print(format_predictions(result))
    print(f"-> {path}/predictions.csv, predictions.json")
    return 0
