"""`tokeff fit DATA --form NAME --out DIR`: fit a scaling-law form to a results table."""

from __future__ import annotations

import argparse

HELP = "fit a scaling-law form to a results table (NUTS, MAP/Laplace or the classic Huber/L-BFGS fit)"


def add_arguments(parser: argparse.ArgumentParser, *, grouped: bool = True, kind: str = "fit") -> None:
    """The `tokeff fit` flags; `kind` is what --out holds and --force replaces (backtest: "backtest")."""
    parser.add_argument("data", help="results table (.csv or .jsonl)")
    parser.add_argument("--form", required=True,
                        help="registered form name (e.g. chinchilla, volume); a,b,c stacks those forms' predictive"
                             " distributions, weighted by leave-future-out log score")
    parser.add_argument("--out", required=True,
                        help=f"output directory: new or empty (a tokeff {kind} already there needs --force)")
    parser.add_argument("--force", action="store_true",
                        help=f"replace the tokeff {kind} already at --out (only the files tokeff wrote; another kind of"
                             " output is refused)")
    parser.add_argument("--target", help="target column (default: eval_loss for loss forms, accuracy otherwise)")
    parser.add_argument("--map", action="extend", nargs="+", default=[], metavar="VAR=COLUMN",
                        help="inputs or target to columns, e.g. --map N=params D=tokens (or repeat --map);"
                             " a*b multiplies columns, e.g. V=n_examples*avg_tokens")
    parser.add_argument("--method", default="nuts", choices=["nuts", "map", "classic"],
                        help="nuts: full posterior by NUTS; map: the posterior's mode with a Laplace"
                             " approximation (seconds); classic: Huber loss on log loss, L-BFGS, bootstrap"
                             " intervals (default: nuts)")
    parser.add_argument("--chains", type=int, default=4, help="NUTS chains, run in parallel (default 4, at most 64)")
    parser.add_argument("--draws", type=int, default=1000,
                        help="NUTS draws kept per chain (default 1000, at most 1,000,000)")
    parser.add_argument("--warmup", type=int, default=1000,
                        help="NUTS adaptation steps per chain, not kept (default 1000, at most 1,000,000)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the sampler, in [0, 2^32 - 1] (default 0)")
    parser.add_argument("--target-accept", type=float, default=0.98,
                        help="NUTS target acceptance probability (higher: smaller steps, fewer divergences)")
    parser.add_argument("--init", default="auto", choices=["auto", "prior", "laplace"],
                        help="where NUTS chains start; laplace: draws of the MAP/Laplace approximation with twice its"
                             " sd (apart, but inside the posterior); prior: draws from the priors;"
                             " auto: laplace for loss forms, prior for accuracy forms (a hierarchical fit starts"
                             " at the prior medians and takes no --init)")
    parser.add_argument("--bootstrap", type=int, default=4000,
                        help="bootstrap resamples (--method classic; default 4000, at most 100,000)")
    parser.add_argument("--likelihood", default="auto", choices=["auto", "normal", "student_t", "failures"],
                        help="noise model on log loss (loss forms); failures: Student-t(4) plus a learned share of"
                             " runs that trained worse than the law (one-sided); student_t: Student-t(4) alone"
                             " (outliers down-weighted, symmetric); normal: Gaussian (every run weighs fully);"
                             " auto: failures")
    parser.add_argument("--discrepancy", default="extrapolation", choices=["extrapolation", "none"],
                        help="loss forms; extrapolation: widen predictive intervals with the squared log-distance"
                             " beyond the fitted range, at a rate learned by internal leave-future-out;"
                             " none: intervals from the posterior and the likelihood's noise alone")
    parser.add_argument("--chance", type=float, default=0.0, help="chance accuracy (accuracy forms; 0.25 for 4-way MC)")
    parser.add_argument("--prior", action="append", default=[], metavar="PARAM=SPEC",
                        help="override a prior, e.g. --prior alpha='uniform(0.1, 0.6)'")
    parser.add_argument("--module", action="append", default=[],
                        help="import this module (a name, searched in the current directory too, or a path to a"
                             " .py file) first: it may register your own forms")
    parser.add_argument("--drop-invalid", action="store_true", help="drop rows with NaN/inf inputs instead of refusing")
    parser.add_argument("--no-exclude", action="store_true",
                        help="keep every row: no exclusion of failed runs (non-finite target) or diverged runs"
                             " (loss above the far-out fence); a non-finite target is then refused")
    if grouped:
        add_group_arguments(parser)
    parser.add_argument("--no-plots", action="store_true", help="write no PNG plots (faster; the JSON and posterior"
                        " are the same)")


def add_group_arguments(parser: argparse.ArgumentParser) -> None:
    """--group, --pool and --window: hierarchical fits."""
    parser.add_argument("--group", metavar="COLUMN",
                        help="hierarchical fit: one law per value of COLUMN (e.g. model), partially pooled"
                             " through population distributions (nuts or map)")
    parser.add_argument("--pool", metavar="P1,P2",
                        help="with --group: the parameters pooled across groups (default: all); the others"
                             " are one value shared by every group")
    add_window_argument(parser, "--group")


def add_window_argument(parser: argparse.ArgumentParser, needs: str) -> None:
    from tokeff.laws.window import DEFAULT

    parser.add_argument("--window", metavar="all|auto|K",
                        help=f"with {needs}: which of each group's rows the law is fitted to: all, K (each group's K"
                             " rows of largest inputs, K >= 3), or auto (K chosen by leave-future-out within the"
                             " rows: the window whose fits best predicted each group's top rows; a curve's"
                             f" start that the form does not describe is left out) (default: {DEFAULT})")


def refuse_init_grouped(args: argparse.Namespace, needs: str, grouped: bool) -> None:
    """A hierarchical fit starts its chains at the prior medians (`tokeff.laws.hierarchy`): an --init
    there would be ignored, so it is refused rather than read as used."""
    from tokeff.errors import UserError

    if grouped and args.init != "auto":
        raise UserError(f"--init: applies to fits without {needs}; a hierarchical fit's chains start at the"
                        " prior medians")


def check_window(args: argparse.Namespace, needs: str, grouped: bool) -> None:
    """A bad or misplaced --window fails before anything is written."""
    from tokeff.errors import UserError
    from tokeff.laws.window import parse_window

    if args.window is None:
        return
    if not grouped:
        raise UserError(f"--window: needs {needs}")
    parse_window(args.window)


def run(args: argparse.Namespace) -> int:
    from tokeff.devices import split_cpu_for_chains
    from tokeff.io import claim_output_dir

    from tokeff.laws.stacking import form_names

    form_names(args.form)  # an empty --form, or an empty name in a stack, fails before anything else
    check_window(args, "--group COLUMN", bool(args.group))
    refuse_init_grouped(args, "--group", bool(args.group))
    claim_output_dir(args.out, "fit", force=args.force)  # before the fit: a bad --out fails at once

    if args.method == "nuts":
        split_cpu_for_chains(args.chains)  # before any JAX work: chains in parallel on a CPU
    from tokeff.laws.forms import import_form_modules

    import_form_modules(args.module)
    check_form_flag(args.form)
    from tokeff.laws.data import format_exclusions, parse_mapping
    from tokeff.laws.diagnostics import format_diagnostics
    from tokeff.laws.fit import fit

    settings = fit_settings(args)
    if args.pool is not None and not args.group:
        from tokeff.errors import UserError

        raise UserError("--pool: needs --group COLUMN")
    if args.group:
        return _run_grouped(args, settings)
    from tokeff.laws.stacking import fit_stacked, form_names

    if form_names(args.form):  # `--form a,b,c`: the stack of those forms
        stack = fit_stacked(args.data, args.form, settings, mapping=parse_mapping(args.map), target=args.target)
        path = stack.save(args.out, plots=not args.no_plots, force=args.force)
        print(f"stacked {stack.name} ({settings.method}) on {stack.data.n_points} points -> {path}")
        if stack.data.excluded:
            print(format_exclusions(stack.data.excluded, stack.data.columns["target"]))
        print("stacking weights (leave-future-out log score): "
              + "  ".join(f"{k} {v:.3f}" for k, v in stack.summary["weights"].items()))
        print(format_diagnostics(stack.diagnostics))
        return 0
    result = fit(args.data, args.form, settings, mapping=parse_mapping(args.map), target=args.target)
    path = result.save(args.out, plots=not args.no_plots, force=args.force)
    s = result.summary
    print(f"{s['form']} ({s['method']}) on {s['n_points']} points in {s['wall_seconds']:.1f} s -> {path}")
    if s["excluded"]:
        print(format_exclusions(s["excluded"], s["columns"]["target"]))
    label = "bootstrap" if s["method"] == "classic" else "posterior"
    print(f"{'param':<13} {'median':>11} {'q05':>11} {'q95':>11} {'r_hat':>7} {'ess_bulk':>9}   ({label})")
    for name, p in s["params"].items():
        r_hat = f"{p['r_hat']:7.3f}" if p["r_hat"] is not None else f"{'-':>7}"
        ess = f"{p['ess_bulk']:9.0f}" if p["ess_bulk"] is not None else f"{'-':>9}"
        print(f"{name:<13} {p['median']:11.4g} {p['q05']:11.4g} {p['q95']:11.4g} {r_hat} {ess}")
    print(format_diagnostics(result.diagnostics))
    return 0


def check_form_flag(spec: str) -> None:
    """Every form `--form` names (one, or each of a stack `a,b,c`) is registered (built in, or by a
    --module, so call it after they are imported); an unknown one is named under the flag typed."""
    from tokeff.errors import UserError
    from tokeff.laws.forms import list_forms
    from tokeff.laws.stacking import form_names

    known = list_forms()
    for name in form_names(spec) or [spec]:
        if name not in known:
            raise UserError(f"--form: unknown form '{name}' (registered: {', '.join(known)})")


def refuse_grouped_stack(form: str) -> None:
    """A hierarchical fit is of one form; a stack (`a,b`) would otherwise be read as one unknown name."""
    from tokeff.errors import UserError
    from tokeff.laws.stacking import form_names

    if form_names(form):
        raise UserError(f"--form: a grouped fit takes one form, not a stack ('{form}')")


def _run_grouped(args: argparse.Namespace, settings) -> int:
    refuse_grouped_stack(args.form)
    from tokeff.laws.data import format_exclusions, parse_mapping
    from tokeff.laws.diagnostics import format_diagnostics
    from tokeff.laws.hierarchy import fit_grouped, format_grouped
    from tokeff.laws.window import format_window

    result = fit_grouped(args.data, args.form, args.group, settings, pool=args.pool, window=args.window,
                         mapping=parse_mapping(args.map), target=args.target)
    path = result.save(args.out, plots=not args.no_plots, force=args.force)
    s = result.summary
    print(f"{s['form']} ({s['method']}) per {args.group}: {len(result.groups.labels)} groups, {s['n_points']} points"
          f" in {s['wall_seconds']:.1f} s -> {path}")
    if s["excluded"]:
        print(format_exclusions(s["excluded"], s["columns"]["target"]))
    print(format_window(s["window"]))
    print(format_grouped(s))
    print(format_diagnostics(result.diagnostics))
    return 0


def fit_settings(args: argparse.Namespace):
    """The `tokeff.laws.settings.FitSettings` the flags above give (for `tokeff fit` and for
    commands, like backtest, that fit as it would)."""
    from tokeff.laws.data import parse_mapping
    from tokeff.laws.settings import FitSettings

    return FitSettings(
        method=args.method, likelihood=args.likelihood, discrepancy=args.discrepancy, chains=args.chains,
        draws=args.draws, warmup=args.warmup, seed=args.seed, target_accept=args.target_accept, init=args.init,
        bootstrap=args.bootstrap, priors=parse_mapping(args.prior, "--prior", "PARAM=SPEC"), chance=args.chance,
        exclude=not args.no_exclude, drop_invalid=args.drop_invalid)
