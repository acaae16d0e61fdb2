"""The ObjectStore interface every backend implements.

Keys are '/'-separated and never start with '/'. Metadata is a flat str->str mapping
(S3 user metadata: lowercase ASCII keys and values). Backends translate their library's
exceptions into pgvault.errors (ObjectMissing, StoreUnavailable, StoreError).
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import BinaryIO


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    metadata: Mapping[str, str] = field(default_factory=dict)
    last_modified: datetime | None = None


class ObjectStore(ABC):
    """A flat key space with per-object metadata."""

    @abstractmethod
    def describe(self) -> str:
        """Where this store is, for messages (never includes credentials)."""

    @abstractmethod
    def put_file(self, key: str, path: Path, metadata: Mapping[str, str]) -> None:
        """Store a file's bytes under key with metadata, atomically (all or nothing)."""

    @abstractmethod
    def put_bytes(self, key: str, data: bytes, metadata: Mapping[str, str]) -> None: ...

    @abstractmethod
    def head(self, key: str) -> ObjectInfo | None:
        """Size and metadata of an object, or None when it does not exist."""

    @abstractmethod
    def open_read(self, key: str) -> contextlib.AbstractContextManager[BinaryIO]:
        """A readable stream of the object's bytes; ObjectMissing if absent."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove an object; removing an absent object is not an error."""

    @abstractmethod
    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every object under prefix (paginated by the backend). Metadata is not filled
        in by every backend's listing; call head() when it is needed."""

    def delete_many(self, keys: Sequence[str]) -> None:
        """Remove several objects (backends may batch); absent ones are not an error."""
        for key in keys:
            self.delete(key)

    def get_bytes(self, key: str) -> bytes:
        with self.open_read(key) as fh:
            return fh.read()
