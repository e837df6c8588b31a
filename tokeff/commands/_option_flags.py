"""The option-space flags `tokeff allocate` and `tokeff propose` share (what may be chosen, and
what data exists), turned into a tokeff.decide.options.OptionSpace."""

from __future__ import annotations

import argparse

from tokeff.errors import UserError


def add_option_space_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", help="comma-separated candidate presets (fine-tuning forms)")
    parser.add_argument("--lengths-grid", help="comma-separated candidate average example lengths (tokens)")
    parser.add_argument("--n-examples", help="comma-separated example counts; allocate's default: as many as the budget buys "
                        "(propose needs them, or a --grid)")
    parser.add_argument("--epochs", help="comma-separated epoch counts (1 unless given)")
    parser.add_argument("--strategies", help="comma-separated subsampling strategies (few_long, many_short, "
                        "balanced) applied to the dataset's lengths (needs --lengths)")
    parser.add_argument("--lengths", metavar="FILE", help="the available examples' token lengths: a JSON list "
                        "or one integer per line")
    parser.add_argument("--max-examples", type=int, help="how many examples exist (when lengths are unknown)")
    parser.add_argument("--row-len", type=int, help="cost strategies as a packed sweep does: rows of this many "
                        "tokens, one epoch of --fill x the budget (default: each example at its own length)")
    parser.add_argument("--fill", type=float, default=1.0, help="with --row-len: the sweep's token_budget_fill")
    parser.add_argument("--group-value", nargs="+", metavar="G", help="grouped fits: choose among these groups only "
                        "(model specs, e.g. hf:HuggingFaceTB/SmolLM2-135M-Instruct; default: every fitted group)")
    parser.add_argument("--new-group", action="store_true", help="grouped fits: a --group-value the fit never saw "
                        "is a new model drawn from the population")


def option_space_from_args(args: argparse.Namespace):
    from tokeff.decide.options import option_space

    return option_space(models=args.models, lengths_grid=args.lengths_grid, strategies=args.strategies,
                        epochs=args.epochs if args.epochs is not None else "1", n_examples=args.n_examples, lengths_file=args.lengths,
                        max_examples=args.max_examples, row_len=args.row_len, fill=args.fill)


def refuse_new_group_alone(args: argparse.Namespace) -> None:
    """`--new-group` only says how to read `--group-value` labels; without them it would be ignored."""
    if args.new_group and not args.group_value:
        raise UserError("--new-group: needs --group-value naming the new group(s) to draw from the population")
