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

import hashlib
import os
import tarfile
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


def _write_proven(
    tar: tarfile.TarFile, member: tarfile.TarInfo, path: str, expect: tuple[int, str] | None
) -> bool:
    src = tar.extractfile(member)
    if src is None:
        raise RestoreError(f"{member.name}: unreadable member in the backup archive")
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        while chunk := src.read(CHUNK):
            digest.update(chunk)
            write_all(fd, chunk)
            size += len(chunk)
        os.fchmod(fd, member.mode & 0o700 or 0o600)
    finally:
        os.close(fd)
    os.utime(path, (member.mtime, member.mtime), follow_symlinks=False)
    if expect is None:
        return False
    if size != expect[0]:
        raise RestoreError(
            f"{member.name}: {size} bytes in the backup archive, backup_manifest says {expect[0]}"
        )
    if digest.hexdigest() != expect[1]:
        raise RestoreError(
            f"{member.name}: SHA-256 in the backup archive does not match backup_manifest"
        )
    return True


def extract_proven(archive: Path, dest: Path, proof: Proof, prefix: str = "") -> int:
    """Extract a .tar.zst into dest like safetar.extract_zst_tar, proving each member listed
    in the manifest (as `prefix + name`) while it is written; returns the member count."""
    dest.mkdir(parents=True, exist_ok=True)
    data_filter = getattr(tarfile, "data_filter", None)
    count = 0
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
                        target = os.path.join(dest, member.name)
                        if _write_proven(tar, member, target, proof.expected.get(name)):
                            proof.proven.add(name)
                    count += 1
    except (tarfile.TarError, zstandard.ZstdError, EOFError) as exc:
        raise RestoreError(f"{archive.name}: damaged archive: {exc}") from None
    return count
