"""Multiple-choice eval throughput (questions/s) of SmolLM2-135M-Instruct on MMLU, per method.

Each (method, batch size) runs twice over the same questions: the first pass includes XLA
compilation (one program per length bucket), the second is the steady state. Achieved GFLOP/s
is the accountant's eval FLOPs of the shapes run (padding included) over the steady wall time;
on a shared machine, questions per CPU-second is the comparable figure.
cloze scores 1 row per question (the prompt once, then its 4 choices under a block mask; only
the answer tokens are unembedded; cloze_norm and cloze_token come from the same pass); letter
scores 1 row (choices listed in the prompt), unembedding its last position only.

Run: .venv/bin/python bench/eval_bench.py [--questions 32] [--batch-sizes 8,16] [--model SPEC]
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gguf:smollm2-135m-instruct")
    parser.add_argument("--subjects", default="medical")
    parser.add_argument("--questions", type=int, default=32)
    parser.add_argument("--batch-sizes", default="16")
    parser.add_argument("--methods", default="cloze,letter")
    args = parser.parse_args()

    import jax
    import numpy as np

    from tokeff.data.sources import load_multiple_choice
    from tokeff.eval import evaluate_multiple_choice
    from tokeff.models.load import load_model

    ds = load_multiple_choice("mmlu", subjects=args.subjects)
    rows = np.sort(np.random.default_rng(0).choice(len(ds), min(args.questions, len(ds)), replace=False))
    records = ds.select(rows.tolist())
    t0 = time.perf_counter()
    loaded = load_model(args.model)
    load_s = time.perf_counter() - t0

    table = []
    for method in args.methods.split(","):
        for batch in (int(b) for b in args.batch_sizes.split(",")):
            timings = []
            for _ in range(2):  # first pass compiles, second is steady state
                wall, cpu = time.perf_counter(), time.process_time()
                res = evaluate_multiple_choice(loaded, records, method=method, batch_size=batch)
                timings.append((time.perf_counter() - wall, time.process_time() - cpu))
            (first, _), (steady, steady_cpu) = timings
            table.append((method, batch, res.n, first, steady, res.n / steady, res.flops / steady / 1e9,
                          steady_cpu / steady, res.n / steady_cpu, res.accuracy))

    print(f"model {args.model} (loaded in {load_s:.1f} s), MMLU {args.subjects}, "
          f"{len(records)} questions, backend {jax.default_backend()} x{jax.device_count()}")
    header = (f"{'method':<8} {'batch':>5} {'n':>4} {'1st pass s':>10} {'steady s':>9} {'q/s':>7} "
              f"{'GFLOP/s':>8} {'cpu/wall':>8} {'q/cpu-s':>7} {'acc':>6}")
    print(header)
    print("-" * len(header))
    for method, batch, n, first, steady, qps, gflops, load, q_cpu, acc in table:
        print(f"{method:<8} {batch:>5} {n:>4} {first:>10.1f} {steady:>9.1f} {qps:>7.2f} {gflops:>8.1f} "
              f"{load:>8.2f} {q_cpu:>7.2f} {acc:>6.3f}")
    print("cpu/wall: process CPU seconds per wall second (2.0 = both cores busy with this run; "
          "less = waiting for a shared core). q/cpu-s: questions per CPU second, the figure "
          "that does not depend on what else the machine runs.")


if __name__ == "__main__":
    main()
