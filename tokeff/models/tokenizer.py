"""Tokenizers as `tokenizers.Tokenizer` objects: a tiny byte-level one and the GGUF rebuild.

Everything downstream (data pipeline, eval, generate) sees one type, `tokenizers.Tokenizer`,
whatever the checkpoint format, plus the chat-template renderer that instruct models need.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from typing import Sequence

from tokeff.errors import UserError
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

# Special tokens of the byte tokenizer, after the 256 byte ids: ChatML markers so tiny models
# can be trained on the same chat format as SmolLM2.
BYTE_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


def byte_tokenizer() -> Tokenizer:
    """Byte-level tokenizer: ids 0..255 are bytes, then BYTE_SPECIALS (259 ids; fits the tiny presets)."""
    vocab = {char: b for b, char in enumerate(_gpt2_byte_chars())}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in BYTE_SPECIALS])
    return tok


def _gpt2_byte_chars() -> list[str]:
    """GPT-2's reversible byte -> printable character table, in byte order."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def bpe_from_gguf(tokens: Sequence[str], token_types: Sequence[int], merges: Sequence[str]) -> Tokenizer:
    """A GPT-2-style byte-level BPE tokenizer from GGUF `tokenizer.ggml.*` metadata.

    SmolLM2's pre-tokenizer (llama.cpp `pre = smollm`) splits digits individually before the
    GPT-2 byte-level split; control tokens (type 3) become special tokens so that chat markers
    such as `<|im_start|>` encode as one id.
    """
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[tuple(m.split(" ", 1)) for m in merges]))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    control = [t for t, kind in zip(tokens, token_types) if kind == 3]
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in control])
    return tok


@dataclasses.dataclass(frozen=True)
class TokenizerInfo:
    """What it takes to talk to a model: its tokenizer, chat template and bos/eos ids.

    Every checkpoint reader returns one, and a loaded model or a tokenizer-only load carries
    one, so training, evaluation and the data task read the same fields.
    """

    tokenizer: Tokenizer | None
    chat_template: str | None = None
    bos_id: int | None = None
    eos_id: int | None = None

    @property
    def prepend_bos_id(self) -> int | None:
        """What to put before each training/eval sequence (`prepended_bos`)."""
        return prepended_bos(self.tokenizer, self.bos_id)


class HasTokens:
    """The TokenizerInfo fields read straight off anything that carries one as `.tokens`
    (a loaded model, a tokenizer-only load), so callers write `model.eos_id`."""

    tokens: TokenizerInfo

    @property
    def tokenizer(self):
        return self.tokens.tokenizer

    @property
    def chat_template(self) -> str | None:
        return self.tokens.chat_template

    @property
    def bos_id(self) -> int | None:
        return self.tokens.bos_id

    @property
    def eos_id(self) -> int | None:
        return self.tokens.eos_id

    @property
    def prepend_bos_id(self) -> int | None:
        return self.tokens.prepend_bos_id


def prepended_bos(tokenizer: Tokenizer | None, bos_id: int | None) -> int | None:
    """The id to put before every sequence: `bos_id` when the tokenizer's own post-processor adds
    it (Llama 3), None when it does not (SmolLM2 and Qwen2 add no BOS, although their vocabularies
    name one). Training and evaluation both ask this, so their rows start the same way."""
    if tokenizer is None or bos_id is None:
        return None
    with_special = tokenizer.encode("a", add_special_tokens=True).ids
    return bos_id if with_special and with_special[0] == bos_id else None


def encode(tokenizer: Tokenizer, text: str) -> list[int]:
    """Token ids of `text`; special-token strings in the text map to their single ids."""
    return tokenizer.encode(text, add_special_tokens=False).ids


def decode(tokenizer: Tokenizer, ids: Sequence[int], *, skip_special: bool = True) -> str:
    return tokenizer.decode(list(ids), skip_special_tokens=skip_special)


def render_chat(template: str, messages: list[dict[str, str]], *, add_generation_prompt: bool = True) -> str:
    """A chat prompt rendered with a model's Jinja chat template (sandboxed, as transformers does)."""
    import jinja2

    try:
        return _compile_chat_template(template).render(
            messages=messages, add_generation_prompt=add_generation_prompt, bos_token="", eos_token=""
        )
    except jinja2.TemplateError as e:
        raise UserError(f"chat_template: {e}") from e


@functools.lru_cache(maxsize=8)
def _compile_chat_template(template: str):
    """Compiled once per template: the data pipeline renders thousands of prompts."""
    import jinja2
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise jinja2.TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = lambda x, **kw: json.dumps(x, ensure_ascii=False, **kw)
    env.globals["raise_exception"] = raise_exception
    try:
        return env.from_string(template)
    except jinja2.TemplateError as e:
        raise UserError(f"chat_template: cannot parse: {e}") from e
