"""The locked schemas of sweep and demo configs: every key, its type, its default.

Loaded through `tokeff.configfile.load_config` (the one loader), so a key the schema lacks,
set in the file or on the command line, is refused in one line; `REQUIRED` keys the file
leaves unset are refused too, and `check_sweep_config` refuses values no sweep can use — all
before anything is trained or written. `train` is the training schema
(`tokeff.train.defaults.base_config`), range-checked as `tokeff train` checks it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import ml_collections
from ml_collections.config_dict import placeholder

from tokeff.configfile import load_config
from tokeff.errors import UserError

EVAL_METHODS = ("cloze", "cloze_norm", "cloze_token", "letter")


def REQUIRED(kind: type):  # noqa: N802 - reads as a value in a schema
    """A schema value the config file must set (typed; unset it stays None and is refused)."""
    return placeholder(kind)


def sweep_schema() -> ml_collections.ConfigDict:
    """Every key a sweep config has; `REQUIRED` ones have no default."""
    from tokeff.train.defaults import base_config

    c = ml_collections.ConfigDict()
    c.runner = ""  # "module:function" run per point; empty: the warm engine (tokeff.sweep.engine)
    c.train = base_config()  # every point starts from this training config
    c.axis_keys = ml_collections.ConfigDict(dict(  # where each grid axis lives in the training config
        model="model", budget="budget.flops", seed="seed", composition="data"))
    c.token_budget_fill = 0.0  # > 0: a composition without a target fills this share of its FLOP budget
    c.grid = ml_collections.ConfigDict()
    c.grid.models = REQUIRED(tuple)
    c.grid.budgets = REQUIRED(tuple)  # FLOPs
    c.grid.compositions = REQUIRED(tuple)  # dicts with a "strategy" and optional targets
    c.grid.seeds = (0,)
    c.eval = ml_collections.ConfigDict()
    c.eval.method = "cloze"
    c.eval.max_questions = REQUIRED(int)
    c.eval.batch_size = 32
    return c


def demo_schema() -> ml_collections.ConfigDict:
    """A sweep config plus the demo's fit, prediction check and allocation."""
    c = sweep_schema()
    c.fit = ml_collections.ConfigDict(dict(method="nuts", chains=4, draws=1000, warmup=1000,
                                           target_accept=0.95, chance=0.25))
    c.check = ml_collections.ConfigDict(dict(interval=0.9))  # the prediction interval of the top budget
    c.allocate = ml_collections.ConfigDict(dict(budget_factor=2.0))
    return c


def load_sweep_config(path: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    """A sweep config file with overrides, locked to `sweep_schema` and checked."""
    config = load_config(path, overrides, schema=sweep_schema())
    check_sweep_config(config)
    return config


def load_demo_config(path: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    """A demo config file with overrides, locked to `demo_schema` and checked."""
    config = load_config(path, overrides, schema=demo_schema())
    check_sweep_config(config)
    _check_demo(config)
    return config


def check_sweep_config(config: ml_collections.ConfigDict) -> None:
    """Refuse, in one line naming the key, what no sweep can run: unset required keys, bad values,
    a budget too small for one training step."""
    from tokeff import sweep
    from tokeff.train.config import check_train_config

    _check_required(config, sweep_schema(), "config")
    if config.runner and ":" not in config.runner:
        raise UserError(f"config.runner: must be 'module:function' or empty, got {config.runner!r}")
    if config.eval.max_questions <= 0:
        raise UserError(f"config.eval.max_questions: must be positive, got {config.eval.max_questions}")
    if config.eval.batch_size <= 0:
        raise UserError(f"config.eval.batch_size: must be positive, got {config.eval.batch_size}")
    if config.eval.method not in EVAL_METHODS:
        raise UserError(f"config.eval.method: must be one of {', '.join(EVAL_METHODS)}, got {config.eval.method!r}")
    if not 0.0 <= config.token_budget_fill <= 1.0:
        raise UserError(f"config.token_budget_fill: must be in [0, 1], got {config.token_budget_fill}")
    try:
        check_train_config(config.train)
    except UserError as e:
        raise UserError(f"config.train.{e}") from None
    for point in sweep.grid_points(config):
        _check_one_step(config, point)


def _check_one_step(config, point) -> None:
    """A point whose budget buys no training step (of one row, the smallest a step can be on one
    device) fails here, named, not after the points before it have run."""
    from tokeff import flops, sweep
    from tokeff.models.config import PRESETS, get_preset

    train = sweep.point_train_config(config, point)
    if train.data.layout != "packed" or not train.data.row_len:
        return  # the row length is known only once the data is tokenised: training checks it
    try:
        preset = sweep.preset_for_spec(point.model)
    except UserError:
        return  # a checkpoint without a preset: training checks it after loading
    if preset not in PRESETS:
        return
    one_row = flops.step_training_flops(get_preset(preset), 1, int(train.data.row_len))
    if point.budget_flops < one_row:
        raise UserError(f"config.grid.budgets: point {point.run_id} has {point.budget_flops:.3g} FLOPs, less than "
                        f"one training step of one {train.data.row_len}-token row ({one_row:.3g})")


def _check_demo(config) -> None:
    fit, check = config.fit, config.check
    for key in ("chains", "draws", "warmup"):
        if fit[key] <= 0:
            raise UserError(f"config.fit.{key}: must be positive, got {fit[key]}")
    if not 0.0 < fit.target_accept < 1.0:
        raise UserError(f"config.fit.target_accept: must be in (0, 1), got {fit.target_accept}")
    if not 0.0 <= fit.chance < 1.0:
        raise UserError(f"config.fit.chance: must be in [0, 1), got {fit.chance}")
    if not 0.0 < check.interval < 1.0:
        raise UserError(f"config.check.interval: must be in (0, 1), got {check.interval}")
    if len(config.grid.budgets) < 3:
        raise UserError("config.grid.budgets: the prediction check needs at least 3 budgets "
                        "(fit on the lower ones, predict the top one)")
    if not (config.allocate.budget_factor > 0 and math.isfinite(config.allocate.budget_factor)):
        raise UserError(f"config.allocate.budget_factor: must be positive, got {config.allocate.budget_factor}")


def _check_required(config, schema, prefix: str) -> None:
    for key in schema.keys():
        where = f"{prefix}.{key}"
        if isinstance(schema[key], ml_collections.ConfigDict):
            _check_required(config[key], schema[key], where)
        elif schema[key] is None and config[key] is None:
            raise UserError(f"{where}: missing (the config file must set it)")
