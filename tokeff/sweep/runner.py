"""The resumable sweep loop: each pending point through a runner, each result one table row.

Why it survives being killed at any moment: a point is done exactly when its row is in the
table. The runner's result is first written atomically to `runs/ID/result.json`, then appended
to the table; re-running skips points whose row exists, re-appends a `result.json` that never
reached the table, and re-runs anything else — `train` resumes it from its checkpoints. The
row is appended only after checking it is absent, so no run is ever counted twice, and only
this (the calling) thread appends.

Concurrency: a runner may offer `lanes(train_config)`, the device groups a point can run on
(the warm engine gives one lane per local device for a model that fits one device). Points
with several lanes run concurrently, one thread per lane; the others run one at a time.

Multi-host: process 0 decides which points are pending and broadcasts that, so hosts reading a
shared table at slightly different times cannot disagree; only process 0 writes rows. Points
whose lanes are local devices are split across the processes (each runs its share; process 0
gathers the rows); the others run on the whole slice, every process taking part. Independent
launchers split a grid with `shard=(i, n)`; each writes its own table file, merged on read.
"""

from __future__ import annotations

import concurrent.futures
import importlib
import json
import os
import queue
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import ml_collections

from tokeff import io, results
from tokeff.errors import UserError
from tokeff.eval.intervals import wilson_interval
from tokeff.sweep.engine import train_and_evaluate
from tokeff.sweep.grid import Point, check_shard, grid_points, point_train_config

# runner(point, train_config, workdir, eval_config) -> the row's metrics.
Runner = Callable[[Point, ml_collections.ConfigDict, str, ml_collections.ConfigDict], Mapping[str, Any]]
DEFAULT_RUNNER = train_and_evaluate  # the warm engine, this process's own


def load_runner(spec: str) -> Runner:
    """The "module:function" a sweep config names as its runner."""
    module, _, name = spec.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as e:
        raise UserError(f"config.runner: cannot load {spec!r} ({e})") from None


def _write_json(path, value: Any) -> None:
    """Atomic on a local disk (tokeff.io); object stores replace whole objects anyway."""
    if io.is_remote(path):
        path.write_text(json.dumps(value, indent=2, sort_keys=True, default=io.json_default))
    else:
        io.write_json(os.fspath(path), value, sort_keys=True)


def _check_owned(sweep_dir: str) -> None:
    """The ownership rule (`tokeff.ownership`) for every caller, `tokeff sweep` and the demo alike:
    sweep.json, the tables and runs/ go only into a new or empty folder or a tokeff sweep dir."""
    from tokeff.ownership import check_workdir_owned, refuse_empty_path

    path = refuse_empty_path(sweep_dir, "--workdir")
    check_workdir_owned(path if io.is_remote(path) else os.path.abspath(path), "sweep")


def _check_owned_on_every_process(sweep_dir: str, process: int) -> None:
    """Process 0 checks ownership (`_check_owned`) and every process learns its verdict: a refusal
    then ends each process with a one-line error, rather than leaving the others waiting for
    process 0 at the sweep's first collective."""
    refusal = None
    if process == 0:
        try:
            _check_owned(sweep_dir)
        except UserError as e:
            refusal = e
    if _from_process_zero([refusal is not None])[0] and refusal is None:
        raise UserError(f"--workdir: process 0 refused {sweep_dir} (its error names why)")
    if refusal is not None:
        raise refusal


def process_info() -> tuple[int, int]:
    """(process index, process count) — JAX's when JAX is in use, else a single process."""
    if "jax" not in sys.modules:
        return 0, 1
    import jax

    return jax.process_index(), jax.process_count()


def _from_process_zero(flags: list[bool]) -> list[bool]:
    """Process 0's flags (which points are pending, whether the sweep dir is refused), on every
    process: hosts reading a shared folder at slightly different moments cannot disagree."""
    _, count = process_info()
    if count == 1:
        return flags
    import numpy as np
    from jax.experimental import multihost_utils

    mask = multihost_utils.broadcast_one_to_all(np.asarray(flags, dtype=np.int32))
    return [bool(x) for x in np.asarray(mask)]


def _gather_rows(rows: list[dict]) -> list[dict]:
    """Every process's rows, on every process (rows travel as JSON bytes)."""
    import numpy as np
    from jax.experimental import multihost_utils

    data = np.frombuffer(json.dumps(rows, default=io.json_default).encode(), dtype=np.uint8)
    sizes = np.asarray(multihost_utils.process_allgather(np.array([data.size], np.int64))).reshape(-1)
    padded = np.zeros(int(sizes.max()), np.uint8)
    padded[:data.size] = data
    everyone = np.asarray(multihost_utils.process_allgather(padded)).reshape(len(sizes), -1)
    return [row for size, chunk in zip(sizes, everyone) for row in json.loads(chunk[:size].tobytes())]


def run_sweep(config: ml_collections.ConfigDict, sweep_dir: str, *,
              shard: tuple[int, int] = (0, 1), runner: Runner | None = None,
              points: Sequence[Point] | None = None, progress: bool = True) -> list[dict[str, Any]]:
    """Run every pending point of the sweep (this shard's share); return the sweep's rows.

    Re-running resumes. `points` replaces the config's grid (e.g. what `tokeff propose` wrote).
    `runner` defaults to `config.runner`, an importable "module:function", or, when that is
    empty, to the warm engine (`DEFAULT_RUNNER`).
    """
    from etils import epath
    from tqdm.auto import tqdm

    index, count = check_shard(*shard)
    if config.train.get("distributed") and config.train.distributed.get("enabled"):
        # Joining inside each point would leave the sweep's own bookkeeping single-process
        # (every host would think it is process 0 and write rows).
        raise UserError("config.train.distributed.enabled: a sweep joins the processes once, before "
                        "its first point: set it False and pass --distributed to tokeff sweep")
    runner = runner or (load_runner(config.runner) if config.get("runner") else DEFAULT_RUNNER)
    points = list(points) if points is not None else grid_points(config)
    mine = [p for i, p in enumerate(points) if i % count == index]
    jobs = {p.run_id: (p, point_train_config(config, p)) for p in mine}  # bad axis keys fail first
    root = epath.Path(sweep_dir)
    process, n_processes = process_info()
    table = results.table_path(sweep_dir, shard)
    _check_owned_on_every_process(sweep_dir, process)
    if process == 0:
        root.mkdir(parents=True, exist_ok=True)
        _write_json(root / "sweep.json", config.to_dict())

    done = {r["run_id"] for r in results.sweep_rows(sweep_dir) if r["status"] == "ok"}
    pending = _from_process_zero([p.run_id not in done for p in mine])
    todo = [p for p, flag in zip(mine, pending) if flag]
    n_done = len(mine) - len(todo)
    bar = tqdm(total=sum(p.budget_flops for p in mine), initial=sum(p.budget_flops for p in mine) -
               sum(p.budget_flops for p in todo), unit="FLOP", unit_scale=True,
               desc=f"sweep {n_done}/{len(mine)} points", disable=not progress or process != 0,
               dynamic_ncols=True, smoothing=0)

    def record(point: Point, row: dict | None) -> None:
        nonlocal n_done
        if process == 0 and row is not None:
            if point.run_id not in {r["run_id"] for r in results.read_rows(table)}:
                results.append_row(table, row)
            if progress:
                bar.write(_one_line(row))
        n_done += 1
        bar.set_description(f"sweep {n_done}/{len(mine)} points")
        bar.update(point.budget_flops)

    try:
        for group, lanes in _groups(todo, jobs, runner):
            split = n_processes > 1 and lanes is not None
            share = group[process::n_processes] if split else group
            finished = []
            for point, row in _execute(share, lanes, jobs, runner, config, root, process, split):
                if split:
                    finished.append(row)
                else:
                    record(point, row)
            if split:  # process 0 writes, after gathering every process's rows
                by_id = {r["run_id"]: r for r in _gather_rows(finished)}
                for point in group:
                    record(point, by_id[point.run_id])
    finally:
        bar.close()
    if n_processes > 1:  # every process then reads the table process 0 has finished writing
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("tokeff sweep: table written")
    return results.sweep_rows(sweep_dir)


def _groups(todo: list[Point], jobs, runner) -> Iterator[tuple[list[Point], list | None]]:
    """Consecutive runs of points sharing the same lanes (None: one point at a time, whole mesh)."""
    lanes_of = getattr(runner, "lanes", None)
    group, current = [], None
    for point in todo:
        lanes = lanes_of(jobs[point.run_id][1]) if lanes_of else None
        if group and lanes != current:
            yield group, current
            group = []
        group.append(point)
        current = lanes
    if group:
        yield group, current


def _execute(points: list[Point], lanes, jobs, runner, config, root, process: int, local: bool):
    """(point, row) as each point finishes: one thread per lane, or in order without lanes."""
    def one(point: Point, lane=None):
        options = {} if lane is None else {"devices": lane}
        return point, _run_point(config, point, jobs[point.run_id][1], root / "runs" / point.run_id,
                                 runner, process, local, **options)

    if lanes is None or len(lanes) == 1 or len(points) == 1:
        for point in points:
            yield one(point, lanes[0] if lanes else None)
        return
    free: queue.SimpleQueue = queue.SimpleQueue()
    for lane in lanes:
        free.put(lane)

    def on_a_free_lane(point: Point):
        lane = free.get()
        try:
            return one(point, lane)
        finally:
            free.put(lane)

    with concurrent.futures.ThreadPoolExecutor(len(lanes), thread_name_prefix="sweep-lane") as pool:
        futures = [pool.submit(on_a_free_lane, p) for p in points]
        try:
            for future in concurrent.futures.as_completed(futures):
                yield future.result()
        finally:
            for future in futures:
                future.cancel()


def _run_point(config, point: Point, train_config, workdir, runner: Runner, process: int, local: bool,
               **options) -> dict | None:
    """The point's row (None on processes other than 0 when every process ran the point)."""
    writer = process == 0 or local
    resolved = {"point": point.as_dict(), "train": train_config.to_dict()}
    result_file = workdir / "result.json"
    if writer:
        workdir.mkdir(parents=True, exist_ok=True)
        if not io.is_remote(workdir):
            from tokeff.ownership import mark_workdir

            mark_workdir(os.fspath(workdir), "train")  # the sweep made it: its run's workdir
        recorded = workdir / "point.json"
        # A run that failed before it trained anything (no checkpoint, metrics or result) holds
        # nothing a changed config could mix with: its corrected config replaces the record.
        started = any((workdir / name).exists() for name in ("checkpoints", "metrics.jsonl", "result.json"))
        if recorded.exists() and started:
            before = json.loads(recorded.read_text())
            if before != json.loads(json.dumps(resolved, default=io.json_default)):
                raise UserError(
                    f"{point.run_id}: its training config changed since the run started "
                    f"(see {recorded}); use a new sweep dir or delete that run dir"
                )
        else:
            _write_json(recorded, resolved)

    if result_file.exists():
        return json.loads(result_file.read_text())  # finished, but killed before the append
    start = time.time()
    metrics = dict(runner(point, train_config, os.fspath(workdir), config.eval, **options))
    row = {
        "run_id": point.run_id,
        "model": point.model,
        "strategy": point.strategy,
        "budget_flops": int(point.budget_flops) if point.budget_flops.is_integer() else point.budget_flops,
        "seed": point.seed,
        "status": "ok",
        "wall_seconds": time.time() - start,
        **metrics,
    }
    extra = dict(row.get("extra") or {})
    extra.setdefault("composition", dict(point.composition))
    row["extra"] = extra
    row = results.validate_row(row)
    if writer:
        _write_json(result_file, row)
    return row if writer else None


def _one_line(row: Mapping[str, Any]) -> str:
    acc = "-" if row["accuracy"] is None else f"{row['accuracy']:.3f}"
    loss = "-" if row["eval_loss"] is None else f"{row['eval_loss']:.3f}"
    return (f"done {row['run_id']}: {row['flops_used']:.3g}/{row['budget_flops']:.3g} FLOPs, "
            f"N={row['n_examples']} L={row['avg_tokens']:.1f}, acc={acc}, loss={loss}, "
            f"{row['wall_seconds']:.0f}s")


def summarize(rows: Sequence[Mapping[str, Any]]) -> str:
    """A fixed-width text table of the main columns (accuracy with its 95% Wilson interval)."""
    header = ("run_id", "strategy", "budget", "used", "N", "L", "acc", "95% CI", "loss")
    lines = [header]
    for r in rows:
        acc, n = r["accuracy"], r["n_eval"]
        interval = wilson_interval(round(acc * n), n) if acc is not None and n else None
        lines.append((
            r["run_id"], r["strategy"], f"{r['budget_flops']:.3g}", f"{r['flops_used']:.4g}",
            str(r["n_examples"]), f"{r['avg_tokens']:.1f}",
            "-" if acc is None else f"{acc:.3f}",
            "-" if interval is None else f"[{interval[0]:.3f}, {interval[1]:.3f}]",
            "-" if r["eval_loss"] is None else f"{r['eval_loss']:.3f}",
        ))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines)
