"""Attention by backend, one interface: `attend(q, k, v, mask, path)`.

Three paths compute the same softmax attention (float32 scores and softmax on every path):

- "reference": causal query blocks (`tokeff.models.causal_blocks.query_blocks`), float32
  scores [B, G, R*C, T] materialised per block, with a hand-written backward. The CPU's
  fastest path, and the one every other path is checked against.
- "splash": the TPU's Pallas flash kernel (`jax.experimental.pallas.ops.tpu.splash_attention`),
  causal, packed rows separated by segment ids, one MQA kernel per KV group (the R query
  heads of a group share its keys), fused backward. Rows are padded to whole tiles
  (`causal_blocks.splash_block`). Off TPU it runs in Pallas interpret mode: slow, for checking.
- "cudnn": `jax.nn.dot_product_attention(implementation="cudnn")`, cuDNN's flash attention on
  GPU, causal, GQA native. Packed rows: the same-segment mask goes in as `mask` (cuDNN adds it
  as a bias, [B, 1, S, S] in the compute dtype, while its causal mask skips the tiles above the
  diagonal). cuDNN runs bfloat16/float16 only. Off GPU the same call runs with
  implementation="xla" (dense S x S scores): what lets the CPU check the wrapper's arguments.

`model.attention = "auto"` picks splash on TPU, cudnn on GPU in bfloat16, reference elsewhere
(`resolve`). Two cases always take the reference path: a caller's own mask (scoring lets
every answer choice see one shared prompt: an arbitrary mask no fused kernel here takes), and,
on the cudnn path, the KV cache of generation (one query at a time: memory-bound, no flash
kernel gains there). Splash runs the cache path with a dynamic mask (key slot <= query slot).

The FLOP accountant counts each path's computed blocks (`causal_blocks.score_entries`) and the
flash kernels' recomputation of the scores in their backward (`tokeff.flops`).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from tokeff.models.causal_blocks import padded_len, query_blocks, splash_block
from tokeff.models.config import attention_path


def resolve(path: str, dtype: str, backend: str | None = None) -> str:
    """The attention path that runs (`tokeff.models.config.attention_path`) on `backend`,
    by default JAX's."""
    return attention_path(path, dtype, backend or jax.default_backend())


class Mask(NamedTuple):
    """What the queries may see, in the form each path reads it (a pytree: it crosses remat).

    dense_BxSxT: True where query s may attend to key t (the reference path's input; None
    when no reference path runs). segment_ids_BxS: packed causal self-attention (0 = padding,
    which sees only padding), the fused paths' input; None under a caller's own mask or a
    KV cache. index: with a KV cache, the slot of the first query (keys are the T slots).
    """

    dense_BxSxT: jax.Array | None = None
    segment_ids_BxS: jax.Array | None = None
    index: jax.Array | None = None


def attend(q_BxSxHxK: jax.Array, k_BxTxGxK: jax.Array, v_BxTxGxK: jax.Array, mask: Mask, path: str) -> jax.Array:
    """Softmax attention of S queries (already scaled by 1/sqrt(K)) over T keys, GQA with G KV
    heads shared by H/G query heads each: [B, S, H, K] in the compute dtype. `path` is resolved."""
    fused_input = mask.segment_ids_BxS is not None or (mask.index is not None and path == "splash")
    if path == "reference" or not fused_input:
        return _reference(q_BxSxHxK, k_BxTxGxK, v_BxTxGxK, mask)
    if path == "splash":
        return _splash(q_BxSxHxK, k_BxTxGxK, v_BxTxGxK, mask)
    if path == "cudnn":
        return cudnn_attention(q_BxSxHxK, k_BxTxGxK, v_BxTxGxK, mask.segment_ids_BxS)
    raise ValueError(f"attention path: {path!r} is not resolved")


def _to_groups(q_BxSxHxK, k_BxTxGxK, v_BxTxGxK):
    """[B, G, R, S, K] queries and [B, G, T, K] keys/values: the R = H/G query heads of a group
    share one key head, so each group is one matmul whose R x S query rows meet the same keys."""
    b, s, h, k = q_BxSxHxK.shape
    g = k_BxTxGxK.shape[2]
    q_BxGxRxSxK = q_BxSxHxK.reshape(b, s, g, h // g, k).transpose(0, 2, 3, 1, 4)
    return q_BxGxRxSxK, k_BxTxGxK.transpose(0, 2, 1, 3), v_BxTxGxK.transpose(0, 2, 1, 3)


def _from_groups(out_BxGxRxSxK):
    b, g, r, s, k = out_BxGxRxSxK.shape
    return out_BxGxRxSxK.transpose(0, 3, 1, 2, 4).reshape(b, s, g * r, k)


# --- reference: causal query blocks ---------------------------------------------------------

def _reference(q_BxSxHxK, k_BxTxGxK, v_BxTxGxK, mask: Mask):
    q_BxGxRxSxK, k_BxGxTxK, v_BxGxTxK = _to_groups(q_BxSxHxK, k_BxTxGxK, v_BxTxGxK)
    s = q_BxGxRxSxK.shape[3]
    mask_BxSxT = mask.dense_BxSxT
    if mask.index is None:  # keys are the queries' own tokens: skip the blocks above the diagonal
        spans = [(lo, hi, hi) for lo, hi in query_blocks(s)]
    else:  # new tokens against every cache slot (the mask hides the unwritten ones)
        spans = [(0, s, k_BxGxTxK.shape[2])]
    out_blocks = [
        _attend(q_BxGxRxSxK[:, :, :, lo:hi], k_BxGxTxK[:, :, :keys], v_BxGxTxK[:, :, :keys],
                mask_BxSxT[:, lo:hi, :keys])
        for lo, hi, keys in spans
    ]
    return _from_groups(out_blocks[0] if len(out_blocks) == 1 else jnp.concatenate(out_blocks, axis=3))


def _scores_and_probs(q_BxGxRxCxK, k_BxGxTxK, mask_BxCxT):
    """Float32 softmax probabilities [B, G, R*C, T] of C queries per head over T keys (queries
    come scaled by 1/sqrt(K)); masked keys get probability exactly 0."""
    b, g, r, c, k = q_BxGxRxCxK.shape
    t = k_BxGxTxK.shape[2]
    scores_BxGxMxT = jnp.einsum("bgmk,bgtk->bgmt", q_BxGxRxCxK.reshape(b, g, r * c, k), k_BxGxTxK,
                                preferred_element_type=jnp.float32)
    scores_BxGxRxCxT = jnp.where(mask_BxCxT[:, None, None], scores_BxGxMxT.reshape(b, g, r, c, t),
                                 jnp.finfo(jnp.float32).min)
    return jax.nn.softmax(scores_BxGxRxCxT, axis=-1).reshape(b, g, r * c, t)


@jax.custom_vjp
def _attend(q_BxGxRxCxK: jax.Array, k_BxGxTxK: jax.Array, v_BxGxTxK: jax.Array,
            mask_BxCxT: jax.Array) -> jax.Array:
    """Softmax attention of C queries per head over T keys, scores and softmax in float32.

    Its gradient is written out (flash-attention's form): dS = P * (dP - rowsum(dO * O)). The
    row sum runs over the head dimension instead of the keys, and the mask needs no backward
    (P is 0 where it hides a key), so the backward makes two passes fewer over the [C, T] scores
    than autodiff of the softmax. The same six matmuls run (two forward, four backward).
    """
    return _attend_forward(q_BxGxRxCxK, k_BxGxTxK, v_BxGxTxK, mask_BxCxT)[0]


def _attend_forward(q_BxGxRxCxK, k_BxGxTxK, v_BxGxTxK, mask_BxCxT):
    b, g, r, c, k = q_BxGxRxCxK.shape
    probs_BxGxMxT = _scores_and_probs(q_BxGxRxCxK, k_BxGxTxK, mask_BxCxT)
    out_BxGxMxK = jnp.einsum("bgmt,bgtk->bgmk", probs_BxGxMxT.astype(v_BxGxTxK.dtype), v_BxGxTxK)
    return out_BxGxMxK.reshape(b, g, r, c, k), (q_BxGxRxCxK, k_BxGxTxK, v_BxGxTxK, probs_BxGxMxT, out_BxGxMxK)


def _attend_backward(residuals, dout_BxGxRxCxK):
    q_BxGxRxCxK, k_BxGxTxK, v_BxGxTxK, probs_BxGxMxT, out_BxGxMxK = residuals
    b, g, r, c, k = q_BxGxRxCxK.shape
    dt = v_BxGxTxK.dtype
    dout_BxGxMxK = dout_BxGxRxCxK.reshape(b, g, r * c, k)
    dv_BxGxTxK = jnp.einsum("bgmt,bgmk->bgtk", probs_BxGxMxT.astype(dt), dout_BxGxMxK)
    dprobs_BxGxMxT = jnp.einsum("bgmk,bgtk->bgmt", dout_BxGxMxK, v_BxGxTxK, preferred_element_type=jnp.float32)
    delta_BxGxMx1 = jnp.sum(dout_BxGxMxK.astype(jnp.float32) * out_BxGxMxK.astype(jnp.float32), -1, keepdims=True)
    dscores_BxGxMxT = (probs_BxGxMxT * (dprobs_BxGxMxT - delta_BxGxMx1)).astype(dt)
    dq_BxGxMxK = jnp.einsum("bgmt,bgtk->bgmk", dscores_BxGxMxT, k_BxGxTxK)
    dk_BxGxTxK = jnp.einsum("bgmt,bgmk->bgtk", dscores_BxGxMxT, q_BxGxRxCxK.reshape(b, g, r * c, k))
    return dq_BxGxMxK.reshape(b, g, r, c, k), dk_BxGxTxK, dv_BxGxTxK, None


_attend.defvjp(_attend_forward, _attend_backward)


# --- splash: the TPU's Pallas flash kernel --------------------------------------------------

def _splash_block_sizes(block_q: int, block_kv: int, backward: bool):
    from jax.experimental.pallas.ops.tpu import splash_attention as sa

    if not backward:
        return sa.BlockSizes(block_q=block_q, block_kv=block_kv, block_kv_compute=block_kv)
    return sa.BlockSizes(block_q=block_q, block_kv=block_kv, block_kv_compute=block_kv, block_q_dkv=block_q,
                         block_kv_dkv=block_kv, block_kv_dkv_compute=block_kv, use_fused_bwd_kernel=True)


def _causal_kernel(heads: int, length: int, block: int, interpret: bool):
    """One MQA splash kernel (R query heads over one key head), causal over `length` tokens (a
    static mask: the kernel skips its tiles above the diagonal)."""
    from jax.experimental.pallas.ops.tpu import splash_attention as sa

    mask = sa.MultiHeadMask([sa.CausalMask((length, length)) for _ in range(heads)])
    return sa.make_splash_mqa_single_device(mask=mask, block_sizes=_splash_block_sizes(block, block, True),
                                            interpret=interpret)


def _pad_axis(x, axis: int, to: int, value=0):
    if x.shape[axis] == to:
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, to - x.shape[axis])
    return jnp.pad(x, widths, constant_values=value)


def _splash(q_BxSxHxK, k_BxTxGxK, v_BxTxGxK, mask: Mask):
    from jax.experimental.pallas.ops.tpu import splash_attention as sa

    interpret = jax.default_backend() != "tpu"
    q_BxGxRxSxK, k_BxGxTxK, v_BxGxTxK = _to_groups(q_BxSxHxK, k_BxTxGxK, v_BxTxGxK)
    b, g, r, s, _ = q_BxGxRxSxK.shape
    t = k_BxGxTxK.shape[2]
    block_q = splash_block(s)
    q_BxGxRxPxK = _pad_axis(q_BxGxRxSxK, 3, padded_len(s, block_q))
    if mask.index is None:  # causal self-attention of packed rows
        p = q_BxGxRxPxK.shape[3]
        kernel = _causal_kernel(r, p, block_q, interpret)
        # Padding tokens of the kernel's tiles get a segment of their own (-1): they see each
        # other only, and their outputs are dropped.
        seg_BxP = _pad_axis(mask.segment_ids_BxS, 1, p, value=-1)
        k_BxGxPxK, v_BxGxPxK = _pad_axis(k_BxGxTxK, 2, p), _pad_axis(v_BxGxTxK, 2, p)
        per_group = jax.vmap(kernel, in_axes=(0, 0, 0, None))
        per_row = jax.vmap(lambda q, k, v, seg: per_group(q, k, v, sa.SegmentIds(seg, seg)))
        out_BxGxRxPxK = _per_batch_shard(per_row, q_BxGxRxPxK, k_BxGxPxK, v_BxGxPxK, seg_BxP)
    else:  # S new tokens at cache slots index.. against T slots: key slot <= query slot
        block_kv = splash_block(t)
        tp = padded_len(t, block_kv)
        slots_P = mask.index + jnp.arange(q_BxGxRxPxK.shape[3])
        keys_T = jnp.arange(tp)
        allowed_PxT = (keys_T[None, :] <= slots_P[:, None]) & (keys_T[None, :] < t)
        kernel = sa.make_splash_mqa_single_device(
            mask=jnp.broadcast_to(allowed_PxT, (r, *allowed_PxT.shape)),
            block_sizes=_splash_block_sizes(block_q, block_kv, False), interpret=interpret)
        # A mask built under jit leaves the kernel's is_dynamic_mask flag a traced array (its
        # maker maps jnp.array over the mask info); the kernel branches on it in Python.
        kernel.fwd_mask_info = kernel.fwd_mask_info._replace(is_dynamic_mask=True)
        k_BxGxPxK, v_BxGxPxK = _pad_axis(k_BxGxTxK, 2, tp), _pad_axis(v_BxGxTxK, 2, tp)
        out_BxGxRxPxK = jax.vmap(jax.vmap(kernel))(q_BxGxRxPxK, k_BxGxPxK, v_BxGxPxK)
    return _from_groups(out_BxGxRxPxK[:, :, :, :s].astype(q_BxSxHxK.dtype))


def _per_batch_shard(fn, *args_B):
    """`fn` on each device's rows (shard_map over the mesh's batch axes) when the active mesh
    shards the batch: XLA does not partition a Pallas kernel, it would gather the whole batch
    onto every device. Other axes stay whole (KV heads are not split over `tensor` here)."""
    from tokeff.train.mesh import BATCH_AXES

    mesh = jax.sharding.get_abstract_mesh()
    axes = tuple(a for a in BATCH_AXES if a in mesh.axis_names and mesh.shape[a] > 1)
    if not axes:
        return fn(*args_B)
    spec = jax.sharding.PartitionSpec(axes)
    return jax.shard_map(fn, mesh=mesh, in_specs=spec, out_specs=spec, check_vma=False)(*args_B)


# --- cudnn: cuDNN flash attention through jax.nn ---------------------------------------------

def cudnn_attention(q_BxSxHxK: jax.Array, k_BxSxGxK: jax.Array, v_BxSxGxK: jax.Array,
                    segment_ids_BxS: jax.Array, backend: str | None = None) -> jax.Array:
    """Causal packed attention through `jax.nn.dot_product_attention`: BTNH layout, GQA by the
    head counts, scale 1 (queries come scaled), the same-segment mask as `mask`. On GPU it
    runs cuDNN's kernel; elsewhere the same call with implementation="xla" (the CPU check)."""
    backend = backend or jax.default_backend()
    same_Bx1xSxS = (segment_ids_BxS[:, :, None] == segment_ids_BxS[:, None, :])[:, None]
    return jax.nn.dot_product_attention(q_BxSxHxK, k_BxSxGxK, v_BxSxGxK, mask=same_Bx1xSxS, scale=1.0,
                                        is_causal=True, implementation="cudnn" if backend == "gpu" else "xla")
