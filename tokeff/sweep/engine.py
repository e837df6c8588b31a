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

import json
import os
import threading
import time
from typing import Any

import ml_collections

from tokeff import io
from tokeff.cache import enable_compilation_cache
from tokeff.errors import UserError
from tokeff.models.spec import is_preset
from tokeff.train.loop import Resources, load_for_training, train

_TX_KEYS = ("clip_norm", "b1", "b2", "eps", "weight_decay")  # what the update direction depends on
BYTES_PER_TRAINED_PARAM = 16  # f32 master weights, gradients and two Adam moments
_DEVICE_MEMORY_SHARE = 0.5  # what the state may take of one device, leaving room for activations


def train_and_evaluate_cold(point, config: ml_collections.ConfigDict, workdir: str,
                            eval_config: ml_collections.ConfigDict) -> dict[str, Any]:
    """Train `config` in `workdir` (resuming), score the checkpointed result; metrics for the row."""
    from tokeff.train.trained import load_trained

    enable_compilation_cache()
    start = time.perf_counter()
    summary = _completed(point, train(config, workdir))
    evaluation = _read_json(os.path.join(workdir, "eval.json"))
    score_seconds = 0.0
    if evaluation is None:
        loaded = load_trained(workdir)
        t0 = time.perf_counter()
        evaluation = _score(loaded, eval_records(config.data, int(eval_config.max_questions)), config,
                            eval_config, mesh=None)
        score_seconds = time.perf_counter() - t0
        _write_eval(workdir, evaluation, local=False)
    return _metrics(summary, evaluation, config, score_seconds, time.perf_counter() - start)


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
        summary = _read_json(os.path.join(workdir, "summary.json"))
        evaluation = _read_json(os.path.join(workdir, "eval.json"))
        if summary is not None and evaluation is not None:
            return _metrics(summary, evaluation, config, 0.0, time.perf_counter() - start)
        if summary is not None:  # trained by the cold path (final checkpoint), never scored
            return train_and_evaluate_cold(point, config, workdir, eval_config)
        resources = _PointResources(self, devices)
        summary = _completed(point, train(config, workdir, resources=resources))
        records = self.cached(("eval", *_eval_key(config.data), int(eval_config.max_questions)),
                              lambda: eval_records(config.data, int(eval_config.max_questions)))
        t0 = time.perf_counter()
        evaluation = _score(resources.trained_model(config), records, config, eval_config, mesh=resources.lane_mesh)
        score_seconds = time.perf_counter() - t0
        _write_eval(workdir, evaluation, local=resources.local)  # eval first: summary.json marks the point done
        if resources.local or _process_index() == 0:
            io.write_json(os.path.join(workdir, "summary.json"), summary)
        return _metrics(summary, evaluation, config, score_seconds, time.perf_counter() - start)


class _PointResources(Resources):
    """One point's view of the engine: its lane, and a slot for its final state."""

    def __init__(self, engine: WarmEngine, devices: tuple | None):
        self.engine = engine
        self.devices = devices
        self.save_final = engine.keep_weights
        # A lane is this process's own devices: in a multi-host sweep it runs the point alone.
        self.local = devices is not None and _process_count() > 1
        self.lane_mesh = None
        self._final = None

    def _mesh_key(self, config) -> tuple:
        if self.devices is not None:
            return ("lane", *(d.id for d in self.devices))
        return ("mesh", *(int(config.mesh[a]) for a in ("data", "fsdp", "tensor", "num_devices")))

    def _model_key(self, config) -> tuple:
        return (config.model, config.dtype, int(config.seed) if is_preset(config.model) else None)

    def mesh(self, config):
        if self.devices is None:
            mesh = self.engine.cached(("mesh", *self._mesh_key(config)), lambda: super(_PointResources, self).mesh(config))
        else:
            from tokeff.train.mesh import AXES, make_mesh

            mesh = self.engine.cached(("mesh", *self._mesh_key(config)),
                                      lambda: make_mesh({a: 1 for a in AXES}, devices=list(self.devices)))
        self.lane_mesh, self._mesh_id = mesh, self._mesh_key(config)
        self._config = config
        return mesh

    def model(self, config):
        return self.engine.cached(("model", *self._model_key(config)), lambda: load_for_training(config))

    def training_set(self, config, loaded):
        from tokeff.train.dataset import pool_key, select_training_set, training_pool

        pool = self.engine.cached(("pool", *self._model_key(config)[:2], pool_key(config.data, int(config.seed))),
                                  lambda: training_pool(config.data, loaded, int(config.seed)))
        return select_training_set(config.data, pool, loaded, int(config.seed))

    def optimizer(self, optim, total_steps):
        from tokeff.train.optimizer import learning_rate_schedule

        self._tx_key = tuple(optim.get(k) for k in _TX_KEYS)
        tx = self.engine.cached(("tx", *self._tx_key), lambda: super(_PointResources, self).optimizer(optim, total_steps)[0])
        return tx, learning_rate_schedule(optim, total_steps)

    def _layout_key(self) -> tuple:
        return (*self._model_key(self._config)[:2], self._tx_key, self._mesh_id)

    def layout(self, model_cfg, seed, tx, mesh):
        return self.engine.cached(("layout", *self._layout_key()),
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

        params = self.engine.cached(("params", *self._model_key(config), self._mesh_id), initial_params)
        fresh = self.engine.cached(("fresh", *self._layout_key()), lambda: fresh_state_fn(layout, tx))
        return fresh(params, int(config.seed))

    def train_step(self, layout, tx, mesh):
        return self.engine.cached(("step", *self._layout_key()),
                                  lambda: super(_PointResources, self).train_step(layout, tx, mesh))

    def finished(self, state, layout):
        self._final = (state["params"], layout.graphdef)

    def trained_model(self, config):
        """The model's LoadedModel with the point's final parameters (still on its mesh)."""
        import dataclasses

        from flax import nnx

        params, graphdef = self._final
        return dataclasses.replace(self.model(config), model=nnx.merge(graphdef, params))


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


def _completed(point, summary: dict) -> dict:
    if summary["status"] != "completed":
        raise UserError(f"{point.run_id}: training stopped early ({summary['status']}); re-run to resume")
    return summary


def _process_index() -> int:
    import jax

    return jax.process_index()


def _process_count() -> int:
    import jax

    return jax.process_count()


def _read_json(path: str) -> dict | None:
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _write_eval(workdir: str, evaluation: dict, *, local: bool) -> None:
    if local or _process_index() == 0:
        io.write_json(os.path.join(workdir, "eval.json"), evaluation)


def _score(loaded, records, config, eval_config, *, mesh) -> dict:
    from tokeff.eval.multiple_choice import evaluate_multiple_choice

    result = evaluate_multiple_choice(
        loaded, records, method=eval_config.method, prompt_format=config.data.prompt_format,
        bos_id=loaded.prepend_bos_id, batch_size=int(eval_config.batch_size), mesh=mesh,
        progress=bool(config.log.progress))
    return result.summary()


def _metrics(summary: dict, evaluation: dict, config, score_seconds: float, point_seconds: float) -> dict[str, Any]:
    dataset = config.data.source
    if dataset == "mmlu":
        dataset = f"mmlu:{config.data.subjects}"
    flops_per_second = summary["flops_per_second"]
    return {
        "params": summary["params"],
        "non_embedding_params": summary["non_embedding_params"],
        "dataset": dataset,
        "n_examples": summary["n_examples"],
        "avg_tokens": summary["avg_tokens"],
        "unique_tokens": summary["unique_tokens"],
        "tokens_seen": summary["tokens_seen"],
        "epochs": summary["epochs"],
        "flops_used": summary["flops_used"],
        "steps": summary["steps"],
        "eval_loss": evaluation["loss"],
        "accuracy": evaluation["accuracy"],
        "n_eval": evaluation["n"],
        "extra": {
            "eval_method": evaluation["method"],
            "accuracy_ci95": evaluation["ci95"],
            "chance": evaluation["chance"],
            "eval_flops": evaluation["flops"],
            "final_train_loss": summary["final_loss"],
            "train_wall_seconds": summary["wall_seconds"],
            "flops_per_second": flops_per_second,
            # measured model FLOPs utilisation (None on CPUs): experiments/estimate_cost.py --measured
            "mfu": summary.get("mfu"),
            "attention": summary.get("attention"),
            "device_kind": summary["device_kind"],
            "devices": summary["devices"],
            "dataset_tokens": summary["dataset_tokens"],
            # Where this call's time went (0 for parts read back from an earlier, killed call).
            "time_train_steps": summary["flops_used"] / flops_per_second if flops_per_second else 0.0,
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
