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


def _train_losses(dtype: str, moments_dtype: str, steps: int = 5):
    """Losses of `steps` AdamW steps of the tiny model on one fixed packed batch, and the final state."""
    from tokeff.train.defaults import base_config
    from tokeff.train.mesh import make_mesh
    from tokeff.train.optimizer import make_optimizer
    from tokeff.train.sharding import batch_sharding, put_batch
    from tokeff.train.state import init_state, state_layout

    cfg = get_preset("tiny", dtype=dtype, n_layers=1)
    optim = base_config().optim
    optim.moments_dtype = moments_dtype
    mesh = make_mesh({"data": 1}, devices=jax.devices()[:1])
    tx, schedule = make_optimizer(optim, steps)
    factory = lambda: Transformer(cfg, nnx.Rngs(0))  # noqa: E731
    layout = state_layout(factory, tx, mesh)
    step = step_lib.make_train_step(layout, tx, mesh)
    ids = np.random.default_rng(0).integers(0, cfg.vocab_size, (4, 65)).astype(np.int32)
    seg = np.repeat([[1, 2]], [40, 24], axis=1).repeat(4, 0).astype(np.int32)
    fields = {"tokens": ids[:, :-1], "targets": ids[:, 1:], "loss_mask": np.ones((4, 64), np.float32),
              "segment_ids": seg, "positions": np.concatenate([np.arange(40), np.arange(24)])[None].repeat(4, 0)}
    batch = {k: put_batch(v[None].astype(np.int32 if k != "loss_mask" else np.float32), batch_sharding(mesh))
             for k, v in fields.items()}
    state, losses = init_state(layout, factory, tx, 0), []
    for i in range(steps):
        state, metrics = step(state, batch, np.float32(schedule(i)))
        losses.append(float(metrics["loss"]))
    return np.array(losses), state


def test_bfloat16_compute_and_bfloat16_moments_follow_the_float32_losses():
    """Mixed precision as the accelerators run it: bfloat16 matmuls over float32 master weights
    (loss, softmax and norms in float32), optionally bfloat16 Adam moments. On the CPU the
    losses of five steps follow float32's within 1% and still fall."""
    f32, _ = _train_losses("float32", "float32")
    bf16, state = _train_losses("bfloat16", "float32")
    low, low_state = _train_losses("bfloat16", "bfloat16")
    assert f32[-1] < f32[0] - 0.05  # it learns: the comparison is not of flat curves
    np.testing.assert_allclose(bf16, f32, rtol=1e-2)
    np.testing.assert_allclose(low, f32, rtol=1e-2)
    assert {x.dtype for x in jax.tree.leaves(state["params"])} == {jnp.dtype(jnp.float32)}  # master weights
    adam = low_state["opt_state"][1]
    assert {x.dtype for x in jax.tree.leaves((adam.mu, adam.nu))} == {jnp.dtype(jnp.bfloat16)}
    assert {x.dtype for x in jax.tree.leaves(low_state["params"])} == {jnp.dtype(jnp.float32)}
