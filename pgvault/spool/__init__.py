"""Spool layout and spool file helpers (stdlib only; durable writes are pgvault.fsutil).

    spool_dir/
      wal/        WAL segments, .partial, .backup and .history files, each with NAME.sha256
      logical/    <db>/<backup_id>/ {db}.dump + manifest.json, renamed in as a directory
      physical/   <backup_id>/ base.tar.zst, pg_wal.tar.zst, backup_manifest, manifest.json
      alerts/     alert files written where no broker is at hand (wal-archive); the
                  producer publishes and removes them
      tmp/        work files of producers and workers (same filesystem: rename is atomic)

A file or directory appears under its final name only by rename after fsync, so the
watcher never sees a partial artifact. Names starting with "." are in-progress files.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from pgvault import fsutil
from pgvault.errors import SpoolError

SUBDIRS = ("wal", "logical", "physical", "alerts", "tmp")
CHECKSUM_SUFFIX = ".sha256"

fsync_dir = fsutil.fsync_dir  # the producers' spelling of it


@contextlib.contextmanager
def exclusive(lock: Path, work_dir: Path, what: str) -> Iterator[None]:
    """Hold `lock` (flock) for one producer at a time; holding it, hidden `.*.tmp` work
    directories in `work_dir` can only be leftovers of a killed run: they are removed."""
    import fcntl

    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o640)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SpoolError(f"another {what} is running") from None
        if work_dir.is_dir():
            for stale in work_dir.glob(".*.tmp"):
                shutil.rmtree(stale, ignore_errors=True)
        yield
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every file and directory below root (a finished backup directory)."""
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            fsutil.fsync_file(os.path.join(dirpath, name))
        fsync_dir(dirpath)


def ensure_layout(spool_dir: Path, mode: int = 0o750) -> None:
    for sub in SUBDIRS:
        (spool_dir / sub).mkdir(parents=True, exist_ok=True, mode=mode)


def write_atomic(path: Path, data: bytes, mode: int = 0o640) -> None:
    """Write bytes to path via a hidden temp file, fsync, rename, fsync the directory."""
    try:
        fsutil.write_atomic(path, data, mode)
    except OSError as exc:
        raise SpoolError(f"cannot write {path}: {exc.strerror or exc}") from None


def checksum_path(data_path: Path) -> Path:
    return data_path.with_name(data_path.name + CHECKSUM_SUFFIX)


def read_checksum(data_path: Path) -> str | None:
    try:
        text = checksum_path(data_path).read_text().split()
    except OSError:
        return None
    return text[0] if text and len(text[0]) == 64 else None


def write_alert(
    spool_dir: Path, severity: str, check: str, subject: str, summary: str
) -> Path | None:
    """Leave an alert for the producer to publish. Best effort: never raises."""
    record = {
        "severity": severity,
        "check": check,
        "subject": subject,
        "summary": summary,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    path = spool_dir / "alerts" / f"{time.time_ns()}-{uuid.uuid4().hex[:8]}.json"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(record).encode())
    except (OSError, SpoolError):
        return None
    return path


def pending_alerts(spool_dir: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    directory = spool_dir / "alerts"
    if not directory.is_dir():
        return
    for path in sorted(directory.glob("[0-9]*.json")):
        try:
            yield path, json.loads(path.read_text())
        except (OSError, ValueError):
            continue
