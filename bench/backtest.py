"""Can I trust the interval? Backtests where the truth is not the fitted form, old vs new model.

Each table is an isoFLOP sweep (`tokeff.laws.simulate.isoflop_table`: 12 budgets 1e18-1e21
FLOPs, 7 model sizes each, 0.5% noise per run plus 0.5% shared per budget) drawn from a truth:
`chinchilla` (the control: truth = form), `kaplan`, `farseer` (a Farseer-like surface whose data
exponent grows with model size), and `farseer+diverged` (5% of runs diverged, loss 1.3-3x).
`chinchilla` is fitted to the lower two-thirds of runs by compute and predicts the top third
(about 10x beyond the fit). Models compared, as `tokeff backtest` runs them:

- old: `--likelihood normal --discrepancy none` (the earlier intervals);
- new: the defaults (Student-t on log loss, discrepancy growing with the distance beyond the range);
- classic: the Huber/L-BFGS bootstrap.

Prints one row per (truth, model), pooled over seeds: coverage of 50/80/90% intervals of a new run,
median |error| and median 90% width (% of the prediction), and how many fits reported ok.
"""

import argparse
import time

import numpy as np

from tokeff.laws.backtest import backtest
from tokeff.laws.simulate import isoflop_table

MODELS = {
    "old": {"likelihood": "normal", "discrepancy": "none"},
    "new": {},
    "classic": {"method": "classic", "bootstrap": 400},
}
TRUTHS = {"chinchilla": {}, "kaplan": {}, "farseer": {}, "farseer+diverged": {"diverged": 0.05}}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--truths", nargs="*", default=list(TRUTHS))
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    parser.add_argument("--method", default="nuts", choices=["nuts", "map"], help="for old and new")
    parser.add_argument("--chains", type=int, default=2)
    parser.add_argument("--draws", type=int, default=500, help="warmup = draws per chain")
    args = parser.parse_args()

    print(f"{'truth':<18}{'model':<9}{'cov50':>6}{'cov80':>6}{'cov90':>6}{'|err|%':>8}{'w90%':>7}"
          f"{'x-extrap':>9}{'ok':>6}{'s/fit':>7}", flush=True)
    for truth in args.truths:
        truth_name = truth.split("+")[0]
        for model in args.models:
            options = {"method": args.method, "chains": args.chains, "draws": args.draws, "warmup": args.draws,
                       **MODELS[model]}
            hits = {k: [] for k in ("0.5", "0.8", "0.9")}
            errors, widths, factors, ok, start = [], [], [], 0, time.perf_counter()
            for seed in range(args.seeds):
                table = isoflop_table(truth_name, seed=seed, **TRUTHS[truth])
                r = backtest(table, "chinchilla", by="params*tokens_seen", frac=1 / 3, seed=seed, **options)
                for k in hits:
                    hits[k].append(r["coverage"][k] * r["n_held_out"])
                errors.append(r["median_abs_pct_error"] if r["median_abs_pct_error"] is not None else np.nan)
                widths.append(r["median_interval_width_pct"]["0.9"])
                factors.append(r["extrapolation_factor"])
                ok += r["all_fits_ok"]
                n_held = r["n_held_out"]
            cov = {k: sum(v) / (n_held * args.seeds) for k, v in hits.items()}
            print(f"{truth:<18}{model:<9}{cov['0.5']:6.2f}{cov['0.8']:6.2f}{cov['0.9']:6.2f}"
                  f"{np.nanmedian(errors):8.2f}{np.median(widths):7.2f}{np.median(factors):9.1f}"
                  f"{ok:>4}/{args.seeds}{(time.perf_counter() - start) / args.seeds:7.0f}", flush=True)


if __name__ == "__main__":
    main()
