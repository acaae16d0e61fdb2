"""`pgvault wal-archive PATH NAME`: PostgreSQL's archive_command.

Copies one WAL file into spool_dir/wal/ with its sha256 computed in the same pass,
writes NAME.sha256, fsyncs both, then publishes the checksum and, last, the file by a
no-clobber hard link (fsyncing the directory after each), so a name in the spool always
holds complete bytes and always has its checksum. Durable writes go through
pgvault.fsutil. Exit codes (DESIGN invariant 1):

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

from pgvault import fsutil
from pgvault.errors import ArchiveConflict, ArchiveError, PgvaultError, UsageError
from pgvault.producers.lineage import Lineage
from pgvault.walfile import WalName, parse_name, read_header

CHUNK = 1 << 20
CHECKSUM_SUFFIX = ".sha256"  # same as pgvault.spool.CHECKSUM_SUFFIX (not imported: cost)


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
                fsutil.write_all(fd, chunk)
                total += n
            _check_segment(wal, first, total)
            os.fsync(fd)
        finally:
            os.close(fd)
    return digest.hexdigest(), first


def archive(src: str, name: str, spool_dir: str) -> str:
    """Put `src` into the spool as `name`. Returns "archived" or "duplicate".

    Raises UsageError (exit 2) for bad arguments and ArchiveError (exit 1, one line) for
    everything else; on any failure nothing new is published and no temp file is left."""
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
    try:
        return _archive(src, wal, spool_dir, os.path.join(wal_dir, name))
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise ArchiveError(f"{name}: spool {spool_dir} is full (no space left)") from None
        raise ArchiveError(f"{name}: cannot write to spool: {exc.strerror or exc}") from None


def _checksum_line(sha: str, name: str) -> bytes:
    """sha256sum(1) format, so an operator can run `sha256sum -c` in the spool."""
    return f"{sha}  {name}\n".encode()


def _archive(src: str, wal: WalName, spool_dir: str, dest: str) -> str:
    """Copy, then publish in an order that never shows a file without its checksum.

    Both temp files (data and checksum) are written and fsynced first; the lineage is
    made durable; then the checksum is published (a checksum without its file is
    ignored by every reader), the directory fsynced, and the file published by a
    no-clobber hard link and the directory fsynced again. A failure at any step removes
    what this call published and its temp files: exit 1 means the spool has nothing new.
    """
    if os.path.exists(dest):
        return _compare_existing(src, dest, wal.name, spool_dir, wal)
    wal_dir = os.path.dirname(dest)
    sum_dest = dest + CHECKSUM_SUFFIX
    tmp = fsutil.temp_path(dest)
    sum_tmp = fsutil.temp_path(sum_dest)
    published: list[str] = []
    try:
        sha, first = _copy_with_digest(src, tmp, wal)
        fsutil.write_file(sum_tmp, _checksum_line(sha, wal.name))
        # the lineage grows (and is durable) before the file is published: a crash in
        # between leaves a known timeline without its file, which the retry then adds,
        # never a published history file whose timeline the archive does not know
        _admit(spool_dir, wal, first, tmp)
        try:
            os.link(sum_tmp, sum_dest)
        except FileExistsError:
            if os.path.exists(dest):  # published meanwhile by a concurrent call
                return _compare_existing(src, dest, wal.name, spool_dir, wal)
            os.replace(sum_tmp, sum_dest)  # an orphan of an attempt that failed or crashed
        published.append(sum_dest)
        fsutil.fsync_dir(wal_dir)
        try:
            os.link(tmp, dest)  # no-clobber publish: fails if the name exists
        except FileExistsError:  # published meanwhile by a concurrent call
            outcome = _compare_existing(src, dest, wal.name, spool_dir, wal)
            published.clear()  # same content, so the same checksum: keep it
            return outcome
        published.append(dest)
        fsutil.fsync_dir(wal_dir)
        published.clear()
    finally:
        for path in reversed(published):  # only when a step after publishing failed
            fsutil.unlink_quietly(path)
        fsutil.unlink_quietly(tmp)
        fsutil.unlink_quietly(sum_tmp)
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
            fsutil.write_atomic(dest + CHECKSUM_SUFFIX, _checksum_line(sha, name))
        fsutil.fsync_dir(os.path.dirname(dest))
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
    except Exception as exc:  # a bug or an unforeseen OS error: still one line, exit 1
        text = " ".join(str(exc).split())
        print(
            f"pgvault wal-archive: error: unexpected {type(exc).__name__}: {text}", file=sys.stderr
        )
        return 1
    return 0
