"""The SQLite catalog: what is stored where, in which state, and what it can restore."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pgvault.catalog.db import CatalogDB

if TYPE_CHECKING:
    from pgvault.config import Settings


def open_catalog(settings: Settings, *, create: bool = True) -> CatalogDB:
    return CatalogDB(settings.catalog_path, settings.cluster, create=create)


__all__ = ["CatalogDB", "open_catalog"]
