"""Where a sweep point's time goes: train steps, scoring, everything else — cold path vs warm engine.

The same points (the demo config's: SmolLM2-135M-Instruct from its GGUF, MMLU medical subjects,
offline; at the default budget one or two optimizer steps each) run twice in this process, each into its own sweep dir:

- cold: `tokeff.sweep.engine:train_and_evaluate_cold`, what every point did before the warm
  engine (load the model, tokenise, build and compile the step, train, checkpoint the end,
  reload the checkpoint, score);
- warm: `tokeff.sweep.engine.WarmEngine`, which loads, tokenises and compiles once.

"Everything else" is the point's wall time minus its train steps (compiles excluded) and its
scoring (compiles included). The warm engine's first point pays the loading and compiling:
the table shows it apart from the mean of the later points. The cold path runs first, so the
persistent compilation cache (on, as in every `tokeff sweep`) favours the warm one only
through what the cold path left in it — run with TOKEFF_CACHE pointed at an empty folder to
start both from nothing.

    python bench/sweep_overhead.py                  # 3 points (3 strategies x 1 budget)
    python bench/sweep_overhead.py --budgets 4.4e11,8.8e11 --questions 32
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def sweep_config(budgets: list[float], questions: int):
    """The demo's sweep (its default config: model, data, optimizer, packing) at `budgets`, one seed."""
    from tokeff.demo.config import load_demo_config

    config = load_demo_config(None)
    config.grid.budgets, config.grid.seeds = tuple(budgets), (0,)
    config.eval.max_questions, config.train.log.progress = int(questions), False
    return config


def split(row) -> tuple[float, float, float, float]:
    """(wall, train steps, scoring, everything else) of one row, in seconds."""
    extra = row["extra"]
    wall, train, score = row["wall_seconds"], extra["time_train_steps"], extra["time_scoring"]
    return wall, train, score, wall - train - score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", default="4.4e11", help="comma-separated FLOP budgets")
    parser.add_argument("--questions", type=int, default=16, help="held-out questions scored per point")
    parser.add_argument("--paths", default="cold,warm", help="which paths to run (the ratio needs both)")
    args = parser.parse_args()

    from tokeff import sweep
    from tokeff.cache import enable_compilation_cache
    from tokeff.sweep.engine import WarmEngine, train_and_evaluate_cold

    enable_compilation_cache()
    config = sweep_config([float(b) for b in args.budgets.split(",")], args.questions)
    tables = {}
    with tempfile.TemporaryDirectory(prefix="tokeff-sweep-overhead-") as tmp:
        paths = {"cold": train_and_evaluate_cold, "warm": WarmEngine()}
        for name in args.paths.split(","):
            runner = paths[name]
            start = time.perf_counter()
            rows = sweep.run_sweep(config, os.path.join(tmp, name), runner=runner, progress=False)
            tables[name] = ([split(r) for r in rows], time.perf_counter() - start)

    print(f"{len(next(iter(tables.values()))[0])} points of {config.train.model}, {args.questions} questions each "
          f"(seconds; machine: {os.cpu_count()} CPUs)")
    print(f"{'path':<6} {'point':<10} {'wall':>7} {'train steps':>12} {'scoring':>8} {'everything else':>16}")
    means = {}
    for name, (splits, total) in tables.items():
        for i, (wall, train, score, other) in enumerate(splits):
            print(f"{name:<6} {i + 1:<10} {wall:7.1f} {train:12.1f} {score:8.1f} {other:16.1f}")
        later = splits[1:] or splits
        means[name] = [statistics.mean(col) for col in zip(*later)]
        wall, train, score, other = means[name]
        print(f"{name:<6} {'mean 2..N':<10} {wall:7.1f} {train:12.1f} {score:8.1f} {other:16.1f}")
        print(f"{name:<6} {'sweep':<10} {total:7.1f}")
    if len(means) < 2:
        return
    cold, warm = means["cold"], means["warm"]
    print(f"cold/warm, points 2..N: wall {cold[0] / warm[0]:.1f}x, everything else {cold[3] / max(warm[3], 1e-9):.1f}x; "
          f"whole sweep {tables['cold'][1] / tables['warm'][1]:.1f}x")


if __name__ == "__main__":
    main()
