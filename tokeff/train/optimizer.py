"""AdamW with warmup + decay and gradient clipping (the optimizer of the fine-tuning runs).

The schedule length is the number of steps the budget allows, which the loop knows before the
first step (it plans the whole run from the deterministic batch stream). The learning rate is
*not* part of the optimizer transform: the loop evaluates the schedule on the host and passes
each step's rate to the jitted step as an argument, so one compiled step serves every budget
(a sweep over budgets compiles once instead of once per schedule length).
"""

from __future__ import annotations

import jax
import ml_collections
import optax

from tokeff.errors import UserError

SCHEDULES = ("cosine", "linear", "constant")
MOMENTS_DTYPES = ("float32", "bfloat16")


def learning_rate_schedule(optim: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
    """Linear warmup to `optim.lr`, then cosine/linear decay to `lr * min_lr_ratio` (or constant)."""
    if optim.schedule not in SCHEDULES:
        raise UserError(f"optim.schedule: must be one of {', '.join(SCHEDULES)}, got {optim.schedule!r}")
    if optim.lr <= 0:
        raise UserError(f"optim.lr: must be positive, got {optim.lr}")
    warmup = min(int(optim.warmup_steps), max(total_steps - 1, 0))
    peak, floor = float(optim.lr), float(optim.lr) * float(optim.min_lr_ratio)
    decay_steps = max(total_steps - warmup, 1)
    if optim.schedule == "cosine":
        decay = optax.cosine_decay_schedule(peak, decay_steps, alpha=float(optim.min_lr_ratio))
    elif optim.schedule == "linear":
        decay = optax.linear_schedule(peak, floor, decay_steps)
    else:
        decay = optax.constant_schedule(peak)
    if warmup == 0:
        return decay
    # Warmup starts at peak/warmup (not 0) so the first step already learns something.
    ramp = optax.linear_schedule(peak / warmup, peak, warmup - 1) if warmup > 1 else optax.constant_schedule(peak)
    return optax.join_schedules([ramp, decay], [warmup])


# The fields that shape only the learning-rate schedule; every other `optim` field shapes the update
# direction (`make_optimizer`'s transform), so a field added later enters `direction_key` by default.
SCHEDULE_FIELDS = ("lr", "schedule", "warmup_steps", "min_lr_ratio")


def direction_key(optim: ml_collections.ConfigDict) -> tuple:
    """What identifies `make_optimizer(optim, ...)`'s transform: equal keys, the same update rule
    (a sweep shares one transform, and the steps compiled for it, across such points)."""
    return tuple(sorted((k, v) for k, v in optim.to_dict().items() if k not in SCHEDULE_FIELDS))


def make_optimizer(optim: ml_collections.ConfigDict, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """(AdamW's update direction, the learning-rate schedule).

    The transform is global-norm clipping (0 disables it), Adam scaling and decoupled weight
    decay: `optax.adamw` without its final scale by -lr, which the train step applies with the
    rate it is given (`updates = -lr * direction`, exactly what optax.adamw computes).

    `optim.moments_dtype = "bfloat16"` stores both Adam moments in bfloat16, where memory is
    tight: 4 bytes a parameter instead of 8 (parameters and gradients stay float32, 8 more).
    Each update still computes in float32 (the moments are upcast by the arithmetic with the
    float32 gradients and stored back in bfloat16): bfloat16 has float32's exponent range, so
    nothing underflows; its 8-bit mantissa rounds the moving averages to ~0.4%.
    """
    schedule = learning_rate_schedule(optim, total_steps)
    moments = optim.get("moments_dtype", "float32")
    if moments not in MOMENTS_DTYPES:
        raise UserError(f"optim.moments_dtype: must be one of {', '.join(MOMENTS_DTYPES)}, got {moments!r}")
    parts = [optax.clip_by_global_norm(float(optim.clip_norm))] if optim.clip_norm and optim.clip_norm > 0 else []
    adam = optax.scale_by_adam(b1=float(optim.b1), b2=float(optim.b2), eps=float(optim.eps),
                               mu_dtype=None if moments == "float32" else moments)
    parts += [adam if moments == "float32" else _second_moment_in(adam, moments),
              optax.add_decayed_weights(float(optim.weight_decay))]
    return optax.chain(*parts), schedule


def _second_moment_in(adam: optax.GradientTransformation, dtype: str) -> optax.GradientTransformation:
    """`adam` (optax's scale_by_adam, first moment already in `dtype` by its mu_dtype) with the
    second moment stored in `dtype` too (optax keeps it in the gradients' dtype)."""
    def cast(state):
        return state._replace(nu=jax.tree.map(lambda x: x.astype(dtype), state.nu))

    def init(params):
        return cast(adam.init(params))

    def update(updates, state, params=None):
        updates, state = adam.update(updates, state, params)
        return updates, cast(state)

    return optax.GradientTransformation(init, update)
