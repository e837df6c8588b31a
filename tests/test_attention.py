"""Attention paths against the reference: splash (the TPU kernel, in Pallas interpret mode on the
CPU), the cudnn wrapper (its arguments, and its XLA fallback off GPU), path resolution, and the
train step with each path. Tiny shapes: interpret mode runs the kernel's grid in Python."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tokeff.errors import UserError
from tokeff.models import attention
from tokeff.models.attention import Mask, attend
from tokeff.models.config import attention_path, get_preset
from tokeff.models.transformer import Transformer, attention_mask
from tokeff.train.step import loss_sum

ATOL = 1e-5  # float32


def _packed(rows: int, seq: int, cuts: list[tuple[int, ...]], seed: int = 0) -> dict:
    """A packed batch: row b holds segments 1, 2, ... between `cuts[b]`, then padding (segment 0)."""
    seg = np.zeros((rows, seq), np.int32)
    pos = np.zeros((rows, seq), np.int32)
    for b, row_cuts in enumerate(cuts):
        for i, (lo, hi) in enumerate(zip(row_cuts[:-1], row_cuts[1:])):
            seg[b, lo:hi] = i + 1
            pos[b, lo:hi] = np.arange(hi - lo)
    tokens = np.random.default_rng(seed).integers(0, 512, (rows, seq)).astype(np.int32)
    return dict(tokens=tokens, targets=np.roll(tokens, -1, 1), loss_mask=(seg > 0).astype(np.float32),
                segment_ids=seg, positions=pos)


def _close(a, b, atol=ATOL):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=0, atol=atol)


def _model(path: str, **overrides):
    # GQA: 4 query heads over 2 KV heads; one layer keeps the interpret-mode kernel quick.
    return Transformer(get_preset("tiny", n_layers=1, attention=path, **overrides), nnx.Rngs(0))


def _loss_and_grads(model, micro):
    graphdef, params = nnx.split(model)
    return jax.jit(jax.value_and_grad(lambda p: loss_sum(graphdef, p, micro)))(params)


@pytest.mark.parametrize("path", ["splash", "cudnn"])
def test_fused_paths_equal_reference_on_packed_gqa_rows(path):
    """configs/tiny.py's 64-token rows (splash pads them to one 128 tile), three segments and
    padding in one row: hidden states, loss and every parameter gradient within 1e-5."""
    micro = _packed(2, 64, [(0, 20, 45, 60), (0, 33, 64)])
    hidden = {}
    grads = {}
    for p in ("reference", path):
        model = _model(p)
        graphdef, params = nnx.split(model)
        hidden[p] = jax.jit(lambda q: nnx.merge(graphdef, q).hidden_states(
            micro["tokens"], positions_BxS=micro["positions"], segment_ids_BxS=micro["segment_ids"]))(params)
        grads[p] = _loss_and_grads(model, micro)
    _close(hidden[path], hidden["reference"])
    _close(grads[path], grads["reference"])


def test_splash_over_several_tiles_with_padding_equals_reference():
    """300 tokens: three 128 tiles (the kernel skips the three above the diagonal), the row
    padded to 384; segments crossing tile edges. Output and q/k/v gradients within 1e-5."""
    b, s, g, r, k = 1, 300, 1, 2, 16
    keys = jax.random.split(jax.random.key(0), 4)
    q = jax.random.normal(keys[0], (b, s, g * r, k)) / 4
    kk = jax.random.normal(keys[1], (b, s, g, k))
    v = jax.random.normal(keys[2], (b, s, g, k))
    seg = jnp.asarray(np.repeat([1, 2, 3, 0], [100, 150, 40, 10])[None], jnp.int32)
    weights = jax.random.normal(keys[3], (b, s, g * r, k))

    def run(path, mask):
        fn = lambda q, kk, v: jnp.sum(weights * attend(q, kk, v, mask, path))  # noqa: E731
        return jax.jit(jax.value_and_grad(fn, argnums=(0, 1, 2)))(q, kk, v)

    _close(run("splash", Mask(None, seg)), run("reference", Mask(attention_mask(seg), seg)), atol=2e-5)


def test_splash_with_a_kv_cache_equals_reference():
    """The generation path: a 64-token prefill into a 128-slot cache, then two tokens at slot 64
    (splash takes the key-slot <= query-slot mask as a dynamic mask)."""
    tokens = np.random.default_rng(1).integers(0, 512, (2, 66)).astype(np.int32)
    out = {}
    for path in ("reference", "splash"):
        model = _model(path)
        graphdef, params = nnx.split(model)

        @jax.jit
        def run(params):
            m = nnx.merge(graphdef, params)
            prefill, cache = m.extend(tokens[:, :64], m.init_cache(2, 128), 0)
            step, _ = m.extend(tokens[:, 64:], cache, jnp.int32(64))
            return prefill, step

        out[path] = run(params)
    _close(out["splash"], out["reference"])


def test_cudnn_wrapper_arguments_and_cpu_fallback(monkeypatch):
    """On GPU: cuDNN's implementation, BTNH layout with G KV heads (GQA native), causal, scale 1
    (queries come scaled), the same-segment mask [B, 1, S, S]. Off GPU the same call with
    implementation="xla", whose result is the reference's."""
    b, s, h, g, k = 2, 8, 4, 2, 16
    keys = jax.random.split(jax.random.key(0), 3)
    q = jax.random.normal(keys[0], (b, s, h, k))
    kk = jax.random.normal(keys[1], (b, s, g, k))
    v = jax.random.normal(keys[2], (b, s, g, k))
    seg = jnp.asarray([[1, 1, 1, 2, 2, 2, 0, 0], [1, 1, 1, 1, 1, 1, 1, 1]], jnp.int32)
    calls = []
    real = jax.nn.dot_product_attention

    def spy(*args, **kwargs):
        calls.append((args, kwargs))
        return real(*args, **{**kwargs, "implementation": "xla"})

    monkeypatch.setattr(jax.nn, "dot_product_attention", spy)
    attention.cudnn_attention(q, kk, v, seg, backend="gpu")
    (qa, ka, va), kwargs = calls[-1]
    assert qa.shape == (b, s, h, k) and ka.shape == va.shape == (b, s, g, k)
    assert kwargs["implementation"] == "cudnn" and kwargs["is_causal"] and kwargs["scale"] == 1.0
    assert kwargs["mask"].shape == (b, 1, s, s) and kwargs["mask"].dtype == jnp.bool_
    assert bool(kwargs["mask"][0, 0, 4, 1]) is False and bool(kwargs["mask"][0, 0, 4, 3]) is True
    out = attend(q, kk, v, Mask(None, seg), "cudnn")
    assert calls[-1][1]["implementation"] == "xla"
    _close(out, attend(q, kk, v, Mask(attention_mask(seg), seg), "reference"))


def test_paths_resolve_by_backend_and_refuse_what_cannot_run():
    assert attention_path("auto", "float32", "cpu") == "reference"
    assert attention_path("auto", "float32", None) == "reference"  # planning before JAX starts
    assert attention_path("auto", "float32", "tpu") == "splash"
    assert attention_path("auto", "bfloat16", "gpu") == "cudnn"
    assert attention_path("auto", "float32", "gpu") == "reference"  # cuDNN has no float32 kernel
    assert attention_path("splash", "float32", "cpu") == "splash"  # interpret mode
    assert attention.resolve("auto", "float32") == "reference"  # this CPU
    with pytest.raises(UserError, match="model.attention: cudnn runs bfloat16"):
        attention_path("cudnn", "float32", "gpu")
    with pytest.raises(UserError, match="model.attention: must be one of"):
        get_preset("tiny", attention="flash")
    from tokeff.train.config import check_train_config
    from tokeff.train.defaults import base_config

    config = base_config()
    config.attention = "flash"
    with pytest.raises(UserError, match="attention: must be one of auto, reference, splash, cudnn"):
        check_train_config(config)


def test_train_step_runs_with_each_path():
    """The jitted train step (state sharded over a one-device mesh, AdamW) compiles with every
    path, and one step gives the same loss and gradient norm on each."""
    from tokeff.train.defaults import base_config
    from tokeff.train.mesh import make_mesh
    from tokeff.train.optimizer import make_optimizer
    from tokeff.train.sharding import batch_sharding, put_batch
    from tokeff.train.state import init_state, state_layout
    from tokeff.train.step import make_train_step

    micro = _packed(2, 64, [(0, 30, 64), (0, 10, 50)], seed=2)
    mesh = make_mesh({"data": 1}, devices=jax.devices()[:1])
    tx, _ = make_optimizer(base_config().optim, 10)
    metrics = {}
    for path in ("reference", "splash", "cudnn"):
        cfg = get_preset("tiny", n_layers=1, attention=path)
        factory = lambda: Transformer(cfg, nnx.Rngs(0))  # noqa: E731
        layout = state_layout(factory, tx, mesh)
        step = make_train_step(layout, tx, mesh)
        batch = {key: put_batch(value[None], batch_sharding(mesh)) for key, value in micro.items()}
        _, metrics[path] = step(init_state(layout, factory, tx, 0), batch, np.float32(1e-3))
    for path in ("splash", "cudnn"):
        for key in ("loss", "grad_norm"):
            np.testing.assert_allclose(float(metrics[path][key]), float(metrics["reference"][key]), rtol=1e-6)


_SHARDED = """
import jax, numpy as np
from flax import nnx
from tokeff.models.config import get_preset
from tokeff.models.transformer import Transformer
from tokeff.train.defaults import base_config
from tokeff.train.mesh import make_mesh
from tokeff.train.optimizer import make_optimizer
from tokeff.train.sharding import batch_sharding, put_batch
from tokeff.train.state import init_state, state_layout
from tokeff.train.step import make_train_step
tokens = np.random.default_rng(0).integers(0, 512, (4, 65)).astype(np.int32)
fields = {"tokens": tokens[:, :-1], "targets": tokens[:, 1:], "loss_mask": np.ones((4, 64), np.float32),
          "segment_ids": np.repeat([[1, 2]], [40, 24], axis=1).repeat(4, 0).astype(np.int32),
          "positions": np.concatenate([np.arange(40), np.arange(24)])[None].repeat(4, 0).astype(np.int32)}
mesh = make_mesh({"data": 2}, devices=jax.devices()[:2])
tx, _ = make_optimizer(base_config().optim, 10)
for path in ("reference", "splash"):
    cfg = get_preset("tiny", n_layers=1, attention=path)
    factory = lambda: Transformer(cfg, nnx.Rngs(0))
    with jax.set_mesh(mesh):
        layout = state_layout(factory, tx, mesh)
        step = make_train_step(layout, tx, mesh)
        batch = {k: put_batch(v[None], batch_sharding(mesh)) for k, v in fields.items()}
        text = step.jitted.lower(layout.abstract, batch, np.float32(1e-3)).as_text()
        _, m = step(init_state(layout, factory, tx, 0), batch, np.float32(1e-3))
    print(path, float(m["loss"]), float(m["grad_norm"]), "sdy.manual_computation" in text)
"""


@pytest.mark.slow
def test_splash_runs_per_batch_shard_on_a_data_parallel_mesh(tmp_path):
    """XLA does not partition a Pallas kernel: on a mesh that shards the batch, splash runs under
    shard_map, one kernel per device's rows, and the step equals the reference's."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-c", _SHARDED], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = {line.split()[0]: line.split()[1:] for line in result.stdout.strip().splitlines()}
    assert lines["splash"][2] == "True" and lines["reference"][2] == "False"  # the kernel runs in shard_map
    for i in (0, 1):
        np.testing.assert_allclose(float(lines["splash"][i]), float(lines["reference"][i]), rtol=1e-6)
