"""The Llama-family decoder (Llama, Qwen2, SmolLM2) as a Flax NNX module.

Pre-norm blocks: RMSNorm -> grouped-query attention with rotary embeddings -> residual,
RMSNorm -> SwiGLU MLP -> residual; a final RMSNorm and the (tied or untied) unembedding.
Numerics follow the Hugging Face reference so imported checkpoints give the same logits:
parameters are float32 master weights, matmuls run in `cfg.dtype`, norms, softmax and the
returned logits are float32.

Packing: `segment_ids_BxS` (0 = padding, 1..k = example within the row) restricts attention
to the same segment, so packed examples never see each other; `positions_BxS` restarts the
rotary phase per example. Padding tokens attend to each other (never to nothing), so no row of
the softmax is empty and no NaN appears.

Callers that read only some logits use `hidden_states` and `logits` apart (scoring reads the
answer positions only; the training loss unembeds chunk by chunk). `extend` runs tokens
against a KV cache (`init_cache`): generation feeds one token per step instead of the whole
buffer. Attention runs by the path `cfg.attention` names (`tokeff.models.attention`): on CPU
the reference, causal query blocks (`tokeff.models.causal_blocks`), each block of queries
scored against the keys up to its end only, so the blocks above the diagonal are never
computed (the FLOP account counts what runs), each KV group one matmul over its R query heads
without repeating K/V (docs/speed.md); on TPU and GPU the fused flash kernels.

The layer stack is a Python loop (unrolled under jit): XLA's cost analysis then counts every
layer, which the FLOP cross-check in `tokeff.flops` relies on (a scan body counts once).

Parameters and their logical axis names (`nnx.Param` metadata `out_sharding`, read by
`nnx.get_partition_spec`; `tokeff.train` maps them to mesh axes). Shapes use
V=vocab, D=d_model, H=n_heads, G=n_kv_heads, K=head_dim, F=d_ff:

    embedding                    [V, D]     ("vocab", "embed")
    blocks[i].attn_norm.scale    [D]        ("norm",)
    blocks[i].attn.q             [D, H, K]  ("embed", "q_heads", "head_dim")
    blocks[i].attn.k, .v         [D, G, K]  ("embed", "kv_heads", "head_dim")
    blocks[i].attn.o             [H, K, D]  ("q_heads", "head_dim", "embed")
    blocks[i].attn.q_bias        [H, K]     ("q_heads", "head_dim")        (qkv_bias only)
    blocks[i].attn.k_bias, .v_bias [G, K]   ("kv_heads", "head_dim")       (qkv_bias only)
    blocks[i].mlp_norm.scale     [D]        ("norm",)
    blocks[i].mlp.gate, .up      [D, F]     ("embed", "mlp")
    blocks[i].mlp.down           [F, D]     ("mlp", "embed")
    final_norm.scale             [D]        ("norm",)
    unembedding                  [D, V]     ("embed", "vocab")              (untied only)
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tokeff.models.attention import Mask, attend, resolve
from tokeff.models.config import ModelConfig

_INIT_STD = 0.02  # HF `initializer_range` for Llama/Qwen2/SmolLM2.


class _KeyStream:
    """N(0, 0.02^2) initial values from one key: the i-th draw uses `fold_in(key, i)`.

    Drawing one key per parameter from `nnx.Rngs` is slow under tracing (each draw updates an
    NNX Variable, ~25 ms each under eval_shape); one draw plus fold_in is not.
    """

    def __init__(self, rngs: nnx.Rngs):
        self.key = rngs.params()
        self.count = 0

    def normal(self, shape: tuple[int, ...]) -> jax.Array:
        self.count += 1
        return _normal(self.key, self.count, shape)


@functools.partial(jax.jit, static_argnums=2)
def _normal(key: jax.Array, index: int, shape: tuple[int, ...]) -> jax.Array:
    """One compiled program per shape (eager, op-by-op init compiles several per shape)."""
    return _INIT_STD * jax.random.normal(jax.random.fold_in(key, index), shape, jnp.float32)


def _param(keys: _KeyStream | None, shape: tuple[int, ...], axes: tuple[str, ...], init: str) -> nnx.Param:
    """A float32 parameter annotated with logical axis names (no mesh needed at creation)."""
    if init == "normal":
        value = keys.normal(shape)
    elif init == "ones":
        value = jnp.ones(shape, jnp.float32)
    else:
        value = jnp.zeros(shape, jnp.float32)
    return nnx.Param(value, out_sharding=axes, eager_sharding=False)


class RMSNorm(nnx.Module):
    def __init__(self, cfg: ModelConfig):
        self.eps = cfg.rms_norm_eps
        self.scale = _param(None, (cfg.d_model,), ("norm",), "ones")

    def __call__(self, x_BxSxD: jax.Array) -> jax.Array:
        x32_BxSxD = x_BxSxD.astype(jnp.float32)
        var_BxSx1 = jnp.mean(jnp.square(x32_BxSxD), axis=-1, keepdims=True)
        normed_BxSxD = (x32_BxSxD * jax.lax.rsqrt(var_BxSx1 + self.eps)).astype(x_BxSxD.dtype)
        return self.scale[...].astype(x_BxSxD.dtype) * normed_BxSxD


def rope_frequencies(cfg: ModelConfig) -> np.ndarray:
    """Inverse rotary frequencies [K/2], with Llama-3 scaling when `cfg.rope_scaling` is set.

    Computed in float64 on the host: these are constants, not parameters.
    """
    hd = cfg.head_dim
    inv_freq = 1.0 / (cfg.rope_theta ** (np.arange(0, hd, 2, dtype=np.float64) / hd))
    if cfg.rope_scaling is None:
        return inv_freq
    factor, low_ff, high_ff, old_context = cfg.rope_scaling
    low_wavelen, high_wavelen = old_context / low_ff, old_context / high_ff
    wavelen = 2 * math.pi / inv_freq
    scaled = np.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_context / wavelen - low_ff) / (high_ff - low_ff)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return np.where(medium, smoothed, scaled)


def apply_rope(x_BxSxNxK: jax.Array, positions_BxS: jax.Array, inv_freq: np.ndarray,
               scale: float = 1.0) -> jax.Array:
    """Rotary embedding, half-split layout (HF `rotate_half`), phases in float32, times `scale`
    (applied in float32, before the cast back to the compute dtype).

    Written as x * cos + rotate_half(x) * sin with the sign folded into the sine, so the halves
    are swapped once instead of split and rejoined: half the forward time on 2 cores, the
    same floating-point operations."""
    angles_BxSxK2 = positions_BxS[..., None].astype(jnp.float32) * jnp.asarray(inv_freq, jnp.float32)
    cos_BxSx1xK2 = jnp.cos(angles_BxSxK2)[:, :, None, :]
    sin_BxSx1xK2 = jnp.sin(angles_BxSxK2)[:, :, None, :]
    cos_BxSx1xK = jnp.concatenate([cos_BxSx1xK2, cos_BxSx1xK2], -1)
    signed_sin_BxSx1xK = jnp.concatenate([-sin_BxSx1xK2, sin_BxSx1xK2], -1)
    x_BxSxNxK32 = x_BxSxNxK.astype(jnp.float32)
    half = x_BxSxNxK.shape[-1] // 2
    swapped_BxSxNxK = jnp.concatenate([x_BxSxNxK32[..., half:], x_BxSxNxK32[..., :half]], -1)
    rotated_BxSxNxK = x_BxSxNxK32 * cos_BxSx1xK + swapped_BxSxNxK * signed_sin_BxSx1xK
    return (rotated_BxSxNxK * scale).astype(x_BxSxNxK.dtype)  # XLA drops a scale of 1


def dense(x: jax.Array, w: jax.Array, contract: int = 1) -> jax.Array:
    """x [..., *in] @ w [*in, *out] -> [..., *out], as one 2-D matmul over the flattened leading
    axes (`contract` = how many trailing axes of x, and leading axes of w, are contracted).

    The same product as the einsum, but XLA:CPU then runs every dot of the backward pass (the
    weight gradient contracts the token axes) as a library matmul without transposing copies:
    the SwiGLU MLP's forward + backward took 102 ms instead of 126 ms at 4 x 512 on 2 cores
    (docs/speed.md). Leading axes merge in order, so a batch axis sharded over devices stays so.
    """
    lead, inner = x.shape[: x.ndim - contract], x.shape[x.ndim - contract:]
    out = w.shape[contract:]
    y = x.reshape(math.prod(lead), math.prod(inner)) @ w.reshape(math.prod(inner), math.prod(out))
    return y.reshape(*lead, *out)


class Attention(nnx.Module):
    """Grouped-query attention: G key/value heads, each shared by H/G query heads."""

    def __init__(self, cfg: ModelConfig, keys: _KeyStream):
        d, h, g, k = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.q = _param(keys, (d, h, k), ("embed", "q_heads", "head_dim"), "normal")
        self.k = _param(keys, (d, g, k), ("embed", "kv_heads", "head_dim"), "normal")
        self.v = _param(keys, (d, g, k), ("embed", "kv_heads", "head_dim"), "normal")
        self.o = _param(keys, (h, k, d), ("q_heads", "head_dim", "embed"), "normal")
        if cfg.qkv_bias:
            self.q_bias = _param(None, (h, k), ("q_heads", "head_dim"), "zeros")
            self.k_bias = _param(None, (g, k), ("kv_heads", "head_dim"), "zeros")
            self.v_bias = _param(None, (g, k), ("kv_heads", "head_dim"), "zeros")
        self.qkv_bias = cfg.qkv_bias
        self.n_kv_heads = g
        self.group = h // g

    def __call__(self, x_BxSxD, positions_BxS, mask: Mask, inv_freq, path: str, cache=None, index=None):
        """Attention of the S new tokens over T keys: the S themselves (no cache, T = S), or a
        KV cache of T slots into which the new keys/values are first written at `index`; by
        attention `path` (resolved, `tokeff.models.attention`)."""
        dt = x_BxSxD.dtype
        q_BxSxHxK = dense(x_BxSxD, self.q[...].astype(dt))
        k_BxSxGxK = dense(x_BxSxD, self.k[...].astype(dt))
        v_BxSxGxK = dense(x_BxSxD, self.v[...].astype(dt))
        if self.qkv_bias:
            q_BxSxHxK = q_BxSxHxK + self.q_bias[...].astype(dt)
            k_BxSxGxK = k_BxSxGxK + self.k_bias[...].astype(dt)
            v_BxSxGxK = v_BxSxGxK + self.v_bias[...].astype(dt)
        # The softmax scale goes on the queries (S x H x K values) rather than on the scores
        # (S x T per head): one pass fewer over the largest tensor, forward and backward. It is
        # applied in float32 with the rotation (exact when sqrt(head_dim) is a power of two).
        q_BxSxHxK = apply_rope(q_BxSxHxK, positions_BxS, inv_freq, scale=1 / math.sqrt(q_BxSxHxK.shape[-1]))
        k_BxTxGxK = apply_rope(k_BxSxGxK, positions_BxS, inv_freq)
        v_BxTxGxK = v_BxSxGxK
        if cache is not None:
            k_BxTxGxK = jax.lax.dynamic_update_slice_in_dim(cache[0], k_BxTxGxK.astype(cache[0].dtype), index, 1)
            v_BxTxGxK = jax.lax.dynamic_update_slice_in_dim(cache[1], v_BxTxGxK.astype(cache[1].dtype), index, 1)
            cache = (k_BxTxGxK, v_BxTxGxK)
        out_BxSxHxK = attend(q_BxSxHxK, k_BxTxGxK, v_BxTxGxK, mask, path)
        return dense(out_BxSxHxK, self.o[...].astype(dt), contract=2), cache


class MLP(nnx.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, cfg: ModelConfig, keys: _KeyStream):
        d, f = cfg.d_model, cfg.d_ff
        self.gate = _param(keys, (d, f), ("embed", "mlp"), "normal")
        self.up = _param(keys, (d, f), ("embed", "mlp"), "normal")
        self.down = _param(keys, (f, d), ("mlp", "embed"), "normal")

    def __call__(self, x_BxSxD):
        dt = x_BxSxD.dtype
        gate_BxSxF = dense(x_BxSxD, self.gate[...].astype(dt))
        up_BxSxF = dense(x_BxSxD, self.up[...].astype(dt))
        return dense(jax.nn.silu(gate_BxSxF) * up_BxSxF, self.down[...].astype(dt))


class Block(nnx.Module):
    def __init__(self, cfg: ModelConfig, keys: _KeyStream):
        self.attn_norm = RMSNorm(cfg)
        self.attn = Attention(cfg, keys)
        self.mlp_norm = RMSNorm(cfg)
        self.mlp = MLP(cfg, keys)

    def __call__(self, x_BxSxD, positions_BxS, mask: Mask, inv_freq, path: str, cache=None, index=None):
        attended_BxSxD, cache = self.attn(self.attn_norm(x_BxSxD), positions_BxS, mask, inv_freq, path, cache, index)
        x_BxSxD = x_BxSxD + attended_BxSxD
        return x_BxSxD + self.mlp(self.mlp_norm(x_BxSxD)), cache


def attention_mask(segment_ids_BxS: jax.Array) -> jax.Array:
    """[B, S, S] boolean: causal AND same segment (padding, segment 0, sees only padding)."""
    s = segment_ids_BxS.shape[1]
    causal_SxS = jnp.tril(jnp.ones((s, s), jnp.bool_))
    same_BxSxS = segment_ids_BxS[:, :, None] == segment_ids_BxS[:, None, :]
    return causal_SxS & same_BxSxS


KVCache = list  # per layer: (keys [B, T, G, K], values [B, T, G, K]) in the compute dtype


class Transformer(nnx.Module):
    """Decoder-only LM: `model(tokens_BxS, positions_BxS=, segment_ids_BxS=) -> logits_BxSxV` (float32).

    The forward is split in two so callers pay only for the logits they read: `hidden_states`
    (the final-normed residual stream, [B, S, D]) and `logits` (the unembedding of any subset
    of positions). Scoring reads a few positions; the training loss unembeds chunk by chunk
    (`tokeff.train.step.fused_cross_entropy`). `extend` runs new tokens against a KV cache.
    """

    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs | None = None):
        keys = _KeyStream(rngs if rngs is not None else nnx.Rngs(0))
        self.cfg = cfg
        self.embedding = _param(keys, (cfg.vocab_size, cfg.d_model), ("vocab", "embed"), "normal")
        self.blocks = nnx.List([Block(cfg, keys) for _ in range(cfg.n_layers)])
        self.final_norm = RMSNorm(cfg)
        if not cfg.tie_embeddings:
            self.unembedding = _param(keys, (cfg.d_model, cfg.vocab_size), ("embed", "vocab"), "normal")

    def __call__(
        self,
        tokens_BxS: jax.Array,
        *,
        positions_BxS: jax.Array | None = None,
        segment_ids_BxS: jax.Array | None = None,
    ) -> jax.Array:
        return self.logits(self.hidden_states(tokens_BxS, positions_BxS=positions_BxS,
                                              segment_ids_BxS=segment_ids_BxS))

    def hidden_states(
        self,
        tokens_BxS: jax.Array,
        *,
        positions_BxS: jax.Array | None = None,
        segment_ids_BxS: jax.Array | None = None,
        mask_BxSxS: jax.Array | None = None,
    ) -> jax.Array:
        """Final-normed hidden states [B, S, D] (compute dtype). `mask_BxSxS` (True = query s
        may attend to key t) replaces the causal same-segment mask built from `segment_ids_BxS`:
        scoring uses it to let every answer choice of a question see one shared prompt. It is
        intersected with the causal mask (attention skips keys after their query)."""
        cfg = self.cfg
        b, s = tokens_BxS.shape
        if positions_BxS is None:
            positions_BxS = jnp.broadcast_to(jnp.arange(s, dtype=jnp.int32), (b, s))
        path = self.attention_path()
        if mask_BxSxS is None:
            if segment_ids_BxS is None:
                segment_ids_BxS = jnp.ones((b, s), jnp.int32)
            dense_BxSxS = attention_mask(segment_ids_BxS) if path == "reference" else None
            mask = Mask(dense_BxSxS, segment_ids_BxS)
        else:  # attention runs by causal query blocks: a key after its query is never seen
            mask = Mask(mask_BxSxS & jnp.tril(jnp.ones((s, s), jnp.bool_)))  # no fused path takes it
        inv_freq = rope_frequencies(cfg)
        x_BxSxD = jnp.take(self.embedding[...], tokens_BxS, axis=0).astype(jnp.dtype(cfg.dtype))

        def run_block(block: Block, x_BxSxD, positions_BxS, mask: Mask, inv_freq):
            return block(x_BxSxD, positions_BxS, mask, inv_freq, path)[0]

        run = nnx.remat(run_block) if cfg.remat else run_block
        for block in self.blocks:
            x_BxSxD = run(block, x_BxSxD, positions_BxS, mask, inv_freq)
        return self.final_norm(x_BxSxD)

    def attention_path(self) -> str:
        """The attention path this model runs on JAX's default backend (`model.attention`,
        "auto" resolved: `tokeff.models.attention.resolve`)."""
        return resolve(self.cfg.attention, self.cfg.dtype)

    def output_embedding(self) -> jax.Array:
        """The unembedding as [V, D] in the compute dtype (the input embedding when tied)."""
        dt = jnp.dtype(self.cfg.dtype)
        if self.cfg.tie_embeddings:
            return self.embedding[...].astype(dt)
        return self.unembedding[...].astype(dt).T

    def logits(self, hidden_BxNxD: jax.Array) -> jax.Array:
        """Float32 logits [B, N, V] of hidden states at any N positions."""
        dt = jnp.dtype(self.cfg.dtype)
        if self.cfg.tie_embeddings:
            return jnp.einsum("bnd,vd->bnv", hidden_BxNxD, self.embedding[...].astype(dt),
                              preferred_element_type=jnp.float32)
        return jnp.einsum("bnd,dv->bnv", hidden_BxNxD, self.unembedding[...].astype(dt),
                          preferred_element_type=jnp.float32)

    def init_cache(self, batch: int, length: int) -> KVCache:
        """An empty KV cache of `length` slots per row (zeros: slots are masked until written)."""
        cfg = self.cfg
        shape = (batch, length, cfg.n_kv_heads, cfg.head_dim)
        dt = jnp.dtype(cfg.dtype)
        return [(jnp.zeros(shape, dt), jnp.zeros(shape, dt)) for _ in range(cfg.n_layers)]

    def extend(self, tokens_BxS: jax.Array, cache: KVCache, index: jax.Array) -> tuple[jax.Array, KVCache]:
        """Run S new tokens at cache slots index..index+S-1 (their positions too), attending to
        every slot up to their own: (hidden states [B, S, D], the cache with them written)."""
        b, s = tokens_BxS.shape
        slots_S = index + jnp.arange(s, dtype=jnp.int32)
        positions_BxS = jnp.broadcast_to(slots_S, (b, s))
        length = cache[0][0].shape[1]
        mask_BxSxT = jnp.broadcast_to(jnp.arange(length)[None, :] <= slots_S[:, None], (b, s, length))
        mask = Mask(mask_BxSxT, None, index)
        path = self.attention_path()
        inv_freq = rope_frequencies(self.cfg)
        x_BxSxD = jnp.take(self.embedding[...], tokens_BxS, axis=0).astype(jnp.dtype(self.cfg.dtype))
        new_cache = []
        for block, layer_cache in zip(self.blocks, cache):
            x_BxSxD, layer_cache = block(x_BxSxD, positions_BxS, mask, inv_freq, path, layer_cache, index)
            new_cache.append(layer_cache)
        return self.final_norm(x_BxSxD), new_cache
