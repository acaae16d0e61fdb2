"""Durable file writes, shared by the spool, the archive_command, the lineage and keys.

Stdlib only, and only `os` and `hashlib` at that: `wal-archive` (PostgreSQL's
archive_command, once per WAL segment) imports this module, so no pathlib, uuid,
contextlib or tempfile here. Paths are `str` or any `os.PathLike[str]`.

The rules every writer follows:
- `write_all` loops until every byte is written (os.write may write fewer);
- data is fsynced before it is published under its final name, and the directory is
  fsynced after the rename, so a crash leaves the old name or the new bytes, never a
  name holding partial bytes;
- temp files are hidden siblings (`.NAME.<pid>.<random>.tmp`, same directory, so the
  rename is atomic) and are removed on every failure path.

Functions raise OSError; callers translate it into their pgvault error at their boundary.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable

from pgvault.errors import IntegrityError

StrPath = str | os.PathLike[str]
CHUNK = 1 << 20
TEMP_SUFFIX = ".tmp"


def write_all(fd: int, data: bytes | bytearray | memoryview) -> int:
    """Write every byte of data to fd, looping over short writes. Returns len(data)."""
    view = memoryview(data).cast("B")
    total = len(view)
    while view:
        n = os.write(fd, view)
        if n <= 0:  # pragma: no cover - os.write raises rather than return 0 on files
            raise OSError(f"write returned {n}")
        view = view[n:]
    return total


def fsync_file(path: StrPath) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: StrPath) -> None:
    """Make a directory's entries (a rename, a link, an unlink) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def unlink_quietly(path: StrPath) -> None:
    try:  # noqa: SIM105 - contextlib costs an import on the archive_command path
        os.unlink(path)
    except OSError:
        pass


def temp_path(path: StrPath) -> str:
    """A hidden, unique sibling of path for write-then-rename."""
    directory, name = os.path.split(os.fspath(path))
    return os.path.join(directory, f".{name}.{os.getpid()}.{os.urandom(4).hex()}{TEMP_SUFFIX}")


def write_file(path: StrPath, data: bytes | bytearray | memoryview, mode: int = 0o640) -> None:
    """Create path (it must not exist), write all of data and fsync it. On failure the
    partial file is removed. No rename, no directory fsync: the caller publishes it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        unlink_quietly(path)
        raise


def write_atomic(path: StrPath, data: bytes | bytearray | memoryview, mode: int = 0o640) -> None:
    """Replace path with data durably: hidden temp file, write all, fsync, rename,
    fsync the directory. Readers see the old content or the new, never a mix; on
    failure no temp file is left."""
    tmp = temp_path(path)
    write_file(tmp, data, mode)
    try:
        os.replace(tmp, path)
    except BaseException:
        unlink_quietly(tmp)
        raise
    fsync_dir(os.path.dirname(os.fspath(path)) or ".")


def copy_verified(
    src: StrPath,
    dest: StrPath,
    sha256: str,
    *,
    advance: Callable[[int], None] | None = None,
) -> int:
    """Copy src to dest (atomically, via a hidden temp file) only if its bytes hash to
    sha256: the verified copy out of the spool. Returns the number of bytes copied.

    Raises pgvault.errors.IntegrityError on a mismatch (dest untouched, no temp file
    left) and OSError when src cannot be read or dest written. The copy is not fsynced:
    it feeds a restore, which re-creates it after a crash."""
    tmp = temp_path(dest)
    digest = hashlib.sha256()
    total = 0
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    try:
        with open(src, "rb", buffering=0) as fin:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
            try:
                while n := fin.readinto(buf):
                    chunk = view[:n]
                    digest.update(chunk)
                    write_all(fd, chunk)
                    total += n
                    if advance is not None:
                        advance(n)
            finally:
                os.close(fd)
        actual = digest.hexdigest()
        if actual != sha256:
            raise IntegrityError(
                f"{os.path.basename(os.fspath(src))}: spool copy sha256 {actual[:12]}... "
                f"does not match its recorded {sha256[:12]}..."
            )
        os.replace(tmp, dest)
    finally:
        unlink_quietly(tmp)
    return total
