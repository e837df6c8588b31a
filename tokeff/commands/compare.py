"""`tokeff compare DIR1 DIR2 ...`: LOO (or WAIC) comparison of fits of the same data."""

from __future__ import annotations

import argparse

HELP = "compare fitted forms on the same data by PSIS-LOO or WAIC (elpd, se, d_elpd, dse, weight)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dirs", nargs="+", help="fit directories written by `tokeff fit`")
    parser.add_argument("--ic", default="loo", choices=["loo", "waic"],
                        help="information criterion: loo (PSIS leave-one-out) or waic (default: loo)")
    parser.add_argument("--module", action="append", default=[], help="import this module or .py file first (custom forms)")


def run(args: argparse.Namespace) -> int:
    import os
    import warnings

    from tokeff.laws.forms import import_form_modules

    import_form_modules(args.module)
    from tokeff.laws.compare import compare_fits, format_table
    from tokeff.laws.fit import load_fit
    from tokeff.laws.stacking import refuse_stacked

    from tokeff.errors import UserError

    seen = set()
    for d in args.dirs:
        if os.path.realpath(d) in seen:
            raise UserError(f"dirs: {d} is given twice; compare needs different fits of the same data")
        seen.add(os.path.realpath(d))
    if len(args.dirs) < 2:
        raise UserError("dirs: give at least two fit directories")
    fits = {}
    for d in args.dirs:
        f = load_fit(d)
        refuse_stacked(f, "compare scores")
        label = f"{os.path.basename(os.path.normpath(d))} ({f.form.name}/{f.method})"
        if label in fits:  # same folder name under different parents
            label = f"{os.path.normpath(d)} ({f.form.name}/{f.method})"
        fits[label] = f
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = compare_fits(fits, ic=args.ic)
    print(format_table(table, args.ic))
    if any(f.method != "nuts" for f in fits.values()):
        print("note: non-NUTS fits (map/classic) give approximate posterior draws; treat their elpd with care")
    if table["warning"].any():
        print(f"note: warning=True means unreliable {args.ic.upper()} (Pareto k > 0.7 or WAIC variance); refit with NUTS or use more data")
    return 0
