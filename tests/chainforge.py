"""Forging a stored physical backup's archive, for the tamper tests of test_incremental.

`flip_bytes` damages base.tar.zst in the spool and in the store, nothing else: the
archive-level sha256 catches it. `forge_member` rebuilds base.tar.zst with one member's
bytes changed (same size), recompressed, and rewrites every record of the archive's
sha256 and size a restore reads (the spool's manifest.json, the catalog row, the store
object and its metadata): only the per-member proof against backup_manifest is left to
catch it.
"""

from __future__ import annotations

import hashlib
import io
import json
import sqlite3
import tarfile
from pathlib import Path
from typing import Any

import zstandard

from pgvault.storage.codec import encode_file
from pgvault.storage.local import META_SUFFIX
from tests.env import PgvaultEnv

ARCHIVE = "base.tar.zst"


def _row_files(env: PgvaultEnv, backup_id: str) -> list[dict[str, Any]]:
    with sqlite3.connect(env.base / "catalog.sqlite") as conn:
        (files,) = conn.execute(
            "SELECT files FROM artifacts WHERE kind = 'physical' AND name = ?", (backup_id,)
        ).fetchone()
    out: list[dict[str, Any]] = json.loads(files)
    return out


def _store_path(env: PgvaultEnv, key: str) -> Path:
    return Path(env.data["storage"]["path"]) / key


def flip_bytes(env: PgvaultEnv, backup_id: str) -> list[Path]:
    """One byte changed in the middle of the spool copy and of the stored object."""
    (f,) = [f for f in _row_files(env, backup_id) if f["name"] == ARCHIVE]
    paths = [env.spool / "physical" / backup_id / ARCHIVE, _store_path(env, f["key"])]
    for path in paths:
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    return paths


def forge_member(env: PgvaultEnv, backup_id: str, original: bytes) -> str:
    """base.tar.zst (its original bytes given) rebuilt with one byte of its largest base/
    member flipped, everywhere; returns that member's name."""
    raw = bytearray(zstandard.ZstdDecompressor().stream_reader(io.BytesIO(original)).read())
    with tarfile.open(fileobj=io.BytesIO(bytes(raw))) as tar:
        members = [m for m in tar.getmembers() if m.isfile() and m.name.startswith("base/")]
    victim = max(members, key=lambda m: m.size)
    raw[victim.offset_data + victim.size // 2] ^= 0xFF  # data only: headers stay valid
    forged = zstandard.ZstdCompressor(level=3, write_checksum=True).compress(bytes(raw))
    digest, size = hashlib.sha256(forged).hexdigest(), len(forged)

    directory = env.spool / "physical" / backup_id
    (directory / ARCHIVE).write_bytes(forged)
    manifest = json.loads((directory / "manifest.json").read_text())
    for entry in manifest["files"]:
        if entry["name"] == ARCHIVE:
            entry.update(sha256=digest, size=size)
    (directory / "manifest.json").write_text(json.dumps(manifest))

    files = _row_files(env, backup_id)
    (f,) = [f for f in files if f["name"] == ARCHIVE]
    obj = _store_path(env, f["key"])
    encoding, stored, _ = encode_file(directory / ARCHIVE, obj, compress=f.get("codec") == "zstd")
    meta_path = obj.with_name(obj.name + META_SUFFIX)
    meta = json.loads(meta_path.read_text())
    meta.update({"sha256": stored.sha256, "content-sha256": digest, "content-size": str(size)})
    meta_path.write_text(json.dumps(meta, sort_keys=True))
    f.update(sha256=digest, size=size, stored_sha256=stored.sha256, stored_size=stored.size)
    assert encoding.codec == (f.get("codec") or "none")
    with sqlite3.connect(env.base / "catalog.sqlite") as conn:
        conn.execute(
            "UPDATE artifacts SET files = ?, size = ?, stored_size = ? "
            "WHERE kind = 'physical' AND name = ?",
            (
                json.dumps(files),
                sum(int(x["size"]) for x in files),
                sum(int(x.get("stored_size") or 0) for x in files),
                backup_id,
            ),
        )
    return victim.name
