"""The locked schema of a sweep config: every key, its type, its default; and its checks.

Loaded through `tokeff.configfile.load_config` (the one loader), so a key the schema lacks,
set in the file or on the command line, is refused in one line; `REQUIRED` keys the file
leaves unset are refused too, and `check_sweep_config` refuses values no sweep can use — all
before anything is trained or written. `train` is the training schema
(`tokeff.train.defaults.base_config`), range-checked as `tokeff train` checks it.
"""

from __future__ import annotations

from collections.abc import Sequence

import ml_collections

from tokeff.configfile import REQUIRED, check_required, load_config
from tokeff.errors import UserError

EVAL_METHODS = ("cloze", "cloze_norm", "cloze_token", "letter")


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


def load_sweep_config(path: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    """A sweep config file with overrides, locked to `sweep_schema` and checked."""
    config = load_config(path, overrides, schema=sweep_schema())
    check_sweep_config(config)
    return config


def check_sweep_config(config: ml_collections.ConfigDict) -> None:
    """Refuse, in one line naming the key, what no sweep can run: unset required keys, bad values,
    a budget too small for one training step."""
    from tokeff.sweep.grid import grid_points
    from tokeff.train.config import check_train_config

    check_required(config, sweep_schema(), "config")
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
    for point in grid_points(config):
        _check_one_step(config, point)


def _check_one_step(config, point) -> None:
    """A point whose budget buys no training step (of one row, the smallest a step can be on one
    device) fails here, named, not after the points before it have run."""
    from tokeff import flops
    from tokeff.models.config import PRESETS, get_preset
    from tokeff.models.spec import preset_for_spec
    from tokeff.sweep.grid import point_train_config

    train = point_train_config(config, point)
    if train.data.layout != "packed" or not train.data.row_len:
        return  # the row length is known only once the data is tokenised: training checks it
    try:
        preset = preset_for_spec(point.model)
    except UserError:
        return  # a checkpoint without a preset: training checks it after loading
    if preset not in PRESETS:
        return
    one_row = flops.step_training_flops(get_preset(preset), 1, int(train.data.row_len))
    if point.budget_flops < one_row:
        raise UserError(f"config.grid.budgets: point {point.run_id} has {point.budget_flops:.3g} FLOPs, less than "
                        f"one training step of one {train.data.row_len}-token row ({one_row:.3g})")
