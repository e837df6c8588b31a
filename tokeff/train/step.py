"""The jitted train step: masked cross-entropy, gradient accumulation, AdamW update.

The batch arrives as [microbatches, rows, seq]. Each microbatch contributes the *sum* of its
masked token losses and its token count; the gradient is divided by the total count once at
the end, so accumulating M microbatches gives exactly the loss and gradient of the big batch
(no mean-of-means bias when microbatches hold different numbers of answer tokens).

Only the microbatches that hold rows run (a loop with a trip count read from the batch: a
microbatch of padding only, segment ids all 0, is skipped). So every short batch (the end of
an epoch, or the last step cut by the budget) can come in one shape, the full batch's rows as
one row per microbatch (`tokeff.train.loop`), and reuse one compiled step instead of
compiling a shape per row count; the FLOPs run are those of its rows, as the accountant counts.
A batch of one microbatch skips the loop, and with it the zero-filled gradient accumulator (a
copy of the parameters in memory).

The loss never materialises the [tokens, vocab] logits: `fused_cross_entropy` unembeds the
hidden states a chunk of positions at a time and, in the same pass, forms the chunk's gradient
(softmax minus one-hot) and multiplies it into the hidden-state and unembedding gradients, so
the backward pass only scales them. The logits matmul then runs exactly three times (forward,
d_hidden, d_unembedding) as in plain autodiff: the FLOP account is unchanged, while the
float32 logits, softmax and their gradient (3 x 400 MB for 2048 tokens of a 49k vocabulary)
are never held at once.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from tokeff.devices import compiler_options, release_host_memory
from tokeff.train.sharding import batch_sharding
from tokeff.train.state import StateLayout

BATCH_KEYS = ("tokens", "targets", "loss_mask", "segment_ids", "positions")
NamedSharding = jax.sharding.NamedSharding
P = jax.sharding.PartitionSpec


CHUNK_TOKENS = 256  # positions unembedded at once by the loss: [256, vocab] float32 logits (48 MiB at 49k)


def _chunk_len(rows: int, seq: int) -> int:
    """The largest divisor of `seq` with rows * chunk <= CHUNK_TOKENS (chunks keep the row axis,
    which is the one sharded over data-parallel devices)."""
    target = max(1, CHUNK_TOKENS // rows)
    return max(c for c in range(1, min(target, seq) + 1) if seq % c == 0)


def _chunk_terms(h_BxCxD, w_VxD, targets_BxC, weights_BxC, with_grads: bool):
    logits_BxCxV = jnp.einsum("bcd,vd->bcv", h_BxCxD, w_VxD, preferred_element_type=jnp.float32)
    # One exp pass serves both the log-sum-exp and the softmax of the gradient.
    max_BxCx1 = jax.lax.stop_gradient(jnp.max(logits_BxCxV, axis=-1, keepdims=True))
    exp_BxCxV = jnp.exp(logits_BxCxV - max_BxCx1)
    sum_BxC = jnp.sum(exp_BxCxV, axis=-1)
    lse_BxC = max_BxCx1[..., 0] + jnp.log(sum_BxC)
    target_BxC = jnp.take_along_axis(logits_BxCxV, targets_BxC[..., None], axis=-1)[..., 0]
    loss = jnp.sum(weights_BxC * (lse_BxC - target_BxC))
    if not with_grads:
        return loss, None, None
    vocab_V = jnp.arange(w_VxD.shape[0], dtype=targets_BxC.dtype)
    is_target_BxCxV = vocab_V == targets_BxC[..., None]
    dlogits_BxCxV = (exp_BxCxV * (weights_BxC / sum_BxC)[..., None]
                     - jnp.where(is_target_BxCxV, weights_BxC[..., None], 0.0))
    dlogits_BxCxV = dlogits_BxCxV.astype(w_VxD.dtype)
    dh_BxCxD = jnp.einsum("bcv,vd->bcd", dlogits_BxCxV, w_VxD)
    dw_VxD = jnp.einsum("bcv,bcd->vd", dlogits_BxCxV, h_BxCxD, preferred_element_type=jnp.float32)
    return loss, dh_BxCxD, dw_VxD


def _scan_chunks(h_BxSxD, w_VxD, targets_BxS, weights_BxS, with_grads: bool):
    b, s, d = h_BxSxD.shape
    c = _chunk_len(b, s)
    n = s // c
    chunks = (h_BxSxD.reshape(b, n, c, d).swapaxes(0, 1), targets_BxS.reshape(b, n, c).swapaxes(0, 1),
              weights_BxS.reshape(b, n, c).swapaxes(0, 1))

    def body(carry, chunk):
        loss, dw_VxD = carry
        chunk_loss, dh_BxCxD, chunk_dw = _chunk_terms(chunk[0], w_VxD, chunk[1], chunk[2], with_grads)
        if with_grads:
            dw_VxD = dw_VxD + chunk_dw
        return (loss + chunk_loss, dw_VxD), dh_BxCxD

    dw0 = jnp.zeros(w_VxD.shape, jnp.float32) if with_grads else None
    (loss, dw_VxD), dh_NxBxCxD = jax.lax.scan(body, (jnp.zeros((), jnp.float32), dw0), chunks)
    if not with_grads:
        return loss, None
    dh_BxSxD = dh_NxBxCxD.swapaxes(0, 1).reshape(b, s, d)
    return loss, (dh_BxSxD, dw_VxD.astype(w_VxD.dtype))


@jax.custom_vjp
def fused_cross_entropy(h_BxSxD: jax.Array, w_VxD: jax.Array, targets_BxS: jax.Array,
                        weights_BxS: jax.Array) -> jax.Array:
    """sum over positions of weights * -log softmax(h @ w.T)[target], float32, chunked."""
    return _scan_chunks(h_BxSxD, w_VxD, targets_BxS, weights_BxS, with_grads=False)[0]


def _fused_forward(h_BxSxD, w_VxD, targets_BxS, weights_BxS):
    loss, grads = _scan_chunks(h_BxSxD, w_VxD, targets_BxS, weights_BxS, with_grads=True)
    return loss, (grads, targets_BxS, weights_BxS)


def _fused_backward(residuals, cotangent):
    (dh_BxSxD, dw_VxD), targets_BxS, weights_BxS = residuals
    return (
        (cotangent * dh_BxSxD).astype(dh_BxSxD.dtype),
        (cotangent * dw_VxD).astype(dw_VxD.dtype),
        np.zeros(targets_BxS.shape, jax.dtypes.float0),
        jnp.zeros_like(weights_BxS),  # the mask is data, not a parameter
    )


fused_cross_entropy.defvjp(_fused_forward, _fused_backward)


def loss_sum(graphdef: nnx.GraphDef, params, micro: dict, denominator: jax.Array | float = 1.0) -> jax.Array:
    """Sum of masked token cross-entropies of one [rows, seq] microbatch, divided by `denominator`.
    The division goes into the loss weights, so a gradient taken through it needs no pass of its
    own to be divided afterwards."""
    model = nnx.merge(graphdef, params)
    hidden_BxSxD = model.hidden_states(micro["tokens"], positions_BxS=micro["positions"],
                                       segment_ids_BxS=micro["segment_ids"])
    weights_BxS = micro["loss_mask"].astype(jnp.float32) / denominator
    return fused_cross_entropy(hidden_BxSxD, model.output_embedding(), micro["targets"], weights_BxS)


def make_train_step(layout: StateLayout, tx: optax.GradientTransformation,
                    mesh: jax.sharding.Mesh) -> Callable[[dict, dict, jax.Array], tuple[dict, dict]]:
    """`step(state, batch, lr) -> (state, metrics)`, jitted with the layout's shardings; `state` is
    donated. `tx` gives the update direction (`optimizer.make_optimizer`); `lr` is this step's
    learning rate, an argument so that the compiled step does not depend on the schedule."""
    graphdef = layout.graphdef

    def step(state: dict, batch: dict, lr: jax.Array) -> tuple[dict, dict]:
        params = state["params"]
        # The token count is data, known before the forward pass: the loss is divided by it inside
        # (`loss_sum`), so autodiff yields the mean loss's gradients directly, with no pass over
        # every gradient to divide it afterwards, and the fused loss's backward scales by exactly 1.
        active_M = jnp.any(batch["segment_ids"] > 0, axis=(1, 2))
        count = jnp.sum(jnp.where(active_M, jnp.sum(batch["loss_mask"].astype(jnp.float32), axis=(1, 2)), 0.0))
        denominator = jnp.maximum(count, 1.0)

        grad_fn = jax.value_and_grad(lambda p, m: loss_sum(graphdef, p, m, denominator))

        def accumulate(carry):
            i, grads, loss = carry
            micro = jax.tree.map(lambda x: jax.lax.dynamic_index_in_dim(x, i, keepdims=False), batch)
            micro_loss, micro_grads = grad_fn(params, micro)
            grads = jax.tree.map(jnp.add, grads, micro_grads)
            return i + 1, grads, loss + micro_loss

        if batch["tokens"].shape[0] == 1:  # one microbatch: no loop, no zero-filled accumulator
            loss, grads = grad_fn(params, jax.tree.map(lambda x: x[0], batch))
        else:
            n_micro = jnp.sum(active_M).astype(jnp.int32)
            zeros = jax.tree.map(jnp.zeros_like, params)
            _, grads, loss = jax.lax.while_loop(lambda c: c[0] < n_micro, accumulate,
                                                (jnp.int32(0), zeros, jnp.float32(0.0)))
        direction, opt_state = tx.update(grads, state["opt_state"], params)
        updates = jax.tree.map(lambda d: d * -lr, direction)
        new_params = optax.apply_updates(params, updates)
        new_state = {
            "step": state["step"] + 1,
            "params": new_params,
            "opt_state": opt_state,
            "rng": state["rng"],
        }
        metrics = {
            "loss": loss,
            "grad_norm": optax.tree.norm(grads),
            # Non-finite parameters show here one step before they poison the loss: the loop
            # checks it before saving, so every checkpoint it keeps is finite.
            "param_norm": optax.tree.norm(new_params),
            "lr": lr,
            "loss_tokens": count,
        }
        return new_state, metrics

    replicated = NamedSharding(mesh, P())
    batch_shardings = {k: batch_sharding(mesh) for k in BATCH_KEYS}
    return CompiledAhead(jax.jit(step, in_shardings=(layout.shardings, batch_shardings, replicated),
                                 out_shardings=(layout.shardings, replicated), donate_argnums=0,
                                 compiler_options=compiler_options(mesh.devices.flat[0].platform) or None))


class CompiledAhead:
    """A jitted function compiled ahead of its first call for each argument signature (tree, shapes,
    dtypes), with the compiler's freed host memory handed back before the program first runs
    (`tokeff.devices.release_host_memory`): the step's peak memory is then its own, not its own plus
    what compiling it left behind. Calls with a known signature run the compiled program."""

    def __init__(self, jitted: Callable):
        self.jitted = jitted
        self.compiled: dict = {}

    @staticmethod
    def signature(args: tuple) -> tuple:
        leaves, tree = jax.tree.flatten(args)
        return tree, tuple((np.shape(x), x.dtype if hasattr(x, "dtype") else np.result_type(x),
                            getattr(x, "weak_type", False)) for x in leaves)

    def __call__(self, *args):
        key = self.signature(args)
        program = self.compiled.get(key)
        if program is None:
            program = self.compiled[key] = self.jitted.lower(*args).compile()
            release_host_memory()
        return program(*args)
