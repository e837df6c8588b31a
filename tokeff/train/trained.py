"""Reading a finished (or checkpointed) run back: the trained model, ready to evaluate."""

from __future__ import annotations

import dataclasses
import json
import os

import ml_collections

from tokeff.errors import UserError


def load_trained(workdir: str, *, step: int | None = None):
    """`LoadedModel` (tokeff.models.load) with the run's parameters at `step` (default: the latest).

    The model, tokenizer and chat template are those the run trained with; the parameters
    land on one device whatever mesh trained them.
    """
    import jax

    from tokeff.train.checkpoint import Checkpoints
    from tokeff.train.loop import load_for_training, model_factory
    from tokeff.train.mesh import make_mesh
    from tokeff.train.optimizer import make_optimizer
    from tokeff.train.state import state_layout

    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise UserError(f"workdir: {workdir} holds no training run (no config.json)")
    with open(path) as f:
        config = ml_collections.ConfigDict(json.load(f))
    checkpoints = Checkpoints(os.path.join(workdir, "checkpoints"))
    step = checkpoints.latest_step() if step is None else step
    if step is None:
        raise UserError(f"workdir: {workdir} has no checkpoint yet")
    loaded = load_for_training(config)
    tx, _ = make_optimizer(config.optim, total_steps=1)  # only the state's structure matters
    mesh = make_mesh({"data": 1}, devices=jax.local_devices()[:1])
    layout = state_layout(model_factory(loaded.config, int(config.seed)), tx, mesh)
    state, _ = checkpoints.restore(step, layout.abstract)
    checkpoints.close()
    from flax import nnx

    return dataclasses.replace(loaded, model=nnx.merge(layout.graphdef, state["params"]))
