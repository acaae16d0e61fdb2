"""The catalog's `settings` table: small key/value state (the cluster name, the archiver
check's previous counters)."""

from __future__ import annotations

from pgvault.catalog.db import CatalogDB


def get_setting(catalog: CatalogDB, key: str) -> str | None:
    value = catalog.scalar("SELECT value FROM settings WHERE key=?", (key,))
    return None if value is None else str(value)


def put_setting(catalog: CatalogDB, key: str, value: str) -> None:
    """Insert or replace `key` (one transaction)."""
    with catalog.transaction() as conn:
        conn.execute(
            "INSERT INTO settings(key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            (key, value),
        )
