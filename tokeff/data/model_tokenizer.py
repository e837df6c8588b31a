"""A model's tokenizer without its weights: what the data pipeline needs from a model spec.

`tokeff compose`, the demo's allocation step and the benchmarks need only the tokenizer, the
chat template, bos/eos and the context length. Loading a GGUF checkpoint dequantises every
tensor, and even gguf's GGUFReader takes seconds to parse the 49k-entry vocabulary arrays;
this reads just the GGUF key/value header (`tokeff.models.gguf_checkpoint.read_gguf_metadata`,
a fraction of a second).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from tokeff.errors import UserError
from tokeff.models.spec import parse_model_spec
from tokeff.models.tokenizer import HasTokens, TokenizerInfo

DEFAULT_MODEL = "gguf:smollm2-135m-instruct"


@dataclasses.dataclass(frozen=True)
class ModelTokenizer(HasTokens):
    """A model's name, tokenizer info and context length: all a data task needs of a model."""

    name: str
    tokens: TokenizerInfo
    context_len: int


def load_tokenizer(spec: str = DEFAULT_MODEL, field: str = "model") -> ModelTokenizer:
    """The tokenizer of a model spec, as `tokeff.models.load.load_model` would give it.

    gguf: reads the GGUF header only; a preset gives the tokenizer `load_model` gives it
    (SmolLM2's for 49,152-token vocabularies, else the byte tokenizer); a local HF directory
    reads tokenizer.json; hf:<id> goes through load_model. A spec naming no model or no tokenizer
    is refused under `field`, what the user called it (`--model`, `model`).
    """
    parsed = parse_model_spec(spec, field)
    if parsed.kind == "gguf":
        return _from_gguf(parsed)
    if parsed.kind == "preset":
        from tokeff.models.config import PRESETS
        from tokeff.models.load import preset_tokenizer

        cfg = PRESETS[parsed.target]
        tokens = preset_tokenizer(cfg)
        if tokens.tokenizer is None:
            raise UserError(f"{field}: preset {spec} has no tokenizer (vocab_size {cfg.vocab_size})")
        return ModelTokenizer(spec, tokens, cfg.max_seq_len)
    if parsed.kind == "dir":
        return _from_hf_dir(Path(parsed.target), field)
    from tokeff.models.load import load_model

    loaded = load_model(spec, field=field)
    if loaded.tokenizer is None:
        raise UserError(f"{field}: {spec} has no tokenizer")
    return ModelTokenizer(loaded.name, loaded.tokens, loaded.config.max_seq_len)


def _from_gguf(spec) -> ModelTokenizer:
    from tokeff.models.gguf_checkpoint import read_gguf_metadata, tokenizer_from_metadata

    path = spec.gguf_path
    meta = read_gguf_metadata(path)
    arch = meta.get("general.architecture", "llama")
    name = Path(path).stem if spec.target.endswith(".gguf") else spec.target
    return ModelTokenizer(name, tokenizer_from_metadata(meta), int(meta.get(f"{arch}.context_length", 2048)))


def _from_hf_dir(path: Path, field: str) -> ModelTokenizer:
    from tokeff.models.hf_checkpoint import read_hf_tokenizer

    tokens = read_hf_tokenizer(str(path))
    if tokens.tokenizer is None:
        raise UserError(f"{field}: {path} has no tokenizer.json")
    config_file = path / "config.json"
    try:
        config = json.loads(config_file.read_text()) if config_file.exists() else {}
    except json.JSONDecodeError as e:
        raise UserError(f"{field}: {config_file} is not valid JSON ({e.msg})") from None
    return ModelTokenizer(path.name, tokens, int(config.get("max_position_embeddings", 2048)))
