"""Fit speed: NUTS on 250 Chinchilla points (4 chains x 1000 draws, 1000 warmup) vs the classic
Huber/L-BFGS fit with 4000 bootstrap resamples, timed in the same process (compilation included).

Target: NUTS <= 30 s with max r_hat <= 1.01 on a 2-core CPU.
"""

import argparse
import os
import time



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=250)
    parser.add_argument("--bootstrap", type=int, default=4000)
    parser.add_argument("--target-accept", type=float, default=None, help="default: fit()'s")
    args = parser.parse_args()

    from tokeff.devices import split_cpu_for_chains

    devices = split_cpu_for_chains(4)  # as `tokeff fit` does: one CPU device per chain
    from tokeff.laws.fit import fit
    from tokeff.laws.forms import get_form
    from tokeff.laws.simulate import CHINCHILLA_PUBLISHED
    from tokeff.laws.validation import chinchilla_table

    form = get_form("chinchilla")
    table = chinchilla_table(args.points, seed=0)

    t0 = time.perf_counter()
    extra = {} if args.target_accept is None else {"target_accept": args.target_accept}
    nuts = fit(table, form, method="nuts", chains=4, draws=1000, warmup=1000, seed=0, **extra)
    t_nuts = time.perf_counter() - t0
    t0 = time.perf_counter()
    classic = fit(table, form, method="classic", bootstrap=args.bootstrap, seed=0)
    t_classic = time.perf_counter() - t0

    diag = nuts.diagnostics
    print(f"CPU devices for chains: {devices or 'as configured by XLA_FLAGS'} ({os.cpu_count()} cores)")
    print(f"NUTS    4 chains x 1000 draws (+1000 warmup), {args.points} points: {t_nuts:6.1f} s "
          f"(max r_hat {diag['max_r_hat']:.4f}, min ESS {diag['min_ess']:.0f}, divergences {diag['divergences']})")
    print(f"classic grid {classic.summary['settings']['grid_size']} starts + {args.bootstrap} bootstrap refits: "
          f"{t_classic:6.1f} s (converged fraction {classic.diagnostics['bootstrap_converged_fraction']:.3f})")
    print(f"ratio NUTS / classic: {t_nuts / t_classic:.2f}")
    print(f"NUTS target <= 30 s and r_hat <= 1.01: {'met' if t_nuts <= 30 and diag['max_r_hat'] <= 1.01 else 'NOT met'}")
    for name in form.param_names:
        n, c = nuts.summary["params"][name], classic.summary["params"][name]
        print(f"  {name:<6} nuts [{n['q05']:.4g}, {n['q95']:.4g}]  classic [{c['q05']:.4g}, {c['q95']:.4g}]"
              f"  true {CHINCHILLA_PUBLISHED[name]:.4g}")


if __name__ == "__main__":
    main()
