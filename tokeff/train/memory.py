"""The memory plan of a training step, before launch: the compiled step's own memory analysis.

`step_memory` compiles (never runs) the real train step (`tokeff.train.step.make_train_step`:
float32 master weights, AdamW moments, the batch, donated state) on the run's mesh, with its
shardings, from abstract values (nothing is allocated), and reads XLA's buffer assignment of
one device
(`compiled.memory_analysis()`): arguments (state and batch), outputs, the outputs that reuse
donated arguments, and temporaries (activations kept for the backward, gradients, workspace).
The peak is arguments + outputs - aliased + temporaries.

Where the plan is made decides what it measures. On the accelerator itself it is the device's
own compiler with the attention path it runs. On a CPU host (planning a TPU/GPU sweep from a
laptop) the host is split into as many CPU devices as the target has chips (`plan_cpu_devices`),
so the step is partitioned as on the slice, and the figure is XLA:CPU's assignment with the reference attention path, which keeps float32
scores [rows, heads, block, keys] for the backward where the flash kernels keep none: an upper
bound for attention, close for the rest (parameters, moments, MLP activations).

A device's memory is read from the device (`memory_stats()["bytes_limit"]`) when the plan runs
on it, else from `tokeff.devices.DEVICE_MEMORY_GIB` or a value given for the target.
"""

from __future__ import annotations

import dataclasses

import ml_collections

from tokeff.errors import UserError
from tokeff.models.config import ModelConfig

GIB = 2**30


@dataclasses.dataclass(frozen=True)
class StepMemory:
    """Bytes of one device's train step, from XLA's buffer assignment."""

    arguments: int  # state (parameters, moments) and the batch
    outputs: int  # new state and metrics
    aliased: int  # outputs written into donated arguments (the state updated in place)
    temporaries: int  # activations kept for the backward, gradients, workspace

    @property
    def peak(self) -> int:
        return self.arguments + self.outputs - self.aliased + self.temporaries


def step_memory(cfg: ModelConfig, train: ml_collections.ConfigDict, devices: int = 1) -> StepMemory:
    """Memory per device of the train step of `cfg` as the training config `train` runs it
    (its batch_size, microbatches, data.row_len, optimizer and mesh axes) over `devices`
    devices: compiled from abstract values with the run's shardings, so the figure is one
    device's share after XLA partitions the step (fsdp shards the state, data the rows)."""
    import jax
    import numpy as np
    from flax import nnx

    from tokeff.models.transformer import Transformer
    from tokeff.train.mesh import AXES, batch_shards, make_mesh
    from tokeff.train.optimizer import make_optimizer
    from tokeff.train.sharding import batch_sharding
    from tokeff.train.state import state_layout
    from tokeff.train.step import BATCH_KEYS, make_train_step

    if devices > jax.device_count():
        raise UserError(f"memory plan: {devices} devices asked for, {jax.device_count()} available")
    mesh = make_mesh({a: int(train.mesh[a]) for a in AXES}, devices=jax.devices()[:devices])
    batch_size, microbatches = int(train.batch_size), int(train.microbatches)
    if batch_size % (microbatches * batch_shards(mesh)):
        raise UserError(f"batch_size: {batch_size} is not divisible by microbatches ({microbatches}) x batch "
                        f"shards of the mesh ({batch_shards(mesh)})")
    tx, _ = make_optimizer(train.optim, 1000)
    with jax.set_mesh(mesh):
        layout = state_layout(lambda: Transformer(cfg, rngs=nnx.Rngs(0)), tx, mesh)
        step = make_train_step(layout, tx, mesh)
        shape = (microbatches, batch_size // microbatches, int(train.data.row_len))
        batch = {key: jax.ShapeDtypeStruct(shape, np.float32 if key == "loss_mask" else np.int32,
                                           sharding=batch_sharding(mesh)) for key in BATCH_KEYS}
        lr = jax.ShapeDtypeStruct((), np.float32)
        stats = step.jitted.lower(layout.abstract, batch, lr).compile().memory_analysis()
    return StepMemory(arguments=int(stats.argument_size_in_bytes), outputs=int(stats.output_size_in_bytes),
                      aliased=int(stats.alias_size_in_bytes), temporaries=int(stats.temp_size_in_bytes))


def plan_cpu_devices(devices: int) -> bool:
    """Ask JAX for `devices` CPU devices, so a plan for N chips compiles the N-way partitioned step
    on a CPU host. Must run before JAX starts; False when too late or XLA_FLAGS decides."""
    import os

    if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
        return False
    import jax

    try:
        jax.config.update("jax_num_cpu_devices", int(devices))
    except RuntimeError:  # backends already initialised
        return False
    return True


def device_memory(device: str | None = None, gib: float | None = None) -> int | None:
    """Bytes one device holds: `gib` when given; else the local accelerator's own limit when
    it runs the plan; else the table's figure for the named `device` (None when unknown)."""
    from tokeff.devices import DEVICE_MEMORY_GIB, DEVICE_NAMES

    if gib is not None:
        if not gib > 0:
            raise UserError(f"device memory: must be positive, got {gib} GiB")
        return int(gib * GIB)
    import jax

    local = jax.devices()[0]
    if local.platform != "cpu":
        limit = (local.memory_stats() or {}).get("bytes_limit")
        if limit:
            return int(limit)
    if device is None:
        return None
    kind = DEVICE_NAMES.get(device, device)
    return int(DEVICE_MEMORY_GIB[kind] * GIB) if kind in DEVICE_MEMORY_GIB else None
