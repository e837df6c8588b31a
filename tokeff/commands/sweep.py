"""`tokeff sweep`: run a grid of budgeted fine-tunes into one results table; re-running resumes."""

from __future__ import annotations

import argparse
import contextlib
import os

HELP = "run a sweep config (models x budgets x compositions x seeds) into a results table; reruns resume"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, metavar="FILE.py[:ARG]",
                        help="sweep config defining get_config(arg=None), e.g. configs/sweep_tiny.py")
    parser.add_argument("--workdir", required=True,
                        help="sweep dir (local or gs://): results.jsonl, results.csv, runs/<run_id>/")
    parser.add_argument("--points", metavar="FILE",
                        help="run these points (sweep_points.json from `tokeff propose`) in place of the grid")
    parser.add_argument("--shard", default="0/1", metavar="I/N",
                        help="run every N-th point starting at I (independent launchers split a grid)")
    parser.add_argument("--distributed", action="store_true",
                        help="call jax.distributed.initialize() first (multi-host TPU slices, Slurm)")
    parser.add_argument("--dry-run", action="store_true",
                        help="list the points, their run ids and whether each is done; run nothing")
    parser.set_defaults(_accepts_overrides=True)


def run(args: argparse.Namespace) -> int:
    from tokeff import results, sweep
    from tokeff.io import is_remote, join_path
    from tokeff.ownership import check_workdir_owned, refuse_empty_path
    from tokeff.sweep.config import load_sweep_config
    from tokeff.sweep.grid import parse_shard

    refuse_empty_path(args.workdir, "--workdir")
    shard = parse_shard(args.shard)
    config = load_sweep_config(args.config, list(args._extra))
    points = sweep.points_from_file(args.points) if args.points else sweep.grid_points(config)
    if args.dry_run:
        done = {r["run_id"] for r in sweep.sweep_rows(args.workdir) if r["status"] == "ok"}
        for point in points[shard[0]::shard[1]]:
            print(f"{'done   ' if point.run_id in done else 'pending'}  {point.run_id}")
        return 0
    if args.distributed:
        workdir = refuse_empty_path(args.workdir, "--workdir")
        check_workdir_owned(workdir if is_remote(workdir) else os.path.abspath(workdir), "sweep")
        import jax

        jax.distributed.initialize()
    from tokeff.workdir import workdir_lock

    with workdir_lock(args.workdir, kind="sweep", shard=shard) if not args.distributed else contextlib.nullcontext():
        rows = sweep.run_sweep(config, args.workdir, shard=shard, points=points)
    if rows:
        csv_path = join_path(args.workdir, "results.csv")
        if sweep.process_info()[0] == 0:  # only process 0 writes
            results.write_csv(rows, csv_path)
            print(sweep.summarize(rows))
            print(f"{len(rows)} rows: {csv_path}")
    return 0
