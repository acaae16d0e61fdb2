"""Extracting a base backup and proving it against backup_manifest in the same pass.

Each regular member's bytes are hashed (SHA-256) while they are written, and the digest
and size compared with PostgreSQL's backup_manifest before the next member is read: a
member that does not match fails the restore (pitr undoes it: the target is left empty).
Extraction safety is safetar's rules, applied to tarstream's members (no absolute or
`..` paths, no links, no special files, nothing that resolves outside the target; modes
masked to the owner), and files are opened with O_NOFOLLOW. The archive is read by
tarstream (large decompressed reads, member data as views, no copies), hashed in this
thread and written in a second one.

`Proof` records which manifest paths were proven this way. When every file the manifest
lists was proven, the separate full `pg_verifybackup` pass (re-reading and re-hashing the
whole data directory) proves nothing new about the contents, and pitr_files runs it with
`--skip-checksums` instead: it still checks what extraction does not (the manifest's own
checksum, that no file is missing or extra and every size matches on disk after
everything was extracted, and that the WAL the backup needs parses). A manifest pgvault
cannot prove from (another checksum algorithm, encoded paths) leaves the full pass on.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pgvault.errors import BackupError, RestoreError
from pgvault.fsutil import write_all
from pgvault.producers.basebackup_verify import load_manifest
from pgvault.restore.safetar import safe_target
from pgvault.restore.tarstream import DIRECTORY, TarStream

CHUNK = 1 << 20


@dataclass
class Proof:
    """The manifest's SHA-256 entries, and the paths extraction proved against them."""

    expected: dict[str, tuple[int, str]]
    usable: bool  # every file entry is SHA256 with a plain Path
    proven: set[str] = field(default_factory=set)
    # a partial restore's placeholders: zero-filled, never written, not proven
    skipped: set[str] = field(default_factory=set)
    bytes_written: int = 0
    bytes_skipped: int = 0

    @classmethod
    def of(cls, manifest_path: Path) -> Proof:
        try:
            data: dict[str, Any] = load_manifest(manifest_path)
        except BackupError as exc:
            raise RestoreError(str(exc)) from None
        expected = {}
        usable = True
        for f in data["Files"]:
            if f.get("Checksum-Algorithm") != "SHA256" or "Encoded-Path" in f:
                usable = False
                continue
            expected[f["Path"]] = (int(f["Size"]), str(f["Checksum"]))
        return cls(expected, usable)

    @property
    def complete(self) -> bool:
        """Every file of the manifest proven by extraction, but the placeholders a partial
        restore left (pg_verifybackup is told to ignore their directories)."""
        return self.usable and set(self.expected) - self.proven <= self.skipped

    def verifybackup_flags(self) -> list[str]:
        """pg_verifybackup re-hashes nothing extraction proved already."""
        return ["--skip-checksums"] if self.complete else []


# threads writing files: the kernel's page-cache copy is most of a restore's CPU. On this
# 2-core machine 1 and 2 measure the same (bench/extract.py); with more cores the kernel's
# part of the writes runs on two
WRITERS = 2


class _Writer:
    """Writes members in a thread of its own while the calling thread decompresses,
    parses and hashes (zstd, sha256 and write all release the GIL): the proof costs little
    more wall time than the extraction alone. A member's items go to one writer, in order;
    the first failure is raised at the next put() or at finish()."""

    def __init__(self) -> None:
        self.items: queue.Queue[tuple[Any, ...] | None] = queue.Queue(maxsize=16)
        self.error: BaseException | None = None
        self.fd: int | None = None
        self.thread = threading.Thread(target=self._run, name="pgvault-extract", daemon=True)
        self.thread.start()

    def put(self, *item: Any) -> None:
        """Queue one item; raises the writer's failure instead of waiting on a full queue
        for a thread that stopped taking items."""
        while True:
            if self.error is not None:
                raise self.error
            if not self.thread.is_alive():
                raise RestoreError("extraction stopped: the writer thread ended")
            try:
                self.items.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def end(self) -> None:
        """Tell the writer to stop (it drains what is queued); never blocks on a dead one."""
        while self.thread.is_alive():
            try:
                self.items.put(None, timeout=0.2)
                break
            except queue.Full:
                continue
        self.thread.join()

    def finish(self) -> None:
        self.end()
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        try:
            while (item := self.items.get()) is not None:
                if self.error is not None:
                    continue  # drain: the caller raises at its next put()
                try:
                    self._handle(item)
                except BaseException as exc:
                    self.error = exc
                    self._drop_fd()
        finally:  # stopped in the middle of a member (the reader failed): close it
            self._drop_fd()

    def _drop_fd(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None

    def _handle(self, item: tuple[Any, ...]) -> None:
        op = item[0]
        if op == "data":
            assert self.fd is not None
            write_all(self.fd, item[1])
        elif op == "open":
            self.fd = _create(item[1])
        elif op == "placeholder":  # zero-filled, sparse: the size only
            _, path, mode, size = item
            fd = _create(path)
            try:
                os.ftruncate(fd, size)
                os.fchmod(fd, mode & 0o700 or 0o600)
            finally:
                os.close(fd)
        else:  # "close"
            _, path, mode, mtime = item
            assert self.fd is not None
            fd, self.fd = self.fd, None  # closed once: the number may be reused by then
            try:
                os.fchmod(fd, mode & 0o700 or 0o600)
            finally:
                os.close(fd)
            os.utime(path, (mtime, mtime), follow_symlinks=False)


def _create(path: str) -> int:
    """A member's file, its directory made first; never through a link (O_NOFOLLOW)."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)


def _check(name: str, size: int, sha256: str, expect: tuple[int, str]) -> None:
    if size != expect[0]:
        raise RestoreError(
            f"{name}: {size} bytes in the backup archive, backup_manifest says {expect[0]}"
        )
    if sha256 != expect[1]:
        raise RestoreError(f"{name}: SHA-256 in the backup archive does not match backup_manifest")


def extract_proven(
    archive: Path,
    dest: Path,
    proof: Proof,
    prefix: str = "",
    placeholder: Callable[[str], bool] | None = None,
) -> int:
    """Extract a .tar.zst into dest like safetar.extract_zst_tar, proving each member listed
    in the manifest (as `prefix + name`) while it is written; returns the member count.
    A file member for which `placeholder(name)` is true (a partial restore's other
    databases) becomes a sparse zero-filled file of its size: its bytes are read past,
    neither written nor proven (Proof.skipped)."""
    dest.mkdir(parents=True, exist_ok=True)
    root = os.path.realpath(dest)
    count = files = 0
    seen: set[str] = set()
    writers = [_Writer() for _ in range(WRITERS)]
    try:
        with archive.open("rb") as fh:
            tar = TarStream(fh, archive.name)
            for member in tar.members():
                target = safe_target(root, member.name)
                count += 1
                if member.kind == DIRECTORY:
                    os.makedirs(target, mode=0o700, exist_ok=True)
                    os.chmod(target, member.mode & 0o700 or 0o700)
                    continue
                if target in seen:  # two writers must never write one path
                    raise RestoreError(f"{member.name}: twice in the backup archive")
                seen.add(target)
                # files alternate between the writers (a big relation's 1 GiB segments too)
                writer = writers[files % WRITERS]
                files += 1
                name = prefix + member.name
                if placeholder is not None and placeholder(member.name):
                    writer.put("placeholder", target, member.mode, member.size)
                    tar.skip()
                    proof.skipped.add(name)
                    proof.bytes_skipped += member.size
                    continue
                proof.bytes_written += member.size
                digest = hashlib.sha256()
                size = 0
                writer.put("open", target, member.mode, member.mtime)
                for chunk in tar.data():
                    digest.update(chunk)
                    size += len(chunk)
                    writer.put("data", chunk)
                writer.put("close", target, member.mode, member.mtime)
                if (expect := proof.expected.get(name)) is not None:
                    _check(member.name, size, digest.hexdigest(), expect)
                    proof.proven.add(name)
        for writer in writers:
            writer.finish()
    finally:
        for writer in writers:
            if writer.thread.is_alive():
                writer.error = writer.error or RestoreError("extraction stopped")
                writer.end()
    return count
