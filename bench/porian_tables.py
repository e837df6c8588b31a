"""Real isoFLOP sweeps for `bench/backtest.py --real`: Porian et al. 2024's runs as CSV tables.

"Resolving Discrepancies in Compute-Optimal Scaling of Language Models" (Porian, Wortsman, Jitsev,
Schmidt, Carmon; MIT licence) publishes `data/summary_df.pickle.xz` at
https://github.com/formll/resolving-scaling-law-discrepancies: five sweep settings, each 11-12
isoFLOP budgets (1.25e16-2.56e19 FLOPs) over 5M-900M parameters, undertrained and unstable runs
left in, as real sweeps have them. This writes one CSV per setting (`params`, `tokens_seen`,
`eval_loss`, `budget`) into OUT_DIR and prints the row counts. No copy is kept in this repository:
pass the pickle's path.

    python bench/porian_tables.py summary_df.pickle.xz /tmp/porian
    python bench/backtest.py --real /tmp/porian/*.csv --models student_t new
"""

import argparse
import os

import pandas as pd


def tables(summary: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """{setting name: table}, one row per run of every budget of the setting."""
    out = {}
    for i, setting in summary.iterrows():
        rows = [(n, t, loss, b["flops"])
                for _, b in setting["data"].iterrows() if isinstance(b["orig_n"], pd.Series)
                for n, t, loss in zip(b["orig_n"], b["orig_t"], b["orig_loss"])]
        name = f"porian{i}_{setting['hparams']}_{setting['warmup']}_{setting['decay']}_{setting['param_count']}"
        out[name] = pd.DataFrame(rows, columns=["params", "tokens_seen", "eval_loss", "budget"])
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pickle", help="summary_df.pickle.xz from the repository above")
    parser.add_argument("out_dir")
    args = parser.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    for name, table in tables(pd.read_pickle(args.pickle)).items():
        path = os.path.join(args.out_dir, f"{name}.csv")
        if os.path.exists(path):
            raise SystemExit(f"{path} exists: pick an empty OUT_DIR")
        table.to_csv(path, index=False)
        print(f"{path}: {len(table)} runs, {table['budget'].nunique()} budgets")


if __name__ == "__main__":
    main()
