"""Tokenisation with the model's tokenizer, cached on disk.

Prompt and answer are encoded separately and concatenated, so the answer tokens (the ones
carrying the loss) are exactly the tokens cloze evaluation scores, with no merge across the
boundary. Layout of one example: [bos] + prompt + answer + [eos]; the eos (when given) belongs
to the answer, so the model learns to stop.

The cache key is sha256 of (tokenizer fingerprint, the rendered texts, the options): the
texts already encode the dataset and the prompt format, so a changed question, format,
tokenizer or bos/eos choice can never reuse stale tokens. Entries are single .npz files
written to a temp name and renamed (no half-written cache files).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tokeff.errors import UserError

LOSS_ON = ("answer", "all")


@dataclasses.dataclass(frozen=True)
class TokenizedExample:
    input_ids: np.ndarray  # int32[L]
    loss_mask: np.ndarray  # bool[L]: True where the token is a training target

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


def default_cache_dir() -> Path:
    """cache_root()/tokens: $TOKEFF_CACHE/tokens, else ~/.cache/tokeff/tokens (tokeff.cache)."""
    from tokeff.cache import cache_root

    return cache_root() / "tokens"


def tokenizer_fingerprint(tokenizer) -> str:
    """A hash of the tokenizer's full serialisation (vocabulary, merges, normaliser...)."""
    return hashlib.sha256(tokenizer.to_str().encode()).hexdigest()[:16]


def tokenize_pairs(
    pairs: Sequence[tuple[str, str]],
    tokenizer,
    *,
    bos_id: int | None = None,
    eos_id: int | None = None,
    loss_on: str = "answer",
    cache_dir: str | os.PathLike | None = None,
    label: str = "",
) -> list[TokenizedExample]:
    """Token ids and loss masks for (prompt, answer) pairs; cached unless cache_dir is False.

    loss_on: "answer" (answer tokens and eos) or "all" (every token after the first).
    label: a human-readable prefix for the cache file name (e.g. the prompt format key).
    """
    if loss_on not in LOSS_ON:
        raise UserError(f"loss_on: must be answer or all, got {loss_on!r}")
    if not pairs:
        raise UserError("dataset: empty selection, nothing to tokenize")
    key = _cache_key(pairs, tokenizer, bos_id, eos_id, loss_on)
    path = None
    if cache_dir is not False:
        directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        path = directory / f"{_safe(label)}{'-' if label else ''}{key}.npz"
        if path.exists():
            try:
                return _unpack(np.load(path))
            except (OSError, ValueError, KeyError):
                path.unlink(missing_ok=True)  # a damaged entry is recomputed, not trusted
    prompt_ids = _encode_batch(tokenizer, [p for p, _ in pairs])
    answer_ids = _encode_batch(tokenizer, [a for _, a in pairs])
    examples = [_assemble(p, a, bos_id, eos_id, loss_on) for p, a in zip(prompt_ids, answer_ids)]
    if path is not None:
        _save(path, examples)
    return examples


def tokenize_dataset(ds, tokenizer, fmt=None, *, exemplars=None, bos_id: int | None = None,
                     eos_id: int | None = None, loss_on: str = "answer",
                     cache_dir: str | os.PathLike | None = None) -> list[TokenizedExample]:
    """Render `ds` with prompt format `fmt` (default "qa") and tokenize it (cached)."""
    from tokeff.data.prompts import PromptFormat, render

    fmt = fmt or PromptFormat()
    pairs = render(ds, fmt, exemplars=exemplars)
    return tokenize_pairs(pairs, tokenizer, bos_id=bos_id, eos_id=eos_id, loss_on=loss_on,
                          cache_dir=cache_dir, label=fmt.key())


def lengths(examples: Sequence[TokenizedExample]) -> np.ndarray:
    """Token count of each example (int64[N])."""
    return np.fromiter((len(e) for e in examples), dtype=np.int64, count=len(examples))


def _encode_batch(tokenizer, texts: list[str]) -> list[list[int]]:
    """The one place text meets the tokenizer (tests count calls here)."""
    return [enc.ids for enc in tokenizer.encode_batch_fast(texts, add_special_tokens=False)]


def _assemble(prompt: list[int], answer: list[int], bos_id, eos_id, loss_on) -> TokenizedExample:
    head = ([bos_id] if bos_id is not None else []) + prompt
    tail = answer + ([eos_id] if eos_id is not None else [])
    ids = np.asarray(head + tail, dtype=np.int32)
    if loss_on == "answer":
        mask = np.zeros(len(ids), dtype=np.bool_)
        mask[len(head):] = True
    else:
        mask = np.ones(len(ids), dtype=np.bool_)
        mask[:1] = False  # the first token is never predicted
    return TokenizedExample(ids, mask)


def _cache_key(pairs, tokenizer, bos_id, eos_id, loss_on) -> str:
    h = hashlib.sha256()
    h.update(f"v1|{tokenizer_fingerprint(tokenizer)}|{bos_id}|{eos_id}|{loss_on}|".encode())
    for prompt, answer in pairs:
        h.update(f"{len(prompt)}:{prompt}{len(answer)}:{answer}".encode())
    return h.hexdigest()[:24]


def _save(path: Path, examples: list[TokenizedExample]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    offsets = np.concatenate([[0], np.cumsum([len(e) for e in examples])]).astype(np.int64)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp.npz")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, ids=np.concatenate([e.input_ids for e in examples]),
                     mask=np.concatenate([e.loss_mask for e in examples]), offsets=offsets)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _unpack(data) -> list[TokenizedExample]:
    ids, mask, offsets = data["ids"], data["mask"], data["offsets"]
    return [TokenizedExample(ids[a:b], mask[a:b]) for a, b in zip(offsets[:-1], offsets[1:])]


def _safe(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in label)[:60]
