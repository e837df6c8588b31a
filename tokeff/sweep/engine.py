"""The sweep's default runner: train one point, score it on held-out questions, return its metrics.

Training is `tokeff.train.loop.train`, resumable; the evaluation scores held-out questions the
run never trained on — the eval side of the same per-subject split (`data.split_seed`,
`data.eval_fraction`) — in the prompt format it trained with: accuracy by cloze scoring (the
lowest-loss answer choice, as Lagasse et al.) and `eval_loss`, the mean NLL per token of the
correct answers. Its FLOPs are recorded in `extra`, apart from the training budget.

Two paths, same numbers:

- cold (`train_and_evaluate_cold`): each point loads the model, tokenises its pool, builds and
  compiles its step, trains and checkpoints, then reloads the final checkpoint to score it —
  what a standalone `tokeff train` + `tokeff eval` does.
- warm (`WarmEngine`, the default `train_and_evaluate`): one engine per process keeps, across
  points, each loaded model, each tokenised pool (per model and data source), each optimizer,
  state layout and jitted train step (per model, optimizer and device lane: one compile per
  shape), the initial parameters on each device, and the held-out questions. A point starts
  from a compiled copy of those parameters (the step donates the copy, never the original),
  trains through the same `train` loop (`tokeff.train.loop.Resources`), and is scored from the
  final state in memory. The run's end is not checkpointed (writing a 135M model's state is
  seconds): `eval.json` then `summary.json` mark the point done, so a kill before them re-runs
  the point from its last periodic checkpoint. `WarmEngine(keep_weights=True)` keeps them.

Concurrency (`WarmEngine.lanes`): on a host with several devices, a point whose model fits one
device (with the default data-parallel mesh config) runs on a single-device mesh, one point
per device at a time; a bigger model, or a config asking for fsdp/tensor axes, runs on the
whole mesh. In a multi-host sweep the former are split across processes (see runner.py).
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from typing import Any

import ml_collections

from tokeff.cache import enable_compilation_cache
from tokeff.errors import UserError
from tokeff.eval.result import EvalResult
from tokeff.models.spec import is_preset
from tokeff.train.loop import Resources, load_for_training, train
from tokeff.train.summary import RunSummary

BYTES_PER_TRAINED_PARAM = 16  # f32 master weights, gradients and two Adam moments
_DEVICE_MEMORY_SHARE = 0.5  # what the state may take of one device, leaving room for activations


def train_and_evaluate_cold(point, config: ml_collections.ConfigDict, workdir: str,
                            eval_config: ml_collections.ConfigDict) -> dict[str, Any]:
    """Train `config` in `workdir` (resuming), score the checkpointed result; metrics for the row."""
    from tokeff.train.trained import load_trained

    enable_compilation_cache()
    start = time.perf_counter()
    summary = _completed(point, train(config, workdir))
    evaluation = EvalResult.read(os.path.join(workdir, "eval.json"))
    score_seconds = 0.0
    if evaluation is None:
        loaded = load_trained(workdir)
        t0 = time.perf_counter()
        evaluation = _score(loaded, eval_records(config.data, int(eval_config.max_questions)), config,
                            eval_config, mesh=None)
        score_seconds = time.perf_counter() - t0
        _write_eval(workdir, evaluation, local=False)
    return row_metrics(summary, evaluation, config, score_seconds, time.perf_counter() - start)


@dataclasses.dataclass(frozen=True)
class PointKeys:
    """The cache keys of one point's shared resources, computed once from its config and lane.

    Points with equal keys share what was built for the key. Each key holds every config value
    its resource is built from (the optimizer's key is all of `optim` but the schedule, so an
    option added later separates steps rather than silently sharing a stale one).
    """

    model: tuple  # (spec, dtype, attention path, seed of a preset's random init; None for pretrained weights)
    mesh: tuple  # ("lane", device ids) or ("mesh", every config.mesh item)
    pool: tuple  # (spec, dtype, the data config's pool key)
    tx: tuple  # the optimizer's update direction (tokeff.train.optimizer.direction_key)
    eval: tuple  # the held-out question set: its data keys and size

    @classmethod
    def of(cls, config: ml_collections.ConfigDict, devices: tuple | None, max_questions: int) -> PointKeys:
        from tokeff.train.dataset import pool_key
        from tokeff.train.optimizer import direction_key

        seed = int(config.seed)
        model = (str(config.model), str(config.dtype), str(config.get("attention", "auto")),
                 seed if is_preset(config.model) else None)
        if devices is not None:
            mesh = ("lane", *(d.id for d in devices))
        else:
            mesh = ("mesh", *sorted(config.mesh.to_dict().items()))
        return cls(model=model, mesh=mesh, pool=(*model[:2], pool_key(config.data, seed)),
                   tx=direction_key(config.optim), eval=(*_eval_key(config.data), int(max_questions)))

    @property
    def layout(self) -> tuple:
        """The state layout, its fresh-state function and its train step: the architecture (not a
        preset's seed), the update rule and the devices."""
        return (*self.model[:3], self.tx, self.mesh)


class WarmEngine:
    """A runner that keeps models, pools, compiled steps and initial weights across points."""

    def __init__(self, *, keep_weights: bool = False):
        self.keep_weights = keep_weights
        self._cache: dict[tuple, Any] = {}
        self._building: dict[tuple, threading.Lock] = {}
        self._lock = threading.Lock()

    def cached(self, key: tuple, build):
        """`build()` once per key, also when several lanes ask at once."""
        with self._lock:
            if key in self._cache:
                return self._cache[key]
            lock = self._building.setdefault(key, threading.Lock())
        with lock:
            with self._lock:
                if key in self._cache:
                    return self._cache[key]
            value = build()
            with self._lock:
                self._cache[key] = value
            return value

    def lanes(self, config: ml_collections.ConfigDict) -> list[tuple] | None:
        """Single-device lanes for a point that fits one device; None: it runs on the whole mesh."""
        import jax

        devices = jax.local_devices()
        if len(devices) == 1 and jax.process_count() == 1:
            return None
        if int(config.mesh.fsdp) != 1 or int(config.mesh.tensor) != 1 or int(config.mesh.num_devices) > 1:
            return None
        if int(config.batch_size) % int(config.microbatches):
            return None
        limit = (devices[0].memory_stats() or {}).get("bytes_limit")
        if limit and _trained_params(config.model) * BYTES_PER_TRAINED_PARAM > _DEVICE_MEMORY_SHARE * limit:
            return None
        return [(d,) for d in devices]

    def __call__(self, point, config: ml_collections.ConfigDict, workdir: str,
                 eval_config: ml_collections.ConfigDict, *, devices: tuple | None = None) -> dict[str, Any]:
        """Train and score one point (on `devices`, a lane, or the config's mesh); the row's metrics."""
        enable_compilation_cache()
        start = time.perf_counter()
        summary = RunSummary.read(os.path.join(workdir, "summary.json"))
        evaluation = EvalResult.read(os.path.join(workdir, "eval.json"))
        if summary is not None and evaluation is not None:
            return row_metrics(summary, evaluation, config, 0.0, time.perf_counter() - start)
        if summary is not None:  # trained by the cold path (final checkpoint), never scored
            return train_and_evaluate_cold(point, config, workdir, eval_config)
        keys = PointKeys.of(config, devices, int(eval_config.max_questions))
        resources = _PointResources(self, config, devices, keys)
        summary = _completed(point, train(config, workdir, resources=resources))
        records = self.cached(("eval", *keys.eval),
                              lambda: eval_records(config.data, int(eval_config.max_questions)))
        t0 = time.perf_counter()
        evaluation = _score(resources.trained_model(), records, config, eval_config, mesh=resources.lane_mesh)
        score_seconds = time.perf_counter() - t0
        _write_eval(workdir, evaluation, local=resources.local)  # eval first: summary.json marks the point done
        if resources.local or _process_index() == 0:
            summary.write(os.path.join(workdir, "summary.json"))
        return row_metrics(summary, evaluation, config, score_seconds, time.perf_counter() - start)


class _PointResources(Resources):
    """One point's view of the engine: each resource looked up under the point's `PointKeys`,
    built on a miss; and a slot for the final state."""

    def __init__(self, engine: WarmEngine, config: ml_collections.ConfigDict, devices: tuple | None,
                 keys: PointKeys):
        self.engine = engine
        self.config = config
        self.devices = devices
        self.keys = keys
        self.save_final = engine.keep_weights
        # A lane is this process's own devices: in a multi-host sweep it runs the point alone.
        self.local = devices is not None and _process_count() > 1
        self._final = None

    @property
    def lane_mesh(self):
        """The point's mesh (built on first use)."""
        return self.mesh(self.config)

    def mesh(self, config):
        if self.devices is None:
            return self.engine.cached(("mesh", *self.keys.mesh), lambda: super(_PointResources, self).mesh(config))
        from tokeff.train.mesh import AXES, make_mesh

        return self.engine.cached(("mesh", *self.keys.mesh),
                                  lambda: make_mesh({a: 1 for a in AXES}, devices=list(self.devices)))

    def model(self, config):
        return self.engine.cached(("model", *self.keys.model), lambda: load_for_training(config))

    def training_set(self, config, loaded):
        from tokeff.train.dataset import select_training_set, training_pool

        pool = self.engine.cached(("pool", *self.keys.pool),
                                  lambda: training_pool(config.data, loaded, int(config.seed)))
        return select_training_set(config.data, pool, loaded, int(config.seed))

    def optimizer(self, optim, total_steps):
        from tokeff.train.optimizer import learning_rate_schedule

        tx = self.engine.cached(("tx", *self.keys.tx),
                                lambda: super(_PointResources, self).optimizer(optim, total_steps)[0])
        return tx, learning_rate_schedule(optim, total_steps)

    def layout(self, model_cfg, seed, tx, mesh):
        return self.engine.cached(("layout", *self.keys.layout),
                                  lambda: super(_PointResources, self).layout(model_cfg, seed, tx, mesh))

    def initial_state(self, config, layout, loaded, tx):
        import jax

        from tokeff.train.state import fresh_state_fn, init_state

        def initial_params():
            if is_preset(config.model):
                from tokeff.train.loop import model_factory

                return init_state(layout, model_factory(loaded.config, int(config.seed)), tx, int(config.seed))["params"]
            from flax import nnx

            _, params, _ = nnx.split(loaded.model, nnx.Param, ...)
            return jax.device_put(params, layout.shardings["params"])

        params = self.engine.cached(("params", *self.keys.model, self.keys.mesh), initial_params)
        fresh = self.engine.cached(("fresh", *self.keys.layout), lambda: fresh_state_fn(layout, tx))
        return fresh(params, int(config.seed))

    def train_step(self, layout, tx, mesh):
        return self.engine.cached(("step", *self.keys.layout),
                                  lambda: super(_PointResources, self).train_step(layout, tx, mesh))

    def finished(self, state, layout):
        self._final = (state["params"], layout.graphdef)

    def trained_model(self):
        """The model's LoadedModel with the point's final parameters (still on its mesh)."""
        from flax import nnx

        params, graphdef = self._final
        return dataclasses.replace(self.model(self.config), model=nnx.merge(graphdef, params))


_DEFAULT_ENGINE = WarmEngine()


def train_and_evaluate(point, config: ml_collections.ConfigDict, workdir: str,
                       eval_config: ml_collections.ConfigDict, *, devices: tuple | None = None) -> dict[str, Any]:
    """The default runner: this process's warm engine."""
    return _DEFAULT_ENGINE(point, config, workdir, eval_config, devices=devices)


train_and_evaluate.lanes = _DEFAULT_ENGINE.lanes  # the runner's concurrency hook


def _trained_params(spec: str) -> int:
    from tokeff.models.config import get_preset
    from tokeff.models.spec import preset_for_spec

    try:
        return int(get_preset(preset_for_spec(spec)).params)
    except UserError:
        return 0  # unknown shapes: assume it fits, as a single-device run would


def _completed(point, summary: RunSummary) -> RunSummary:
    if not summary.completed:
        raise UserError(f"{point.run_id}: training stopped early ({summary.status}); re-run to resume")
    return summary


def _process_index() -> int:
    import jax

    return jax.process_index()


def _process_count() -> int:
    import jax

    return jax.process_count()


def _write_eval(workdir: str, evaluation: EvalResult, *, local: bool) -> None:
    if local or _process_index() == 0:
        evaluation.write(os.path.join(workdir, "eval.json"))


def _score(loaded, records, config, eval_config, *, mesh) -> EvalResult:
    from tokeff.eval.multiple_choice import evaluate_multiple_choice

    result = evaluate_multiple_choice(
        loaded, records, method=eval_config.method, prompt_format=config.data.prompt_format,
        bos_id=loaded.prepend_bos_id, batch_size=int(eval_config.batch_size), mesh=mesh,
        progress=bool(config.log.progress))
    return result.record()


def row_metrics(summary: RunSummary, evaluation: EvalResult, config: ml_collections.ConfigDict,
                score_seconds: float, point_seconds: float) -> dict[str, Any]:
    """The results row's measured fields (`tokeff.results.SCHEMA`) from a run's two records; the
    sweep adds the point's own (run_id, model, strategy, budget, seed, status, wall time)."""
    dataset = config.data.source
    if dataset == "mmlu":
        dataset = f"mmlu:{config.data.subjects}"
    flops_per_second = summary.flops_per_second
    return {
        "params": summary.params,
        "non_embedding_params": summary.non_embedding_params,
        "dataset": dataset,
        "n_examples": summary.n_examples,
        "avg_tokens": summary.avg_tokens,
        "unique_tokens": summary.unique_tokens,
        "tokens_seen": summary.tokens_seen,
        "epochs": summary.epochs,
        "flops_used": summary.flops_used,
        "steps": summary.steps,
        "eval_loss": evaluation.loss,
        "accuracy": evaluation.accuracy,
        "n_eval": evaluation.n,
        "extra": {
            "eval_method": evaluation.method,
            "accuracy_ci95": list(evaluation.ci95),
            "chance": evaluation.chance,
            "eval_flops": evaluation.flops,
            "final_train_loss": summary.final_loss,
            "train_wall_seconds": summary.wall_seconds,
            "flops_per_second": flops_per_second,
            # measured model FLOPs utilisation (None on CPUs): experiments/estimate_cost.py --measured
            "mfu": summary.mfu,
            "attention": summary.attention,
            "device_kind": summary.device_kind,
            "devices": summary.devices,
            "dataset_tokens": summary.dataset_tokens,
            # Where this call's time went (0 for parts read back from an earlier, killed call).
            "time_train_steps": summary.flops_used / flops_per_second if flops_per_second else 0.0,
            "time_scoring": score_seconds,
            "time_point": point_seconds,
        },
    }


def _eval_key(data: ml_collections.ConfigDict) -> tuple:
    return tuple((k, data.get(k)) for k in ("source", "path", "fields", "subjects", "split_seed", "eval_fraction"))


def eval_records(data: ml_collections.ConfigDict, max_questions: int) -> list[dict]:
    """Held-out multiple-choice questions for a training data config (at most `max_questions`).

    The eval side of the run's own data task (`tokeff.data.task`); choosing them needs no tokenizer.
    """
    from tokeff.data.task import task_from_config
    from tokeff.models.tokenizer import TokenizerInfo

    return task_from_config(data, TokenizerInfo(None), 0, 0).eval_set(int(max_questions))
