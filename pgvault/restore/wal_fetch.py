"""The store side of wal-restore: fetch one WAL file, verified, or prefetch several.

Imported only when the spool and the prefetch directory do not have the file, so the
common case (recovery from the spool, or from prefetched segments) stays light.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pgvault.config import Settings, load_settings
from pgvault.errors import ObjectMissing
from pgvault.keys import identities_for
from pgvault.lightconf import load_light
from pgvault.restore.wal_restore import catalog_row, from_spool
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


def _fetch(
    settings: Settings,
    store: ObjectStore,
    identities: list[Any],
    name: str,
    dest: str,
    *,
    row: dict[str, str] | None,
) -> bool:
    wal = parse_name(name)
    key = Layout(settings.storage.prefix, settings.cluster).key(wal.kind, name, name)
    try:
        fetch_verified(store, key, expected_of(row), dest, identities)
    except ObjectMissing:
        if row is not None:  # the catalog knows it: absence is damage, not the end of WAL
            raise ObjectMissing(
                f"{key} is catalogued but missing from {store.describe()}"
            ) from None
        return False
    return True


def fetch_wal(config: str | None, name: str, dest: str, row: dict[str, str] | None) -> bool:
    settings = load_settings(config)
    store = open_store(settings.storage)
    return _fetch(settings, store, identities_for(settings), name, dest, row=row)


def prefetch(config: str | None, pdir: str, names: list[str], *, use_spool: bool = True) -> None:
    settings = load_settings(config)
    light = load_light(config)
    store = open_store(settings.storage)
    identities = identities_for(settings)

    def one(name: str) -> bool:
        final = os.path.join(pdir, name)
        in_spool = os.path.exists(os.path.join(light.spool_dir, "wal", name))
        if os.path.exists(final) or (use_spool and in_spool):
            return True
        row = catalog_row(light.catalog_path, "wal", name)
        # both publish `final` only once verified (hidden temp file, then rename)
        return bool(use_spool and from_spool(light.spool_dir, name, final)) or _fetch(
            settings, store, identities, name, final, row=row
        )

    with ThreadPoolExecutor(max_workers=min(4, settings.storage.max_concurrency)) as pool:
        for found in pool.map(one, names):
            if not found:
                break
