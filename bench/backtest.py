"""Can I trust the interval? Backtests where the truth is not the fitted form, old vs new model.

Each table is an isoFLOP sweep (`tokeff.laws.simulate.isoflop_table`: 12 budgets 1e18-1e21
FLOPs, 7 model sizes each, 0.5% noise per run plus 0.5% shared per budget) drawn from a truth:
`chinchilla` (the control: truth = form), `kaplan`, `farseer` (a Farseer-like surface whose data
exponent grows with model size), `farseer+diverged` (5% of runs diverged, loss 1.3-3x) and
`farseer+stalled` (15% of runs trained 2-30% worse: inside the exclusion fence).
`chinchilla` is fitted to the lower two-thirds of runs by compute and predicts the top third
(about 12x beyond the fit), exactly as `tokeff backtest --by params*tokens_seen --frac 0.33` does.
Models compared:

- old: `--likelihood normal --discrepancy none` (Gaussian on log loss, no widening beyond the range);
- normal: `--likelihood normal` with the discrepancy term (what the discrepancy alone does for it);
- student_t: `--likelihood student_t` (Student-t on log loss, discrepancy growing with the
  distance beyond the range);
- new: the defaults (the same, plus a one-sided share of failed runs: `--likelihood failures`);
- prior_starts: the defaults with NUTS chains started from prior draws (`--init prior`);
- classic: the Huber/L-BFGS bootstrap;
- stacked: the defaults' fits of `chinchilla`, `kaplan` and `farseer`, mixed by stacking weights
  (`--form chinchilla,kaplan,farseer`, `tokeff.laws.stacking`);
- farseer: the defaults with `--form farseer`, the one-parameter expansion of `chinchilla` (an N-D
  interaction whose prior is centred on `chinchilla`).

Prints one row per (truth, model), pooled over seeds: coverage of the 50/80/90% intervals of a new
run (and `sd90`, the sd across seeds of one table's 90% coverage: how much a single sweep can
say), median |error| (and its sd across seeds) and median signed error of the predictive median (% of the observed loss: is
the median biased?), median 90% width (% of the prediction), and how many fits reported ok.
`h90` and `h|err|` are the 90% coverage and median |error| (pooled and per seed, as cov90 and
|err|%) over the held-out runs that trained as designed (simulations only: the table knows which
runs diverged or stalled). A prediction is for such a run, so on `farseer+stalled` the held-out
stalled runs are misses by design; `h|err|` says how well the law itself was found.
With `--plot PATH`, a PNG of the 90% coverage per truth and model against the 80-95% target band.

`--real CSV` (repeatable) adds a row per real table, backtested the same way (top third by
compute). A CSV has columns `params`, `tokens_seen`, `eval_loss`, or those of Epoch AI's extraction
of Chinchilla's runs (`Model Size`, `Training FLOP`, `loss`; tokens = FLOP / 6N):
https://github.com/epoch-research/analyzing-chinchilla/blob/main/data/svg_extracted_data.csv
(245 runs; the repository states no licence, so no copy is kept here: pass the path; it gives two
rows: all 245 runs, and `chinchilla240`, Epoch's own selection, which leaves out the 5 highest losses
as outliers, as in their own fits), or
`summary_df.pickle.xz` of https://github.com/formll/resolving-scaling-law-discrepancies (Porian et
al. 2024, MIT licence; not stored here either): one row per sweep setting (`porian_tables`), each
11-12 isoFLOP budgets of 1.25e16-2.56e19 FLOPs over 5M-900M parameters, with the undertrained and
unstable runs real sweeps have left in, or
the `exp_data/models` directory of https://github.com/mlfoundations/scaling (Gadre et al. 2024, the
over-training testbed; not stored here): one JSON per run, 104 open_lm models of 11M-6.9B
parameters at 0.25x-32x Chinchilla's 20 tokens per parameter on three corpora, giving
`overtrain_c4`, `overtrain_rpj` and `overtrain_rw` (the loss on each corpus's own Paloma split).
These are cut as the authors cut them, by model size: every run up to the third-largest size
(411M) is fitted and the two largest sizes (1.4B, 6.9B; 3 runs) are predicted (`real_cut`).
It is a check, not a target: nothing in the model is tuned to it.
"""

import argparse
import os
import time

import numpy as np

from tokeff.laws.backtest import backtest
from tokeff.laws.simulate import isoflop_table

MODELS = {
    "old": {"likelihood": "normal", "discrepancy": "none"},
    "normal": {"likelihood": "normal"},
    "student_t": {"likelihood": "student_t"},
    "new": {},
    "prior_starts": {"init": "prior"},
    "classic": {"method": "classic", "bootstrap": 200},
    "stacked": {"form": "chinchilla,kaplan,farseer"},
    "farseer": {"form": "farseer"},
}
TRUTHS = {"chinchilla": {}, "kaplan": {}, "farseer": {}, "farseer+diverged": {"diverged": 0.05},
          "farseer+stalled": {"stalled": 0.15}}
LEVELS = ("0.5", "0.8", "0.9")


def error_and_bias(held_out: dict) -> tuple[float, float]:
    """(median |error|, median signed error) of the predictive medians, % of the observed loss;
    NaN when a prediction is not finite."""
    observed = np.asarray(held_out["observed"])
    signed = (np.asarray(held_out["median"]) - observed) / observed * 100
    if not np.isfinite(signed).all():
        return np.nan, np.nan
    return float(np.median(np.abs(signed))), float(np.median(signed))


def run_one(truth: str, model: str, seeds: int, options: dict) -> dict:
    """Backtests of one model over `seeds` tables of one truth, pooled."""
    hits = {k: 0.0 for k in LEVELS}
    errors, bias, widths, factors, per_seed90, ok, n_held = [], [], [], [], [], 0, 0
    healthy_err, healthy_in, crps, lpd = [], [], [], []
    start = time.perf_counter()
    for seed in range(seeds):
        table = isoflop_table(truth.split("+")[0], seed=seed, **TRUTHS[truth])
        r = backtest(table, options.get("form", "chinchilla"), by="params*tokens_seen", frac=1 / 3, seed=seed,
                     **{k: v for k, v in options.items() if k != "form"})
        for k in hits:
            hits[k] += r["coverage"][k] * r["n_held_out"]
        per_seed90.append(r["coverage"]["0.9"])
        error, signed_error = error_and_bias(r["held_out"])
        errors.append(error)
        bias.append(signed_error)
        widths.append(r["median_interval_width_pct"]["0.9"])
        factors.append(r["extrapolation_factor"])
        ok += r["all_fits_ok"]
        n_held += r["n_held_out"]
        crps += r["held_out"]["crps_rel_pct"]
        lpd += r["held_out"]["log_density"]
        e, inside = healthy_scores(table, r["held_out"])
        healthy_err.append(float(np.median(np.abs(e))))
        healthy_in += inside
    return {"coverage": {k: v / n_held for k, v in hits.items()}, "error": float(np.nanmedian(errors)),
            "bias": float(np.nanmedian(bias)), "width": float(np.median(widths)), "factor": float(np.median(factors)),
            "sd90": float(np.std(per_seed90, ddof=1)) if seeds > 1 else np.nan,
            "sd_error": float(np.nanstd(errors, ddof=1)) if seeds > 1 else np.nan,
            "h90": float(np.mean(healthy_in)), "h_error": float(np.nanmedian(healthy_err)), "ok": ok, "seeds": seeds,
            "seconds_per_table": (time.perf_counter() - start) / seeds, **mean_scores(crps, lpd)}


def mean_scores(crps: list, lpd: list) -> dict:
    """Mean relative CRPS (%) and log density of the held-out runs; NaN when one is not finite."""
    crps, lpd = (np.array([np.nan if v is None else v for v in x], np.float64) for x in (crps, lpd))
    return {"crps": float(np.mean(crps)), "lpd": float(np.mean(lpd))}


def healthy_scores(table: dict, held_out: dict) -> tuple[list, list]:
    """(signed % errors, inside the 90% interval) of the held-out runs that neither diverged nor
    stalled; a held-out run is found in `table` by its loss (continuous draws: unique)."""
    loss = np.asarray(table["eval_loss"])
    failed = (np.asarray(table["diverged"]) + np.asarray(table["stalled"])) > 0
    where = np.argsort(loss)
    observed = np.asarray(held_out["observed"])
    row = where[np.searchsorted(loss[where], observed)]
    keep = ~failed[row]
    signed = (np.asarray(held_out["median"]) - observed) / observed * 100
    inside = (observed >= np.asarray(held_out["q05"])) & (observed <= np.asarray(held_out["q95"]))
    return list(signed[keep]), list(inside[keep])


EPOCH_OUTLIERS = 5  # Epoch AI's replication leaves out the runs with the 5 highest losses


def read_real(path: str) -> dict[str, dict[str, np.ndarray]]:
    """{label: table} of a real CSV as params / tokens_seen / eval_loss (+ budget) columns (see the
    module doc). Epoch AI's extraction gives `chinchilla` (all 245 runs) and `chinchilla240`
    (without the 5 highest losses, as Epoch's own fits: `data_analysis.ipynb` of their repository)."""
    import pandas as pd

    frame = pd.read_csv(path)
    if {"Model Size", "Training FLOP", "loss"} <= set(frame.columns):
        n, c = frame["Model Size"].to_numpy(float), frame["Training FLOP"].to_numpy(float)
        loss = frame["loss"].to_numpy(float)
        table = {"params": n, "tokens_seen": c / (6 * n), "eval_loss": loss}
        kept = loss < np.sort(loss)[-EPOCH_OUTLIERS]
        return {"chinchilla": table, f"chinchilla{int(kept.sum())}": {k: v[kept] for k, v in table.items()}}
    columns = ("params", "tokens_seen", "eval_loss") + (("budget",) if "budget" in frame.columns else ())
    return {os.path.splitext(os.path.basename(path))[0][:14]: {k: frame[k].to_numpy(float) for k in columns}}


def porian_tables(path: str) -> dict[str, dict[str, np.ndarray]]:
    """Porian et al.'s sweeps from their `summary_df.pickle.xz`: {"porian<i>": table} per setting
    (hparams, warmup, decay, parameter count), one row per run of every budget."""
    import pandas as pd

    out = {}
    for i, setting in pd.read_pickle(path).iterrows():
        rows = np.array([(n, t, loss, b["flops"])
                         for _, b in setting["data"].iterrows() if isinstance(b["orig_n"], pd.Series)
                         for n, t, loss in zip(b["orig_n"], b["orig_t"], b["orig_loss"])], np.float64)
        out[porian_label(i, setting)] = dict(zip(("params", "tokens_seen", "eval_loss", "budget"), rows.T))
    return out


def porian_label(i: int, setting) -> str:
    """porian<i> for the RefinedWeb settings (`summary_df.pickle.xz`), porian<i>_<dataset> for the
    others (`summary_df_owt2.pickle.xz`: the same five settings on OpenWebText2)."""
    dataset = setting.get("dataset", "rw")
    return f"porian{i}" if dataset == "rw" else f"porian{i}_{dataset}"


# The over-training testbed's loss per corpus: its own Paloma split (the `results` entry's val_data).
OVERTRAIN_SPLITS = {"c4_original": ("overtrain_c4", "paloma_c4_en"),
                    "rpj": ("overtrain_rpj", "paloma_redpajama"),
                    "rw_original": ("overtrain_rw", "paloma_falcon-refinedweb")}
OVERTRAIN_HELD_SIZES = 2  # the authors fit up to 411M parameters and predict the 1.4B and 6.9B runs


def overtrain_tables(path: str) -> dict[str, dict[str, np.ndarray]]:
    """Gadre et al.'s runs (`exp_data/models/*.json` of mlfoundations/scaling): one table per corpus
    of params / tokens_seen / eval_loss, the loss on the corpus's own Paloma split."""
    import glob
    import json

    rows = {label: [] for label, _ in OVERTRAIN_SPLITS.values()}
    for name in sorted(glob.glob(os.path.join(path, "*.json"))):
        with open(name) as f:
            run = json.load(f)
        label, split = OVERTRAIN_SPLITS[run["dataset_name"]]
        loss = [r["loss"] for r in run["results"] if any(f"/{split}/" in v for v in r["val_data"])]
        rows[label].append((run["hyperparameters"]["params"], run["hyperparameters"]["tokens"], loss[0]))
    return {label: dict(zip(("params", "tokens_seen", "eval_loss"), np.array(sorted(r), np.float64).T))
            for label, r in rows.items() if r}


def real_cut(label: str, table: dict[str, np.ndarray]) -> tuple[str, float]:
    """(by, frac) of a real table's backtest: the top third by compute, or, for the over-training
    testbed, its largest `OVERTRAIN_HELD_SIZES` model sizes (the authors' own cut)."""
    if label.startswith("overtrain_"):
        sizes = np.unique(table["params"])
        held = np.sum(table["params"] >= sizes[-OVERTRAIN_HELD_SIZES])
        return "params", held / len(table["params"])
    return "params*tokens_seen", 1 / 3


def real_sources(path: str) -> dict[str, str]:
    """{label: where the table comes from} for the tables `real_tables(path)` gives."""
    if os.path.isdir(path):
        return {label: f"Gadre et al. 2024's over-training testbed ({label.split('_')[1]}; fit <= 411M, predict 1.4B and 6.9B)"
                for label in overtrain_tables(path)}
    if path.endswith((".pickle.xz", ".pickle", ".pkl")):
        import pandas as pd

        return {porian_label(i, s): f"Porian et al. 2024 ({s.get('dataset', 'rw')}; {s['hparams']} hparams,"
                f" {s['warmup']} warmup, {s['decay']} decay, {s['param_count']} N)"
                for i, s in pd.read_pickle(path).iterrows()}
    labels = list(read_real(path))
    if labels[0] == "chinchilla":
        return {labels[0]: "Hoffmann et al. 2022 via Epoch AI's extraction (all runs)",
                labels[1]: "the same, Epoch AI's 5 outliers left out"}
    return {labels[0]: os.path.basename(path)}


def real_tables(path: str) -> dict[str, dict[str, np.ndarray]]:
    """{label: table} for one `--real` path: a CSV (one table), Porian et al.'s pickle (five) or the
    over-training testbed's `exp_data/models` directory (three)."""
    if os.path.isdir(path):
        return overtrain_tables(path)
    if path.endswith((".pickle.xz", ".pickle", ".pkl")):
        return porian_tables(path)
    return read_real(path)


def run_real(table: dict, options: dict, cut: tuple[str, float] = ("params*tokens_seen", 1 / 3)) -> dict:
    """One backtest of a real table, cut as `real_cut` says (by default as the simulations)."""
    start = time.perf_counter()
    by, frac = cut
    r = backtest(table, options.get("form", "chinchilla"), by=by, frac=frac, seed=0,
                 **{k: v for k, v in options.items() if k != "form"})
    error, signed_error = error_and_bias(r["held_out"])
    return {"coverage": r["coverage"], "error": error, "bias": signed_error,
            "width": r["median_interval_width_pct"]["0.9"],
            "factor": r["extrapolation_factor"], "sd90": np.nan, "sd_error": np.nan, "h90": np.nan, "h_error": np.nan, "ok": int(r["all_fits_ok"]), "seeds": 1,
            "seconds_per_table": time.perf_counter() - start,
            **mean_scores(r["held_out"]["crps_rel_pct"], r["held_out"]["log_density"])}


REAL = "real:"  # prefix of a real table's label in the rows


def print_ranking(rows: dict, sources: dict) -> None:
    """Every table's relative CRPS per model, named with its source; the means over the simulated
    truths (each pooled over seeds) and over the real tables, apart; the models ranked by the real
    tables' mean (the simulated one's when there are none: a choice is made on real sweeps); and,
    per group, the counts of tables where each model meets the targets: 90% coverage in 80-95%,
    median |error| within 1.2x the table's best, median 90% width within 5x its |error|."""
    tables = list(dict.fromkeys(t for t, _ in rows))
    models = list(dict.fromkeys(m for _, m in rows))
    groups = {name: [t for t in tables if t.startswith(REAL) == real]
              for name, real in (("simulated", False), ("real", True))}
    groups = {name: ts for name, ts in groups.items() if ts}
    print("\nmean relative CRPS (% of the observed loss; lower is better) per table and model")
    print(f"{'table':<20}" + "".join(f"{m:>13}" for m in models) + "  source")
    for t in tables:
        print(f"{t:<20}" + "".join(f"{rows[(t, m)]['crps']:13.3f}" for m in models) + f"  {sources.get(t, '')}")
    means = {name: {m: float(np.mean([rows[(t, m)]["crps"] for t in ts])) for m in models} for name, ts in groups.items()}
    for name, ts in groups.items():
        print(f"{'mean, ' + name:<20}" + "".join(f"{means[name][m]:13.3f}" for m in models) + f"  {len(ts)} table(s)")
    by = "real" if "real" in means else "simulated"
    order = sorted(models, key=lambda m: (np.isnan(means[by][m]), means[by][m]))
    print(f"{'rank (' + by + ')':<20}" + "".join(f"{order.index(m) + 1:13d}" for m in models))
    best = {t: np.nanmin([rows[(t, m)]["error"] for m in models]) for t in tables}
    counts = {
        "cov90 in 80-95%": lambda t, r: 0.8 <= r["coverage"]["0.9"] <= 0.95,
        "|err| <= 1.2x best": lambda t, r: r["error"] <= 1.2 * best[t],
        "w90 <= 5x |err|": lambda t, r: r["width"] <= 5 * r["error"],
    }
    for name, ts in groups.items():
        print(f"{name} tables meeting each target")
        for target, test in counts.items():
            print(f"{target:<20}" + "".join(f"{sum(bool(test(t, rows[(t, m)])) for t in ts):>10d}/{len(ts):<2d}"
                                            for m in models))


def plot(rows: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tokeff.io import save_figure

    truths = list(dict.fromkeys(t for t, _ in rows))
    models = list(dict.fromkeys(m for _, m in rows))
    fig, ax = plt.subplots(figsize=(10, 4.2))
    ax.axhspan(0.80, 0.95, color="C2", alpha=0.15, label="target 80-95%")
    ax.axhline(0.9, color="C2", lw=0.8)
    width = 0.8 / len(models)
    for j, m in enumerate(models):
        x = np.arange(len(truths)) + (j - (len(models) - 1) / 2) * width
        ax.bar(x, [rows[(t, m)]["coverage"]["0.9"] if (t, m) in rows else np.nan for t in truths], width, label=m)
    ax.set_xticks(np.arange(len(truths)), truths, rotation=25, ha="right", fontsize=8)
    ax.set(ylim=(0, 1.02), ylabel="coverage of 90% intervals",
           title="top third by compute held out, chinchilla fitted (simulated: ~12x beyond the fit; real: 16-60x)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    save_figure(fig, path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--truths", nargs="*", default=list(TRUTHS), choices=list(TRUTHS))
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--method", default="map", choices=["nuts", "map"], help="for old and new")
    parser.add_argument("--chains", type=int, default=2)
    parser.add_argument("--draws", type=int, default=500, help="NUTS: warmup = draws per chain")
    parser.add_argument("--real", action="append", default=[], metavar="CSV",
                        help="a real table (CSV), Porian et al.'s pickle or the over-training testbed's "
                             "exp_data/models directory, to backtest too (see the module doc); repeatable")
    parser.add_argument("--plot", metavar="PNG", help="write the 90%% coverage per truth and model here")
    args = parser.parse_args()
    if args.method == "nuts":
        from tokeff.devices import split_cpu_for_chains

        split_cpu_for_chains(args.chains)  # before any JAX work: chains in parallel, as `tokeff backtest` runs them

    print(f"{'truth':<20}{'model':<10}{'cov50':>6}{'cov80':>6}{'cov90':>6}{'sd90':>6}{'|err|%':>8}{'sd':>6}{'bias%':>7}{'w90%':>7}"
          f"{'x-extrap':>9}{'h90':>6}{'h|err|':>7}{'ok':>6}{'s/table':>8}{'crps%':>7}{'lpd':>7}", flush=True)
    rows = {}
    cases = [(t, None) for t in args.truths] + [
        (f"{REAL}{name}", table) for p in args.real for name, table in real_tables(p).items()]
    sources = {t: f"simulated: {t} truth, {args.seeds} seed(s) (tokeff.laws.simulate)" for t in args.truths}
    sources |= {f"{REAL}{name}": src for p in args.real for name, src in real_sources(p).items()}
    for truth, table in cases:
        for model in args.models:
            options = {"method": args.method, **MODELS[model]}
            if options["method"] == "nuts":
                options |= {"chains": args.chains, "draws": args.draws, "warmup": args.draws}
            r = rows[(truth, model)] = (run_real(table, options, real_cut(truth[len(REAL):], table)) if table is not None
                                        else run_one(truth, model, args.seeds, options))
            cov = r["coverage"]
            print(f"{truth:<20}{model:<10}{cov['0.5']:6.2f}{cov['0.8']:6.2f}{cov['0.9']:6.2f}{r['sd90']:6.2f}{r['error']:8.2f}{r['sd_error']:6.2f}"
                  f"{r['bias']:7.2f}{r['width']:7.2f}{r['factor']:9.1f}{r['h90']:6.2f}{r['h_error']:7.2f}{r['ok']:>4}/{r['seeds']}"
                  f"{r['seconds_per_table']:8.1f}{r['crps']:7.3f}{r['lpd']:7.2f}", flush=True)
    print_ranking(rows, sources)
    if args.plot:
        plot(rows, args.plot)
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
