"""Do default fits converge on pilot-style fine-tuning tables? (target: >= 38 of 40 ok per form)

For each of `--tables` tables from `tokeff.laws.pilot.pilot_table` (seeds `--first` onwards),
`tokeff fit --form F --chance 0.25` with the defaults (4 chains x 1000 + 1000, target-accept 0.98,
one automatic retry at 0.995 after a failed diagnostic, recorded in the summary's settings). Prints
per form how many fits report ok (0 divergences, r-hat <= 1.01, ESS >= 400, E-BFMI >= 0.3), how many
needed the retry, the fits with any divergence, the worst r-hat, the smallest ESS and the seconds
per fit; `--log FILE` writes one JSON line per fit (seed, form, diagnostics, settings).
"""

import argparse
import json
import time

from tokeff.devices import split_cpu_for_chains


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", type=int, default=40)
    parser.add_argument("--first", type=int, default=0, help="seed of the first table")
    parser.add_argument("--forms", nargs="*", default=["volume", "composition"])
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--log", help="append one JSON line per fit here")
    args = parser.parse_args()
    split_cpu_for_chains(args.chains)
    from tqdm.auto import tqdm

    from tokeff.laws.fit import fit
    from tokeff.laws.pilot import pilot_table

    rows = []
    for form in args.forms:
        records, start = [], time.perf_counter()
        for seed in tqdm(range(args.first, args.first + args.tables), desc=form):
            t0 = time.perf_counter()
            r = fit(pilot_table(seed), form, chance=0.25, chains=args.chains, seed=seed)
            d = r.diagnostics
            records.append({"form": form, "seed": seed, "ok": d["ok"], "divergences": d["divergences"],
                            "max_r_hat": d["max_r_hat"], "min_ess": d["min_ess"], "min_bfmi": d["min_bfmi"],
                            "problems": d["problems"], "n_points": r.summary["n_points"],
                            "retried": r.summary["settings"].get("retried"), "seconds": time.perf_counter() - t0})
            if args.log:
                with open(args.log, "a") as f:
                    f.write(json.dumps(records[-1]) + "\n")
        rows.append((form, records, (time.perf_counter() - start) / args.tables))

    print(f"{'form':<13}{'ok':>8}{'retried':>9}{'divergent':>10}{'max r-hat':>10}{'min ESS':>9}{'s/fit':>7}")
    for form, records, seconds in rows:
        ok = sum(r["ok"] for r in records)
        print(f"{form:<13}{ok:>5}/{len(records):<2}{sum(r['retried'] is not None for r in records):>9}"
              f"{sum(r['divergences'] > 0 for r in records):>10}{max(r['max_r_hat'] for r in records):>10.3f}"
              f"{min(r['min_ess'] for r in records):>9.0f}{seconds:>7.1f}")
        for r in records:
            if not r["ok"]:
                print(f"  not ok: table {r['seed']} ({r['n_points']} rows): {'; '.join(r['problems'])}")


if __name__ == "__main__":
    main()
