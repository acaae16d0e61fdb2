"""The store side of wal-restore: fetch one WAL file, verified, or prefetch several.

Imported only when the spool and the prefetch directory do not have the file, so the
common case (recovery from the spool, or from prefetched segments) stays light.
"""

from __future__ import annotations

import contextlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pgvault.config import Settings, load_settings
from pgvault.consumers.factory import identities_for
from pgvault.errors import IntegrityError, ObjectMissing
from pgvault.lightconf import load_light
from pgvault.restore.wal_restore import catalog_row, from_spool
from pgvault.storage import ObjectStore, objmeta, open_store
from pgvault.storage.codec import Encoding, decode_stream
from pgvault.storage.layout import Layout
from pgvault.walfile import parse_name


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
    info = store.head(key)
    if info is None:
        if row is not None:  # the catalog knows it: absence is damage, not the end of WAL
            raise ObjectMissing(f"{key} is catalogued but missing from {store.describe()}")
        return False
    expected = row["sha256"] if row else info.metadata.get("content-sha256")
    stored_expected = None
    if row:
        files = json.loads(row["files"] or "[]")
        stored_expected = files[0].get("stored_sha256") if files else None
    if not expected:
        raise IntegrityError(f"{key}: no sha256 to check it against (no catalog, no metadata)")
    encoding = objmeta.encoding_of(info.metadata, Encoding("zstd", "none"))
    tmp = f"{dest}.pgvault.{os.getpid()}.tmp"
    try:
        with store.open_read(key) as fh, open(tmp, "wb") as out:
            stored, content = decode_stream(fh, out, encoding, identities, what=key)
        if stored_expected and stored.sha256 != stored_expected:
            raise IntegrityError(f"{key}: stored bytes do not match the catalog's sha256")
        if content.sha256 != expected:
            raise IntegrityError(f"{key}: content does not match its sha256; not replaying it")
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
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
        part = os.path.join(pdir, f".{name}.part")
        if (use_spool and from_spool(light.spool_dir, name, part)) or _fetch(
            settings, store, identities, name, part, row=row
        ):
            os.replace(part, final)
            return True
        return False

    with ThreadPoolExecutor(max_workers=min(4, settings.storage.max_concurrency)) as pool:
        for found in pool.map(one, names):
            if not found:
                break
