"""Which directories tokeff may write, and one process at a time in each.

One rule for every directory a command writes, workdirs (`train`, `sweep`) and output
directories (`fit`, `backtest`, `allocate`, `propose`, `demo`) alike: the directory is new,
empty, or one tokeff created, else it is refused before a byte is written. tokeff marks what it
creates: an output directory carries `.tokeff-output.json` (its manifest, `tokeff.io`), a workdir
carries `.tokeff-workdir.json` naming its kind (`train` or `sweep`). A workdir of another kind,
an output directory given as a workdir, or a folder of the user's own files is refused.

Locks: `fcntl.flock` on a lock file, released by the kernel when its holder dies, so a killed
process never blocks the rerun. A workdir's lock file lives inside it (`workdir.py`); an output
directory's lives beside it (`.NAME.tokeff-lock`, the directory may not exist yet) and is held
from the moment the command claims `--out` until the command returns (`release_held_locks`,
called by the CLI), so two `tokeff fit --out d` cannot both write `d`.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import fcntl
import json
import os

from tokeff.errors import UserError

WORKDIR_MARKER = ".tokeff-workdir.json"
OUTPUT_MANIFEST = ".tokeff-output.json"  # the same name as tokeff.io.MANIFEST
LOCK_NAME = ".tokeff-lock"
# Files a train/sweep workdir written before the marker existed may hold; such a workdir is
# accepted when it holds the run's own record (config.json / point.json / sweep.json).
_LEGACY_RECORD = {"train": ("config.json", "point.json"), "sweep": ("sweep.json",)}

_HELD: dict[str, tuple[int, str]] = {}  # absolute output path -> (lock fd, lock file path)


def refuse_empty_path(path: str | os.PathLike, field: str) -> str:
    """The path as a string; an empty one ('' would mean the current directory) is refused."""
    text = os.fspath(path)
    if not str(text).strip():
        raise UserError(f"{field}: the path is empty; name a directory")
    return text


def workdir_kind(path: str) -> str | None:
    """The kind a tokeff workdir marker at `path` names, or None when there is none."""
    try:
        with open(os.path.join(path, WORKDIR_MARKER)) as f:
            marker = json.load(f)
    except (OSError, ValueError):
        return None
    return marker.get("kind") if isinstance(marker, dict) and isinstance(marker.get("kind"), str) else None


def check_workdir_owned(path: str, kind: str, field: str = "--workdir") -> None:
    """Refuse (UserError) a workdir `path` that tokeff may not write a `kind` run into.

    Accepted: a path that does not exist, an empty directory, a `kind` workdir tokeff marked, or
    one written before markers existed that holds its run record. Nothing is created.
    """
    if not os.path.isdir(path):
        return
    names = [n for n in os.listdir(path) if n != LOCK_NAME]
    if not names:
        return
    marked = workdir_kind(path)
    if marked == kind:
        return
    if marked is not None:
        raise UserError(f"{field}: {path} is a tokeff {marked} workdir, not a {kind} workdir; choose a new directory")
    if OUTPUT_MANIFEST in names:
        what = _manifest_kind(path)
        raise UserError(f"{field}: {path} holds a tokeff {what} output, not a {kind} workdir; choose a new directory")
    if any(n in names for n in _LEGACY_RECORD[kind]):
        return
    raise UserError(f"{field}: {path} exists and is not empty, and tokeff did not create it "
                    f"(it holds {_some(names)}); choose a new or empty directory")


def mark_workdir(path: str, kind: str) -> frozenset[str] | None:
    """Write the `kind` marker in workdir `path` if it has none. Returns what the workdir held
    before (for `unmark_if_unused`), or None when it was marked already."""
    from tokeff.io import write_json

    if workdir_kind(path) is not None:
        return None
    before = frozenset(os.listdir(path)) - {LOCK_NAME}
    write_json(os.path.join(path, WORKDIR_MARKER), {"kind": kind})
    return before


def unmark_if_unused(path: str, before: frozenset[str]) -> None:
    """Remove the marker `mark_workdir` wrote if nothing was added since (a run refused for bad input)."""
    with contextlib.suppress(OSError):
        if frozenset(os.listdir(path)) - {LOCK_NAME, WORKDIR_MARKER} == before:
            os.unlink(os.path.join(path, WORKDIR_MARKER))


def _manifest_kind(path: str) -> str:
    try:
        with open(os.path.join(path, OUTPUT_MANIFEST)) as f:
            kind = json.load(f).get("kind")
    except (OSError, ValueError, AttributeError):
        kind = None
    return kind if isinstance(kind, str) else "output"


def _some(names: list[str]) -> str:
    shown = sorted(names)[:3]
    return ", ".join(shown) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


# --- locks ------------------------------------------------------------------------------------


def acquire_lock(lock_path: str, field: str, subject: str, users: str) -> int:
    """An fd holding the exclusive flock of `lock_path` (created if missing), or a UserError
    naming the holder's pid when another live process holds it."""
    while True:
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise os_error(e, lock_path, field) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"process {holder}" if holder else "another process"
            raise UserError(f"{field}: {subject} is in use by {who} ({users}); "
                            "wait for it to finish or choose another directory") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock_path).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # the previous holder removed the file after we opened it: lock the new one
            os.close(fd)
            continue
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as e:
            os.close(fd)
            raise os_error(e, lock_path, field) from None
        return fd


def release_lock(fd: int, lock_path: str) -> None:
    """Remove the lock file (still holding it: a waiter re-checks the inode it locked), then unlock."""
    with contextlib.suppress(OSError):
        os.unlink(lock_path)
    with contextlib.suppress(OSError):
        os.close(fd)


def hold_output_lock(path: str, field: str) -> None:
    """Lock output directory `path` (absolute) until `release_held_locks`; a no-op if this process holds it."""
    if path in _HELD:
        return
    parent = os.path.dirname(path)
    while not os.path.isdir(parent):  # the lock goes beside the nearest folder that exists: nothing is created
        parent = os.path.dirname(parent)
    name = os.path.relpath(path, parent).replace(os.sep, "__")
    lock_path = os.path.join(parent, f".{name}{LOCK_NAME}")
    fd = acquire_lock(lock_path, field, path, "another tokeff command writing there")
    _HELD[path] = (fd, lock_path)


def holds_output_lock(path: str) -> bool:
    return path in _HELD


def release_output_lock(path: str) -> None:
    """Release the lock of output directory `path` if this process holds it."""
    held = _HELD.pop(path, None)
    if held is not None:
        release_lock(*held)


def release_held_locks() -> None:
    """Release every output-directory lock this process holds (the CLI calls it as a command returns)."""
    while _HELD:
        _, (fd, lock_path) = _HELD.popitem()
        release_lock(fd, lock_path)


atexit.register(release_held_locks)


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def os_error(error: OSError, where: str, field: str) -> Exception:
    """One line for a full disk, an unwritable place or a too-long path; other errors pass through."""
    from tokeff.io import DiskFullError

    if error.errno == errno.ENOSPC:
        return DiskFullError(f"{field}: no space left on the device holding {where}")
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return UserError(f"{field}: {os.path.dirname(where)} is not writable ({os.strerror(error.errno)})")
    if error.errno == errno.ENAMETOOLONG:
        return UserError(f"{field}: the path {where[:60]}... is too long")
    return error
