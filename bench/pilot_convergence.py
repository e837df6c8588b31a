"""Do default fits converge on pilot-style fine-tuning tables? (target: >= 38 of 40 ok)

For each of `--tables` tables from `tokeff.laws.pilot.pilot_table`, `tokeff fit --form F
--chance 0.25` with the defaults (4 chains x 1000 + 1000, target-accept 0.98, one automatic retry at
0.995 after divergences); prints per form how many fits report ok (0 divergences, r-hat <= 1.01,
ESS >= 400), how many needed the retry, and the seconds per fit.
"""

import argparse
import time

from tokeff.devices import split_cpu_for_chains


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", type=int, default=40)
    parser.add_argument("--forms", nargs="*", default=["volume", "composition"])
    parser.add_argument("--chains", type=int, default=4)
    args = parser.parse_args()
    split_cpu_for_chains(args.chains)
    from tqdm.auto import tqdm

    from tokeff.laws.fit import fit
    from tokeff.laws.pilot import pilot_table

    print(f"{'form':<13}{'ok':>8}{'retried':>9}{'divergent':>10}{'s/fit':>7}")
    for form in args.forms:
        ok = retried = divergent = 0
        start = time.perf_counter()
        for seed in tqdm(range(args.tables), desc=form):
            r = fit(pilot_table(seed), form, chance=0.25, chains=args.chains, seed=seed)
            ok += r.diagnostics["ok"]
            retried += "retried" in r.summary["settings"]
            divergent += r.diagnostics["divergences"] > 0
        print(f"{form:<13}{ok:>5}/{args.tables}{retried:>9}{divergent:>10}"
              f"{(time.perf_counter() - start) / args.tables:7.1f}", flush=True)


if __name__ == "__main__":
    main()
