"""Writing outputs so that nothing is lost: atomic files, and output directories tokeff owns.

Two promises, made here once for every command:

- **Atomic files.** `write_text`/`write_json` write a temp file beside the target and
  `os.replace` it into place, so a reader (or a kill) sees the old file or the new one, never half.
  The temp file is named `.NAME.tokeff-tmp-PID-XXXXXXXX.tmp`; one a killed process left is removed
  by the next command that takes the folder's lock (`remove_stale_temp_files`), and nothing else.
- **Never delete what tokeff did not create.** An output directory (`fit --out`, `backtest --out`,
  the demo's run folder, ...) carries a manifest, `.tokeff-output.json`, listing the files tokeff
  wrote there. A command may replace or remove only files in that manifest; any other file in the
  directory is left alone, and a non-empty directory without a manifest is refused outright.

`claim_output_dir` runs before any work (so bad paths fail in a second, not after a fit), and
`output_dir` stages the files in a hidden sibling folder that is renamed into place at the end.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import pathlib
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator
from typing import Any

import numpy as np

from tokeff.errors import UserError

MANIFEST = ".tokeff-output.json"
_STAGING = ".tokeff-staging-"
_TEMP_TAG = ".tokeff-tmp-"
# `write_bytes`'s temp file: "." + the target's name + the tag + the writer's pid + "-" + mkstemp's
# 8 random characters + ".tmp". Only a name of exactly this shape is ever removed as a leftover.
_TEMP_NAME = re.compile(r"\.(?P<target>.+)" + re.escape(_TEMP_TAG) + r"(?P<pid>[0-9]+)-[a-z0-9_]{8}\.tmp")


def is_remote(path: str | os.PathLike) -> bool:
    """An object-store path (gs://bucket/..., any fsspec URL): no atomic rename, no append, no flock
    there (workdirs there are locked by an object, `tokeff.ownership`; outputs are local)."""
    return "://" in str(path)


def join_path(root: str | os.PathLike, name: str) -> str:
    """`root/name` for a local directory or an object-store prefix alike."""
    return f"{str(root).rstrip('/')}/{name}" if is_remote(root) else os.path.join(os.fspath(root), name)


def json_default(value: Any) -> Any:
    """JSON encoder for numpy scalars/arrays and paths (non-finite floats become null)."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, pathlib.PurePath):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically: a temp file in the same folder, fsynced, then renamed."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}{_TEMP_TAG}{os.getpid()}-",
                               suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; an output gets the mode open() would give
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def remove_stale_temp_files(directory: str | os.PathLike) -> None:
    """Remove from `directory` the temp files `write_bytes` named whose writer is gone (killed
    between writing and renaming). Kept: any other name, however alike (a user's `.notes.tmp`),
    a link or folder of that name, and the temp file of a process still running."""
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        match = _TEMP_NAME.fullmatch(name)
        if match is None:
            continue
        pid = int(match["pid"])
        if pid == os.getpid() or pid_alive(pid):
            continue
        path = os.path.join(directory, name)
        with contextlib.suppress(OSError):
            if stat.S_ISREG(os.lstat(path).st_mode):
                os.unlink(path)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, value: Any, *, indent: int | None = 2, sort_keys: bool = False) -> None:
    """Write `value` as JSON to `path` atomically (numpy values allowed)."""
    write_text(path, json.dumps(value, indent=indent, sort_keys=sort_keys, default=json_default) + "\n")


def save_figure(fig, path: str | os.PathLike, *, dpi: int = 110) -> None:
    """Write a matplotlib figure as a PNG atomically (temp file, then rename) and close it."""
    import io as _io

    import matplotlib.pyplot as plt

    fig.tight_layout()
    buffer = _io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    write_bytes(path, buffer.getvalue())


def read_user_text(path: str, field: str) -> str:
    """The text of a file the user named in `field`, or a one-line UserError (missing, not a
    regular file, too large, not text): the bounded reader of `tokeff.inputs`."""
    from tokeff.inputs import read_input_text

    return read_input_text(path, field)


def read_manifest(path: str | os.PathLike) -> dict | None:
    """The manifest of a tokeff output directory, or None if `path` is not one."""
    try:
        with open(os.path.join(path, MANIFEST)) as f:
            manifest = json.load(f)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), list):
        return None
    return manifest


def check_writable_dir(path: str | os.PathLike, field: str) -> str:
    """Refuse (UserError) a directory path that cannot be created or written; create nothing."""
    path = os.path.abspath(os.fspath(path))
    for part in pathlib.Path(path).parts[1:]:
        if len(os.fsencode(part)) > 255:
            raise UserError(f"{field}: the name '{part[:40]}...' is too long ({len(part)} characters; the limit is 255)")
    if os.path.lexists(path) and not os.path.isdir(path):
        raise UserError(f"{field}: {path} is a file, not a directory")
    probe = path
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if os.path.lexists(parent) and not os.path.isdir(parent):
            raise UserError(f"{field}: {parent} is a file, not a directory")
        probe = parent
    if not os.path.isdir(probe):
        raise UserError(f"{field}: {probe} is not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"{field}: {probe} is not writable")
    return path


def claim_output_dir(path: str | os.PathLike, kind: str, *, field: str = "--out", force: bool = False,
                     allow_existing: bool = False) -> str:
    """Check, before any work, that `kind` outputs may be written at `path`; return its absolute path.

    Accepted: a path that does not exist yet, an empty directory, or a tokeff output directory
    (with `force` one of the same `kind`, or with `allow_existing` any, for commands that add files
    to one, like `allocate`).
    Refused, with nothing touched: an empty path, a file, a non-empty directory tokeff did not
    create, a tokeff workdir, an unwritable place, a directory another tokeff process is writing
    (the lock, `tokeff.ownership`, is held until the command returns). Under the lock, the staging
    folders and atomic-write temp files that killed tokeff processes left there are removed.
    """
    from tokeff.ownership import hold_output_lock, is_marker_in_flight, refuse_empty_path, workdir_kind

    if is_remote(refuse_empty_path(path, field)):
        raise UserError(f"{field}: {path}: an output directory must be local (its files are staged and renamed into "
                        "place, which an object store cannot do); write it here and copy it there")
    path = check_writable_dir(path, field)
    if os.path.isdir(path) and workdir_kind(path) is not None:
        raise UserError(f"{field}: {path} is a tokeff {workdir_kind(path)} workdir, not an output directory; "
                        "choose a new directory")
    if os.path.isdir(path) and [n for n in os.listdir(path) if not is_marker_in_flight(n)]:
        manifest = read_manifest(path)
        if manifest is None:
            raise UserError(f"{field}: {path} exists and is not empty, and tokeff did not create it; "
                            "choose a new directory")
        if not (force or allow_existing):
            raise UserError(f"{field}: {path} already holds a tokeff {manifest.get('kind', 'output')}; "
                            "choose a new directory, or pass --force to replace the files tokeff wrote there")
        if force and not allow_existing and manifest.get("kind", kind) != kind:
            # --force removes the files tokeff wrote there: only an output of the same kind
            # (`predict FIT --out FIT --force` would delete the fit it reads).
            raise UserError(f"{field}: {path} holds a tokeff {manifest['kind']}, and --force replaces only a "
                            f"tokeff {kind}; choose a new directory")
        if not os.access(path, os.W_OK | os.X_OK):
            raise UserError(f"{field}: {path} is not writable")
    hold_output_lock(path, field)  # until the command returns: one writer per output directory
    _remove_stale_staging(path)
    remove_stale_temp_files(path)  # under the lock: no other tokeff is writing there
    return path


@contextlib.contextmanager
def output_dir(path: str | os.PathLike, kind: str, *, field: str = "--out", force: bool = False,
               allow_existing: bool = False) -> Iterator[str]:
    """Stage outputs in a hidden sibling folder; on success move them into `path`.

    Yields the staging folder: write files there. A new `path` appears whole (one rename). Into an
    existing tokeff directory each file is moved atomically; files an earlier run listed in the
    manifest but this one did not write are removed only if `force` (replacing an output).
    Files not in the manifest are never touched. On error the staging folder is removed.
    """
    from tokeff.ownership import holds_output_lock, release_output_lock

    held_before = holds_output_lock(os.path.abspath(os.fspath(path)))
    path = claim_output_dir(path, kind, field=field, force=force, allow_existing=allow_existing)
    try:
        yield from _stage_and_move(path, kind, field, force, allow_existing)
    finally:
        if not held_before:  # claimed here (a library call): released here
            release_output_lock(path)


def _stage_and_move(path: str, kind: str, field: str, force: bool, allow_existing: bool) -> Iterator[str]:
    parent = os.path.dirname(path)
    try:
        os.makedirs(parent, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=f"{_STAGING}{os.getpid()}-", dir=parent)
        os.chmod(staging, 0o777 & ~_umask())  # mkdtemp makes 0700: the output gets the mode mkdir would give
    except OSError as e:
        raise _disk_error(e, parent, field) from None
    try:
        yield staging
        written = sorted(str(p.relative_to(staging)) for p in pathlib.Path(staging).rglob("*") if p.is_file())
        if not os.path.exists(path):
            _write_manifest(staging, kind, written)
            os.rename(staging, path)
            return
        manifest = read_manifest(path) or {"files": []}
        owned = set(manifest["files"])
        for rel in written:
            target = os.path.join(path, rel)
            if os.path.lexists(target) and rel not in owned:
                raise UserError(f"{field}: {target} exists and tokeff did not write it; choose a new directory")
        kind_after = manifest.get("kind", kind) if allow_existing else kind
        # The manifest names the files before they move in: a kill between the moves and the final
        # manifest leaves files tokeff wrote, listed as its own, so the rerun may replace them.
        _write_manifest(path, kind_after, sorted(owned | set(written)))
        for rel in written:
            os.makedirs(os.path.dirname(os.path.join(path, rel)), exist_ok=True)
            os.replace(os.path.join(staging, rel), os.path.join(path, rel))
        keep = set(written)
        if force:
            for rel in owned - keep:
                with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                    os.unlink(os.path.join(path, rel))
        else:
            keep |= {rel for rel in owned if os.path.exists(os.path.join(path, rel))}
        _write_manifest(path, kind_after, sorted(keep))
    except OSError as e:
        raise _disk_error(e, path, field) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _write_manifest(directory: str, kind: str, files: list[str]) -> None:
    write_json(os.path.join(directory, MANIFEST), {"kind": kind, "files": files})


def _remove_stale_staging(path: str) -> None:
    """Remove staging folders beside `path` left by killed tokeff processes (their pid is gone)."""
    parent = os.path.dirname(path)
    with contextlib.suppress(OSError):
        for name in os.listdir(parent):
            if not name.startswith(_STAGING):
                continue
            pid = name[len(_STAGING):].split("-", 1)[0]
            if pid.isdigit() and not pid_alive(int(pid)):
                shutil.rmtree(os.path.join(parent, name), ignore_errors=True)


def pid_alive(pid: int) -> bool:
    """Whether process `pid` runs on this host (one we may not signal counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


def _disk_error(error: OSError, where: str, field: str) -> Exception:
    """A one-line error for a full disk or an unwritable place; other errors pass through."""
    if error.errno == errno.ENOSPC:
        return DiskFullError(f"{field}: no space left on the device holding {where}")
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return UserError(f"{field}: {where} is not writable ({os.strerror(error.errno)})")
    return error


def is_disk_full(error: BaseException | None) -> bool:
    """Whether `error`, or an error it was raised from, is a full disk (ENOSPC) however a library
    wrapped it (orbax, tensorstore and HDF5 re-raise it as their own exception types)."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            return True
        if "No space left on device" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


class DiskFullError(RuntimeError):
    """The disk filled up while writing: the CLI prints one line and exits 1 (not bad input)."""
