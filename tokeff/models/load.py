"""`load_model(spec)`: a model spec (`tokeff.models.spec`) loaded into a Flax model.

Every caller gets the same `LoadedModel`: the Flax model plus what it takes to talk to it
(`TokenizerInfo`: tokenizer, chat template, bos/eos ids).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tokeff.errors import UserError
from tokeff.models.config import ModelConfig, get_preset
from tokeff.models.spec import parse_model_spec
from tokeff.models.tokenizer import HasTokens, TokenizerInfo

_SMOLLM2_VOCAB = 49152  # presets of this vocabulary size get the SmolLM2 tokenizer


@dataclasses.dataclass
class LoadedModel(HasTokens):
    model: object  # tokeff.models.transformer.Transformer
    config: ModelConfig
    tokens: TokenizerInfo
    name: str


def load_model(spec: str, *, dtype: str = "float32", seed: int = 0, attention: str = "auto",
               field: str = "model") -> LoadedModel:
    """The model named by `spec` (see `tokeff.models.spec`), computing in `dtype`, its attention
    by path `attention` (`tokeff.models.attention`); a spec that names no model is refused under
    `field`, what the user called it (`--model`, `model`)."""
    parsed = parse_model_spec(spec, field)
    numerics = dict(dtype=dtype, attention=attention)
    if parsed.kind == "gguf":
        return _from_gguf(parsed, numerics)
    if parsed.kind == "hf":
        return _from_hub(parsed.target, numerics, field)
    if parsed.kind == "dir":
        return _from_hf_dir(parsed.target, numerics)
    return _from_preset(parsed.target, numerics, seed)


def build_model(cfg: ModelConfig, params: dict[tuple, np.ndarray]):
    """A Transformer holding `params` (tree path -> array), without a random init first."""
    import jax.numpy as jnp
    from flax import nnx

    from tokeff.models.transformer import Transformer

    graphdef, state = nnx.split(nnx.eval_shape(lambda: Transformer(cfg, nnx.Rngs(0))))
    flat = nnx.to_flat_state(state)
    for path, variable in flat:
        value = params[path]
        if tuple(value.shape) != tuple(variable.shape):
            raise UserError(f"checkpoint: parameter {'.'.join(map(str, path))} has shape "
                            f"{tuple(value.shape)}, expected {tuple(variable.shape)}")
        variable.set_value(jnp.asarray(value, jnp.float32))
    return nnx.merge(graphdef, nnx.from_flat_state(flat))


def preset_tokenizer(cfg: ModelConfig) -> TokenizerInfo:
    """The tokenizer `load_model` gives a preset.

    The SmolLM2 vocabulary's tokenizer for 49,152-token presets (read from the bundled GGUF's
    header, no weights); the byte tokenizer when it fits the vocabulary; else None.
    """
    if cfg.vocab_size == _SMOLLM2_VOCAB:
        from tokeff.models.gguf_checkpoint import bundled_path, read_gguf_tokenizer

        return read_gguf_tokenizer(bundled_path("smollm2-135m-instruct"))
    from tokeff.models.tokenizer import BYTE_SPECIALS, byte_tokenizer

    tokenizer = byte_tokenizer()
    if tokenizer.get_vocab_size() > cfg.vocab_size:
        return TokenizerInfo(None)
    end = tokenizer.token_to_id(BYTE_SPECIALS[0])
    return TokenizerInfo(tokenizer, None, end, end)


def _from_preset(name: str, numerics: dict, seed: int) -> LoadedModel:
    from flax import nnx

    from tokeff.models.transformer import Transformer

    cfg = get_preset(name, **numerics)
    return LoadedModel(Transformer(cfg, nnx.Rngs(seed)), cfg, preset_tokenizer(cfg), name)


def _from_gguf(spec, numerics: dict) -> LoadedModel:
    from tokeff.models.gguf_checkpoint import read_gguf
    from tokeff.models.hf_checkpoint import params_from_hf

    ckpt = read_gguf(spec.gguf_path, name=spec.text)
    cfg = ckpt.config.replace(**numerics)
    model = build_model(cfg, params_from_hf(cfg, ckpt.tensors))
    return LoadedModel(model, cfg, ckpt.tokens, cfg.name)


def _from_hub(repo_id: str, numerics: dict, field: str) -> LoadedModel:
    from huggingface_hub import snapshot_download

    try:
        path = snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors", "*.jinja"])
    except Exception as e:  # offline, unknown repo, gated repo: all user-facing
        raise UserError(f"{field}: could not download hf:{repo_id} ({type(e).__name__})") from None
    loaded = _from_hf_dir(path, numerics)
    return dataclasses.replace(loaded, name=f"hf:{repo_id}", config=loaded.config.replace(name=f"hf:{repo_id}"))


def _from_hf_dir(path: str, numerics: dict) -> LoadedModel:
    from tokeff.models.hf_checkpoint import params_from_hf, read_hf_dir, read_hf_tokenizer

    cfg, tensors = read_hf_dir(path)
    cfg = cfg.replace(**numerics)
    model = build_model(cfg, params_from_hf(cfg, tensors))
    return LoadedModel(model, cfg, read_hf_tokenizer(path), cfg.name)
