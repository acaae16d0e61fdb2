"""Object stores: the interface, a local-directory backend and an S3 (boto3) backend."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pgvault.storage.base import ObjectInfo, ObjectStore

if TYPE_CHECKING:
    from pgvault.config import StorageSettings


def open_store(settings: StorageSettings) -> ObjectStore:
    """Build the configured backend. boto3 is imported only for `type = "s3"`."""
    if settings.type == "s3":
        from pgvault.storage.s3 import S3Store

        return S3Store(settings)
    from pgvault.storage.local import LocalStore

    return LocalStore(settings.path)


__all__ = ["ObjectInfo", "ObjectStore", "open_store"]
