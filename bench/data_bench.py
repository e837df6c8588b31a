"""Data pipeline speed on all 14,042 MMLU questions: load, render, tokenise (cold and cached),
select subsets with every strategy, and lay out one epoch of packed batches.

Target: tokenising + selecting from all of MMLU in under 10 s on a 2-core CPU,
cached runs much less. Run: .venv/bin/python bench/data_bench.py
"""

from __future__ import annotations

import tempfile
import time

import numpy as np


def main() -> None:
    from tokeff.data.batching import BatchStream
    from tokeff.data.composition import select
    from tokeff.data.model_tokenizer import load_tokenizer
    from tokeff.data.prompts import PromptFormat, render
    from tokeff.data.sources import load_multiple_choice
    from tokeff.data.tokenize import lengths, tokenize_pairs
    from tokeff.models.config import get_preset

    rows: list[tuple[str, float, float, str]] = []

    def timed(name, fn, note=""):
        """Wall and CPU seconds (CPU includes the tokenizer's threads): on a shared machine
        wall time also counts waiting for a core."""
        wall, cpu = time.perf_counter(), time.process_time()
        out = fn()
        rows.append((name, time.perf_counter() - wall, time.process_time() - cpu,
                     note(out) if callable(note) else note))
        return out

    model = timed("load SmolLM2 tokenizer (GGUF header)", load_tokenizer)
    ds = timed("load MMLU (datasets, local copy)", load_multiple_choice,
               lambda d: f"{len(d)} questions")
    pairs = timed("render qa prompts", lambda: render(ds, PromptFormat()))
    with tempfile.TemporaryDirectory() as cache:
        tok = lambda: tokenize_pairs(pairs, model.tokenizer, eos_id=model.eos_id,  # noqa: E731
                                     cache_dir=cache, label="bench")
        examples = timed("tokenise (cold cache)", tok,
                         lambda ex: f"{int(lengths(ex).sum())} tokens")
        timed("tokenise (cached)", tok)
    lens = lengths(examples)
    budget = int(lens.sum() // 4)
    for strategy in ("random", "few_long", "many_short", "balanced"):
        timed(f"select {strategy}, budget {budget}",
              lambda s=strategy: select(lens, s, token_budget=budget),
              lambda sel: f"N={sel.n_examples} L={sel.avg_tokens:.1f}")
    timed("select (N, L) = (2000, 100)",
          lambda: select(lens, "random", n_examples=2000, avg_tokens=100),
          lambda sel: f"N={sel.n_examples} L={sel.avg_tokens:.1f}")
    timed("select stratified, N=5000",
          lambda: select(lens, "stratified", n_examples=5000,
                         target_lengths=np.random.default_rng(0).normal(80, 20, 1000).astype(int)),
          lambda sel: f"L={sel.avg_tokens:.1f}")
    stream = BatchStream(examples, get_preset("smollm2-135m"), batch_size=16, layout="packed",
                         row_len=1024)
    plan = timed("plan one packed epoch (row_len 1024)", lambda: stream.epoch_plan(0),
                 lambda p: f"{len(p)} batches")
    timed("build all batches of that epoch", lambda: [stream.batch_at(k) for k in range(len(plan))],
          lambda bs: f"{sum(b.useful_tokens for b in bs) / sum(b.computed_tokens for b in bs):.1%}"
                     " of computed tokens useful")

    width = max(len(r[0]) for r in rows)
    print(f"{'step':<{width}}  {'wall s':>7}  {'CPU s':>7}  note")
    for name, wall, cpu, note in rows:
        print(f"{name:<{width}}  {wall:>7.3f}  {cpu:>7.3f}  {note}")
    for column, label in ((1, "wall"), (2, "CPU")):
        step = {r[0]: r[column] for r in rows}
        cold = sum(r[column] for r in rows if r[0].startswith(("load", "render", "select"))) \
            + step["tokenise (cold cache)"]
        warm = cold - step["tokenise (cold cache)"] + step["tokenise (cached)"]
        print(f"load + tokenise + select ({label}): cold cache {cold:.2f} s, cached {warm:.2f} s"
              " (target < 10 s)")


if __name__ == "__main__":
    main()
