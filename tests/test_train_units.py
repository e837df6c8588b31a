"""Training building blocks without a training run: mesh sizes, sharding rules, budget fitting,
schedules, config overrides, and gradient accumulation (one device, in process)."""

from __future__ import annotations

import numpy as np
import pytest

from tokeff.errors import UserError
from tokeff.train.budget import Budget, Spent, check_minimum, fit_to_budget
from tokeff.train.defaults import base_config
from tokeff.train.mesh import mesh_shape


def test_mesh_shape_fills_one_axis_and_rejects_bad_sizes():
    assert mesh_shape({"data": -1}, 8) == (8, 1, 1)
    assert mesh_shape({"data": 2, "fsdp": -1, "tensor": 2}, 8) == (2, 2, 2)
    with pytest.raises(UserError, match="needs 6 devices but 8"):
        mesh_shape({"data": 3, "fsdp": 2}, 8)
    with pytest.raises(UserError, match="do not divide"):
        mesh_shape({"data": -1, "tensor": 3}, 8)
    with pytest.raises(UserError, match="at most one axis"):
        mesh_shape({"data": -1, "fsdp": -1}, 8)


def test_logical_rules_shard_divisible_dims_and_replicate_the_rest():
    import jax

    from tokeff.train.sharding import logical_to_spec

    class FakeMesh:  # only .shape is read
        shape = {"data": 2, "fsdp": 2, "tensor": 2}

    P = jax.sharding.PartitionSpec
    assert logical_to_spec(("embed", "q_heads", "head_dim"), (64, 4, 16), FakeMesh) == P("fsdp", "tensor", None)
    # SmolLM2's 3 KV heads do not split 2 ways: replicated, not an error.
    assert logical_to_spec(("embed", "kv_heads", "head_dim"), (576, 3, 64), FakeMesh) == P("fsdp", None, None)
    assert logical_to_spec(("norm",), (64,), FakeMesh) == P(None)
    assert logical_to_spec(None, (3,), FakeMesh) == P()


def _stream(batch_size=4, n=40, rows_multiple=1):
    from tokeff.data.batching import BatchStream
    from tokeff.data.tokenize import TokenizedExample
    from tokeff.models.config import get_preset

    rng = np.random.default_rng(0)
    examples = [TokenizedExample(rng.integers(0, 256, n_tok).astype(np.int32), np.ones(n_tok, bool))
                for n_tok in rng.integers(5, 30, n)]
    stream = BatchStream(examples, get_preset("tiny"), batch_size=batch_size, layout="padded",
                         buckets=[32], rows_multiple=rows_multiple)
    return stream, np.asarray([len(e) for e in examples])


def test_budget_is_never_exceeded_and_ends_less_than_one_granule_short():
    stream, lengths = _stream()
    tokens_of = lambda b: int(lengths[b.example_ids].sum())  # noqa: E731
    per_row = stream.batch_at(0).take_rows(1).flops
    for granularity in (1, 2):
        budget = Budget(flops=10 * stream.batch_at(0).flops + 3 * per_row + 7)
        spent, last = Spent(), None
        for batch in stream.iterate(0):
            fitted = fit_to_budget(batch, budget, spent, granularity, tokens_of)
            if fitted is None:
                break
            spent.charge(fitted, tokens_of(fitted))
            last = fitted
        assert spent.flops <= budget.flops
        assert budget.flops - spent.flops < granularity * per_row
        assert last.rows % granularity == 0


def test_token_and_epoch_budgets_stop_first():
    stream, lengths = _stream()
    tokens_of = lambda b: int(lengths[b.example_ids].sum())  # noqa: E731

    def spend(budget):
        spent = Spent()
        for batch in stream.iterate(0):
            fitted = fit_to_budget(batch, budget, spent, 1, tokens_of)
            if fitted is None:
                break
            spent.charge(fitted, tokens_of(fitted))
        return spent

    assert spend(Budget(flops=10**18, epochs=2)).tokens == 2 * lengths.sum()  # every example twice
    assert 100 - lengths.max() < spend(Budget(flops=10**18, tokens=100)).tokens <= 100


def test_budget_smaller_than_one_step_names_the_minimum():
    stream, _ = _stream()
    one_row = stream.batch_at(0).take_rows(2).flops
    with pytest.raises(UserError, match=f"minimum budget is {one_row}"):
        check_minimum(stream.batch_at(0), Budget(flops=one_row - 1), granularity=2)


def test_schedules_warm_up_then_decay():
    from tokeff.train.optimizer import learning_rate_schedule

    optim = base_config().optim
    optim.lr, optim.warmup_steps, optim.min_lr_ratio = 1.0, 4, 0.1
    for name in ("cosine", "linear", "constant"):
        optim.schedule = name
        lr = [float(learning_rate_schedule(optim, 20)(s)) for s in range(20)]
        assert lr[0] == pytest.approx(0.25) and lr[3] == pytest.approx(1.0)
        assert lr[-1] == pytest.approx(1.0 if name == "constant" else 0.1, abs=0.08)
    optim.schedule = "step"
    with pytest.raises(UserError, match="optim.schedule"):
        learning_rate_schedule(optim, 20)


def test_config_overrides_are_typed_and_misspelt_keys_fail(tmp_path):
    from tokeff.train.config import load_config

    config = load_config("configs/tiny.py", ["--config.optim.lr=0.5", "--config.mesh.fsdp=2"])
    assert config.optim.lr == 0.5 and config.mesh.fsdp == 2
    with pytest.raises(UserError, match=r"config\.optim\.lrr: unknown config key.*lr"):
        load_config("configs/tiny.py", ["--config.optim.lrr=0.5"])
    with pytest.raises(UserError, match="could not convert"):
        load_config("configs/tiny.py", ["--config.budget.flops=lots"])
    with pytest.raises(UserError, match="no such file"):
        load_config(str(tmp_path / "nope.py"))


@pytest.mark.slow  # four compilations of the step: ~20 s idle, ~60 s on a loaded 2-core machine
def test_gradient_accumulation_equals_the_big_batch():
    """4 microbatches of unequal answer-token counts: same loss and update as one batch; and a
    short batch padded to the full batch's shape: same as its rows alone."""
    import jax
    from flax import nnx

    from tokeff.models.config import get_preset
    from tokeff.models.transformer import Transformer
    from tokeff.train.mesh import make_mesh
    from tokeff.train.optimizer import make_optimizer
    from tokeff.train.sharding import batch_sharding, put_batch
    from tokeff.train.state import init_state, state_layout
    from tokeff.train.step import make_train_step

    cfg = get_preset("tiny", n_layers=1)
    mesh = make_mesh({"data": 1}, devices=jax.devices()[:1])
    tx, schedule = make_optimizer(base_config().optim, 10)
    factory = lambda: Transformer(cfg, rngs=nnx.Rngs(0))  # noqa: E731
    layout = state_layout(factory, tx, mesh)
    step = make_train_step(layout, tx, mesh)
    rng = np.random.default_rng(0)
    b, s = 8, 16
    ids = rng.integers(0, cfg.vocab_size, (b, s + 1)).astype(np.int32)
    mask = (rng.random((b, s)) < np.linspace(0.1, 0.9, b)[:, None]).astype(np.float32)
    fields = {"tokens": ids[:, :-1], "targets": ids[:, 1:], "loss_mask": mask,
              "segment_ids": np.ones((b, s), np.int32),
              "positions": np.broadcast_to(np.arange(s, dtype=np.int32), (b, s)).copy()}
    initial = jax.device_get(init_state(layout, factory, tx, 0))
    results = []
    for m in (1, 4):
        batch = {k: put_batch(v.reshape(m, b // m, s), batch_sharding(mesh)) for k, v in fields.items()}
        state, metrics = step(jax.device_put(initial, layout.shardings), batch, np.float32(schedule(0)))
        results.append((jax.device_get(metrics), jax.device_get(state["params"])))
    # A short batch (3 of the 8 rows) in the full batch's shape, as the loop lays it out: 8
    # microbatches of one row, 5 of them padding that the step skips. Same loss and update as
    # the 3 rows in a batch of their own shape.
    import types

    from tokeff.train.loop import _device_batch

    short = types.SimpleNamespace(rows=3, row_len=s, **{f"{k}_BxS": v[:3] for k, v in fields.items()})
    padded = _device_batch(short, b, mesh, full_rows=b)
    assert padded["tokens"].shape == (b, 1, s)
    alone = {k: put_batch(v[:3].reshape(1, 3, s), batch_sharding(mesh)) for k, v in fields.items()}
    for batch in (alone, padded):
        state, metrics = step(jax.device_put(initial, layout.shardings), batch, np.float32(schedule(0)))
        results.append((jax.device_get(metrics), jax.device_get(state["params"])))
    (m1, p1), (m4, p4), (m_alone, p_alone), (m_padded, p_padded) = results
    for (ma, pa), (mb, pb) in (((m1, p1), (m4, p4)), ((m_alone, p_alone), (m_padded, p_padded))):
        assert ma["loss"] == pytest.approx(mb["loss"], rel=1e-6)
        assert ma["grad_norm"] == pytest.approx(mb["grad_norm"], rel=1e-5)
        assert ma["loss_tokens"] == mb["loss_tokens"]
        # Adam divides by sqrt(v): float32 summation-order noise in near-zero gradients shows up
        # in the update at ~1e-6, against updates of ~lr = 3e-3.
        for a, b_ in zip(jax.tree.leaves(pa), jax.tree.leaves(pb)):
            np.testing.assert_allclose(a, b_, rtol=1e-4, atol=2e-5)


def test_step_equals_optax_adamw_on_the_mean_loss_gradient_with_clipping():
    """The step divides the loss weights by the token count before differentiating: the update
    must still be optax's clipped AdamW on the plain autodiff gradient of the mean loss, and the
    metrics its loss and norms."""
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    from tokeff.models.config import get_preset
    from tokeff.models.transformer import Transformer
    from tokeff.train.mesh import make_mesh
    from tokeff.train.optimizer import make_optimizer
    from tokeff.train.sharding import batch_sharding, put_batch
    from tokeff.train.state import init_state, state_layout
    from tokeff.train.step import loss_sum, make_train_step

    cfg = get_preset("tiny", n_layers=1)
    optim = base_config().optim
    optim.clip_norm = 0.05  # small enough to clip: the clipped branch is what is compared
    mesh = make_mesh({"data": 1}, devices=jax.devices()[:1])
    tx, schedule = make_optimizer(optim, 10)
    factory = lambda: Transformer(cfg, rngs=nnx.Rngs(0))  # noqa: E731
    layout = state_layout(factory, tx, mesh)
    rng = np.random.default_rng(1)
    b, s = 4, 16
    ids = rng.integers(0, cfg.vocab_size, (b, s + 1)).astype(np.int32)
    fields = {"tokens": ids[:, :-1], "targets": ids[:, 1:],
              "loss_mask": (rng.random((b, s)) < 0.5).astype(np.float32),
              "segment_ids": np.ones((b, s), np.int32),
              "positions": np.broadcast_to(np.arange(s, dtype=np.int32), (b, s)).copy()}
    initial = jax.device_get(init_state(layout, factory, tx, 0))
    lr = np.float32(schedule(1))
    batch = {k: put_batch(v[None], batch_sharding(mesh)) for k, v in fields.items()}
    state, metrics = make_train_step(layout, tx, mesh)(jax.device_put(initial, layout.shardings), batch, lr)

    micro = {k: jnp.asarray(v) for k, v in fields.items()}
    count = fields["loss_mask"].sum()
    loss, grads = jax.value_and_grad(lambda p: loss_sum(layout.graphdef, p, micro) / count)(initial["params"])
    reference = optax.chain(optax.clip_by_global_norm(optim.clip_norm),
                            optax.adamw(lr, b1=optim.b1, b2=optim.b2, eps=optim.eps, weight_decay=optim.weight_decay))
    updates, _ = reference.update(grads, reference.init(initial["params"]), initial["params"])
    expected = optax.apply_updates(initial["params"], updates)
    assert float(optax.tree.norm(grads)) > optim.clip_norm
    assert float(metrics["loss"]) == pytest.approx(float(loss), rel=1e-6)
    assert float(metrics["grad_norm"]) == pytest.approx(float(optax.tree.norm(grads)), rel=1e-5)
    assert float(metrics["param_norm"]) == pytest.approx(float(optax.tree.norm(expected)), rel=1e-6)
    assert metrics["loss_tokens"] == count
    for got, want in zip(jax.tree.leaves(jax.device_get(state["params"])), jax.tree.leaves(expected)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-6)


def test_packed_selection_keeps_only_examples_that_fit_a_row():
    """few_long picks the longest examples first; with packed rows it must skip any longer than a row
    (otherwise the packer cannot place them and the run fails after loading)."""
    import types

    from tokeff.models.tokenizer import TokenizerInfo, byte_tokenizer
    from tokeff.train.dataset import build_training_set

    data = base_config().data
    data.source, data.pool_size, data.strategy, data.layout = "arithmetic", 200, "few_long", "packed"
    tokenizer = byte_tokenizer()
    loaded = types.SimpleNamespace(tokens=TokenizerInfo(tokenizer, None, None, 256),
                                   name="tiny", config=types.SimpleNamespace(max_seq_len=256))
    data.row_len = 0  # no packed row length: the pool's own lengths
    pool = [len(e) for e in build_training_set(data, loaded, 0).examples]
    data.row_len = sorted(pool)[len(pool) // 2]  # half the pool is longer than a row
    assert max(pool) > data.row_len
    chosen = [len(e) for e in build_training_set(data, loaded, 0).examples]
    assert chosen and max(chosen) <= data.row_len


def test_config_loader_checks_file_keys_against_the_schema_and_fills_defaults(tmp_path):
    import ml_collections

    from tokeff.configfile import load_config

    schema = ml_collections.ConfigDict({"lr": 0.1, "steps": 10, "names": ("a",), "sub": {"on": False}})
    path = tmp_path / "c.py"
    path.write_text("import ml_collections\n"
                    "def get_config(arg=None):\n"
                    "    return ml_collections.ConfigDict({'lr': float(arg or 0.5)})\n")
    config = load_config(f"{path}:0.25", ["--config.steps", "3", "--config.names=('x', 'y')",
                                          "--config.sub.on=true"], schema)
    assert (config.lr, config.steps, config.names, config.sub.on) == (0.25, 3, ("x", "y"), True)
    assert load_config(str(path), [], schema).lr == 0.5
    with pytest.raises(AttributeError):
        config.lrr = 1.0  # the result is locked
    path.write_text("import ml_collections\n"
                    "def get_config(arg=None):\n"
                    "    return ml_collections.ConfigDict({'sub': {'onn': True}})\n")
    with pytest.raises(UserError, match=r"config\.sub\.onn: unknown config key.*'on'"):
        load_config(str(path), [], schema)


def test_step_is_compiled_ahead_once_per_signature_and_the_heap_trimmed_before_it_runs(monkeypatch):
    import platform

    import jax
    import jax.numpy as jnp

    from tokeff import devices
    from tokeff.train import step as step_lib

    trims = []
    monkeypatch.setattr(step_lib, "release_host_memory", lambda: trims.append(len(wrapped.compiled)))
    jitted = jax.jit(lambda state, batch, lr: ({"w": state["w"] - lr * batch["x"].sum(0)}, {"n": batch["x"].shape[0]}))
    wrapped = step_lib.CompiledAhead(jitted)
    state = {"w": jnp.ones(3)}
    for rows in (2, 2, 5, 2):
        batch = {"x": jnp.arange(3.0 * rows).reshape(rows, 3)}
        got, want = wrapped(state, batch, np.float32(0.1)), jitted(state, batch, np.float32(0.1))
        np.testing.assert_array_equal(got[0]["w"], want[0]["w"])
        assert int(got[1]["n"]) == rows
    assert len(wrapped.compiled) == 2  # one program per batch shape, as jit would cache
    assert trims == [1, 2]  # the heap is trimmed after each compile, before that program first runs
    assert devices.release_host_memory() is (platform.libc_ver()[0] == "glibc")
