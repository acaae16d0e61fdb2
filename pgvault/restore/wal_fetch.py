"""The store side of wal-restore: fetch one WAL file, verified (restore_command's miss
path and the prefetcher, pgvault.restore.prefetcher).

Imported only when the spool and the prefetch queue do not have the file, so the common
case (recovery from prefetched segments) stays light.
"""

from __future__ import annotations

import json
from typing import Any

from pgvault.config import Settings, load_settings
from pgvault.errors import IntegrityError, ObjectMissing
from pgvault.keys import identities_for
from pgvault.storage import ObjectStore, open_store
from pgvault.storage.codec import Encoding
from pgvault.storage.layout import Layout
from pgvault.storage.verified import Expected, fetch_verified
from pgvault.walfile import parse_name


def expected_of(row: dict[str, str] | None) -> Expected:
    """What a WAL object must hash to: the catalog row's content and stored sha256 when
    there is a row; otherwise nothing, and read_verified takes the object's metadata."""
    if row is None:
        return Expected(encoding=Encoding("zstd", "none"))
    files = json.loads(row["files"] or "[]")
    first = files[0] if files else {}
    return Expected(
        sha256=row["sha256"] or None,
        size=first.get("size"),
        stored_sha256=first.get("stored_sha256"),
        stored_size=first.get("stored_size"),
        encoding=Encoding("zstd", "none"),
    )


def fetch_into(
    settings: Settings,
    store: ObjectStore,
    identities: list[Any],
    name: str,
    dest: str,
    *,
    row: dict[str, str] | None,
) -> str | None:
    """NAME from the store into dest, proven; its content sha256, or None when the store
    has no such object and the catalog does not know it (the end of WAL)."""
    wal = parse_name(name)
    key = Layout(settings.storage.prefix, settings.cluster).key(wal.kind, name, name)
    try:
        result = fetch_verified(store, key, expected_of(row), dest, identities)
    except ObjectMissing:
        if row is not None:  # the catalog knows it: absence is damage, not the end of WAL
            raise ObjectMissing(
                f"{key} is catalogued but missing from {store.describe()}"
            ) from None
        return None
    if result.content is None:  # encrypted and no identity: nothing was written
        raise IntegrityError(f"{key}: no identity to decrypt it with")
    return result.content.sha256


def fetch_wal(config: str | None, name: str, dest: str, row: dict[str, str] | None) -> bool:
    settings = load_settings(config)
    store = open_store(settings.storage)
    return fetch_into(settings, store, identities_for(settings), name, dest, row=row) is not None
