"""The two ways `backup physical` fills its temporary directory, both ending in the same
proven state (`Produced`): base.tar.zst, pg_wal.tar.zst, backup_manifest (and one
<oid>.tar.zst per tablespace), every data file checked against backup_manifest, the WAL
range present, the stored files' sizes and SHA-256 known.

- `produce_onepass`: pg_basebackup's tar stream read once (basebackup_run, bbstream).
- `produce_classic`: the fallback for clusters with tablespaces, which pg_basebackup
  cannot write to stdout: `-D <dir> -Xstream`, the raw tars compressed afterwards, then
  a second pass decompresses and checks every member.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zstandard

from pgvault.config import Settings
from pgvault.errors import BackupError
from pgvault.producers.basebackup_run import run_to_directory, stream_basebackup
from pgvault.producers.basebackup_verify import (
    check_digests,
    check_wal_names,
    load_manifest,
    parse_manifest,
    verify_base_tar,
    verify_wal_tar,
)
from pgvault.schemas.manifest import ManifestFile
from pgvault.spool import write_atomic
from pgvault.storage.codec import sha256_file

DATA_FILES = ("base.tar.zst", "pg_wal.tar.zst", "backup_manifest")


@dataclass
class Produced:
    manifest_pg: dict[str, Any]  # PostgreSQL's backup_manifest, its checksum proven
    checked: int  # data files whose size and SHA-256 matched backup_manifest
    wal_segments: list[str]  # the segments start..end, present in pg_wal.tar.zst
    spaces: list[dict[str, Any]]  # tablespaces with their tar ("file")
    files: list[ManifestFile]  # what the spool directory holds, as stored


def produce_onepass(
    settings: Settings,
    tmp: Path,
    backup_id: str,
    facts: dict[str, Any],
    *,
    threads: int,
    extra_args: tuple[str, ...] = (),
) -> Produced:
    result = stream_basebackup(
        settings,
        tmp,
        backup_id,
        facts["pg_major"],
        threads=threads,
        total=facts["db_bytes"],
        extra_args=extra_args,
    )
    try:
        text = result.manifest.decode()
    except UnicodeDecodeError:
        raise BackupError("backup_manifest in pg_basebackup's stream is not UTF-8") from None
    manifest_pg = parse_manifest(text)
    checked = check_digests(result.members, manifest_pg, "pg_basebackup's stream")
    wal = check_wal_names(result.wal_files, manifest_pg, facts["seg_size"])
    write_atomic(tmp / "backup_manifest", result.manifest)
    files = [
        ManifestFile(name=name, size=result.stored[name].size, sha256=result.stored[name].sha256)
        for name in DATA_FILES[:2]
    ]
    digest = sha256_file(tmp / "backup_manifest")
    files.append(ManifestFile(name="backup_manifest", size=digest.size, sha256=digest.sha256))
    return Produced(manifest_pg, checked, wal, [], files)


def produce_classic(
    settings: Settings,
    tmp: Path,
    backup_id: str,
    facts: dict[str, Any],
    *,
    threads: int,
    extra_args: tuple[str, ...] = (),
) -> Produced:
    major = facts["pg_major"]
    level = settings.storage.compression_level
    if not run_to_directory(
        settings, tmp, backup_id, major, total=facts["db_bytes"], extra_args=extra_args
    ):
        for plain in sorted(tmp.glob("*.tar")):
            if plain.name != "pg_wal.tar":
                _compress(plain, plain.with_name(plain.name + ".zst"), level, threads)
    _compress(tmp / "pg_wal.tar", tmp / "pg_wal.tar.zst", level, threads)
    manifest_pg = load_manifest(tmp / "backup_manifest")
    spaces = _tablespace_tars(tmp, facts["tablespaces"])
    checked = verify_base_tar(
        tmp / "base.tar.zst",
        manifest_pg,
        {f"pg_tblspc/{t['oid']}/": tmp / t["file"] for t in spaces},
    )
    wal = verify_wal_tar(tmp / "pg_wal.tar.zst", manifest_pg, facts["seg_size"])
    files = []
    for name in (*DATA_FILES, *(t["file"] for t in spaces)):
        digest = sha256_file(tmp / name)
        files.append(ManifestFile(name=name, size=digest.size, sha256=digest.sha256))
    return Produced(manifest_pg, checked, wal, spaces, files)


def _tablespace_tars(tmp: Path, spaces: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The tablespaces pg_basebackup wrote, each with its tar; a tablespace created or
    dropped while the backup ran is whatever the backup holds (WAL replay does the rest)."""
    out = []
    for space in spaces:
        name = f"{space['oid']}.tar.zst"
        if (tmp / name).exists():
            out.append({**space, "file": name})
    known = {t["file"] for t in out}
    extra = sorted(p.name for p in tmp.glob("*.tar.zst") if p.name not in (*DATA_FILES, *known))
    if extra:
        raise BackupError(
            f"pg_basebackup wrote {', '.join(extra)}: a tablespace pgvault did not see"
        )
    return out


def _compress(src: Path, dst: Path, level: int, threads: int) -> None:
    cctx = zstandard.ZstdCompressor(level=level, threads=threads, write_checksum=True)
    with src.open("rb") as fin, dst.open("wb") as fout:
        cctx.copy_stream(fin, fout)
        fout.flush()
        os.fsync(fout.fileno())
    src.unlink()
