"""Fetching a catalogued dump for `pgvault restore logical`, refusals first.

Free space is checked and the small manifest fetched before the dump; the caller's
`preflight(manifest)` (table names, ...) runs before a byte of the dump is fetched, so a
refusal costs no download from the store.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from pgvault.catalog.rows import DumpRow
from pgvault.config import Settings
from pgvault.errors import IntegrityError, RestoreError
from pgvault.producers.pgdump import TABLES_FILE  # row counts, on their own when encrypted
from pgvault.progress import byte_progress
from pgvault.restore.fetch import fetch_file, free_bytes
from pgvault.schemas.manifest import MANIFEST_NAME, LogicalManifest, parse_logical
from pgvault.storage import ObjectStore
from pgvault.storage.codec import load_identities

MANIFEST = MANIFEST_NAME
SPACE_MARGIN = 64 << 20


def fetch_dump(
    settings: Settings,
    store: ObjectStore,
    row: DumpRow,
    work: Path,
    *,
    prefer_spool: bool,
    preflight: Callable[[LogicalManifest], None] | None = None,
) -> tuple[Path, LogicalManifest, str]:
    """The dump and its manifest in `work`, both proven by sha256; (dump, manifest, source).

    Free space is checked and the small manifest fetched first; `preflight(manifest)` runs
    before a byte of the dump is fetched, so a refusal costs no download."""
    identities = (
        load_identities(settings.encryption.identity_file)
        if settings.encryption.identity_file
        else []
    )
    files = row.file_infos()
    man_info = next((f for f in files if f.name == MANIFEST), None)
    tables_info = next((f for f in files if f.name == TABLES_FILE), None)
    dumps = [f for f in files if f.name not in (MANIFEST, TABLES_FILE)]
    if man_info is None or len(dumps) != 1:
        raise IntegrityError(f"catalog entry logical/{row.name} does not list a dump")
    need = dumps[0].size + SPACE_MARGIN
    if free_bytes(work) < need:
        raise RestoreError(
            f"not enough free space in {work} for the {dumps[0].size} byte dump; free some "
            "space in the spool's filesystem"
        )
    common: dict[str, Any] = {
        "kind": "logical",
        "name": row.name,
        "identities": identities,
        "prefer_spool": prefer_spool,
    }
    fetch_file(settings, store, man_info, work / MANIFEST, **common)
    where = f"logical/{row.name}"
    manifest = parse_logical((work / MANIFEST).read_bytes(), where)
    listed = manifest.file(dumps[0].name)
    if listed is None or listed.sha256 != dumps[0].sha256:
        raise IntegrityError(f"{where}: manifest and catalog disagree on the dump")
    if tables_info is not None:  # encrypted archives keep the row counts out of the manifest
        fetch_file(settings, store, tables_info, work / TABLES_FILE, **common)
        manifest = manifest.with_tables((work / TABLES_FILE).read_bytes(), where)
    if preflight is not None:
        preflight(manifest)
    dump = work / dumps[0].name
    with byte_progress(f"fetch {dumps[0].name}", dumps[0].size) as advance:
        source = fetch_file(settings, store, dumps[0], dump, advance=advance, **common)
    return dump, manifest, source


__all__ = ["MANIFEST", "SPACE_MARGIN", "fetch_dump"]
