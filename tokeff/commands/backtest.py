"""`tokeff backtest DATA --form NAME --by EXPR --out DIR`: do a form's intervals hold on runs it did not see?"""

from __future__ import annotations

import argparse
import os

HELP = "refit on the runs below a cut (by compute, say) and score the predictions of the runs above it"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from tokeff.commands import fit as fit_command

    fit_command.add_arguments(parser, grouped=False, kind="backtest")  # every `tokeff fit` option but hierarchical fits
    parser.add_argument("--by", required=True, metavar="EXPR",
                        help="order rows by this column or product of columns, e.g. params*tokens_seen")
    parser.add_argument("--frac", type=float, default=0.33, help="fraction of rows (the top ones) to hold out")
    parser.add_argument("--cuts", type=int, default=1,
                        help="rolling origins through the held-out fraction (each fit predicts the next block)")
    parser.add_argument("--decision", choices=["loss", "frontier", "choice", "model"], default="loss",
                        help="loss: score held-out runs' losses; frontier: group rows into budgets by --by and score"
                             " the compute-optimal N_opt at the held-out budgets against the sweep's own optimum;"
                             " choice (fine-tuning forms): choose among each held-out budget's runs, score against them;"
                             " model: a hierarchical fit per --group (e.g. model), the top --frac of each group's rows"
                             " held out, scored as a choice among the groups at their largest held-out points")
    parser.add_argument("--group", metavar="COLUMN",
                        help="runs sharing a budget, for within-group decision accuracy (default: a 'budget' column);"
                             " with --decision model: the column naming each curve's group")
    parser.add_argument("--pool", metavar="P1,P2",
                        help="with --decision model: the parameters pooled across groups (default: all)")
    fit_command.add_window_argument(parser, "--decision model")


def run(args: argparse.Namespace) -> int:
    from tokeff.commands.fit import fit_settings
    from tokeff.devices import split_cpu_for_chains
    from tokeff.io import claim_output_dir, output_dir, write_json

    from tokeff.commands.fit import check_form_flag, check_window, refuse_init_grouped
    from tokeff.laws.stacking import form_names

    form_names(args.form)  # an empty --form, or an empty name in a stack, fails before anything else
    check_window(args, "--decision model", args.decision == "model")
    refuse_init_grouped(args, "--decision model", args.decision == "model")
    claim_output_dir(args.out, "backtest", force=args.force)  # before any fit: a bad --out fails at once
    if args.method == "nuts":
        split_cpu_for_chains(args.chains)
    from tokeff.laws.backtest import backtest, plot
    from tokeff.laws.forms import import_form_modules

    import_form_modules(args.module)
    check_form_flag(args.form)
    from tokeff.laws.data import parse_mapping

    settings, mapping = fit_settings(args), parse_mapping(args.map)
    if args.pool is not None and args.decision != "model":
        from tokeff.errors import UserError

        raise UserError("--pool: needs --decision model")
    if args.decision == "model":
        from tokeff.commands.fit import refuse_grouped_stack

        refuse_grouped_stack(args.form)
        return _run_model_selection(args, settings, mapping)
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
    for i, c in enumerate(report["cuts"]):
        if "stacking_weights" in c:  # `--form a,b,c`
            print(f"cut {i + 1} stacking weights: " + "  ".join(f"{k} {v:.3f}" for k, v in c["stacking_weights"].items()))
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


def _run_model_selection(args: argparse.Namespace, settings, mapping: dict) -> int:
    from tokeff.errors import UserError
    from tokeff.io import output_dir, write_json
    from tokeff.laws.selection import selection_backtest

    if not args.group:
        raise UserError("--group: --decision model needs the column naming each curve's group (e.g. --group model)")
    report = selection_backtest(args.data, args.form, args.group, by=args.by, frac=args.frac, settings=settings,
                                pool=args.pool, window=args.window, mapping=mapping, target=args.target,
                                seed=args.seed)
    with output_dir(args.out, "backtest", force=args.force) as tmp:
        write_json(os.path.join(tmp, "backtest.json"), report)
    s = report["selection"]
    print(f"selection backtest {report['form']} per {report['group']}: {report['n_groups']} groups, fitted"
          f" {report['n_fit']} rows, predicted {report['n_held_out']} (top {report['frac']:g} of each group by"
          f" {report['by']}) -> {args.out}")
    from tokeff.laws.window import format_window

    print(format_window(report["window"]))
    print("coverage  " + "  ".join(f"{k}: {v:.2f}" for k, v in report["coverage"].items()))
    print(f"at each group's largest held-out point: Pearson r {s['pearson']:.3f}, Spearman r {s['spearman']:.3f};"
          f" pick {s['pick']} (P(best) {s['p_best_pick']:.2f}), observed rank {s['pick_rank']} of {s['n_groups']},"
          f" regret {s['regret']:.4g}; observed best {s['best']}; Brier score of P(best) {s['brier']:.3f};"
          f" fit ok: {report['fit_ok']}")
    print(format_far_ends(report))
    return 0


def format_far_ends(report: dict) -> str:
    """Each group's predicted and observed value at its largest held-out point, best observed first
    (labels whole: model names can be long)."""
    observed, predicted = report["observed"], report["predicted_median"]
    w = max(len(str(g)) for g in [*observed, report["group"]])
    reverse = observed[report["selection"]["best"]] >= max(observed.values())  # best is highest: accuracy
    lines = [f"{report['group']:<{w}}  {'predicted':>10}  {'observed':>10}"]
    for g in sorted(observed, key=observed.get, reverse=reverse):
        lines.append(f"{g:<{w}}  {predicted[g]:>10.4g}  {observed[g]:>10.4g}")
    return "\n".join(lines)
