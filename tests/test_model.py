"""The Flax Transformer: shapes, parameter counts, sharding names, packing, dtypes, remat."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tokeff.errors import UserError
from tokeff.models.config import PRESETS, get_preset
from tokeff.models.load import load_model
from tokeff.models.transformer import Transformer

AXIS_NAMES = {"vocab", "embed", "q_heads", "kv_heads", "head_dim", "mlp", "norm"}


def _count(model) -> int:
    return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


# One compiled forward per shape: op-by-op (eager) execution compiles every primitive separately.
forward = nnx.jit(lambda model, tokens, **kw: model(tokens, **kw))


@pytest.fixture(scope="module")
def tiny():
    return Transformer(get_preset("tiny"), nnx.Rngs(1))


@pytest.mark.parametrize("name", ["tiny", "tiny-untied", "tiny-qwen"])
def test_forward_shape_dtype_and_param_count(name):
    cfg = get_preset(name)
    model = Transformer(cfg, nnx.Rngs(0))
    logits_BxSxV = forward(model, jnp.zeros((2, 7), jnp.int32))
    assert logits_BxSxV.shape == (2, 7, cfg.vocab_size) and logits_BxSxV.dtype == jnp.float32
    assert _count(model) == cfg.params


@pytest.mark.parametrize("name", [n for n, c in PRESETS.items() if c.vocab_size > 512])
def test_preset_param_tree_matches_config_count(name):
    """Abstract init (no memory): the module builds exactly the parameters ModelConfig counts."""
    model = nnx.eval_shape(lambda: Transformer(get_preset(name), nnx.Rngs(0)))
    assert _count(model) == get_preset(name).params


def test_every_param_carries_logical_axis_names():
    model = Transformer(get_preset("tiny-qwen"), nnx.Rngs(0))
    specs = nnx.to_flat_state(nnx.get_partition_spec(nnx.state(model, nnx.Param)))
    params = dict(nnx.to_flat_state(nnx.state(model, nnx.Param)))
    for path, spec in specs:
        names = tuple(spec.get_value())
        assert len(names) == params[path].get_value().ndim and set(names) <= AXIS_NAMES, path
    assert tuple(dict(specs)[("blocks", 0, "attn", "k")].get_value()) == ("embed", "kv_heads", "head_dim")


def test_packed_row_equals_each_example_alone(tiny):
    """Two examples packed in one row (segments 1, 2; positions restart) plus padding (segment 0)
    give the same logits as each example run alone: attention never crosses segments."""
    cfg, model = tiny.cfg, tiny
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, cfg.vocab_size, 9), rng.integers(0, cfg.vocab_size, 6)
    tokens = np.concatenate([a, b, [0, 0, 0]])[None]
    segments = np.array([[1] * 9 + [2] * 6 + [0] * 3])
    positions = np.array([list(range(9)) + list(range(6)) + [0, 0, 0]])
    packed = np.asarray(forward(model, jnp.asarray(tokens), positions_BxS=jnp.asarray(positions),
                                segment_ids_BxS=jnp.asarray(segments)))
    alone_a = np.asarray(forward(model, jnp.asarray(a[None])))
    alone_b = np.asarray(forward(model, jnp.asarray(b[None])))
    np.testing.assert_allclose(packed[0, :9], alone_a[0], atol=1e-5)
    np.testing.assert_allclose(packed[0, 9:15], alone_b[0], atol=1e-5)
    assert np.isfinite(packed).all()


def test_causal_query_blocks_equal_dense_attention():
    """Rows longer than one query block (128) run attention block by block, each block against
    its key prefix. Dense references: the KV-cache path (one span over every slot, causal mask)
    for a plain row, and each example alone (rows under 128 tokens: one dense block) for a
    packed row whose segments cross block boundaries."""
    cfg = get_preset("tiny", max_seq_len=512)
    model = Transformer(cfg, nnx.Rngs(2))
    rng = np.random.default_rng(1)
    tokens = jnp.asarray(rng.integers(0, cfg.vocab_size, (2, 300)), jnp.int32)
    blocked = nnx.jit(lambda m, t: m.hidden_states(t))(model, tokens)
    dense = nnx.jit(lambda m, t: m.extend(t, m.init_cache(2, 300), jnp.int32(0))[0])(model, tokens)
    np.testing.assert_allclose(np.asarray(blocked), np.asarray(dense), atol=2e-5)

    lengths = (100, 120, 70)  # segments span the blocks [0, 128), [128, 256), [256, 300)
    examples = [rng.integers(0, cfg.vocab_size, n) for n in lengths]
    row = np.concatenate(examples + [np.zeros(10, np.int64)])[None]
    segments = np.concatenate([np.full(n, i + 1) for i, n in enumerate(lengths)] + [np.zeros(10, int)])[None]
    positions = np.concatenate([np.arange(n) for n in lengths] + [np.zeros(10, int)])[None]
    packed = np.asarray(forward(model, jnp.asarray(row), positions_BxS=jnp.asarray(positions),
                                segment_ids_BxS=jnp.asarray(segments)))
    start = 0
    for example in examples:
        alone = np.asarray(forward(model, jnp.asarray(example[None])))
        np.testing.assert_allclose(packed[0, start:start + len(example)], alone[0], atol=2e-5)
        start += len(example)


def _plain_attend(q_BxGxRxCxK, k_BxGxTxK, v_BxGxTxK, mask_BxCxT):
    """Attention as first written, differentiated by autodiff: the reference for `_attend`."""
    b, g, r, c, k = q_BxGxRxCxK.shape
    scores = jnp.einsum("bgrck,bgtk->bgrct", q_BxGxRxCxK, k_BxGxTxK, preferred_element_type=jnp.float32)
    scores = jnp.where(mask_BxCxT[:, None, None], scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(q_BxGxRxCxK.dtype)
    return jnp.einsum("bgrct,bgtk->bgrck", probs, v_BxGxTxK)


@pytest.mark.parametrize("dtype,tol", [(jnp.float32, 2e-5), (jnp.bfloat16, 3e-2)])
def test_attention_gradient_equals_autodiff(dtype, tol):
    """`_attend`'s written-out backward (dS = P * (dP - rowsum(dO * O))) gives autodiff's
    gradients for queries, keys and values, under a mask with hidden keys in every row."""
    from tokeff.models.attention import _attend

    rng = np.random.default_rng(3)
    b, g, r, c, t, k = 2, 2, 3, 5, 7, 8
    q, kk, v, dout = (jnp.asarray(rng.normal(size=shape), dtype) for shape in
                      [(b, g, r, c, k), (b, g, t, k), (b, g, t, k), (b, g, r, c, k)])
    mask = rng.random((b, c, t)) < 0.6
    mask[:, :, 0] = True  # every query sees at least one key
    mask = jnp.asarray(mask)
    out, vjp = jax.vjp(lambda *a: _attend(*a, mask), q, kk, v)
    ref_out, ref_vjp = jax.vjp(lambda *a: _plain_attend(*a, mask), q, kk, v)
    np.testing.assert_allclose(np.asarray(out, np.float32), np.asarray(ref_out, np.float32), atol=tol)
    for got, want in zip(vjp(dout), ref_vjp(dout)):
        assert got.dtype == dtype
        np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32), atol=tol, rtol=tol)


def test_model_gradients_equal_autodiff_attention(monkeypatch):
    """The whole model's gradients (tied embedding, 300-token rows: three query blocks, packed
    segments crossing them, padding) with the written-out attention backward equal those of
    autodiff through the plain attention."""
    import tokeff.models.attention as attention

    cfg = get_preset("tiny", max_seq_len=512)
    rng = np.random.default_rng(4)
    tokens = jnp.asarray(rng.integers(0, cfg.vocab_size, (2, 300)), jnp.int32)
    segments = jnp.asarray(np.concatenate([np.full((2, 140), 1), np.full((2, 150), 2), np.zeros((2, 10), int)], 1))

    def grads():
        model = Transformer(cfg, nnx.Rngs(5))
        return jax.tree.leaves(nnx.jit(nnx.grad(lambda m: m(tokens, segment_ids_BxS=segments).std()))(model))

    written = grads()
    monkeypatch.setattr(attention, "_attend", _plain_attend)
    for got, want in zip(written, grads()):  # relative to each parameter's gradient norm
        assert np.linalg.norm(np.asarray(got) - np.asarray(want)) <= 1e-4 * np.linalg.norm(np.asarray(want))


def test_all_padding_row_is_finite_and_gradients_too(tiny):
    model = tiny
    tokens = jnp.zeros((2, 5), jnp.int32)
    segments = jnp.array([[1, 1, 0, 0, 0], [0, 0, 0, 0, 0]])

    def loss(m):
        return m(tokens, segment_ids_BxS=segments).mean()

    grads = nnx.jit(nnx.grad(loss))(model)
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))


def test_bfloat16_compute_keeps_float32_params_and_logits():
    cfg = get_preset("tiny-untied")
    f32 = Transformer(cfg, nnx.Rngs(0))
    bf16 = Transformer(cfg.replace(dtype="bfloat16"), nnx.Rngs(0))
    tokens = jnp.arange(16).reshape(2, 8)
    out = forward(bf16, tokens)
    assert out.dtype == jnp.float32
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(nnx.state(bf16, nnx.Param)))
    assert float(jnp.abs(out - forward(f32, tokens)).max()) < 0.02


def test_remat_gives_the_same_gradients():
    cfg = get_preset("tiny")
    tokens = jnp.arange(24).reshape(2, 12)

    def grads(c):
        model = Transformer(c, nnx.Rngs(0))
        return nnx.jit(nnx.grad(lambda m: m(tokens).mean()))(model)

    for g, h in zip(jax.tree.leaves(grads(cfg)), jax.tree.leaves(grads(cfg.replace(remat=True)))):
        np.testing.assert_allclose(np.asarray(g), np.asarray(h), atol=1e-6)


def test_unknown_preset_lists_known_ones():
    with pytest.raises(UserError, match="unknown preset 'smollm2-13m'.*known: smollm2-135m, "):
        load_model("smollm2-13m")


def test_tiny_preset_gets_byte_tokenizer():
    loaded = load_model("tiny")
    assert loaded.tokenizer.get_vocab_size() <= loaded.config.vocab_size
    assert loaded.tokenizer.decode(loaded.tokenizer.encode("Ünïcode 42!").ids) == "Ünïcode 42!"
    assert loaded.tokenizer.encode("<|im_start|>").ids == [loaded.tokenizer.token_to_id("<|im_start|>")]
