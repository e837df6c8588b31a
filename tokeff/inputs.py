"""One bounded reader for every input file a user names (tables, datasets, grids, point lists).

A symlink to `/dev/zero`, a FIFO or a 1 GB sparse `.jsonl` must not hang tokeff or grow it until
the kernel kills it. So every input is checked before it is opened for reading, and read in
bounded chunks:

- it must exist and be a regular file (a directory, FIFO, socket or device is refused, naming it);
- its size must be within the limit, `MAX_INPUT_BYTES` (256 MiB; `TOKEFF_MAX_INPUT_MB` raises it);
- the read stops one chunk past the limit (a file that grows while read, or a /proc file whose
  size reads as 0, is refused too).

Each refusal is one line naming the field, the file and the limit (`tokeff.errors.UserError`).
"""

from __future__ import annotations

import os
import stat

from tokeff.errors import UserError

MAX_INPUT_BYTES = 256 * 2**20
_CHUNK = 2**20


def input_limit() -> int:
    """The size limit of one input file in bytes (`TOKEFF_MAX_INPUT_MB` overrides the default)."""
    text = os.environ.get("TOKEFF_MAX_INPUT_MB", "").strip()
    if not text:
        return MAX_INPUT_BYTES
    try:
        megabytes = float(text)
    except ValueError:
        raise UserError(f"TOKEFF_MAX_INPUT_MB: must be a number of MiB, got {text!r}") from None
    if not megabytes > 0 or megabytes != megabytes:
        raise UserError(f"TOKEFF_MAX_INPUT_MB: must be > 0, got {text!r}")
    return int(megabytes * 2**20)


def _mib(n: int) -> str:
    return f"{n / 2**20:.0f} MiB" if n >= 2**20 else f"{n} bytes"


def check_input_file(path: str | os.PathLike, field: str) -> str:
    """`path` as a string if it is a regular file within the size limit; else a one-line UserError."""
    path = os.fspath(path)
    if not str(path).strip():
        raise UserError(f"{field}: the path is empty; name a file")
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise UserError(f"{field}: file not found: {path}") from None
    except NotADirectoryError:
        raise UserError(f"{field}: file not found: {path} (a parent is a file)") from None
    except OSError as e:
        raise UserError(f"{field}: cannot read {path} ({os.strerror(e.errno) if e.errno else e})") from None
    if stat.S_ISDIR(info.st_mode):
        raise UserError(f"{field}: {path} is a directory, not a file")
    if not stat.S_ISREG(info.st_mode):
        what = ("a FIFO" if stat.S_ISFIFO(info.st_mode) else "a device" if stat.S_ISCHR(info.st_mode)
                or stat.S_ISBLK(info.st_mode) else "a socket" if stat.S_ISSOCK(info.st_mode) else "not a file")
        raise UserError(f"{field}: {path} is {what}, not a regular file; inputs are read from regular files")
    limit = input_limit()
    if info.st_size > limit:
        raise UserError(f"{field}: {path} is {_mib(info.st_size)}, over the {_mib(limit)} limit on one input "
                        "file (TOKEFF_MAX_INPUT_MB raises it)")
    return path


def read_input_bytes(path: str | os.PathLike, field: str) -> bytes:
    """The bytes of input file `path`, checked (`check_input_file`) and read in bounded chunks."""
    path = check_input_file(path, field)
    limit = input_limit()
    chunks, total = [], 0
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO swapped in late: no hang
    except OSError as e:
        raise UserError(f"{field}: cannot read {path} ({os.strerror(e.errno) if e.errno else e})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UserError(f"{field}: {path} is not a regular file; inputs are read from regular files")
        while True:
            chunk = os.read(fd, _CHUNK)
            if not chunk:
                break
            total += len(chunk)
            if total > limit:
                raise UserError(f"{field}: {path} is over the {_mib(limit)} limit on one input file "
                                "(TOKEFF_MAX_INPUT_MB raises it)")
            chunks.append(chunk)
    except OSError as e:
        raise UserError(f"{field}: cannot read {path} ({os.strerror(e.errno) if e.errno else e})") from None
    finally:
        os.close(fd)
    return b"".join(chunks)


def read_input_text(path: str | os.PathLike, field: str) -> str:
    """The UTF-8 text of input file `path` (bounded as `read_input_bytes`); binary files are refused."""
    data = read_input_bytes(path, field)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{field}: {os.fspath(path)} is not a UTF-8 text file") from None
