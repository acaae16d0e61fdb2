"""A tiny canary object proving the store is reachable and writable."""

from __future__ import annotations

import time
import uuid

from pgvault.config import Settings
from pgvault.errors import StoreError
from pgvault.storage.base import ObjectStore
from pgvault.storage.layout import Layout


def canary(store: ObjectStore, settings: Settings) -> float:
    """Write, read back and delete a canary; returns seconds taken."""
    start = time.monotonic()
    key = f"{Layout(settings.storage.prefix, settings.cluster).root}/.canary/{uuid.uuid4().hex}"
    payload = uuid.uuid4().bytes
    store.put_bytes(key, payload, {"pgvault-kind": "canary"})
    try:
        if store.get_bytes(key) != payload:
            raise StoreError(f"{store.describe()}: canary read back different bytes")
    finally:
        store.delete(key)
    return time.monotonic() - start
