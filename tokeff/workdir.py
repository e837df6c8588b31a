"""One process per workdir: an exclusive lock that a killed holder can never leave stuck.

Two `tokeff train` (or `tokeff sweep`) processes writing one workdir interleave checkpoints and
lose metrics rows, so the second is refused at once, naming the holder's pid. The lock is
`fcntl.flock` on `WORKDIR/.tokeff-lock`: the kernel releases it when its holder dies (SIGKILL
included), so a stale lock file never blocks a rerun; the pid written in it is only for the
message. On release the lock file is removed, and a workdir this lock created and nothing else
wrote to is removed too, so a run refused for bad input leaves nothing behind.

Object-store workdirs (gs://) are not locked: there is no flock there; sweeps split work by
`--shard` instead.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator

from tokeff.errors import UserError
from tokeff.io import DiskFullError, check_writable_dir, is_remote

LOCK_NAME = ".tokeff-lock"


@contextlib.contextmanager
def workdir_lock(path: str | os.PathLike, *, field: str = "--workdir") -> Iterator[str]:
    """Hold the lock of workdir `path` (created if missing) for the `with` block; yields its absolute path.

    Raises UserError when another live process holds it, or when `path` cannot be a workdir.
    """
    path = os.fspath(path)
    if is_remote(path):
        yield path
        return
    path = check_writable_dir(path, field)
    created = _make_dirs(path, field)
    lock_path = os.path.join(path, LOCK_NAME)
    try:
        fd = _acquire(lock_path, field)
    except BaseException:
        if created:
            _remove_empty_dirs(path, created)
        raise
    try:
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock_path)  # still holding the lock: a waiter re-checks the inode it locked
        os.close(fd)
        if created:
            _remove_empty_dirs(path, created)


def _acquire(lock_path: str, field: str) -> int:
    while True:
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise _os_error(e, lock_path, field) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"process {holder}" if holder else "another process"
            raise UserError(f"{field}: {os.path.dirname(lock_path)} is in use by {who} "
                            "(a tokeff train or sweep); wait for it to finish or use another workdir") from None
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
            raise _os_error(e, lock_path, field) from None
        return fd


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


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
        raise _os_error(e, path, field) from None
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


def _os_error(error: OSError, where: str, field: str) -> Exception:
    if error.errno == errno.ENOSPC:
        return DiskFullError(f"{field}: no space left on the device holding {where}")
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return UserError(f"{field}: {os.path.dirname(where)} is not writable ({os.strerror(error.errno)})")
    if error.errno == errno.ENAMETOOLONG:
        return UserError(f"{field}: the path {where[:60]}... is too long")
    return error
