"""The Hugging Face checkpoint format: config.json <-> ModelConfig, tensor names <-> our tree.

One table (`hf_layout`) says, for every parameter of `Transformer`, which HF tensor holds it and
how to reshape it; import (`read_hf_dir`) and export (`tokeff.models.export`) both use it, so
the two directions cannot drift apart. Supported: LlamaForCausalLM (Llama 2/3, SmolLM2) and
Qwen2ForCausalLM (Qwen2/2.5).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Callable

import numpy as np

from tokeff.errors import UserError
from tokeff.models.config import ModelConfig
from tokeff.models.tokenizer import TokenizerInfo

ARCHITECTURES = ("LlamaForCausalLM", "Qwen2ForCausalLM")
_MODEL_TYPE = {"LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2"}


@dataclasses.dataclass(frozen=True)
class TensorMap:
    """One parameter: our tree path, the HF tensor name and shape, and the two conversions."""

    path: tuple[str | int, ...]
    hf_name: str
    hf_shape: tuple[int, ...]
    to_ours: Callable[[np.ndarray], np.ndarray]
    to_hf: Callable[[np.ndarray], np.ndarray]


def hf_layout(cfg: ModelConfig) -> list[TensorMap]:
    d, h, g, k, f, v = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.d_ff, cfg.vocab_size
    same = lambda w: w  # noqa: E731
    maps = [TensorMap(("embedding",), "model.embed_tokens.weight", (v, d), same, same)]
    for i in range(cfg.n_layers):
        p = f"model.layers.{i}."
        blk = ("blocks", i)
        for ours, theirs, heads in (("q", "q_proj", h), ("k", "k_proj", g), ("v", "v_proj", g)):
            maps.append(TensorMap(blk + ("attn", ours), f"{p}self_attn.{theirs}.weight", (heads * k, d),
                                  lambda w, n=heads: w.T.reshape(d, n, k), lambda w: w.reshape(d, -1).T))
            if cfg.qkv_bias:
                maps.append(TensorMap(blk + ("attn", f"{ours}_bias"), f"{p}self_attn.{theirs}.bias", (heads * k,),
                                      lambda b, n=heads: b.reshape(n, k), lambda b: b.reshape(-1)))
        maps += [
            TensorMap(blk + ("attn", "o"), f"{p}self_attn.o_proj.weight", (d, h * k),
                      lambda w: w.T.reshape(h, k, d), lambda w: w.reshape(h * k, d).T),
            TensorMap(blk + ("attn_norm", "scale"), f"{p}input_layernorm.weight", (d,), same, same),
            TensorMap(blk + ("mlp_norm", "scale"), f"{p}post_attention_layernorm.weight", (d,), same, same),
            TensorMap(blk + ("mlp", "gate"), f"{p}mlp.gate_proj.weight", (f, d), np.transpose, np.transpose),
            TensorMap(blk + ("mlp", "up"), f"{p}mlp.up_proj.weight", (f, d), np.transpose, np.transpose),
            TensorMap(blk + ("mlp", "down"), f"{p}mlp.down_proj.weight", (d, f), np.transpose, np.transpose),
        ]
    maps.append(TensorMap(("final_norm", "scale"), "model.norm.weight", (d,), same, same))
    if not cfg.tie_embeddings:
        maps.append(TensorMap(("unembedding",), "lm_head.weight", (v, d), np.transpose, np.transpose))
    return maps


def _rope_fields(hf: dict) -> tuple[float, tuple[float, float, float, int] | None]:
    """rope theta and Llama-3 scaling, from either transformers>=5 `rope_parameters` or the legacy keys."""
    params = hf.get("rope_parameters") or {}
    scaling = hf.get("rope_scaling") or params
    theta = float(params.get("rope_theta", hf.get("rope_theta", 10_000.0)))
    kind = scaling.get("rope_type", scaling.get("type", "default")) if scaling else "default"
    if kind == "default":
        return theta, None
    if kind != "llama3":
        raise UserError(f"config.json: rope_scaling type {kind!r} is not supported (only llama3 or none)")
    return theta, (float(scaling["factor"]), float(scaling["low_freq_factor"]),
                   float(scaling["high_freq_factor"]), int(scaling["original_max_position_embeddings"]))


def config_from_hf(hf: dict, name: str) -> ModelConfig:
    """ModelConfig from a parsed config.json; unsupported features are user errors."""
    archs = hf.get("architectures") or [{"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}.get(
        hf.get("model_type"), str(hf.get("model_type")))]
    arch = archs[0]
    if arch not in ARCHITECTURES:
        raise UserError(f"config.json: architecture {arch!r} is not supported; supported: {', '.join(ARCHITECTURES)}")
    if hf.get("hidden_act", "silu") != "silu":
        raise UserError(f"config.json: hidden_act {hf['hidden_act']!r} is not supported (only silu)")
    if hf.get("mlp_bias"):
        raise UserError("config.json: mlp_bias=true is not supported")
    if hf.get("use_sliding_window"):
        raise UserError("config.json: use_sliding_window=true is not supported")
    try:
        n_heads = int(hf["num_attention_heads"])
        d_model = int(hf["hidden_size"])
        theta, scaling = _rope_fields(hf)
        return ModelConfig(
            name=name,
            vocab_size=int(hf["vocab_size"]),
            d_model=d_model,
            n_layers=int(hf["num_hidden_layers"]),
            n_heads=n_heads,
            n_kv_heads=int(hf.get("num_key_value_heads") or n_heads),
            head_dim=int(hf.get("head_dim") or d_model // n_heads),
            d_ff=int(hf["intermediate_size"]),
            max_seq_len=int(hf.get("max_position_embeddings", 2048)),
            rope_theta=theta,
            rope_scaling=scaling,
            rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
            tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
            qkv_bias=arch == "Qwen2ForCausalLM" or bool(hf.get("attention_bias", False)),
        )
    except KeyError as e:
        raise UserError(f"config.json: missing key {e.args[0]!r}") from None


def config_to_hf(cfg: ModelConfig, *, bos_id: int | None = None, eos_id: int | None = None) -> dict:
    """config.json content in the architecture's own format (Qwen2 when q/k/v have biases)."""
    arch = "Qwen2ForCausalLM" if cfg.qkv_bias else "LlamaForCausalLM"
    hf = {
        "architectures": [arch],
        "model_type": _MODEL_TYPE[arch],
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_kv_heads,
        "head_dim": cfg.head_dim,
        "intermediate_size": cfg.d_ff,
        "max_position_embeddings": cfg.max_seq_len,
        "rope_theta": cfg.rope_theta,
        "rms_norm_eps": cfg.rms_norm_eps,
        "tie_word_embeddings": cfg.tie_embeddings,
        "hidden_act": "silu",
        "torch_dtype": "float32",
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
    }
    if arch == "LlamaForCausalLM":
        hf.update(attention_bias=False, mlp_bias=False)
    else:
        hf.update(use_sliding_window=False)
    if cfg.rope_scaling is not None:
        factor, low, high, original = cfg.rope_scaling
        hf["rope_scaling"] = {"rope_type": "llama3", "factor": factor, "low_freq_factor": low,
                              "high_freq_factor": high, "original_max_position_embeddings": original}
    return hf


def _safetensors_files(path: str) -> list[str]:
    index = os.path.join(path, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as fh:
            names = sorted(set(json.load(fh)["weight_map"].values()))
        for name in names:
            if not os.path.exists(os.path.join(path, name)):
                raise UserError(f"checkpoint: missing file {os.path.join(path, name)} (listed in {index})")
        return [os.path.join(path, n) for n in names]
    single = os.path.join(path, "model.safetensors")
    if not os.path.exists(single):
        raise UserError(f"checkpoint: missing file {single} (nor model.safetensors.index.json)")
    return [single]


def read_hf_dir(path: str, name: str | None = None) -> tuple[ModelConfig, dict[str, np.ndarray]]:
    """Config and float32 tensors (by HF name) from a local HF checkpoint directory."""
    from safetensors import safe_open

    config_path = os.path.join(path, "config.json")
    if not os.path.exists(config_path):
        raise UserError(f"checkpoint: missing file {config_path}")
    hf = _read_json(config_path)
    if not isinstance(hf, dict):
        raise UserError(f"checkpoint: {config_path} is not a JSON object")
    try:
        cfg = config_from_hf(hf, name or os.path.basename(os.path.normpath(path)))
    except (KeyError, TypeError, ValueError) as e:
        if isinstance(e, UserError):
            raise
        raise UserError(f"checkpoint: {config_path}: missing or invalid field ({type(e).__name__}: {e})") from None
    tensors = {}
    for file in _safetensors_files(path):
        try:
            with safe_open(file, framework="numpy") as fh:
                for key in fh.keys():
                    tensors[key] = fh.get_tensor(key)
        except Exception as e:  # noqa: BLE001 - safetensors raises its own error types for damaged files
            raise UserError(f"checkpoint: {file} is damaged or truncated ({type(e).__name__})") from None
    return cfg, tensors


def _read_json(file: str):
    """A JSON file of a checkpoint, or a UserError naming it when it is not JSON."""
    try:
        with open(file, encoding="utf-8") as fh:
            return json.load(fh)
    except (ValueError, UnicodeDecodeError) as e:
        raise UserError(f"checkpoint: {file} is not valid JSON ({str(e).splitlines()[0][:80]})") from None


def params_from_hf(cfg: ModelConfig, tensors: dict[str, np.ndarray]) -> dict[tuple, np.ndarray]:
    """Our parameter arrays by tree path; every tensor checked for presence and shape."""
    params = {}
    for m in hf_layout(cfg):
        if m.hf_name not in tensors:
            raise UserError(f"checkpoint: tensor {m.hf_name} is missing")
        w = tensors[m.hf_name]
        if tuple(w.shape) != m.hf_shape:
            raise UserError(f"checkpoint: tensor {m.hf_name} has shape {tuple(w.shape)}, expected {m.hf_shape}")
        params[m.path] = m.to_ours(np.asarray(w, dtype=np.float32))
    return params


def read_hf_tokenizer(path: str) -> TokenizerInfo:
    """The tokenizer, chat template and bos/eos ids of an HF directory (tokenizer None without tokenizer.json)."""
    from tokenizers import Tokenizer

    def _json(name: str) -> dict:
        file = os.path.join(path, name)
        if not os.path.exists(file):
            return {}
        value = _read_json(file)
        if not isinstance(value, dict):
            raise UserError(f"checkpoint: {file} is not a JSON object")
        return value

    tok_file = os.path.join(path, "tokenizer.json")
    try:
        tokenizer = Tokenizer.from_file(tok_file) if os.path.exists(tok_file) else None
    except Exception as e:  # noqa: BLE001 - the tokenizers library raises a bare Exception
        raise UserError(f"checkpoint: {tok_file} is not a valid tokenizer ({str(e).splitlines()[0][:80]})") from None
    tok_cfg, cfg, gen = _json("tokenizer_config.json"), _json("config.json"), _json("generation_config.json")
    template = tok_cfg.get("chat_template")
    jinja = os.path.join(path, "chat_template.jinja")
    if template is None and os.path.exists(jinja):
        with open(jinja) as fh:
            template = fh.read()

    def _id(key: str) -> int | None:
        value = gen.get(f"{key}_token_id", cfg.get(f"{key}_token_id"))
        if isinstance(value, list):  # Llama 3 lists several eos ids; the first is the primary one
            value = value[0] if value else None
        token = tok_cfg.get(f"{key}_token")
        if value is None and tokenizer is not None and isinstance(token, str):
            value = tokenizer.token_to_id(token)
        return None if value is None else int(value)

    return TokenizerInfo(tokenizer, template, _id("bos"), _id("eos"))
