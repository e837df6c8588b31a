"""Which model to fine-tune, from the cheap end of each curve: pooled (hierarchical) vs independent fits.

Real fine-tuning curves are not in the repository: pass their paths. Each file is one task in the
wide layout of Lin et al. 2024's released benchmark (github.com/linhaowei1/Fine-tuning-Scaling-Law,
benchmark/{flan,gigaword,wmt19}.csv): a first column naming the model, then one column per number
of fine-tuning examples (a header that is a number; 0, the un-fine-tuned loss, is skipped) holding
the test loss; other columns are ignored. A long table (columns model, n_examples, eval_loss) works
too.

For each task and each share s (default 1/8 and 1/64): every model's rows with at most max/s
examples are fitted, the law predicts the largest size, and the table reports, for the pooled fit
(`tokeff.laws.hierarchy`, every parameter pooled) and for independent per-model fits of the same
form (`tokeff.laws.fit`): mean Pearson r (and Spearman) between predicted and observed loss at the
largest size, the pick's observed rank and regret (nats), P(best) of the pick, and the 90% (and
50%) coverage of the new-observation intervals over every held-out row. `--window` says which sizes
below the cut each curve is fitted on (`tokeff.laws.window`): all, K (its K largest) or auto (K
chosen by leave-future-out within the fitted sizes); the independent fits see the pooled fit's
window; column `win` shows it (`all`: every size). `--sim K` adds K simulated
families of 30 curves with a shared exponent. Timing: the pooled fit's wall seconds.

    python bench/finetune_selection.py /path/flan.csv /path/gigaword.csv /path/wmt19.csv
    python bench/finetune_selection.py --sim 3 --method map      # no real data, quick
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import pandas as pd

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

FORM = "finetune_data"


def read_curves(path: str) -> pd.DataFrame:
    """A task's curves as a long table: model, n_examples, eval_loss."""
    frame = pd.read_csv(path)
    if {"model", "n_examples", "eval_loss"} <= set(frame.columns):
        return frame[["model", "n_examples", "eval_loss"]]
    sizes = [c for c in frame.columns[1:] if str(c).replace(".", "", 1).isdigit() and float(c) > 0]
    long = frame.melt(id_vars=[frame.columns[0]], value_vars=sizes, var_name="n_examples", value_name="eval_loss")
    long = long.rename(columns={frame.columns[0]: "model"})
    long["n_examples"] = long["n_examples"].astype(float)
    return long.dropna().sort_values(["model", "n_examples"]).reset_index(drop=True)


def simulated_family(seed: int, n_groups: int = 30) -> pd.DataFrame:
    """30 curves of the finetune_data law, 200 to 1.6M examples by doublings, a shared exponent
    (beta ~ 0.35-0.5 per family, 5% apart between models), floors and lifts varying by model, 1%
    log-normal noise."""
    rng = np.random.default_rng(seed)
    d = 200.0 * 2.0 ** np.arange(14)
    beta = rng.uniform(0.35, 0.5)
    rows = []
    for g in range(n_groups):
        e, a = np.exp(rng.normal(0.3, 0.25)), np.exp(rng.normal(0.5, 0.3))
        d0 = np.exp(rng.normal(np.log(3e3), 1.0))
        b = beta * np.exp(rng.normal(0, 0.05))
        loss = (e + a / (1 + (d / d0) ** b)) * np.exp(rng.normal(0, 0.01, d.shape))
        rows += [{"model": f"m{g:02d}", "n_examples": x, "eval_loss": y} for x, y in zip(d, loss)]
    return pd.DataFrame(rows)


def _independent(train: pd.DataFrame, labels, test: pd.DataFrame, ends: pd.DataFrame, settings):
    """One fit per model: (new-observation draws at the held-out rows, new-run draws at the ends)."""
    from tokeff.laws.fit import fit
    from tokeff.laws.selection import run_draws

    parts, runs = {}, []
    for g in labels:
        f = fit(train[train["model"] == g], FORM, settings)
        rows = test["model"] == g
        parts[g] = f.predictive({"D": test.loc[rows, "n_examples"].to_numpy()}, "observed")
        end = ends.loc[ends["model"] == g, "n_examples"].to_numpy()
        runs.append(run_draws(f, {"D": end}, None)[:, 0])
    n_obs = min(len(d) for d in parts.values())
    observed = np.zeros((n_obs, len(test)))
    for g, draws in parts.items():
        observed[:, (test["model"] == g).to_numpy()] = draws[:n_obs]
    n_run = min(len(r) for r in runs)
    return observed, np.stack([r[:n_run] for r in runs], axis=1)


def run_task(curves: pd.DataFrame, share: float, settings_pooled, settings_single, independent: bool,
             correlated: bool = False, window: str | None = None) -> dict:
    from tokeff.laws.hierarchy import fit_grouped
    from tokeff.laws.selection import coverage, run_draws, score_selection

    largest = curves["n_examples"].max()
    cut = largest / share * (1 + 1e-9)
    train = curves[curves["n_examples"] <= cut].reset_index(drop=True)
    test = curves[curves["n_examples"] > cut].reset_index(drop=True)
    ends = test.loc[test.groupby("model")["n_examples"].idxmax()].sort_values("model").reset_index(drop=True)
    labels = list(ends["model"].astype(str))
    out = {}
    start = time.perf_counter()
    pooled = fit_grouped(train, FORM, "model", settings_pooled, correlated=correlated, window=window)
    seconds = time.perf_counter() - start
    k = pooled.summary["window"]["k"]
    if k:  # the independent fits see the pooled fit's window
        train = train.sort_values(["model", "n_examples"]).groupby("model").tail(k).reset_index(drop=True)
    obs = pooled.predictive({"D": test["n_examples"].to_numpy()}, "observed", groups=list(test["model"].astype(str)))
    run = run_draws(pooled, {"D": ends["n_examples"].to_numpy()}, labels)
    out["pooled"] = {"score": score_selection(labels, run, ends["eval_loss"].to_numpy(), "loss"),
                     "coverage": coverage(obs, test["eval_loss"].to_numpy()), "seconds": seconds,
                     "ok": pooled.diagnostics["ok"], "points": len(train), "window": k}
    if independent:
        start = time.perf_counter()
        obs, run = _independent(train, labels, test, ends, settings_single)
        out["independent"] = {"score": score_selection(labels, run, ends["eval_loss"].to_numpy(), "loss"),
                              "coverage": coverage(obs, test["eval_loss"].to_numpy()),
                              "seconds": time.perf_counter() - start, "ok": True, "points": len(train),
                              "window": k}
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("paths", nargs="*", help="task files (wide or long layout; module doc)")
    parser.add_argument("--shares", nargs="+", type=float, default=[8, 64], help="fit up to max/share examples")
    parser.add_argument("--sim", type=int, default=0, help="simulated families of 30 curves to add")
    parser.add_argument("--method", default="nuts", choices=["nuts", "map"], help="the pooled fit's method")
    parser.add_argument("--chains", type=int, default=2)
    parser.add_argument("--draws", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--target-accept", type=float, default=0.9)
    parser.add_argument("--likelihood", default="student_t", choices=["auto", "normal", "student_t", "failures"])
    parser.add_argument("--no-independent", action="store_true", help="only the pooled fits")
    parser.add_argument("--window", default=None, metavar="all|auto|K",
                        help="which sizes below the cut each curve is fitted on: all, its K largest, or auto"
                             " (chosen by leave-future-out within them); default: fit_grouped's")
    parser.add_argument("--correlated", action="store_true",
                        help="the pooled fit's group effects correlated (LKJ; tokeff.laws.hierarchy)")
    args = parser.parse_args(argv)
    from tokeff.errors import UserError
    from tokeff.laws.window import parse_window

    try:
        window = str(parse_window(args.window))
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.method == "nuts":
        from tokeff.devices import split_cpu_for_chains

        split_cpu_for_chains(args.chains)
    from tokeff.laws.settings import FitSettings

    pooled = FitSettings(method=args.method, chains=args.chains, draws=args.draws, warmup=args.warmup,
                         target_accept=args.target_accept, likelihood=args.likelihood, laplace_draws=2000)
    single = FitSettings(method="map", likelihood=args.likelihood, laplace_draws=2000)
    tasks = [(os.path.splitext(os.path.basename(p))[0], read_curves(p)) for p in args.paths]
    tasks += [(f"simulated-{k}", simulated_family(100 + k)) for k in range(args.sim)]
    sampler = f"{args.chains} x {args.draws} draws" if args.method == "nuts" else "variational Gaussian, 2000 draws"
    print(f"pooled: {args.method} ({sampler}, {args.likelihood}"
          f"{', correlated effects' if args.correlated else ''}"
          f", window {window});"
          f" independent: map per model; form {FORM}")
    print(f"{'task':<14} {'share':>6} {'fit':<11} {'pts':>4} {'win':>4} {'pearson':>8} {'spearman':>8} {'rank':>5}"
          f" {'regret':>7} {'P(best)':>7} {'cov90':>6} {'cov50':>6} {'secs':>6} {'ok':>3}")
    table = []
    for name, curves in tasks:
        for share in args.shares:
            result = run_task(curves, share, pooled, single, not args.no_independent, args.correlated, window)
            for kind, r in result.items():
                s = r["score"]
                table.append({"task": name, "share": share, "fit": kind, **s.as_dict(), **r["coverage"],
                              "seconds": r["seconds"], "window": r["window"] or 0})
                print(f"{name:<14} {'1/' + format(share, 'g'):>6} {kind:<11} {r['points']:4d}"
                      f" {r['window'] or 'all':>4} {s.pearson:8.3f}"
                      f" {s.spearman:8.3f} {s.pick_rank:5d} {s.regret:7.3f} {s.p_best_pick:7.2f}"
                      f" {r['coverage']['90%']:6.2f} {r['coverage']['50%']:6.2f} {r['seconds']:6.0f}"
                      f" {'yes' if r['ok'] else 'no':>3}", flush=True)
    frame = pd.DataFrame(table)
    frame["kind"] = np.where(frame["task"].str.startswith("simulated-"), "simulated", "real")
    print("\nmeans over tasks")
    means = frame.groupby(["kind", "share", "fit"])[["pearson", "spearman", "pick_rank", "regret", "90%", "50%"]].mean()
    print(means.to_string(float_format=lambda v: f"{v:.3f}"))
    timed = frame[(frame["fit"] == "pooled") & (frame["kind"] == "real")]
    if len(timed):
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        print(f"\npooled {args.method} fit ({sampler}), {int(timed['n_groups'].iloc[0])} groups:"
              + "".join(f" {r.task} 1/{r.share:g} {r.seconds:.0f} s;" for r in timed.itertuples())
              + f" {os.cpu_count()} CPUs, load average now {load:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
