"""Extracting a base backup and proving it against backup_manifest in the same pass.

Each regular member's bytes are hashed (SHA-256) while they are written, and the digest
and size compared with PostgreSQL's backup_manifest before the next member is read: a
member that does not match fails the restore (pitr undoes it: the target is left empty).
Extraction safety is safetar's (`_checked`: no absolute or `..` paths, no links, no
special files, nothing that resolves outside the target; `tarfile.data_filter` on top),
and files are opened with O_NOFOLLOW.

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
import tarfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

import zstandard

from pgvault.errors import BackupError, RestoreError
from pgvault.fsutil import write_all
from pgvault.producers.basebackup_verify import load_manifest
from pgvault.restore.safetar import _checked

CHUNK = 1 << 20


@dataclass
class Proof:
    """The manifest's SHA-256 entries, and the paths extraction proved against them."""

    expected: dict[str, tuple[int, str]]
    usable: bool  # every file entry is SHA256 with a plain Path
    proven: set[str] = field(default_factory=set)

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
        """Every file of the manifest proven by extraction."""
        return self.usable and self.proven == set(self.expected)

    def verifybackup_flags(self) -> list[str]:
        """pg_verifybackup re-hashes nothing extraction proved already."""
        return ["--skip-checksums"] if self.complete else []


class _Writer:
    """Hashes and writes members in a second thread while the calling thread decompresses
    and parses the tar (zstd, sha256 and write all release the GIL): the proof costs
    little more wall time than the extraction alone. Members are written in order; the
    first failure is raised at the next put() or at finish()."""

    def __init__(self, proof: Proof) -> None:
        self.proof = proof
        self.items: queue.Queue[tuple[Any, ...] | None] = queue.Queue(maxsize=16)
        self.error: BaseException | None = None
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
        current: list[Any] = []
        while (item := self.items.get()) is not None:
            if self.error is not None:
                continue  # drain: the caller raises at its next put()
            try:
                current = self._handle(item, current)
            except BaseException as exc:
                self.error = exc
                if current and current[0] is not None:
                    with contextlib.suppress(OSError):
                        os.close(current[0])
                current = []

    def _handle(self, item: tuple[Any, ...], current: list[Any]) -> list[Any]:
        op = item[0]
        if op == "data":
            current[1].update(item[1])
            write_all(current[0], item[1])
            current[2] += len(item[1])
            return current
        if op == "open":
            _, path, member, expect, name = item
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            return [fd, hashlib.sha256(), 0, path, member, expect, name]
        fd, digest, size, path, member, expect, name = current
        os.fchmod(fd, member.mode & 0o700 or 0o600)
        current[0] = None  # closed: never closed twice (the number may be reused by then)
        os.close(fd)
        os.utime(path, (member.mtime, member.mtime), follow_symlinks=False)
        if expect is not None:
            _check(member.name, size, digest.hexdigest(), expect)
            self.proof.proven.add(name)
        return []


def _check(name: str, size: int, sha256: str, expect: tuple[int, str]) -> None:
    if size != expect[0]:
        raise RestoreError(
            f"{name}: {size} bytes in the backup archive, backup_manifest says {expect[0]}"
        )
    if sha256 != expect[1]:
        raise RestoreError(f"{name}: SHA-256 in the backup archive does not match backup_manifest")


def extract_proven(archive: Path, dest: Path, proof: Proof, prefix: str = "") -> int:
    """Extract a .tar.zst into dest like safetar.extract_zst_tar, proving each member listed
    in the manifest (as `prefix + name`) while it is written; returns the member count."""
    dest.mkdir(parents=True, exist_ok=True)
    data_filter = getattr(tarfile, "data_filter", None)
    count = 0
    writer = _Writer(proof)
    try:
        with archive.open("rb") as fh:
            reader = zstandard.ZstdDecompressor().stream_reader(fh)
            with tarfile.open(fileobj=cast(IO[bytes], reader), mode="r|") as tar:
                for checked in _checked(tar, dest):
                    member = data_filter(checked, str(dest)) if data_filter else checked
                    if not member.isfile() and data_filter is not None:
                        tar.extract(checked, dest, filter="data")
                    elif not member.isfile():
                        tar.extract(checked, dest)
                    else:
                        name = prefix + member.name
                        src = tar.extractfile(member)
                        if src is None:
                            raise RestoreError(f"{member.name}: unreadable member in the archive")
                        target = os.path.join(dest, member.name)
                        writer.put("open", target, member, proof.expected.get(name), name)
                        while chunk := src.read(CHUNK):
                            writer.put("data", chunk)
                        writer.put("close")
                    count += 1
        writer.finish()
    except (tarfile.TarError, zstandard.ZstdError, EOFError) as exc:
        raise RestoreError(f"{archive.name}: damaged archive: {exc}") from None
    finally:
        if writer.thread.is_alive():
            writer.error = writer.error or RestoreError("extraction stopped")
            writer.end()
    return count
