"""The device mesh: axes `data`, `fsdp`, `tensor`, sized from the config.

`data` replicates parameters and splits the batch; `fsdp` splits the batch too but also shards
parameters and optimizer state (gathered per layer by XLA); `tensor` splits heads, the MLP
width and the vocabulary. One size may be -1 to take the remaining devices.
"""

from __future__ import annotations

import math

import jax

from tokeff.errors import UserError

AXES = ("data", "fsdp", "tensor")
# Axes the batch is split over (rows); parameters are never split over `data`.
BATCH_AXES = ("data", "fsdp")


def mesh_shape(sizes: dict[str, int], n_devices: int) -> tuple[int, ...]:
    """Resolve the config's axis sizes (one may be -1) against the device count."""
    shape = [int(sizes.get(a, 1)) for a in AXES]
    bad = [(a, s) for a, s in zip(AXES, shape) if s == 0 or s < -1]
    if bad:
        raise UserError(f"mesh.{bad[0][0]}: axis sizes must be positive or -1, got {bad[0][1]}")
    if shape.count(-1) > 1:
        raise UserError(f"mesh: at most one axis may be -1, got {dict(zip(AXES, shape))}")
    known = math.prod(s for s in shape if s != -1)
    if -1 in shape:
        if n_devices % known:
            raise UserError(f"mesh: fixed axes ({known} devices) do not divide the {n_devices} devices")
        shape[shape.index(-1)] = n_devices // known
    if math.prod(shape) != n_devices:
        raise UserError(
            f"mesh: {dict(zip(AXES, shape))} needs {math.prod(shape)} devices but {n_devices} are available"
        )
    return tuple(shape)


def make_mesh(sizes: dict[str, int], devices=None) -> jax.sharding.Mesh:
    """A mesh over `devices` (default: all devices of every process) with the config's axis sizes.

    Axes are `Auto`: the step's inputs and outputs carry shardings and XLA propagates them
    through the model. (`Explicit` axes would make every op of the model state its output
    sharding; the model is written mesh-agnostic, so it does not run under them.)
    """
    shape = mesh_shape(sizes, len(devices) if devices is not None else jax.device_count())
    return jax.make_mesh(shape, AXES, axis_types=(jax.sharding.AxisType.Auto,) * len(AXES), devices=devices)


def batch_shards(mesh: jax.sharding.Mesh) -> int:
    """How many pieces the batch rows are split into: rows per step must be a multiple of this."""
    return math.prod(mesh.shape[a] for a in BATCH_AXES)
