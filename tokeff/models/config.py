"""Model shapes: the `ModelConfig` dataclass and the named presets.

A config is plain data shared by the model, the FLOP accountant, the data pipeline and the
allocation code, so it lives apart from the Flax module. Real presets carry the published
shapes of their checkpoints (parameter counts are tested against the published figures).
"""

from __future__ import annotations

import dataclasses
import difflib

from tokeff.errors import UserError


ATTENTION_PATHS = ("auto", "reference", "splash", "cudnn")  # tokeff.models.attention
_AUTO_PATH = {"tpu": "splash", "gpu": "cudnn"}
_CUDNN_DTYPES = ("bfloat16", "float16")


def attention_path(path: str, dtype: str, backend: str | None) -> str:
    """The attention path that runs on `backend` ("cpu", "gpu", "tpu"): `path` itself, or for
    "auto" the backend's fused kernel (splash on TPU, cudnn on GPU in bfloat16), else
    "reference". With no backend (planning before JAX starts), "auto" counts as "reference"."""
    if path not in ATTENTION_PATHS:
        raise UserError(f"model.attention: must be one of {', '.join(ATTENTION_PATHS)}, got {path!r}")
    if path == "auto":
        path = _AUTO_PATH.get(backend, "reference")
        return "reference" if path == "cudnn" and dtype not in _CUDNN_DTYPES else path
    if path == "cudnn" and backend == "gpu" and dtype not in _CUDNN_DTYPES:
        raise UserError(f"model.attention: cudnn runs bfloat16 or float16 only, the compute dtype is {dtype} "
                        "(set dtype=bfloat16 or attention=reference)")
    return path


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Shape and numerics of a Llama-family decoder (Llama, Qwen2, SmolLM2)."""

    name: str
    vocab_size: int
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    d_ff: int
    max_seq_len: int = 2048
    rope_theta: float = 10_000.0
    # Llama 3.x frequency scaling; None for plain RoPE. Keys as in HF `rope_scaling`:
    # (factor, low_freq_factor, high_freq_factor, original_max_position_embeddings).
    rope_scaling: tuple[float, float, float, int] | None = None
    rms_norm_eps: float = 1e-5
    tie_embeddings: bool = True
    qkv_bias: bool = False  # Qwen2 has biases on q, k and v.
    dtype: str = "float32"  # compute dtype; parameters stay float32 (master weights).
    remat: bool = False  # rematerialise each block in the backward pass.
    # Attention path: "auto" (by backend), "reference", "splash" or "cudnn" (tokeff.models.attention).
    attention: str = "auto"

    def __post_init__(self):
        for field in ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "head_dim", "d_ff"):
            if getattr(self, field) <= 0:
                raise UserError(f"model.{field}: must be positive, got {getattr(self, field)}")
        if self.n_heads % self.n_kv_heads:
            raise UserError(
                f"model.n_kv_heads: {self.n_kv_heads} does not divide n_heads={self.n_heads}"
            )
        if self.attention not in ATTENTION_PATHS:
            raise UserError(f"model.attention: must be one of {', '.join(ATTENTION_PATHS)}, got {self.attention!r}")
        if self.dtype not in ("float32", "bfloat16"):
            raise UserError(f"model.dtype: must be float32 or bfloat16, got {self.dtype!r}")

    @property
    def embedding_params(self) -> int:
        """Input embedding plus, when untied, the output (unembedding) matrix."""
        one = self.vocab_size * self.d_model
        return one if self.tie_embeddings else 2 * one

    @property
    def non_embedding_params(self) -> int:
        """Everything but the embedding matrices (Kaplan et al.'s N): blocks and final norm."""
        d, hd = self.d_model, self.head_dim
        q = d * self.n_heads * hd
        kv = 2 * d * self.n_kv_heads * hd
        o = self.n_heads * hd * d
        bias = (self.n_heads + 2 * self.n_kv_heads) * hd if self.qkv_bias else 0
        mlp = 3 * d * self.d_ff
        norms = 2 * d
        return self.n_layers * (q + kv + o + bias + mlp + norms) + d

    @property
    def params(self) -> int:
        return self.non_embedding_params + self.embedding_params

    def replace(self, **changes) -> "ModelConfig":
        return dataclasses.replace(self, **changes)


_LLAMA32_ROPE = (32.0, 1.0, 4.0, 8192)

PRESETS: dict[str, ModelConfig] = {
    c.name: c
    for c in [
        # Published checkpoints (HF config.json values).
        ModelConfig("smollm2-135m", 49152, 576, 30, 9, 3, 64, 1536, 8192, 100_000.0),
        ModelConfig("smollm2-360m", 49152, 960, 32, 15, 5, 64, 2560, 8192, 100_000.0),
        ModelConfig("smollm2-1.7b", 49152, 2048, 24, 32, 32, 64, 8192, 8192, 130_000.0),
        ModelConfig("qwen2.5-0.5b", 151936, 896, 24, 14, 2, 64, 4864, 32768, 1_000_000.0,
                    rms_norm_eps=1e-6, qkv_bias=True),
        ModelConfig("qwen2.5-1.5b", 151936, 1536, 28, 12, 2, 128, 8960, 32768, 1_000_000.0,
                    rms_norm_eps=1e-6, qkv_bias=True),
        ModelConfig("llama-3.2-1b", 128256, 2048, 16, 32, 8, 64, 8192, 131072, 500_000.0,
                    rope_scaling=_LLAMA32_ROPE),
        # Tiny shapes for tests: GQA + tied, untied, and Qwen2-style biases.
        ModelConfig("tiny", 512, 64, 2, 4, 2, 16, 128, 256),
        ModelConfig("tiny-untied", 512, 64, 2, 4, 1, 16, 160, 256, tie_embeddings=False),
        ModelConfig("tiny-qwen", 512, 64, 2, 4, 2, 16, 128, 256, qkv_bias=True),
        # A small from-scratch ladder on the SmolLM2 vocabulary, named by total parameters
        # (the 49k-token embedding dominates the small rungs: use non_embedding_params for N).
        ModelConfig("ladder-2m", 49152, 32, 2, 2, 1, 16, 96, 1024),
        ModelConfig("ladder-3m", 49152, 64, 4, 4, 2, 16, 192, 1024),
        ModelConfig("ladder-7m", 49152, 128, 6, 4, 2, 32, 384, 1024),
        ModelConfig("ladder-19m", 49152, 256, 8, 8, 4, 32, 768, 1024),
        ModelConfig("ladder-57m", 49152, 512, 10, 8, 4, 64, 1536, 2048),
    ]
}


def get_preset(name: str, *, field: str = "model", **overrides) -> ModelConfig:
    """The preset called `name`, with optional field overrides (e.g. dtype="bfloat16"); an unknown
    name is refused under `field`, what the user called it (`--model`, `model`)."""
    if name not in PRESETS:
        close = difflib.get_close_matches(name, PRESETS, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise UserError(f"{field}: unknown preset {name!r}{hint}; known: {', '.join(PRESETS)}")
    return PRESETS[name].replace(**overrides) if overrides else PRESETS[name]
