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

Object-store workdirs (`gs://...`, any fsspec URL) follow the same rule through fsspec: the
marker and the listing are read with `fs.cat_file`/`fs.ls`, and the lock is an object created
with fsspec's exclusive mode (`fs.open(path, "xb")`) holding the holder's host and pid. There is
no kernel to release it: a lock left by a killed process is taken over by the next run on the same
host (its pid is gone); from another host it is refused naming the holder, and deleting the
object releases it. How exclusive the create is depends on the backend: atomic on local files and
in memory, and on GCS where gcsfs sends the `ifGenerationMatch=0` precondition; a backend that
checks and then writes leaves a window of one round trip.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import fcntl
import json
import os
import posixpath
import socket
import time

from tokeff.errors import UserError
from tokeff.io import is_remote, pid_alive

WORKDIR_MARKER = ".tokeff-workdir.json"
OUTPUT_MANIFEST = ".tokeff-output.json"  # the same name as tokeff.io.MANIFEST
LOCK_NAME = ".tokeff-lock"
# A train/sweep workdir written before the marker existed is accepted when it holds the run's own
# record: the file, and the keys tokeff writes in it. The name alone is not enough: a folder of the
# user's own (a Hugging Face model's config.json, a sweep.json of another tool) is not a workdir.
_LEGACY_RECORD = {
    "train": {"config.json": ("model", "data", "budget", "optim"), "point.json": ("point", "train")},
    "sweep": {"sweep.json": ("grid", "train")},
}

_HELD: dict[str, tuple[int, str]] = {}  # absolute output path -> (lock fd, lock file path)
_HELD_REMOTE: set[str] = set()  # lock objects this process created


def refuse_empty_path(path: str | os.PathLike, field: str) -> str:
    """The path as a string; an empty one ('' would mean the current directory) is refused."""
    text = os.fspath(path)
    if not str(text).strip():
        raise UserError(f"{field}: the path is empty; name a directory")
    return text


def workdir_kind(path: str) -> str | None:
    """The kind a tokeff workdir marker at `path` names, or None when there is none."""
    marker = _read_json(path, WORKDIR_MARKER)
    return marker.get("kind") if isinstance(marker, dict) and isinstance(marker.get("kind"), str) else None


# --- a directory, local or in an object store ----------------------------------------------------


def remote_fs(url: str, field: str):
    """(fsspec filesystem, path inside it) for an object-store URL; a URL no installed
    filesystem serves (gs:// without gcsfs, an unknown scheme) is one line naming `field`."""
    import fsspec

    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as e:
        raise UserError(f"{field}: {url}: {' '.join(str(e).split()) or type(e).__name__}") from None


def _names(path: str, field: str) -> list[str] | None:
    """The entries of directory `path` other than lock files, or None when nothing is there."""
    if is_remote(path):
        fs, root = remote_fs(path, field)
        fs.invalidate_cache(root)  # another process may have written there since this one listed
        if not fs.exists(root):
            return None
        if fs.isfile(root):
            raise UserError(f"{field}: {path} is a file, not a directory")
        entries = [posixpath.basename(p.rstrip("/")) for p in fs.ls(root, detail=False)
                   if p.rstrip("/") != root.rstrip("/")]
    elif os.path.isdir(path):
        entries = os.listdir(path)
    else:
        return None
    return [n for n in entries if not n.startswith(LOCK_NAME) and not is_marker_in_flight(n)]


def is_marker_in_flight(name: str) -> bool:
    """A workdir marker or output manifest being written (`tokeff.io`'s atomic temp file), or left
    by a process killed while writing it: tokeff's own, so a second run reaches the lock and is told
    who holds it, and the rerun of a killed one is not refused as a folder of the user's files."""
    return name.startswith((f".{WORKDIR_MARKER}.", f".{OUTPUT_MANIFEST}.")) and name.endswith(".tmp")


def _read_json(path: str, name: str):
    """The JSON value of file `name` in directory `path`, or None when it is missing or not JSON."""
    try:
        if is_remote(path):
            fs, root = remote_fs(path, "--workdir")
            return json.loads(fs.cat_file(posixpath.join(root, name)))
        from tokeff.inputs import read_input_text

        return json.loads(read_input_text(os.path.join(path, name), name))  # a regular file, size-bounded
    except (OSError, ValueError, UserError):
        return None


def check_workdir_owned(path: str, kind: str, field: str = "--workdir") -> None:
    """Refuse (UserError) a workdir `path` that tokeff may not write a `kind` run into.

    Accepted: a path that does not exist, an empty directory, a `kind` workdir tokeff marked, or
    one written before markers existed that holds its run record. Nothing is created.
    """
    names = _names(path, field)
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
    if _holds_legacy_record(path, kind, names):
        return
    raise UserError(f"{field}: {path} exists and is not empty, and tokeff did not create it "
                    f"(it holds {_some(names)}); choose a new or empty directory")


def _holds_legacy_record(path: str, kind: str, names: list[str]) -> bool:
    """Whether workdir `path` (entries `names`) holds a `kind` run's record as tokeff writes it:
    a JSON object with the record's keys."""
    for name, keys in _LEGACY_RECORD[kind].items():
        record = _read_json(path, name) if name in names else None
        if isinstance(record, dict) and all(k in record for k in keys):
            return True
    return False


def mark_workdir(path: str, kind: str) -> frozenset[str] | None:
    """Write the `kind` marker in workdir `path` if it has none. Returns what the workdir held
    before (for `unmark_if_unused`), or None when it was marked already."""
    from tokeff.io import write_json

    if workdir_kind(path) is not None:
        return None
    before = frozenset(_names(path, "--workdir") or ())
    if is_remote(path):
        fs, root = remote_fs(path, "--workdir")
        fs.pipe_file(posixpath.join(root, WORKDIR_MARKER), json.dumps({"kind": kind}).encode())
    else:
        write_json(os.path.join(path, WORKDIR_MARKER), {"kind": kind})
    return before


def unmark_if_unused(path: str, before: frozenset[str]) -> None:
    """Remove the marker `mark_workdir` wrote if nothing was added since (a run refused for bad input)."""
    with contextlib.suppress(OSError, UserError):
        if frozenset(_names(path, "--workdir") or ()) - {WORKDIR_MARKER} != before:
            return
        if is_remote(path):
            fs, root = remote_fs(path, "--workdir")
            fs.rm_file(posixpath.join(root, WORKDIR_MARKER))
        else:
            os.unlink(os.path.join(path, WORKDIR_MARKER))


def _manifest_kind(path: str) -> str:
    manifest = _read_json(path, OUTPUT_MANIFEST)
    kind = manifest.get("kind") if isinstance(manifest, dict) else None
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


def acquire_remote_lock(url: str, field: str, subject: str, users: str) -> str:
    """Create lock object `url` exclusively (fsspec mode "xb") holding this host and pid; return
    `url` for `release_remote_lock`. Held by a live process (or by any process on another host):
    a UserError naming the holder. Left by a dead process on this host: taken over."""
    fs, path = remote_fs(url, field)
    me = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                    time.gmtime())}
    for _ in range(2):
        try:
            with fs.open(path, "xb") as f:
                f.write(json.dumps(me).encode())
            _HELD_REMOTE.add(url)
            return url
        except FileExistsError:
            pass
        try:
            holder = json.loads(fs.cat_file(path))
        except (OSError, ValueError):
            holder = {}
        holder = holder if isinstance(holder, dict) else {}
        if url not in _HELD_REMOTE and holder.get("host") == me["host"] and isinstance(holder.get("pid"), int) and (
                holder["pid"] == me["pid"] or not pid_alive(holder["pid"])):
            with contextlib.suppress(FileNotFoundError):  # its holder is gone: take it over
                fs.rm_file(path)
            continue
        who = (f"process {holder.get('pid')} on {holder.get('host')} since {holder.get('since')}"
               if holder else "another process")
        raise UserError(f"{field}: {subject} is in use by {who} ({users}); wait for it to finish, or, if that "
                        f"process is gone, delete {url} and rerun")
    raise UserError(f"{field}: {subject}: could not create the lock {url}; rerun")


def release_remote_lock(url: str) -> None:
    """Delete the lock object `acquire_remote_lock` created."""
    _HELD_REMOTE.discard(url)
    with contextlib.suppress(OSError, UserError):
        fs, path = remote_fs(url, "--workdir")
        fs.rm_file(path)


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
