"""Tokens per parameter at Gopher's 5.76e23 FLOPs from a Chinchilla-like fit (target: median 12-30).

Tables of `--points` runs over Chinchilla's range (70M-16B params, 5B-500B tokens), simulated from
the Epoch AI replication of Chinchilla's law (E 1.82, A 482, B 2085, alpha 0.348, beta 0.366: 18.4
tokens per parameter at that budget) with `--sigma` log-normal noise and `--diverged` runs that
went back to an initial-level loss (~11 nats). Fitted with the defaults (Student-t, discrepancy,
the exclusion rule) and with the plain ones (`--likelihood normal --discrepancy none
--no-exclude`, diverged runs then kept), NUTS 4 chains x 1000 or MAP/Laplace; prints the median and
90% interval of D_opt / N_opt per seed, then per setting over the seeds: the median of the
per-seed medians, the spread of log(median) across seeds (how much one table decides: sampling
noise, not bias), the mean log(median / truth) with its standard error (the bias), and how often
the 90% interval covers the truth.
"""

import argparse
import time

from tokeff.devices import split_cpu_for_chains


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=150)
    parser.add_argument("--diverged", type=int, default=3)
    parser.add_argument("--sigma", type=float, default=0.02, help="log-normal noise of a run's loss")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--method", default="nuts", choices=["nuts", "map"])
    parser.add_argument("--defaults-only", action="store_true", help="skip the plain settings (normal, no discrepancy, all rows)")
    args = parser.parse_args()
    split_cpu_for_chains(args.chains)
    import numpy as np

    from tokeff.decide.frontier import allocate_pretraining
    from tokeff.laws.fit import fit
    from tokeff.laws.forms import get_form
    from tokeff.laws.simulate import design, simulate
    from tokeff.published import CHINCHILLA_RUN, PUBLISHED_CHINCHILLA

    truth = PUBLISHED_CHINCHILLA["Epoch AI replication (Besiroglu et al. 2024)"]
    form = get_form("chinchilla")
    true_tpp = float(form.allocate({k: np.float32(v) for k, v in truth.items()}, CHINCHILLA_RUN["C"])["tokens_per_param"])
    settings = {"defaults": {}}
    if not args.defaults_only:
        settings["plain (normal, no discrepancy, all rows)"] = {
            "likelihood": "normal", "discrepancy": "none", "exclude": False}
    results = {name: [] for name in settings}
    print(f"truth: {true_tpp:.1f} tokens per parameter; {args.points} runs, noise {args.sigma:g}, "
          f"{args.diverged} diverged, {args.method}")
    print(f"{'seed':>4}  {'model':<44}{'tokens/param median':>20}{'q05':>8}{'q95':>8}{'ok':>5}{'s':>6}")
    for seed in range(args.seeds):
        d = simulate(form, truth, design(form, args.points, seed=100 + seed), sigma=args.sigma, seed=200 + seed)
        rng = np.random.default_rng(300 + seed)
        k = args.diverged
        table = {"params": np.append(d["N"], np.exp(rng.uniform(np.log(7e7), np.log(1.6e10), k))),
                 "tokens_seen": np.append(d["D"], np.exp(rng.uniform(np.log(5e9), np.log(5e11), k))),
                 "eval_loss": np.append(d["y"], rng.uniform(10.5, 11.5, k))}
        for name, kw in settings.items():
            t0 = time.perf_counter()
            r = fit(table, form, method=args.method, chains=args.chains, seed=seed, **kw)
            q = allocate_pretraining(form, r.samples, CHINCHILLA_RUN["C"])["decision"]["tokens_per_param"]
            results[name].append((q["median"], q["q05"], q["q95"]))
            print(f"{seed:>4}  {name:<44}{q['median']:>20.1f}{q['q05']:>8.1f}{q['q95']:>8.1f}"
                  f"{str(r.diagnostics['ok']):>5}{time.perf_counter() - t0:>6.0f}", flush=True)
    print(f"\n{'model':<44}{'median of medians':>18}{'sd log(median)':>15}{'bias log':>10}{'+-se':>7}"
          f"{'cov90':>7}")
    for name, rows in results.items():
        med, lo, hi = (np.array(c) for c in zip(*rows))
        err = np.log(med / true_tpp)
        print(f"{name:<44}{np.median(med):>18.1f}{err.std(ddof=1) if len(err) > 1 else float('nan'):>15.2f}"
              f"{err.mean():>10.2f}{err.std(ddof=1) / np.sqrt(len(err)) if len(err) > 1 else float('nan'):>7.2f}"
              f"{np.mean((lo <= true_tpp) & (true_tpp <= hi)):>7.2f}")


if __name__ == "__main__":
    main()
