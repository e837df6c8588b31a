"""Sweeps: a grid of budgeted fine-tunes, each ending as one row of the results table.

    grid.py    Point, grid_points, run ids, each point's training config, points_from_file
    runner.py  the resumable loop (results-table contract, resume after kill, shards, hosts)
    engine.py  the warm engine: the default runner, which keeps models, compiled steps and
               tokenised pools across points

The public API, for apps such as the demo:

    from tokeff import sweep
    rows = sweep.run_sweep(config, sweep_dir)   # resumable; warm engine unless config.runner says
    sweep.grid_points(config), sweep.sweep_rows(sweep_dir), sweep.summarize(rows)
"""

from tokeff.results import sweep_rows, table_paths
from tokeff.sweep.grid import Point, grid_points, point_train_config, points_from_file, preset_for_spec
from tokeff.sweep.runner import DEFAULT_RUNNER, process_info, run_sweep, summarize

__all__ = ["DEFAULT_RUNNER", "Point", "grid_points", "point_train_config", "points_from_file",
           "preset_for_spec", "process_info", "run_sweep", "summarize", "sweep_rows", "table_paths"]
