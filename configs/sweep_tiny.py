"""A tiny sweep: the tiny from-scratch model on generated arithmetic, 2 budgets x 2 strategies.

Seconds per point on a CPU; what the end-to-end sweep test runs and the smallest thing to try
`tokeff sweep` on:

    tokeff sweep --config configs/sweep_tiny.py --workdir runs/sweep_tiny
"""

import ml_collections

from tokeff.train.defaults import base_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()

    # Every point starts from this training config; the grid sets the keys named in axis_keys.
    c.train = base_config()
    c.train.data.source = "arithmetic"
    c.train.data.pool_size = 400
    c.train.data.row_len = 32
    c.train.checkpoint.every_steps = 4
    c.train.log.progress = False

    c.axis_keys = ml_collections.ConfigDict(dict(
        model="model", budget="budget.flops", seed="seed", composition="data"))
    c.grid = ml_collections.ConfigDict()
    c.grid.models = ("tiny",)
    c.grid.budgets = (2e9, 4e9)
    c.grid.compositions = (
        dict(strategy="few_long", token_budget=1200),
        dict(strategy="many_short", token_budget=1200),
    )
    c.grid.seeds = (0,)

    c.eval = ml_collections.ConfigDict(dict(method="cloze", max_questions=32, batch_size=32))
    return c
