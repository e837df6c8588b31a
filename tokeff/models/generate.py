"""Greedy decoding with a KV cache: one prefill of the prompt, then one token per step.

The whole loop is one compiled `lax.while_loop` over a fixed-shape token buffer and a KV cache
of as many slots (`Transformer.extend`). Step t feeds token t-1 at cache slot t-1 and reads
the next token from its logits: each step costs one token's forward against the cache, not a
forward over the whole buffer. The prefill writes the prompt's bucket of slots (the padding
after the prompt too: those slots are masked until a generated token overwrites them). Buffer
and prompt lengths are rounded up to multiples of 64 so prompts of similar length share one
compilation.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tokeff.devices import backend_jit

_BUCKET = 64


def _round_up(n: int) -> int:
    return -(-n // _BUCKET) * _BUCKET


def greedy_generate(model, prompt_ids: Sequence[int], max_new_tokens: int,
                    stop_ids: Sequence[int] = ()) -> list[int]:
    """The greedily decoded continuation of `prompt_ids` (without the prompt), stopping after
    `max_new_tokens` or at the first token in `stop_ids` (not included)."""
    if not prompt_ids:
        raise ValueError("prompt_ids: empty prompt")
    n_prompt = len(prompt_ids)
    length = _round_up(n_prompt + max_new_tokens)
    tokens_1xT = np.zeros((1, length), np.int32)
    tokens_1xT[0, :n_prompt] = prompt_ids
    graphdef, state = nnx.split(model)
    stops = jnp.asarray(list(stop_ids) or [-1], jnp.int32)
    out_1xT, end = _decode(graphdef, state, jnp.asarray(tokens_1xT), n_prompt, n_prompt + max_new_tokens, stops,
                           prompt_slots=_round_up(n_prompt))
    out = np.asarray(out_1xT[0, n_prompt:int(end)]).tolist()
    return out[:-1] if out and out[-1] in set(stop_ids) else out


@backend_jit(static_argnames="prompt_slots")
def _decode(graphdef, state, tokens_1xT, start, end, stops, prompt_slots):
    model = nnx.merge(graphdef, state)
    _, cache = model.extend(tokens_1xT[:, :prompt_slots], model.init_cache(1, tokens_1xT.shape[1]), 0)

    def step(carry):
        tokens_1xT, t, cache, _ = carry
        last_1x1 = jax.lax.dynamic_slice_in_dim(tokens_1xT, t - 1, 1, axis=1)
        hidden_1x1xD, cache = model.extend(last_1x1, cache, t - 1)
        nxt = jnp.argmax(model.logits(hidden_1x1xD)[0, 0]).astype(jnp.int32)
        return tokens_1xT.at[0, t].set(nxt), t + 1, cache, jnp.any(nxt == stops)

    def running(carry):
        _, t, _, stopped = carry
        return (t < end) & ~stopped

    tokens_1xT, t, _, _ = jax.lax.while_loop(running, step, (tokens_1xT, jnp.int32(start), cache, jnp.bool_(False)))
    return tokens_1xT, t
