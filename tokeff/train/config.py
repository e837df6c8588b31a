"""The training config: loaded against its schema (`tokeff.train.defaults.base_config`) and range-checked.

`load_train_config` refuses a key the schema lacks, whether the config file or a
`--config.KEY=VALUE` override sets it; `check_train_config` refuses values no run can use
(NaN or infinite numbers, a non-positive budget or learning rate, a negative row length), so that
`train` fails before it creates anything in the workdir.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import ml_collections

from tokeff.configfile import load_config
from tokeff.errors import UserError
from tokeff.models.config import ATTENTION_PATHS

__all__ = ["load_config", "load_train_config", "check_train_config"]

# key -> (lowest, highest, lowest included); None = unbounded on that side.
_RANGES: dict[str, tuple[float | None, float | None, bool]] = {
    "budget.tokens": (0, None, True),
    "budget.epochs": (0, None, True),
    "optim.lr": (0, None, False),
    "optim.warmup_steps": (0, None, True),
    "optim.min_lr_ratio": (0, 1, True),
    "optim.b1": (0, 1, True),
    "optim.b2": (0, 1, True),
    "optim.eps": (0, None, False),
    "optim.weight_decay": (0, None, True),
    "optim.clip_norm": (0, None, True),
    "data.pool_size": (1, 10_000_000, True),  # examples generated in memory
    "seed": (0, 2**32 - 1, True),
    "data.split_seed": (0, 2**32 - 1, True),
    "data.eval_fraction": (0, 1, False),
    "data.token_budget": (0, None, True),
    "data.n_examples": (0, None, True),
    "data.avg_tokens": (0, None, True),
    "data.max_len": (0, None, True),
    "data.row_len": (0, None, True),
    "data.k_shot": (0, None, True),
    "batch_size": (1, 65_536, True),  # rows of one step, held in host and device memory
    "microbatches": (1, None, True),
    "checkpoint.every_steps": (0, None, True),
    "checkpoint.keep": (1, None, True),
}
_CHOICES = {
    "dtype": ("float32", "bfloat16"),
    "attention": ATTENTION_PATHS,
    "optim.moments_dtype": ("float32", "bfloat16"),
    "data.layout": ("packed", "padded"),
    "data.loss_on": ("answer", "all"),
    "data.prompt_format": ("qa", "chat"),
}


def load_train_config(path: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    """A training config file with overrides, every key checked against the schema, values range-checked."""
    from tokeff.train.defaults import base_config

    config = load_config(path, overrides, schema=base_config())
    check_train_config(config)
    return config


def check_train_config(config: ml_collections.ConfigDict) -> None:
    """Refuse (UserError naming the key) values no training run can use."""
    from tokeff.flops import check_budget

    for key, value in _leaves(config):
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"{key}: must be a finite number, got {value}")
    if _get(config, "budget.flops") is not None:
        check_budget(config.budget.flops, "budget.flops")
    for key, (low, high, closed) in _RANGES.items():
        value = _get(config, key)
        if value is None or isinstance(value, bool):
            continue
        too_low = low is not None and (value < low or (value == low and not closed))
        too_high = high is not None and (value > high or (value == high and not closed))
        if too_low or too_high:
            bound = (f">= {low:g}" if closed else f"> {low:g}") if high is None else \
                f"in [{low:g}, {high:g}]" if closed else f"in ({low:g}, {high:g})"
            raise UserError(f"{key}: must be {bound}, got {value:g}")
    for key, allowed in _CHOICES.items():
        value = _get(config, key)
        if value is not None and value not in allowed:
            raise UserError(f"{key}: must be one of {', '.join(allowed)}, got {value!r}")


def _leaves(config, prefix: str = ""):
    for key in config.keys():
        value = config[key]
        if isinstance(value, ml_collections.ConfigDict):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _get(config, dotted: str):
    node = config
    for name in dotted.split("."):
        if not isinstance(node, ml_collections.ConfigDict) or name not in node:
            return None
        node = node[name]
    return node
