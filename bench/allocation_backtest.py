"""Is the split right? The allocation backtest on Porian et al.'s five isoFLOP settings and on simulations.

For each table, `chinchilla` is fitted to the lower two-thirds of its budgets (`tokeff backtest
--decision frontier --frac 0.33`: the top third of budgets held out, 2-16x beyond the fit) and, at
each held-out budget, N_opt is compared with the sweep's own optimum (a parabola in log N through
the lowest runs of that budget, `tokeff.decide.isoflop`). One fit gives every column:

- law: the law's own frontier (`allocate --frontier law`: N_opt from the parameters alone);
- tokeff: what `tokeff allocate` decides (the law's frontier carried to the sweep's optima of the
  fitted budgets, `tokeff.decide.sweep_check`; the law alone when the fit data shows no sweep);
- A2: Approach 2, a least-squares line through log n* against log C of the fitted budgets;
- A2-Bayes: its hierarchical version (between-budget scatter, each optimum's bootstrap error).

Per table and decision: mean |log(N_opt / n*)| over the held-out budgets, how many of their 90%
intervals hold n*, and the median regret (loss of running N_opt instead of n*, % of the optimum's).

Real data: `summary_df.pickle.xz` of https://github.com/formll/resolving-scaling-law-discrepancies
(Porian et al. 2024, MIT licence; not stored here: pass its path). Simulations: `--sims` isoFLOP
sweeps of `tokeff.laws.simulate.isoflop_table` (12 budgets 1e18-1e21, 7 sizes each) whose truth is
Chinchilla (the control), Kaplan or Farseer-like (not the fitted form).
"""

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from backtest import porian_tables  # noqa: E402

from tokeff.decide.allocation_backtest import allocation_backtest  # noqa: E402
from tokeff.laws.simulate import isoflop_table  # noqa: E402

DECISIONS = (("law", "law"), ("tokeff", "tokeff"), ("A2", "approach2"), ("A2-Bayes", "approach2_bayes"))


def porian_n_stars(path: str) -> dict[str, dict[float, float]]:
    """{"porian<i>": {budget: median of Porian et al.'s bootstrap optima n_stars}}: their own
    estimate of each budget's optimum (interpolated, not a parabola), a second reference."""
    import pandas as pd

    out = {}
    for i, setting in pd.read_pickle(path).iterrows():
        out[f"porian{i}"] = {float(b["flops"]): float(np.median(b["n_stars"])) for _, b in setting["data"].iterrows()
                             if isinstance(b["n_stars"], (list, np.ndarray)) and len(b["n_stars"])}
    return out


def against(report: dict, reference: dict[float, float], key: str) -> tuple[list, list]:
    """(|log error|, held) of one decision's held-out N_opt against `reference` optima (matched
    to a held-out budget within 10%)."""
    errs, holds = [], []
    for b in report["budgets"]:
        if key not in b:
            continue
        ref = [v for c, v in reference.items() if abs(np.log(c / b["budget_flops"])) < 0.1]
        if ref:
            errs.append(abs(np.log(b[key]["N_opt"] / ref[0])))
            if b[key]["q05"] is not None:
                holds.append(b[key]["q05"] <= ref[0] <= b[key]["q95"])
    return errs, holds


def row(label: str, report: dict, seconds: float) -> str:
    out = f"{label:<18}{report['n_held_out_budgets']:>5}"
    for _, key in DECISIONS:
        s = report["scores"].get(key)
        if s is None or s["mean_abs_log_error"] is None:
            out += f"{'-':>24}"
            continue
        holds = "-" if s["holds"] is None else f"{s['holds']}/{s['of']}"
        out += f"{s['mean_abs_log_error']:>8.3f}{holds:>6}{s['median_regret_pct']:>9.3f}%"
    return out + f"{'ok' if report['fit_ok'] else 'NOT ok':>8}{seconds:>7.0f}s"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pickle", nargs="?", help="Porian et al.'s summary_df.pickle.xz")
    parser.add_argument("--settings", nargs="*", type=int, help="Porian settings to run (default: all five)")
    parser.add_argument("--sims", nargs="*", default=[], choices=["chinchilla", "kaplan", "farseer"])
    parser.add_argument("--seeds", type=int, default=2, help="simulated tables per truth")
    parser.add_argument("--method", default="map", choices=["map", "nuts"])
    parser.add_argument("--chains", type=int, default=2)
    parser.add_argument("--draws", type=int, default=500, help="NUTS: warmup = draws per chain")
    parser.add_argument("--frac", type=float, default=0.33)
    parser.add_argument("--per-budget", action="store_true", help="print each held-out budget too")
    args = parser.parse_args()
    if not args.pickle and not args.sims:  # no real data given: the simulated control and a misspecified truth
        args.sims, args.seeds = ["chinchilla", "kaplan"], 1
    options = {"method": args.method}
    if args.method == "nuts":
        from tokeff.devices import split_cpu_for_chains

        split_cpu_for_chains(args.chains)
        options |= {"chains": args.chains, "draws": args.draws, "warmup": args.draws}
    cases = []
    if args.pickle:
        tables = porian_tables(args.pickle)
        cases += [(name, t) for i, (name, t) in enumerate(tables.items()) if args.settings is None or i in args.settings]
    cases += [(f"sim:{truth}/{seed}", isoflop_table(truth, seed=seed)) for truth in args.sims for seed in range(args.seeds)]
    head = f"{'table':<18}{'held':>5}" + "".join(f"{name + ' |err| in90 regret':>24}" for name, _ in DECISIONS)
    print(f"chinchilla fitted ({args.method}) to the lower {1 - args.frac:.2f} of budgets; N_opt vs the sweep's optimum")
    print(head + f"{'fit':>8}{'time':>8}", flush=True)
    pooled = {key: ([], []) for _, key in DECISIONS}
    n_stars = porian_n_stars(args.pickle) if args.pickle else {}
    versus = {}
    for label, table in cases:
        start = time.perf_counter()
        r = allocation_backtest(table, "chinchilla", by="params*tokens_seen", frac=args.frac, **options)
        print(row(label, r, time.perf_counter() - start), flush=True)
        for _, key in DECISIONS:
            for b in r["budgets"]:
                if b["sweep"]["interior"] and key in b:
                    pooled[key][0].append(b[key]["abs_log_error"])
                    if b[key]["holds"] is not None:
                        pooled[key][1].append(b[key]["holds"])
        if label in n_stars:
            versus[label] = {key: against(r, n_stars[label], key) for _, key in DECISIONS}
        if args.per_budget:
            for b in r["budgets"]:
                if b["sweep"]["interior"]:
                    print(f"    {b['budget_flops']:9.3g} n* {b['sweep']['n_opt']:.3g}  " + "  ".join(
                        f"{name} {b[key]['N_opt']:.3g}" + ("" if b[key]["q05"] is None else
                                                            f" [{b[key]['q05']:.3g}, {b[key]['q95']:.3g}]")
                        + f" ({b[key]['log_error']:+.2f})" for name, key in DECISIONS if key in b))
    line = f"{'all':<18}{len(pooled['law'][0]):>5}"
    for _, key in DECISIONS:
        errs, holds = pooled[key]
        h = f"{sum(holds)}/{len(holds)}" if holds else "-"
        line += f"{np.mean(errs):>8.3f}{h:>6}{'':>10}" if errs else f"{'-':>24}"
    print(line)
    if versus:
        print("against Porian et al.'s own optima (median of their bootstrap n_stars) instead of the parabola's:")
        for label in list(versus) + ["all"]:
            line = f"{label:<18}{'':>5}"
            for _, key in DECISIONS:
                errs = sum((versus[t][key][0] for t in versus), []) if label == "all" else versus[label][key][0]
                holds = sum((versus[t][key][1] for t in versus), []) if label == "all" else versus[label][key][1]
                h = f"{sum(holds)}/{len(holds)}" if holds else "-"
                line += f"{np.mean(errs):>8.3f}{h:>6}{'':>10}" if errs else f"{'-':>24}"
            print(line)


if __name__ == "__main__":
    main()
