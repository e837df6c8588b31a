"""`tokeff allocate`: what to run at a FLOP budget, with credible intervals, from a fit."""

from __future__ import annotations

import argparse
import json
import os

from tokeff.errors import UserError

HELP = "decide what to run at a FLOP budget from a fit: frontier or model x N x L, with P(best) and regret"


def add_option_space_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags describing what may be chosen and what data exists (shared with `tokeff propose`)."""
    parser.add_argument("--models", help="comma-separated candidate presets (fine-tuning forms)")
    parser.add_argument("--lengths-grid", help="comma-separated candidate average example lengths (tokens)")
    parser.add_argument("--n-examples", help="comma-separated example counts; default: as many as the budget buys")
    parser.add_argument("--epochs", default="1", help="comma-separated epoch counts (default 1)")
    parser.add_argument("--strategies", help="comma-separated subsampling strategies (few_long, many_short, "
                        "balanced) applied to the dataset's lengths (needs --lengths)")
    parser.add_argument("--lengths", metavar="FILE", help="the available examples' token lengths: a JSON list "
                        "or one integer per line")
    parser.add_argument("--max-examples", type=int, help="how many examples exist (when lengths are unknown)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("fit_dir", metavar="FIT_DIR", help="a directory written by `tokeff fit`")
    parser.add_argument("--budget", required=True, help="training FLOPs to allocate, e.g. 1e18")
    parser.add_argument("--out", help="where allocation.json and the plot go (default: FIT_DIR)")
    parser.add_argument("--force", action="store_true", help="allocate even if the fit's diagnostics are not ok")
    add_option_space_arguments(parser)


def positive_float(text: str, field: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise UserError(f"{field}: expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise UserError(f"{field}: must be a positive finite number, got {text!r}")
    return value


def int_list(text: str | None, field: str) -> tuple[int, ...]:
    if not text:
        return ()
    try:
        values = tuple(int(float(x)) for x in text.split(",") if x.strip())
    except ValueError:
        raise UserError(f"{field}: expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise UserError(f"{field}: values must be positive integers, got {text!r}")
    return values


def read_lengths(path: str):
    import numpy as np

    if not os.path.isfile(path):
        raise UserError(f"--lengths: file not found: {path}")
    with open(path) as f:
        text = f.read()
    try:
        values = json.loads(text) if text.lstrip().startswith("[") else [float(x) for x in text.split()]
        lengths = np.asarray(values, dtype=np.float64)
    except (ValueError, TypeError):
        raise UserError(f"--lengths: {path}: expected a JSON list or one number per line") from None
    if lengths.ndim != 1 or len(lengths) == 0 or (lengths < 1).any():
        raise UserError(f"--lengths: {path}: need a non-empty list of positive token lengths")
    return np.round(lengths).astype(np.int64)


def option_space(args: argparse.Namespace):
    from tokeff.models.config import get_preset
    from tokeff.scaling.allocate import STRATEGIES, DataPool, OptionSpace

    models = tuple(m.strip() for m in (args.models or "").split(",") if m.strip())
    for m in models:
        get_preset(m)  # unknown presets fail here, naming the field
    strategies = tuple(s.strip() for s in (args.strategies or "").split(",") if s.strip())
    for s in strategies:
        if s not in STRATEGIES:
            raise UserError(f"--strategies: unknown {s!r}; known: {', '.join(STRATEGIES)}")
    if args.max_examples is not None and args.max_examples < 1:
        raise UserError(f"--max-examples: must be positive, got {args.max_examples}")
    pool = DataPool(read_lengths(args.lengths) if args.lengths else None, args.max_examples)
    return OptionSpace(models, int_list(args.lengths_grid, "--lengths-grid"), strategies,
                       int_list(args.epochs, "--epochs"), int_list(args.n_examples, "--n-examples"), pool)


def _fmt_interval(q: dict) -> str:
    return f"{q['median']:.4g} [{q['q05']:.4g}, {q['q95']:.4g}]"


def format_table(result: dict) -> str:
    lines = [f"form {result['form']} ({result['target']}), budget {result['budget_flops']:.3g} FLOPs, "
             f"{result['n_draws']} posterior draws"]
    if result["kind"] == "pretraining":
        lines.append(f"{'quantity':<18}{'median':>11}{'q05':>11}{'q10':>11}{'q90':>11}{'q95':>11}")
        for key, q in result["decision"].items():
            lines.append(f"{key:<18}" + "".join(f"{q[k]:>11.3g}" for k in ("median", "q05", "q10", "q90", "q95")))
        for name, ref in result["reference_at_budget"].items():
            lines.append(f"  reference {name}: N_opt {ref['N_opt']:.3g}, D_opt {ref['D_opt']:.3g}, "
                         f"tokens/param {ref['tokens_per_param']:.3g}")
    else:
        lines.append(f"{'#':>2} {'option':<40}{'FLOPs':>10}  {'predicted median [q05, q95]':<30}"
                     f"{'P(best)':>8}{'E[regret]':>11}")
        for i, o in enumerate(result["options"][:10], 1):
            lines.append(f"{i:>2} {o['label']:<40}{o['flops']:>10.3g}  {_fmt_interval(o['predicted']):<30}"
                         f"{o['p_best']:>8.2f}{o['expected_regret']:>11.3g}")
        if len(result["options"]) > 10:
            lines.append(f"   ... {len(result['options']) - 10} more options in allocation.json")
        if result["infeasible"]:
            lines.append(f"   {len(result['infeasible'])} infeasible option(s), e.g. "
                         f"{result['infeasible'][0]['label']}: {result['infeasible'][0]['reason']}")
        d = result["decision"]
        lines.append(f"decision: {d['label']} (P(best) {d['p_best']:.2f}, expected regret "
                     f"{d['expected_regret']:.3g}, predicted {result['target']} {_fmt_interval(d['predicted'])})")
        if result["indistinguishable"]:
            lines.append(f"  indistinguishable from the runner-up {result['runner_up']['label']}: "
                         f"{result['indistinguishable_reason']}")
        lines.append("across budgets:")
        for p in result["budget_sweep"]:
            if p["decision"] is None:
                lines.append(f"  {p['budget_flops']:>10.3g}  no feasible option")
            else:
                tie = "  (~tie)" if p["indistinguishable"] else ""
                lines.append(f"  {p['budget_flops']:>10.3g}  {p['decision']:<40} P(best) {p['p_best']:.2f}  "
                             f"{_fmt_interval(p['predicted'])}{tie}")
    lines += [f"warning: {w}" for w in result["warnings"]]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    import sys

    from tokeff.scaling.allocate import allocate_fit, load_checked_fit
    from tokeff.scaling.allocation_plots import plot_budget_sweep, plot_frontier

    from tokeff.io import claim_output_dir, output_dir, write_json

    budget = positive_float(args.budget, "--budget")
    space = option_space(args)
    out = args.out or args.fit_dir
    claim_output_dir(out, "allocation", allow_existing=True)
    fit = load_checked_fit(args.fit_dir, force=args.force)
    result = allocate_fit(fit, budget, space)
    for w in result["warnings"]:
        print(f"tokeff allocate: warning: {w}", file=sys.stderr)
    plot = "frontier.png" if result["kind"] == "pretraining" else "allocation_budgets.png"
    with output_dir(out, "allocation", allow_existing=True) as tmp:
        (plot_frontier if result["kind"] == "pretraining" else plot_budget_sweep)(result, os.path.join(tmp, plot))
        write_json(os.path.join(tmp, "allocation.json"), result)
    plot = os.path.join(out, plot)
    print(format_table(result))
    print(f"wrote {os.path.join(out, 'allocation.json')} and {plot}")
    return 0
