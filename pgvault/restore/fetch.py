"""Materializing catalogued files for a restore, proven by sha256 before use.

The spool copy is used when present and intact (fast, no egress); otherwise the object
is streamed from the store, decoded (age, zstd) and hashed on the way. Either way the
bytes must match the producer's sha256 before the file appears under its final name, so
nothing downstream (pg_restore, tar extraction, PostgreSQL) ever reads unproven bytes.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pgvault import fsutil
from pgvault.config import Settings
from pgvault.errors import IntegrityError, ObjectMissing
from pgvault.log import for_artifact
from pgvault.schemas import FileInfo
from pgvault.spool.scan import locate
from pgvault.storage import ObjectStore
from pgvault.storage.verified import Expected, fetch_verified

log = logging.getLogger(__name__)


def files_of(row: dict[str, Any]) -> list[FileInfo]:
    """FileInfo list of a catalog row as returned by catalog.queries (files decoded)."""
    return [FileInfo.model_validate(f) for f in row["files"]]


def fetch_file(
    settings: Settings,
    store: ObjectStore,
    f: FileInfo,
    dest: Path,
    *,
    kind: str,
    name: str,
    identities: Sequence[Any] = (),
    prefer_spool: bool = True,
    advance: Callable[[int], None] | None = None,
) -> str:
    """Write the original bytes of `f` to `dest`; returns "spool" or "store"."""
    alog = for_artifact(log, f"{kind}/{name}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if prefer_spool and (art := locate(settings.spool_dir, kind, name)) is not None:
        src = art.file_path(f.name)
        if src.is_file():
            try:
                fsutil.copy_verified(src, dest, f.sha256, advance=advance)
                return "spool"
            except IntegrityError:
                alog.warning("spool copy of %s does not match its sha256; using the store", f.name)
    if f.key is None:
        raise ObjectMissing(f"{kind} {name}: {f.name} was never stored")
    fetch_verified(store, f.key, Expected.of_file(f), dest, identities, advance=advance)
    return "store"


def free_bytes(path: Path) -> int:
    usage = shutil.disk_usage(path)
    return usage.free
