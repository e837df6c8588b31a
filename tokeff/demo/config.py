"""The demo's config: its locked schema (a sweep config plus the fit, the prediction check and
the allocation), its checks, and its default file, `tokeff/demo/configs/demo.py`, which ships in
the package so that an installed tokeff runs `tokeff demo` (and `tokeff demo --config :smoke`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import ml_collections

from tokeff.configfile import load_config
from tokeff.errors import UserError
from tokeff.sweep.config import check_sweep_config, sweep_schema

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "demo.py")


def demo_schema() -> ml_collections.ConfigDict:
    """A sweep config plus the demo's fit, prediction check and allocation."""
    c = sweep_schema()
    c.fit = ml_collections.ConfigDict(dict(method="nuts", chains=4, draws=1000, warmup=1000,
                                           target_accept=0.95, chance=0.25))
    c.check = ml_collections.ConfigDict(dict(interval=0.9))  # the prediction interval of the top budget
    c.allocate = ml_collections.ConfigDict(dict(budget_factor=2.0))
    # "model": one law per model of the grid, partially pooled (`tokeff fit --group model`), and the
    # allocation says which model with P(best); "": one law for every run.
    c.group = ""
    return c


def load_demo_config(path: str | None, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    """A demo config file ("file.py" or "file.py:arg") with overrides, locked to `demo_schema` and
    checked. No file (None, "" or ":arg"): the demo's own, shipped in the package (`DEFAULT_CONFIG`)."""
    file, sep, arg = (path or "").partition(":")
    config = load_config(f"{file or DEFAULT_CONFIG}{sep}{arg}", overrides, schema=demo_schema())
    check_sweep_config(config)
    check_demo_config(config)
    return config


def check_demo_config(config: ml_collections.ConfigDict) -> None:
    """Refuse, in one line naming the key, demo values no fit, check or allocation can use."""
    from tokeff.laws.settings import FitSettings

    check = config.check
    FitSettings.from_dict(config.fit.to_dict(), where="config.fit")  # refuses, naming the key, what no fit can use
    if not 0.0 < check.interval < 1.0:
        raise UserError(f"config.check.interval: must be in (0, 1), got {check.interval}")
    if len(config.grid.budgets) < 3:
        raise UserError("config.grid.budgets: the prediction check needs at least 3 budgets "
                        "(fit on the lower ones, predict the top one)")
    if config.group not in ("", "model"):
        raise UserError(f"config.group: must be 'model' (one law per model, pooled) or '' (one law), got {config.group!r}")
    if config.group and len(set(config.grid.models)) < 2:
        raise UserError("config.group: a law per model needs at least two models in config.grid.models")
    if not (config.allocate.budget_factor > 0 and math.isfinite(config.allocate.budget_factor)):
        raise UserError(f"config.allocate.budget_factor: must be positive, got {config.allocate.budget_factor}")
