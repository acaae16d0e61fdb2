"""`pgvault wal-archive PATH NAME`: PostgreSQL's archive_command.

Copies one WAL file into spool_dir/wal/ with its sha256 computed in the same pass,
fsyncs file and directory, and publishes it by a no-clobber hard link, so a name in the
spool always holds complete bytes. Exit codes (DESIGN invariant 1):

    0  the file is durably in the spool (or was already there with the same bytes)
    1  it is not: same name with different content, I/O error, disk full
    2  bad arguments: unknown name pattern, missing source, bad config

This runs once per WAL segment, so it imports only os, hashlib and the stdlib-only
pgvault modules (invariant 2: no pydantic, pika or boto3; in practice not even pathlib).
"""

from __future__ import annotations

import errno
import hashlib
import os
import sys

from pgvault.errors import ArchiveConflict, ArchiveError, PgvaultError, UsageError
from pgvault.producers.lineage import Lineage
from pgvault.walfile import WalName, parse_name, read_header

CHUNK = 1 << 20
CHECKSUM_SUFFIX = ".sha256"  # same as pgvault.spool.CHECKSUM_SUFFIX (not imported: cost)


def _fsync_dir(path: str) -> None:
    # spool.fsync_dir does the same with pathlib, which this path does not import
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink_quietly(path: str) -> None:
    try:  # noqa: SIM105 - contextlib costs an import on this path
        os.unlink(path)
    except OSError:
        pass


def _sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            digest.update(view[:n])
    return digest.hexdigest()


def _check_segment(wal: WalName, first: bytes, total: int) -> None:
    """A segment must have a valid page header for its own position and full length."""
    if wal.type not in ("segment", "partial"):
        return
    try:
        header = read_header(first)
    except ValueError as exc:
        raise ArchiveError(f"{wal.name}: not a WAL segment: {exc}") from None
    expected = wal.start_lsn(header.seg_size)
    if header.pageaddr != expected:
        raise ArchiveError(
            f"{wal.name}: page address {header.pageaddr:X} does not match its name "
            f"(expected {expected:X}); refusing a misnamed segment"
        )
    if wal.type == "segment" and total != header.seg_size:
        raise ArchiveError(f"{wal.name}: size {total} is not the segment size {header.seg_size}")


def _write_file(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy_with_digest(src: str, tmp: str, wal: WalName) -> tuple[str, bytes]:
    digest = hashlib.sha256()
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    total = 0
    first = b""
    with open(src, "rb", buffering=0) as fin:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        try:
            while n := fin.readinto(buf):
                if not first:
                    first = bytes(view[: min(n, 64)])
                chunk = view[:n]
                digest.update(chunk)
                while chunk:
                    chunk = chunk[os.write(fd, chunk) :]
                total += n
            _check_segment(wal, first, total)
            os.fsync(fd)
        finally:
            os.close(fd)
    return digest.hexdigest(), first


def archive(src: str, name: str, spool_dir: str) -> str:
    """Put `src` into the spool as `name`. Returns "archived" or "duplicate"."""
    try:
        wal = parse_name(name)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if not os.path.isfile(src):
        raise UsageError(f"source {src} does not exist or is not a regular file")
    wal_dir = os.path.join(spool_dir, "wal")
    try:
        os.makedirs(wal_dir, exist_ok=True)
    except OSError as exc:
        raise ArchiveError(f"cannot create spool directory {wal_dir}: {exc.strerror}") from None
    dest = os.path.join(wal_dir, name)
    if os.path.exists(dest):
        return _compare_existing(src, dest, name, spool_dir, wal)
    tmp = os.path.join(wal_dir, f".{name}.{os.getpid()}.tmp")
    sum_tmp = tmp + CHECKSUM_SUFFIX
    try:
        sha, first = _copy_with_digest(src, tmp, wal)
        # the lineage grows (and is durable) before the file is published: a crash in
        # between leaves a known timeline without its file, which the retry then adds,
        # never a published history file whose timeline the archive does not know
        _admit(spool_dir, wal, first, tmp)
        try:
            os.link(tmp, dest)  # no-clobber publish: fails if the name exists
        except FileExistsError:
            return _compare_existing(src, dest, name, spool_dir, wal)
        _write_file(sum_tmp, f"{sha}  {name}\n".encode())
        os.replace(sum_tmp, dest + CHECKSUM_SUFFIX)
        _fsync_dir(wal_dir)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise ArchiveError(f"{name}: spool {spool_dir} is full (no space left)") from None
        raise ArchiveError(f"{name}: cannot write to spool: {exc.strerror or exc}") from None
    finally:
        _unlink_quietly(tmp)
        _unlink_quietly(sum_tmp)
    return "archived"


def _alert(spool_dir: str, severity: str, check: str, subject: str, summary: str) -> None:
    from pathlib import Path  # the rare path may pay for pathlib

    from pgvault import spool

    spool.write_alert(Path(spool_dir), severity, check, subject, summary)


def _admit(spool_dir: str, wal: WalName, first: bytes, path: str) -> None:
    """Check the file against the archive's lineage; record what it adds, durably."""
    lineage = Lineage.load(spool_dir)
    history = None
    if wal.type == "history":
        try:
            with open(path, encoding="utf-8") as fh:
                history = fh.read()
        except ValueError:
            raise ArchiveError(f"{wal.name}: history file is not text; refusing it") from None
    try:
        note = lineage.admit(wal, first, history)
    except ArchiveError as exc:
        _alert(spool_dir, "critical", "wal_archive_foreign", wal.name, str(exc))
        raise
    if note:
        lineage.save()
        if wal.type == "history":
            _alert(
                spool_dir,
                "info",
                "new_timeline",
                wal.name,
                f"{note}: a promotion or `restore pitr --as-primary`. If neither was "
                "planned, find the cluster that promoted.",
            )


def _compare_existing(src: str, dest: str, name: str, spool_dir: str, wal: WalName) -> str:
    sha = _sha256_of(src)
    if sha == _sha256_of(dest):
        # finish what an interrupted earlier attempt may have left undone: lineage,
        # checksum file, and durability of the file and its directory entry
        with open(dest, "rb") as fh:
            _admit(spool_dir, wal, fh.read(64), dest)
            os.fsync(fh.fileno())
        if not os.path.exists(dest + CHECKSUM_SUFFIX):
            tmp = f"{dest}.{os.getpid()}.sumtmp"
            _write_file(tmp, f"{sha}  {name}\n".encode())
            os.replace(tmp, dest + CHECKSUM_SUFFIX)
        _fsync_dir(os.path.dirname(dest))
        return "duplicate"
    _alert(
        spool_dir,
        "critical",
        "wal_archive_conflict",
        name,
        f"PostgreSQL offered {name} again with different content; the spool copy was kept "
        "and the new one refused. Another cluster may be archiving into this spool.",
    )
    raise ArchiveConflict(
        f"{name} is already archived with different content; refusing to overwrite"
    )


USAGE = "usage: pgvault [--config FILE] wal-archive PATH NAME"


def main(argv: list[str], config: str | None = None) -> int:
    """Entry point used by the fast dispatcher in pgvault.__main__."""
    from pgvault.lightconf import load_light

    if len(argv) != 2:
        print(f"pgvault wal-archive: error: expected PATH and NAME. {USAGE}", file=sys.stderr)
        return 2
    try:
        conf = load_light(config)
        archive(argv[0], argv[1], conf.spool_dir)
    except PgvaultError as exc:
        print(f"pgvault wal-archive: error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0
