"""`tokeff backtest DATA --form NAME --by EXPR --out DIR`: do a form's intervals hold on runs it did not see?"""

from __future__ import annotations

import argparse
import os

HELP = "refit on the runs below a cut (by compute, say) and score the predictions of the runs above it"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from tokeff.commands import fit as fit_command

    fit_command.add_arguments(parser, grouped=False)  # every `tokeff fit` option but hierarchical fits
    parser.add_argument("--by", required=True, metavar="EXPR",
                        help="order rows by this column or product of columns, e.g. params*tokens_seen")
    parser.add_argument("--frac", type=float, default=0.33, help="fraction of rows (the top ones) to hold out")
    parser.add_argument("--cuts", type=int, default=1,
                        help="rolling origins through the held-out fraction (each fit predicts the next block)")
    parser.add_argument("--decision", choices=["loss", "frontier", "choice"], default="loss",
                        help="loss: score held-out runs' losses; frontier: group rows into budgets by --by and score"
                             " the compute-optimal N_opt at the held-out budgets against the sweep's own optimum;"
                             " choice (fine-tuning forms): choose among each held-out budget's runs, score against them")
    parser.add_argument("--group", metavar="COLUMN",
                        help="runs sharing a budget, for within-group decision accuracy (default: a 'budget' column)")


def run(args: argparse.Namespace) -> int:
    from tokeff.commands.fit import fit_settings
    from tokeff.devices import split_cpu_for_chains
    from tokeff.io import claim_output_dir, output_dir, write_json

    claim_output_dir(args.out, "backtest", force=args.force)  # before any fit: a bad --out fails at once
    if args.method == "nuts":
        split_cpu_for_chains(args.chains)
    from tokeff.laws.backtest import backtest, plot
    from tokeff.laws.forms import import_form_modules

    import_form_modules(args.module)
    from tokeff.laws.data import parse_mapping

    settings, mapping = fit_settings(args), parse_mapping(args.map)
    if args.decision != "loss":
        return _run_decision(args, settings, mapping)
    report = backtest(args.data, args.form, settings, by=args.by, frac=args.frac, cuts=args.cuts,
                      group=args.group, mapping=mapping, target=args.target, progress=True)
    with output_dir(args.out, "backtest", force=args.force) as tmp:
        write_json(os.path.join(tmp, "backtest.json"), report)
        if not args.no_plots:
            plot(report, os.path.join(tmp, "backtest.png"))
    if report["excluded"]:
        from tokeff.laws.data import format_exclusions

        print(format_exclusions(report["excluded"], report["columns"]["target"]))
    cov, da = report["coverage"], report["decision_accuracy"]
    print(f"backtest {report['form']} ({report['method']}): fitted {report['n_fit']} rows, predicted"
          f" {report['n_held_out']} (up to x{report['extrapolation_factor']:.2g} in {report['by']}) -> {args.out}")
    error = report["median_abs_pct_error"]
    print("coverage  " + "  ".join(f"{k}: {v:.2f}" for k, v in cov.items())
          + ("   predictions not finite" if error is None else f"   median |error| {error:.2f}%"))
    sc = report["scores"]
    if sc["crps_rel_pct"] is None:
        print("scores: none (predictions not finite)")
    else:
        print(f"scores    CRPS {sc['crps_rel_pct']:.3f}% of the {report['target']}   interval score "
              + "  ".join(f"{k}: {v:.2f}%" for k, v in sc["interval_score_rel_pct"].items())
              + f"   log density {sc['log_density']:.2f}   median 90% width {sc['sharpness_90_pct']:.2f}%")
    within = "-" if da["within_group"] is None else f"{da['within_group']:.2f}"
    overall = "-" if da["all"] is None else f"{da['all']:.2f}"
    print(f"decision accuracy {overall} (within budget groups {within}); all fits ok: {report['all_fits_ok']}")
    return 0


def _run_decision(args: argparse.Namespace, settings, mapping: dict) -> int:
    from tokeff.decide import allocation_backtest, choice_backtest
    from tokeff.io import output_dir, write_json

    if args.decision == "frontier":
        report = allocation_backtest.allocation_backtest(args.data, args.form, settings, by=args.by, frac=args.frac,
                                                         mapping=mapping, target=args.target)
        format_report = allocation_backtest.format_report
    else:
        report = choice_backtest.choice_backtest(args.data, args.form, settings, by=args.by, frac=args.frac,
                                                 mapping=mapping, target=args.target)
        format_report = choice_backtest.format_report
    with output_dir(args.out, "backtest", force=args.force) as tmp:
        write_json(os.path.join(tmp, "backtest.json"), report)
        if not args.no_plots and args.decision == "frontier":
            allocation_backtest.plot(report, os.path.join(tmp, "backtest.png"))
    print(format_report(report))
    print(f"wrote {os.path.join(args.out, 'backtest.json')}")
    return 0
