"""`train(config, workdir)`: the budgeted, sharded, resumable training run.

The run is planned before the first step: walking the deterministic batch stream under the
budget gives every step's batch (and the one partial last batch), hence the exact number of
steps for the learning-rate schedule and the progress bar. Steps map one-to-one to stream
positions, so a checkpoint's step is also its data position.

Resume: the same command on the same workdir restores the latest checkpoint (state, FLOPs
and tokens spent) and continues with the next batch; a finished run returns its summary.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import time

import ml_collections
import numpy as np

from tokeff import io
from tokeff.errors import UserError
from tokeff.models.spec import is_preset
from tokeff.train.budget import Budget, Spent, check_minimum, fit_to_budget
from tokeff.train.summary import RunSummary

# Config sections that may change between a run and its resume: they do not change results
# (a checkpoint restores onto any mesh; losses agree to float tolerance).
_RESUMABLE_CHANGES = ("log", "checkpoint", "mesh", "distributed")


@dataclasses.dataclass(frozen=True)
class Plan:
    """Rows of each step's batch (the last may be cut to fit the budget), from stream position 0."""

    rows: list[int]
    flops: int
    tokens: int

    @property
    def steps(self) -> int:
        return len(self.rows)


class Resources:
    """What a run builds before its first step: mesh, model, training set, optimizer, state, step.

    `train` asks for each through these methods; this base class builds everything afresh (a
    standalone run). The warm sweep engine (`tokeff.sweep.engine`) subclasses it to build each
    once per process and share it across points, through this same loop.
    """

    save_final = True  # checkpoint the run's end and write summary.json (False: the caller keeps the result)
    local = False  # this process runs the run alone (a multi-host sweep's share): it writes its files

    def mesh(self, config: ml_collections.ConfigDict):
        import jax

        from tokeff.train.mesh import AXES, make_mesh

        n_devices = int(config.mesh.num_devices)
        if n_devices < 0 or n_devices > jax.device_count():
            raise UserError(f"mesh.num_devices: {n_devices} is not between 0 and the {jax.device_count()} devices")
        return make_mesh({a: int(config.mesh[a]) for a in AXES},
                         devices=jax.devices()[:n_devices] if n_devices else None)

    def model(self, config: ml_collections.ConfigDict):
        return load_for_training(config)

    def training_set(self, config: ml_collections.ConfigDict, loaded):
        from tokeff.train.dataset import build_training_set

        return build_training_set(config.data, loaded, int(config.seed))

    def optimizer(self, optim: ml_collections.ConfigDict, total_steps: int):
        from tokeff.train.optimizer import make_optimizer

        return make_optimizer(optim, total_steps)

    def layout(self, model_cfg, seed: int, tx, mesh):
        from tokeff.train.state import state_layout

        return state_layout(model_factory(model_cfg, seed), tx, mesh)

    def initial_state(self, config: ml_collections.ConfigDict, layout, loaded, tx) -> dict:
        from tokeff.train.state import init_state

        pretrained = None if is_preset(config.model) else loaded.model
        return init_state(layout, model_factory(loaded.config, int(config.seed)), tx, int(config.seed),
                          pretrained=pretrained)

    def train_step(self, layout, tx, mesh):
        from tokeff.train.step import make_train_step

        return make_train_step(layout, tx, mesh)

    def finished(self, state: dict, layout) -> None:
        """Called with the final state of a run that completed here (not one read back)."""


def train(config: ml_collections.ConfigDict, workdir: str, *, resources: Resources | None = None) -> RunSummary:
    """Train as `config` says, within its budget, in `workdir`; returns the summary (also summary.json).

    Values are checked and the workdir locked (one process per workdir) before anything is written.
    """
    from tokeff.train.config import check_train_config
    from tokeff.workdir import workdir_lock

    check_train_config(config)
    resources = resources or Resources()
    try:
        if config.distributed.enabled:  # every host of a multi-host run writes the one shared workdir
            _check_owned(workdir)
            return _train(config, workdir, resources)
        with workdir_lock(workdir, kind="train"):
            return _train(config, workdir, resources)
    except Exception as e:
        from tokeff.io import DiskFullError, is_disk_full

        if not is_disk_full(e) or isinstance(e, DiskFullError):
            raise
        raise DiskFullError(f"--workdir: no space left on the device holding {workdir}; the last good checkpoint "
                            f"({_last_checkpoint(workdir)}) is intact: free space and rerun to resume") from None


def _check_owned(workdir: str) -> None:
    """The ownership rule of `tokeff.workdir` for a workdir that is not locked (multi-host runs)."""
    from tokeff.ownership import check_workdir_owned, refuse_empty_path

    workdir = refuse_empty_path(workdir, "--workdir")
    check_workdir_owned(workdir if io.is_remote(workdir) else os.path.abspath(workdir), "train")


def _last_checkpoint(workdir: str) -> str:
    """The newest finished checkpoint step, read from the folder names (orbax names them by step)."""
    try:
        steps = [int(n) for n in os.listdir(os.path.join(workdir, "checkpoints")) if n.isdigit()]
    except OSError:
        steps = []
    return f"step {max(steps)}" if steps else "none yet"


def _train(config: ml_collections.ConfigDict, workdir: str, resources: Resources) -> RunSummary:
    started = time.time()
    summary_path = os.path.join(workdir, "summary.json")
    _check_same_run(config, workdir)
    finished = RunSummary.read(summary_path)
    if finished is not None:
        return finished
    _check_writable(workdir)
    _init_distributed(config.distributed)

    import jax

    from tokeff.data.batching import BatchStream
    from tokeff.train.checkpoint import Checkpoints
    from tokeff.models.config import attention_path
    from tokeff.train.mesh import batch_shards
    from tokeff.devices import device_peak_flops
    from tokeff.train.metrics import MetricsLog, truncate_metrics

    mesh = resources.mesh(config)
    shards = batch_shards(mesh)
    if config.microbatches < 1 or config.batch_size < 1:
        raise UserError("batch_size/microbatches: must be >= 1")
    if config.batch_size % (config.microbatches * shards):
        raise UserError(
            f"batch_size: {config.batch_size} is not divisible by microbatches ({config.microbatches}) "
            f"x batch shards of the mesh (data x fsdp = {shards})"
        )
    budget = Budget(flops=int(config.budget.flops), tokens=int(config.budget.tokens),
                    epochs=int(config.budget.epochs))
    loaded = resources.model(config)
    # "auto" attention becomes the path this mesh's devices run: the model traces it and the
    # FLOP account of record charges it (tokeff.models.attention).
    model_cfg = loaded.config.replace(attention=attention_path(
        loaded.config.attention, loaded.config.dtype, mesh.devices.flat[0].platform))
    training_set = resources.training_set(config, loaded)
    example_tokens = training_set.lengths
    stream = BatchStream(training_set.examples, model_cfg, batch_size=int(config.batch_size),
                         layout=config.data.layout, row_len=int(config.data.row_len) or None,
                         seed=int(config.seed), rows_multiple=shards, row_len_field="data.row_len")

    def tokens_of(batch) -> int:
        return int(example_tokens[batch.example_ids].sum())

    check_minimum(stream.batch_at(0), budget, shards)
    plan = _plan(stream, budget, shards, tokens_of)
    tx, schedule = resources.optimizer(config.optim, plan.steps)

    # Everything is validated: only now does the workdir get written to.
    os.makedirs(workdir, exist_ok=True)
    writer = resources.local or jax.process_index() == 0
    checkpoints = Checkpoints(os.path.join(workdir, "checkpoints"), keep=int(config.checkpoint.keep),
                              async_save=bool(config.checkpoint.async_save), local=resources.local)
    with jax.set_mesh(mesh):
        layout = resources.layout(model_cfg, int(config.seed), tx, mesh)
        latest = checkpoints.latest_step()
        if latest is None:
            if writer:
                io.write_json(os.path.join(workdir, "config.json"), config.to_dict())
            state = resources.initial_state(config, layout, loaded, tx)
            meta = {"spent": dataclasses.asdict(Spent()), "last_loss": None, "wall_seconds": 0.0}
            truncate_metrics(workdir, 0, writer=writer)  # a run killed before its first checkpoint starts over
        else:
            state, meta = checkpoints.restore(latest, layout.abstract)
            truncate_metrics(workdir, latest, writer=writer)
        del loaded  # a standalone run no longer needs the host copy of the pretrained weights
        spent = Spent(**meta["spent"])
        step_fn = resources.train_step(layout, tx, mesh)
        peak = device_peak_flops(mesh.devices.flat[0], model_cfg.dtype)
        log = MetricsLog(workdir, total_steps=plan.steps, first_step=spent.steps, peak_flops=peak,
                         n_devices=mesh.size, progress=bool(config.log.progress),
                         tensorboard=bool(config.log.tensorboard), writer=writer)
        stop = _SigtermFlag()
        try:
            state, status, last_loss, loop_seconds, compile_seconds = _run_steps(
                config, plan, stream, step_fn, schedule, state, spent, meta, checkpoints, log, stop, mesh,
                tokens_of, started, resources.save_final)
        finally:
            stop.restore()
            log.close()
            checkpoints.close()
    if status == "completed":
        resources.finished(state, layout)

    wall = meta["wall_seconds"] + (time.time() - started)
    selection = training_set.selection
    summary = RunSummary(
        status=status,
        model=config.model,
        params=model_cfg.params,
        non_embedding_params=model_cfg.non_embedding_params,
        dtype=model_cfg.dtype,
        dataset=config.data.source,
        strategy=config.data.strategy,
        seed=int(config.seed),
        n_examples=selection["n_examples"],
        avg_tokens=selection["avg_tokens"],
        unique_tokens=_unique_tokens_seen(stream, plan, spent.steps, example_tokens),
        dataset_tokens=selection["unique_tokens"],
        tokens_seen=spent.tokens,
        epochs=spent.tokens / selection["unique_tokens"],
        budget_flops=budget.flops,
        budget_tokens=budget.tokens,
        budget_epochs=budget.epochs,
        flops_used=spent.flops,
        steps=spent.steps,
        planned_steps=plan.steps,
        final_loss=last_loss,
        wall_seconds=wall,
        compile_seconds=compile_seconds,
        flops_per_second=spent.flops / loop_seconds if loop_seconds > 0 else None,
        mesh=dict(mesh.shape),
        devices=mesh.size,
        device_kind=mesh.devices.flat[0].device_kind,
        batch_granularity_rows=shards,
        selection=selection,
        attention=model_cfg.attention,
        mfu=spent.flops / loop_seconds / (peak * mesh.size) if peak and loop_seconds > 0 else None,
    )
    if status == "completed" and resources.save_final and writer:
        summary.write(summary_path)
    return summary


def _run_steps(config, plan, stream, step_fn, schedule, state, spent, meta, checkpoints, log, stop, mesh,
               tokens_of, started, save_final):
    """The step loop; returns (state, status, last loss, seconds spent stepping, seconds compiling)."""
    import jax

    every = int(config.checkpoint.every_steps)
    pending = None  # (step, device metrics, host metrics) of the step dispatched last
    last_loss = meta["last_loss"]
    loop_start = time.perf_counter()
    compile_seconds = 0.0
    seen_shapes = set()

    def flush():
        nonlocal pending, last_loss
        if pending is None:
            return
        row = log.record(*pending)
        pending = None
        bad = [k for k in ("loss", "grad_norm", "param_norm") if not math.isfinite(row[k])]
        if bad:
            checkpoints.wait()
            good = checkpoints.latest_step()
            raise UserError(
                f"training: non-finite {' and '.join(bad)} at step {row['step']}; stopped, last good "
                f"checkpoint: {'step ' + str(good) if good is not None else 'none'} "
                "(lower optim.lr or raise optim.warmup_steps)"
            )
        last_loss = row["loss"]

    batches = stream.iterate(spent.position)
    status = "completed"
    for step in range(spent.steps, plan.steps):
        batch = next(batches)
        if plan.rows[step] != batch.rows:
            batch = batch.take_rows(plan.rows[step])
        arrays = _device_batch(batch, int(config.batch_size) // int(config.microbatches), mesh,
                               full_rows=int(config.batch_size))
        shape = arrays["tokens"].shape
        t0 = time.perf_counter()
        state, metrics = step_fn(state, arrays, np.float32(schedule(step)))
        if shape not in seen_shapes:  # the first call of a shape compiles synchronously
            seen_shapes.add(shape)
            compile_seconds += time.perf_counter() - t0
            log.restart_clock()
        spent.charge(batch, tokens_of(batch))
        host = {"epoch": batch.epoch, "rows": batch.rows, "row_len": batch.row_len,
                "tokens": spent.tokens, "step_flops": batch.flops, "flops": spent.flops}
        flush()
        pending = (spent.steps, metrics, host)
        final = step + 1 == plan.steps
        if (final and save_final) or stop.raised or (not final and every > 0 and spent.steps % every == 0):
            flush()
            meta = {"spent": dataclasses.asdict(spent), "last_loss": last_loss,
                    "wall_seconds": meta["wall_seconds"] + (time.time() - started)}
            started = time.time()
            checkpoints.save(spent.steps, state, meta)
            if stop.raised and not final:
                status = "preempted"
                break
    flush()
    jax.block_until_ready(state)
    return state, status, last_loss, time.perf_counter() - loop_start - compile_seconds, compile_seconds


def _device_batch(batch, micro_rows: int, mesh, *, full_rows: int) -> dict:
    """[microbatches, rows/microbatches, seq] arrays on the mesh.

    A batch with fewer rows than usual (end of an epoch, or cut by the budget) comes as the
    full batch's row count in microbatches of one row per shard, its rows first and the rest
    padding: the step skips the padding microbatches (`tokeff.train.step`), so every short
    batch, whatever its row count, reuses one compiled step. Rows that do not split that way
    fall back to the fewest microbatches of at most `micro_rows` rows that divide evenly over
    the shards (a new shape).
    """
    from tokeff.train.mesh import batch_shards
    from tokeff.train.sharding import batch_sharding, put_batch

    shards = batch_shards(mesh)
    sharding = batch_sharding(mesh)
    fields = {"tokens": batch.tokens_BxS, "targets": batch.targets_BxS, "loss_mask": batch.loss_mask_BxS,
              "segment_ids": batch.segment_ids_BxS, "positions": batch.positions_BxS}
    if batch.rows < full_rows and batch.rows % shards == 0 and full_rows % shards == 0:
        slots = full_rows // shards
        padded = {k: np.concatenate([v, np.zeros((full_rows - batch.rows, batch.row_len), v.dtype)])
                  for k, v in fields.items()}
        return {k: put_batch(v.reshape(slots, shards, batch.row_len), sharding) for k, v in padded.items()}
    m = -(-batch.rows // micro_rows)
    while batch.rows % (m * shards):
        m += 1
    return {k: put_batch(v.reshape(m, batch.rows // m, batch.row_len), sharding) for k, v in fields.items()}


# Planning walks every step's batch; beyond this many steps it would run for minutes unannounced.
MAX_PLANNED_STEPS = 1_000_000


def _plan(stream, budget: Budget, granularity: int, tokens_of) -> Plan:
    first = stream.batch_at(0)
    steps = budget.flops / max(first.flops, 1)
    if budget.tokens:
        steps = min(steps, budget.tokens / max(tokens_of(first), 1))
    if budget.epochs:
        steps = min(steps, budget.epochs * stream.batches_per_epoch(0))
    if steps > MAX_PLANNED_STEPS:
        raise UserError(f"budget.flops: {budget.flops:.3g} FLOPs is about {steps:.3g} steps of "
                        f"{first.flops:.3g} FLOPs for this model and batch (the limit is {MAX_PLANNED_STEPS:,});"
                        " lower the budget, or cap it with budget.tokens or budget.epochs")
    spent, rows = Spent(), []
    for batch in stream.iterate(0):
        fitted = fit_to_budget(batch, budget, spent, granularity, tokens_of)
        if fitted is None:
            break
        spent.charge(fitted, tokens_of(fitted))
        rows.append(fitted.rows)
        if fitted is not batch:
            break  # a cut batch is always the last
    return Plan(rows=rows, flops=spent.flops, tokens=spent.tokens)


def _unique_tokens_seen(stream, plan: Plan, steps: int, example_tokens: np.ndarray) -> int:
    """Tokens of the distinct examples trained on (all of them once an epoch is complete)."""
    if steps >= stream.batches_per_epoch(0):
        return int(example_tokens.sum())
    seen: set[int] = set()
    for position in range(steps):
        batch = stream.batch_at(position)
        if plan.rows[position] != batch.rows:
            batch = batch.take_rows(plan.rows[position])
        seen.update(batch.example_ids.tolist())
    return int(example_tokens[sorted(seen)].sum()) if seen else 0


def model_factory(model_cfg, seed: int):
    """A function building the (randomly initialised) model: what layouts and fresh inits trace."""
    def factory():
        from flax import nnx

        from tokeff.models.transformer import Transformer

        return Transformer(model_cfg, rngs=nnx.Rngs(seed))

    return factory


def load_for_training(config: ml_collections.ConfigDict):
    """The config's model spec with its tokenizer; for a preset, without materialising weights.

    A preset is trained from scratch and initialised later directly on its shards, so its
    `load_model` runs under abstract evaluation: tokenizer and config are real, weights never
    exist (`model` is dropped). Checkpoints (gguf:, hf:, directories) are read on the host.
    """
    import dataclasses as dc

    import jax

    from tokeff.models.load import load_model

    def load():
        return load_model(config.model, dtype=config.dtype, seed=int(config.seed), attention=config.attention)

    if not is_preset(config.model):
        return load()
    box = []
    jax.eval_shape(lambda: box.append(load()) or 0)
    return dc.replace(box[0], model=None)


def _init_distributed(distributed: ml_collections.ConfigDict) -> None:
    """Join a multi-process run (one process per host) before any JAX computation."""
    if not distributed.enabled:
        return
    import jax

    if distributed.cpu_collectives:
        jax.config.update("jax_cpu_collectives_implementation", distributed.cpu_collectives)
    jax.distributed.initialize(
        coordinator_address=distributed.coordinator or None,
        num_processes=int(distributed.num_processes) or None,
        process_id=int(distributed.process_id) if distributed.process_id >= 0 else None,
    )


def _check_writable(workdir: str) -> None:
    """Fail before any work when the workdir (or the directory that would hold it) is read-only."""
    existing = os.path.abspath(workdir)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing) or not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"--workdir: cannot write to {workdir!r} ({existing} is not a writable directory)")


def _check_same_run(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Refuse to resume a workdir whose run was started with a different config."""
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        return
    try:
        with open(path) as f:
            before = json.load(f)
    except (OSError, ValueError) as e:
        raise UserError(f"--workdir: {path} is unreadable or not JSON ({e.__class__.__name__}); "
                        "the workdir is damaged: use a new one") from None
    if not isinstance(before, dict):
        raise UserError(f"--workdir: {path} is not a training config; use a new workdir")
    now = json.loads(json.dumps(config.to_dict()))
    changed = sorted(
        k for k in set(before) | set(now)
        if k not in _RESUMABLE_CHANGES and before.get(k) != now.get(k)
    )
    if changed:
        raise UserError(
            f"--workdir: {workdir} holds a run with a different config ({', '.join(changed)} changed); "
            "use a new workdir"
        )


class _SigtermFlag:
    """SIGTERM (a TPU VM preemption notice) asks for a checkpoint after the current step."""

    def __init__(self):
        self.raised = False
        self._previous = None
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread: no handler, the run just continues
            self._previous = None

    def _handle(self, signum, frame):
        self.raised = True

    def restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
