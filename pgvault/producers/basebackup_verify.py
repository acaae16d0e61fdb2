"""Verifying a tar-format base backup against PostgreSQL's backup_manifest.

PostgreSQL 15's pg_verifybackup only reads plain-format backups, so for the tar format we
do what it would: check the manifest's own checksum, stream base.tar.zst and compare the
size and SHA-256 of every member with the manifest, and check that pg_wal.tar.zst holds
every WAL segment from the backup's start to its end LSN.
"""

from __future__ import annotations

import functools
import hashlib
import json
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, TypeVar, cast

import zstandard

from pgvault.errors import BackupError
from pgvault.storage.codec import Digest
from pgvault.walfile import parse_lsn, segment_name

MANIFEST_CHECKSUM_KEY = '"Manifest-Checksum"'
T = TypeVar("T")


def _as_backup_error(fn: Callable[..., T]) -> Callable[..., T]:
    """A damaged tar or zstd stream is a failed backup, not a traceback. Only those: a
    KeyError or TypeError here would be a bug in pgvault and surfaces as one (the shape
    of backup_manifest is checked once, by load_manifest)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        except (tarfile.TarError, zstandard.ZstdError, EOFError) as exc:
            raise BackupError(
                f"base backup failed verification: {type(exc).__name__}: {exc}"
            ) from None

    return wrapper


def load_manifest(path: Path) -> dict[str, Any]:
    """PostgreSQL's backup_manifest, its checksum and the shape pgvault reads proven."""
    return parse_manifest(path.read_text(), str(path))


def parse_manifest(text: str, path: str = "backup_manifest") -> dict[str, Any]:
    """load_manifest on the manifest's text (`path` names it in errors)."""
    cut = text.find(MANIFEST_CHECKSUM_KEY)
    if cut < 0:
        raise BackupError(f"{path}: backup_manifest has no Manifest-Checksum")
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise BackupError(f"{path}: backup_manifest is not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise BackupError(f"{path}: backup_manifest is not a JSON object")
    if hashlib.sha256(text[:cut].encode()).hexdigest() != data.get("Manifest-Checksum"):
        raise BackupError(f"{path}: backup_manifest checksum does not match its contents")
    problem = _shape_problem(data)
    if problem:
        raise BackupError(f"{path}: backup_manifest {problem}")
    return data


def _shape_problem(data: dict[str, Any]) -> str | None:
    """What in a checksummed backup_manifest pgvault cannot use, or None."""
    files, ranges = data.get("Files"), data.get("WAL-Ranges")
    if not isinstance(files, list) or not all(
        isinstance(f, dict) and isinstance(f.get("Path"), str) and isinstance(f.get("Size"), int)
        for f in files
    ):
        return "has no usable Files list (Path, Size)"
    if any(
        f.get("Checksum-Algorithm") == "SHA256" and not isinstance(f.get("Checksum"), str)
        for f in files
    ):
        return "lists a SHA256 file without its Checksum"
    if not isinstance(ranges, list) or not ranges:
        return "has no WAL-Ranges"
    try:
        for r in ranges:
            int(r["Timeline"])
            parse_lsn(r["Start-LSN"])
            parse_lsn(r["End-LSN"])
    except (KeyError, TypeError, ValueError) as exc:
        return f"has an unusable WAL-Ranges entry ({type(exc).__name__}: {exc})"
    return None


def _open_zst_tar(path: Path) -> tuple[Any, tarfile.TarFile]:
    fh = path.open("rb")
    reader = zstandard.ZstdDecompressor().stream_reader(fh)
    return fh, tarfile.open(fileobj=cast(IO[bytes], reader), mode="r|")


@_as_backup_error
def verify_base_tar(
    tar_path: Path, manifest: dict[str, Any], tablespaces: dict[str, Path] | None = None
) -> int:
    """Every file the manifest lists, with its size and SHA-256, in base.tar or in the
    tar of its tablespace (`tablespaces`: "pg_tblspc/<oid>/" -> <oid>.tar.zst, whose
    members are relative to the tablespace); returns the files checked."""
    expected = {f["Path"]: f for f in manifest["Files"]}
    seen: set[str] = set()
    for prefix, path in [("", tar_path), *sorted((tablespaces or {}).items())]:
        seen |= _check_members(path, prefix, expected)
    missing = sorted(set(expected) - seen)
    if missing:
        raise BackupError(f"the backup lacks {len(missing)} manifest file(s), e.g. {missing[0]}")
    return len(seen)


def _check_members(tar_path: Path, prefix: str, expected: dict[str, Any]) -> set[str]:
    seen: set[str] = set()
    fh, tar = _open_zst_tar(tar_path)
    with fh, tar:
        for member in tar:
            path = prefix + member.name
            if not member.isfile() or path not in expected:
                continue
            src = tar.extractfile(member)
            assert src is not None
            digest = hashlib.sha256()
            size = 0
            while chunk := src.read(1 << 20):
                digest.update(chunk)
                size += len(chunk)
            _check_entry(path, size, digest.hexdigest(), expected[path], tar_path.name)
            seen.add(path)
    return seen


def _check_entry(path: str, size: int, sha256: str, entry: dict[str, Any], where: str) -> None:
    if size != entry["Size"]:
        raise BackupError(f"{path}: {size} bytes in {where}, manifest says {entry['Size']}")
    if entry.get("Checksum-Algorithm") == "SHA256" and sha256 != entry["Checksum"]:
        raise BackupError(f"{path}: SHA-256 in {where} does not match backup_manifest")


def check_digests(members: dict[str, Digest], manifest: dict[str, Any], where: str) -> int:
    """verify_base_tar for digests taken while the tar streamed by (bbstream): every file
    the manifest lists present with its size and SHA-256; returns the files checked."""
    checked = 0
    for entry in manifest["Files"]:
        got = members.get(entry["Path"])
        if got is None:
            raise BackupError(f"the backup lacks manifest file {entry['Path']}")
        _check_entry(entry["Path"], got.size, got.sha256, entry, where)
        checked += 1
    return checked


def wal_range(manifest: dict[str, Any]) -> tuple[int, int, int]:
    """(timeline, start LSN, end LSN) of the backup from its manifest."""
    ranges = manifest["WAL-Ranges"]
    return (
        int(ranges[-1]["Timeline"]),
        parse_lsn(ranges[0]["Start-LSN"]),
        parse_lsn(ranges[-1]["End-LSN"]),
    )


@_as_backup_error
def verify_wal_tar(tar_path: Path, manifest: dict[str, Any], seg_size: int) -> list[str]:
    """pg_wal.tar.zst must hold the segments start..end of the backup's WAL range."""
    names = []
    fh, tar = _open_zst_tar(tar_path)
    with fh, tar:
        for member in tar:
            if member.isfile():
                names.append(member.name)
    return check_wal_names(names, manifest, seg_size)


def check_wal_names(names: list[str], manifest: dict[str, Any], seg_size: int) -> list[str]:
    """The WAL files of a backup (paths relative to pg_wal/) hold the segments start..end
    of its WAL range; returns those segments."""
    timeline, start, end = wal_range(manifest)
    needed = [
        segment_name(timeline, s, seg_size)
        for s in range(start // seg_size, max(start, end - 1) // seg_size + 1)
    ]
    present = {Path(n).name for n in names}
    absent = [n for n in needed if n not in present]
    if absent:
        raise BackupError(
            f"pg_wal.tar lacks WAL segment(s) {', '.join(absent)} needed for consistency"
        )
    return needed
