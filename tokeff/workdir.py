"""One process per workdir, and only a workdir tokeff may write (`tokeff.ownership`).

Two `tokeff train` (or `tokeff sweep`) processes writing one workdir interleave checkpoints and
lose metrics rows, so the second is refused at once, naming the holder's pid. The lock is
`fcntl.flock` on `WORKDIR/.tokeff-lock`: the kernel releases it when its holder dies (SIGKILL
included), so a stale lock file never blocks a rerun; the pid written in it is only for the
message. Before the lock, the directory is checked: new, empty, or a workdir of this kind that
tokeff marked (`.tokeff-workdir.json`); a folder of the user's own files, an output directory or
a workdir of the other kind is refused with nothing written. On release the lock file is
removed, and a workdir this call created (or marked) that nothing else wrote to is removed (or
unmarked) too, so a run refused for bad input leaves nothing behind. Once the lock is held, the
atomic-write temp files a killed run left in the workdir are removed (`tokeff.io.remove_stale_temp_files`).

Object-store workdirs (gs://, any fsspec URL) are checked by the same rule and locked by an
object created exclusively (`tokeff.ownership.acquire_remote_lock`). Sweeps there split work
across hosts by `--shard`, so each shard of a sweep holds its own lock object.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from tokeff.io import check_writable_dir, is_remote, join_path, remove_stale_temp_files
from tokeff.ownership import (
    LOCK_NAME,
    acquire_lock,
    acquire_remote_lock,
    check_workdir_owned,
    mark_workdir,
    os_error,
    refuse_empty_path,
    release_lock,
    release_remote_lock,
    unmark_if_unused,
)

__all__ = ["LOCK_NAME", "workdir_lock"]


@contextlib.contextmanager
def workdir_lock(path: str | os.PathLike, *, kind: str = "train", field: str = "--workdir",
                 shard: tuple[int, int] = (0, 1)) -> Iterator[str]:
    """Hold the lock of `kind` workdir `path` (created and marked if missing) for the `with` block;
    yields its absolute path (an object-store URL as given). `shard` (index, count): on an object
    store, the lock of that shard of a sweep.

    Raises UserError when another live process holds it, or when `path` cannot be a `kind` workdir.
    """
    path = refuse_empty_path(path, field)
    if is_remote(path):
        yield from _remote_workdir_lock(path, kind, field, shard)
        return
    path = check_writable_dir(path, field)
    check_workdir_owned(path, kind, field)
    created = _make_dirs(path, field)
    lock_path = os.path.join(path, LOCK_NAME)
    try:
        fd = acquire_lock(lock_path, field, path, "a tokeff train or sweep")
    except BaseException:
        if created:
            _remove_empty_dirs(path, created)
        raise
    try:
        remove_stale_temp_files(path)  # under the lock: a killed run's half-written file goes
        with _marked(path, kind, field):
            yield path
    finally:
        release_lock(fd, lock_path)
        if created:
            _remove_empty_dirs(path, created)


def _remote_workdir_lock(url: str, kind: str, field: str, shard: tuple[int, int]) -> Iterator[str]:
    check_workdir_owned(url, kind, field)
    name = LOCK_NAME if shard[1] == 1 else f"{LOCK_NAME}-shard-{shard[0]}-of-{shard[1]}"
    lock = acquire_remote_lock(join_path(url, name), field, url, "a tokeff train or sweep")
    try:
        with _marked(url, kind, field):
            yield url
    finally:
        release_remote_lock(lock)


@contextlib.contextmanager
def _marked(path: str, kind: str, field: str) -> Iterator[None]:
    """Under the workdir's lock: check ownership again (no other tokeff can be writing it now) and
    mark it; the marker goes again if the run added nothing (refused for bad input)."""
    check_workdir_owned(path, kind, field)
    marked = mark_workdir(path, kind)
    try:
        yield
    finally:
        if marked is not None:
            unmark_if_unused(path, marked)


def _make_dirs(path: str, field: str) -> str | None:
    """Create `path` and missing parents; return the topmost directory created (None if it existed)."""
    top = None
    probe = path
    while not os.path.exists(probe):
        top = probe
        probe = os.path.dirname(probe)
    if top is None:
        return None
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise os_error(e, path, field) from None
    return top


def _remove_empty_dirs(path: str, top: str) -> None:
    """Remove `path` and its parents up to `top` while they are empty (nothing was written)."""
    probe = path
    while True:
        try:
            os.rmdir(probe)
        except OSError:
            return
        if probe == top:
            return
        probe = os.path.dirname(probe)
