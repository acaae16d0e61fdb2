"""Finding finished artifacts in the spool and describing them as `ready` events.

A WAL artifact is `wal/NAME` (NAME a valid WAL file name; its sha256 comes from the
`NAME.sha256` file wal-archive wrote, or is computed). A backup artifact is a directory
`logical/<db>/<backup_id>/` or `physical/<backup_id>/` holding `manifest.json`, which
lists the other files with their sizes and sha256 and is itself the commit marker.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pgvault import spool
from pgvault.errors import ManifestError
from pgvault.schemas import ArtifactEvent, FileInfo
from pgvault.schemas.manifest import (
    MANIFEST_NAME,
    LogicalManifest,
    PhysicalManifest,
    parse_artifact_manifest,
)
from pgvault.storage.codec import sha256_file
from pgvault.walfile import parse_name

log = logging.getLogger(__name__)
MANIFEST = MANIFEST_NAME


@dataclass
class SpoolArtifact:
    kind: str
    name: str
    path: Path  # the WAL file, or the backup directory
    files: list[FileInfo] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def file_path(self, filename: str) -> Path:
        return self.path if self.kind in ("wal", "history") else self.path / filename

    def all_paths(self) -> list[Path]:
        if self.kind in ("wal", "history"):
            return [self.path, spool.checksum_path(self.path)]
        return [self.path]

    def discard(self) -> None:
        """Remove this artifact's spool copy (file + checksum, or the backup directory)."""
        for path in self.all_paths():
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)

    def ready_event(self, cluster: str, reupload: bool = False) -> ArtifactEvent:
        return ArtifactEvent(
            cluster=cluster,
            kind=self.kind,
            state="ready",
            name=self.name,
            files=tuple(self.files),
            meta=self.meta,
            reupload=reupload,
        )


def _wal_artifact(path: Path) -> SpoolArtifact | None:
    try:
        wal = parse_name(path.name)
    except ValueError:
        return None
    try:
        if not path.is_file():
            return None
        sha = spool.read_checksum(path)
        size = path.stat().st_size
        if sha is None:
            digest = sha256_file(path)
            sha, size = digest.sha256, digest.size
    except OSError as exc:
        log.warning("spool %s unreadable (%s); skipped", path, exc.strerror)
        return None
    return SpoolArtifact(
        wal.kind,
        wal.name,
        path,
        [FileInfo(name=wal.name, size=size, sha256=sha)],
        {"wal_type": wal.type, "timeline": wal.timeline},
    )


def read_manifest(
    directory: Path, kind: str, name: str
) -> LogicalManifest | PhysicalManifest | None:
    """The validated manifest.json of backup `kind/name`; None while it has none (not
    finished). Raises ManifestError for an invalid one, or one of another backup."""
    try:
        raw = (directory / MANIFEST).read_bytes()
    except OSError:
        return None
    return parse_artifact_manifest(raw, kind, name)


def _backup_artifact(kind: str, name: str, directory: Path) -> SpoolArtifact | None:
    try:
        return _describe_backup(kind, name, directory)
    except ManifestError as exc:
        log.warning("spool %s; left alone", exc)
        return None
    except OSError as exc:
        log.warning("spool %s/%s: unusable manifest.json (%s); left alone", kind, name, exc)
        return None


def _describe_backup(kind: str, name: str, directory: Path) -> SpoolArtifact | None:
    manifest = read_manifest(directory, kind, name)
    if manifest is None:
        return None
    files = [FileInfo(name=f.name, size=f.size, sha256=f.sha256) for f in manifest.files]
    digest = sha256_file(directory / MANIFEST)
    files.append(FileInfo(name=MANIFEST, size=digest.size, sha256=digest.sha256))
    return SpoolArtifact(kind, name, directory, files, manifest.summary())


def artifact_at(spool_dir: Path, path: Path) -> SpoolArtifact | None:
    """The finished artifact a path in the spool belongs to, or None."""
    try:
        rel = path.relative_to(spool_dir).parts
    except ValueError:
        return None
    if not rel or any(part.startswith(".") for part in rel):
        return None
    if rel[0] == "wal" and len(rel) == 2:
        return _wal_artifact(path)
    if rel[0] == "logical" and len(rel) >= 3:
        return _backup_artifact(
            "logical", f"{rel[1]}/{rel[2]}", spool_dir / rel[0] / rel[1] / rel[2]
        )
    if rel[0] == "physical" and len(rel) >= 2:
        return _backup_artifact("physical", rel[1], spool_dir / rel[0] / rel[1])
    return None


def locate(spool_dir: Path, kind: str, name: str) -> SpoolArtifact | None:
    """The spool copy of a catalogued artifact, if it is still there."""
    if kind in ("wal", "history"):
        return artifact_at(spool_dir, spool_dir / "wal" / name)
    if kind == "logical":
        return artifact_at(spool_dir, spool_dir / "logical" / name)
    return artifact_at(spool_dir, spool_dir / "physical" / name)


def scan(spool_dir: Path) -> Iterator[SpoolArtifact]:
    """Every finished artifact in the spool, WAL first (oldest names first)."""
    wal_dir = spool_dir / "wal"
    if wal_dir.is_dir():
        for path in sorted(wal_dir.iterdir()):
            if path.name.startswith(".") or path.name.endswith(spool.CHECKSUM_SUFFIX):
                continue
            if art := _wal_artifact(path):
                yield art
    logical = spool_dir / "logical"
    if logical.is_dir():
        for db_dir in sorted(
            p for p in logical.iterdir() if p.is_dir() and not p.name.startswith(".")
        ):
            for bdir in sorted(
                p for p in db_dir.iterdir() if p.is_dir() and not p.name.startswith(".")
            ):
                if art := _backup_artifact("logical", f"{db_dir.name}/{bdir.name}", bdir):
                    yield art
    physical = spool_dir / "physical"
    if physical.is_dir():
        for bdir in sorted(
            p for p in physical.iterdir() if p.is_dir() and not p.name.startswith(".")
        ):
            if art := _backup_artifact("physical", bdir.name, bdir):
                yield art


def finished_entries(spool_dir: Path) -> list[tuple[str, str, Path]]:
    """(kind, name, path) of every finished artifact in the spool (WAL file, committed
    backup directory), cheaply: no hashing, no manifest parsing (the checks' view)."""
    out: list[tuple[str, str, Path]] = []
    wal_dir = spool_dir / "wal"
    for entry in sorted(wal_dir.iterdir()) if wal_dir.is_dir() else []:
        if entry.name.startswith(".") or entry.name.endswith(".sha256"):
            continue
        try:
            out.append((parse_name(entry.name).kind, entry.name, entry))
        except ValueError:
            continue
    logical = spool_dir / "logical"
    for manifest in sorted(logical.glob("[!.]*/[!.]*/manifest.json")):
        backup = manifest.parent
        out.append(("logical", f"{backup.parent.name}/{backup.name}", backup))
    for manifest in sorted((spool_dir / "physical").glob("[!.]*/manifest.json")):
        out.append(("physical", manifest.parent.name, manifest.parent))
    return out


def _unreadable(path: Path) -> str | None:
    """Why the current user cannot use this finished spool entry, or None."""
    want = os.R_OK | (os.X_OK if path.is_dir() else 0)
    if not os.access(path, want):
        return "permission denied"
    if path.is_dir():
        try:
            children = list(path.iterdir())
        except OSError as exc:
            return exc.strerror or str(exc)
        for child in children:
            if not child.name.startswith(".") and not os.access(child, os.R_OK):
                return f"{child.name}: permission denied"
    return None


def unreadable_entries(spool_dir: Path) -> Iterator[tuple[Path, str]]:
    """Finished-looking spool entries (WAL files, backup directories) this process cannot
    read: they would be skipped by scan(), so the producer reports them instead."""
    candidates: list[Path] = []
    for sub in ("wal", "physical"):
        directory = spool_dir / sub
        try:
            candidates += [p for p in directory.iterdir() if not p.name.startswith(".")]
        except OSError:
            continue
    try:
        db_dirs = [p for p in (spool_dir / "logical").iterdir() if not p.name.startswith(".")]
    except OSError:
        db_dirs = []
    for db_dir in db_dirs:
        try:
            candidates += [p for p in db_dir.iterdir() if not p.name.startswith(".")]
        except OSError as exc:
            yield db_dir, exc.strerror or str(exc)
    for path in sorted(candidates):
        try:
            reason = _unreadable(path)
        except OSError as exc:
            reason = exc.strerror or str(exc)
        if reason:
            yield path, reason
