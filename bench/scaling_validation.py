"""Scaling-law fit validation: recovery, simulation-based calibration, extrapolation (full sizes).

1. Recovery: 250 points simulated from the published Chinchilla parameters over Chinchilla's range
   (70M-16B params, 5B-500B tokens, 2% log-normal noise); NUTS and classic (bootstrap) 90%
   intervals must contain every true parameter.
2. Calibration (SBC): for every built-in form, `--sbc-draws` datasets drawn from the prior; the
   coverage of the 90% intervals, pooled over parameters, must lie in [85%, 95%]. NUTS as `tokeff fit`
   runs it (1000 warmup + 1000 draws, target-accept 0.98) but 2 chains, one after another; give each
   process a few `--forms` to use several cores.
3. Extrapolation: fit the lower two-thirds of compute (C = 6ND), predict the top third; coverage of
   the 90% posterior predictive intervals.
The logic lives in `tokeff.laws.validation`; this script picks sizes and prints tables.
"""

import argparse
import os
import tempfile
import time

BUILT_IN = ["chinchilla", "kaplan", "farseer", "volume", "composition", "finetune_multiplicative", "finetune_data", "bootstrapped",
            "repeated"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sbc-draws", type=int, default=50)
    parser.add_argument("--sbc-points", type=int, default=40)
    parser.add_argument("--sbc-steps", type=int, default=1000, help="warmup = draws per chain in SBC fits")
    parser.add_argument("--sbc-chains", type=int, default=2)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--forms", nargs="*", default=BUILT_IN)
    parser.add_argument("--likelihood", default="normal", choices=["normal", "student_t", "failures"],
                        help="SBC: simulated and fitted noise model of loss forms (accuracy forms: binomial)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["recovery", "calibration", "extrapolation"])
    args = parser.parse_args()

    # As `tokeff fit`: one CPU device per chain, and a compilation cache (fresh here, so that
    # compilation is counted) that lets every parallel-chain fit after the first reuse the kernel.
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="tokeff-bench-jax-"))
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1")
    from tokeff.devices import split_cpu_for_chains

    split_cpu_for_chains(args.chains)
    from tokeff.laws import validation

    if "recovery" not in args.skip:
        print("== recovery: chinchilla, 250 points, published parameters")
        ok = True
        for method, kw in (("nuts", {"chains": args.chains}), ("classic", {"bootstrap": 4000})):
            t0 = time.perf_counter()
            result = validation.recovery(method, **kw)
            print(f"{method} ({time.perf_counter() - t0:.0f} s, diagnostics ok={result['fit'].diagnostics['ok']})")
            for name, (lo, hi, true, inside) in result["params"].items():
                ok &= inside
                print(f"  {name:<6} true {true:9.4g}  90% [{lo:9.4g}, {hi:9.4g}]  {'ok' if inside else 'MISSED'}")
        print("recovery:", "PASS" if ok else "FAIL", flush=True)

    if "extrapolation" not in args.skip:
        r = validation.extrapolation(chains=args.chains)
        print(f"== extrapolation: fit {r['n_fit']} points below C={r['cut_flops']:.3g} FLOPs, "
              f"predict {r['n_predicted']} above")
        print(f"90% posterior predictive coverage on the top third: {r['coverage']:.3f} "
              f"(median interval width {r['median_width_percent']:.1f}% of the loss)", flush=True)

    if "calibration" not in args.skip:
        from tokeff.laws.model import Likelihood

        print(f"== calibration ({args.likelihood} loss noise): {args.sbc_draws} prior draws per form, {args.sbc_points} points, "
              f"NUTS {args.sbc_chains} chains x {args.sbc_steps} (+{args.sbc_steps} warmup)")
        print(f"{'form':<24} {'coverage90':>10} {'excluded':>9} {'minutes':>8}  per-parameter coverage", flush=True)
        ok = True
        for name in args.forms:
            c = validation.calibration(name, n_datasets=args.sbc_draws, n_points=args.sbc_points,
                                       chains=args.sbc_chains, steps=args.sbc_steps, progress=True,
                                       likelihood=Likelihood(kind=args.likelihood))
            ok &= 0.85 <= c.pooled <= 0.95
            per = "  ".join(f"{p} {v:.2f}" for p, v in c.per_param.items())
            print(f"{name:<24} {c.pooled:10.3f} {c.excluded:>5}/{args.sbc_draws:<3} {c.seconds / 60:8.1f}  {per}",
                  flush=True)
        print("calibration:", "PASS" if ok else "FAIL", flush=True)


if __name__ == "__main__":
    main()
