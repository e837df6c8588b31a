"""The fused, chunked cross-entropy of the train step against plain full-logits autodiff."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from tokeff.models.config import get_preset
from tokeff.models.transformer import Transformer
from tokeff.train import step as step_lib


def _plain_loss(model, micro):
    logits_BxSxV = model(micro["tokens"], positions_BxS=micro["positions"], segment_ids_BxS=micro["segment_ids"])
    nll_BxS = optax.softmax_cross_entropy_with_integer_labels(logits_BxSxV, micro["targets"])
    return jnp.sum(nll_BxS * micro["loss_mask"])


@pytest.mark.parametrize("name", ["tiny", "tiny-untied"])
def test_fused_loss_and_grads_equal_full_logits_autodiff(name, monkeypatch):
    monkeypatch.setattr(step_lib, "CHUNK_TOKENS", 8)  # 2 rows x 4 positions: 3 chunks of a 12-token row
    model = Transformer(get_preset(name), nnx.Rngs(0))
    rng = np.random.default_rng(0)
    ids = rng.integers(0, model.cfg.vocab_size, (2, 13)).astype(np.int32)
    micro = {"tokens": ids[:, :-1], "targets": ids[:, 1:], "loss_mask": (rng.random((2, 12)) < 0.7).astype(np.float32),
             "segment_ids": np.array([[1] * 7 + [2] * 5, [1] * 10 + [0] * 2], np.int32),
             "positions": np.array([list(range(7)) + list(range(5)), list(range(10)) + [0, 0]], np.int32)}
    graphdef, params = nnx.split(model, nnx.Param)
    fused = jax.jit(jax.value_and_grad(lambda p: step_lib.loss_sum(graphdef, p, micro)))
    plain = jax.jit(jax.value_and_grad(lambda p: _plain_loss(nnx.merge(graphdef, p), micro)))
    (loss_f, grads_f), (loss_p, grads_p) = fused(params), plain(params)
    np.testing.assert_allclose(float(loss_f), float(loss_p), rtol=1e-6)
    for g, h in zip(jax.tree.leaves(grads_f), jax.tree.leaves(grads_p)):
        np.testing.assert_allclose(np.asarray(g), np.asarray(h), rtol=1e-5, atol=1e-6)
    assert step_lib._chunk_len(2, 12) == 4
