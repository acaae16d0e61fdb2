"""The one verified-read path: fetch an object, decode it, prove its sha256.

Every reader of stored bytes goes through `read_verified` (the verify stage, `catalog
rebuild --verify`, restores, wal-restore's store fetch), so the rule is kept in one
place: the stored bytes must hash to the expected stored sha256, and the decoded bytes
(after age, zstd) to the producer's sha256. What is expected comes from the catalog;
where the catalog does not say (no row: a host without catalog, an old row without
`stored_sha256`), each missing value falls back to the object's own metadata
(`sha256`, `content-sha256`, `content-size`), never to "no check". A read with nothing
to check against is refused.

A mismatch raises IntegrityError (Superseded, a subclass, when the object was replaced
by a later upload of the same content); an absent object ObjectMissing; a store failure
StoreError; a missing age identity EncryptionError. Verified copies out of the spool
use `pgvault.fsutil.copy_verified` (stdlib only, for the light wal-restore path).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from pgvault import fsutil
from pgvault.errors import IntegrityError, ObjectMissing, Superseded
from pgvault.storage import objmeta
from pgvault.storage.base import ObjectInfo, ObjectStore
from pgvault.storage.codec import CHUNK, Digest, Encoding, HashingReader, decode_stream

if TYPE_CHECKING:
    from pgvault.schemas import FileInfo


@dataclass(frozen=True)
class Expected:
    """What the bytes of one object must hash to. None means "the catalog does not say":
    the object's metadata is used instead."""

    sha256: str | None = None  # content: the original file the producer checksummed
    size: int | None = None
    stored_sha256: str | None = None  # stored bytes (compressed, encrypted)
    stored_size: int | None = None
    encoding: Encoding | None = None  # used when the object's metadata does not say

    @classmethod
    def of_file(cls, f: FileInfo) -> Expected:
        """From a catalogued file (FileInfo from an event or a catalog row)."""
        return cls(
            sha256=f.sha256,
            size=f.size,
            stored_sha256=f.stored_sha256,
            stored_size=f.stored_size,
            encoding=Encoding(f.codec or "none", f.encryption or "none"),
        )


@dataclass(frozen=True)
class ReadResult:
    """What was read and proven. `content` is None only when the object is encrypted,
    no identity was given and nothing was to be written (stored bytes proven only)."""

    info: ObjectInfo
    encoding: Encoding
    stored: Digest
    content: Digest | None


def _resolve(key: str, expected: Expected, info: ObjectInfo) -> Expected:
    """Fill what the catalog does not say from the object's metadata; check that the
    object is the one the catalog describes before reading it."""
    meta = info.metadata
    recorded = meta.get("sha256")
    if expected.stored_sha256 and recorded and recorded != expected.stored_sha256:
        if expected.sha256 and meta.get("content-sha256") == expected.sha256:
            # a later upload of the same content replaced it (age output differs each
            # time): that upload's own record describes the object now there
            raise Superseded(f"{key} was replaced by a newer upload of the same content")
        raise IntegrityError(f"{key}: object metadata sha256 differs from the upload record")
    content_size = meta.get("content-size")
    resolved = Expected(
        sha256=expected.sha256 or meta.get("content-sha256") or None,
        size=expected.size
        if expected.size is not None
        else (int(content_size) if content_size and content_size.isdigit() else None),
        stored_sha256=expected.stored_sha256 or recorded or None,
        stored_size=expected.stored_size,
        encoding=objmeta.encoding_of(meta, expected.encoding or Encoding("none", "none")),
    )
    if not resolved.sha256 and not resolved.stored_sha256:
        raise IntegrityError(
            f"{key}: no sha256 to check it against (neither the catalog nor its metadata "
            "has one); refusing to use it"
        )
    return resolved


def _check(key: str, want: Expected, stored: Digest, content: Digest | None) -> None:
    if want.stored_sha256 and (
        stored.sha256 != want.stored_sha256
        or (want.stored_size is not None and stored.size != want.stored_size)
    ):
        size = f"; expected {want.stored_size} bytes" if want.stored_size is not None else ""
        raise IntegrityError(
            f"{key}: stored bytes do not match (sha256 {stored.sha256[:12]}..., "
            f"{stored.size} bytes; expected {want.stored_sha256[:12]}...{size})"
        )
    if content is None:
        if not want.stored_sha256:  # nothing at all was proven
            raise IntegrityError(f"{key}: no stored sha256 and the content cannot be decrypted")
        return
    if want.sha256 and (
        content.sha256 != want.sha256 or (want.size is not None and content.size != want.size)
    ):
        raise IntegrityError(
            f"{key}: decoded content does not match the producer's sha256 "
            f"({content.sha256[:12]}... vs {want.sha256[:12]}...); refusing to use it"
        )


def read_verified(
    store: ObjectStore,
    key: str,
    expected: Expected,
    sink: BinaryIO | None,
    identities: Sequence[Any] = (),
) -> ReadResult:
    """Stream object `key`, decode it into `sink` (None: only hash it), prove it.

    The sink receives bytes before they are proven: callers that keep them write to a
    temp file and publish it only when this returns (see `fetch_verified`). With
    `sink=None`, an age-encrypted object and no identity, only the stored bytes are
    checked (`content=None`); with a sink, a missing identity is an EncryptionError.
    """
    info = store.head(key)
    if info is None:
        raise ObjectMissing(f"{key} is missing from {store.describe()}")
    want = _resolve(key, expected, info)
    encoding = want.encoding or Encoding("none", "none")
    content: Digest | None
    with store.open_read(key) as fh:
        if sink is None and encoding.encryption == "age" and not identities:
            reader = HashingReader(fh)
            while reader.read(CHUNK):
                pass
            stored, content = Digest(reader.size, reader.hexdigest()), None
        else:
            stored, content = decode_stream(fh, sink, encoding, identities, what=key)
    _check(key, want, stored, content)
    return ReadResult(info=info, encoding=encoding, stored=stored, content=content)


class _Advancing:
    """A write-only sink that reports progress."""

    def __init__(self, inner: BinaryIO, advance: Callable[[int], None]) -> None:
        self.inner = inner
        self.advance = advance

    def write(self, data: bytes) -> int:
        self.inner.write(data)
        self.advance(len(data))
        return len(data)

    def flush(self) -> None:
        self.inner.flush()


def fetch_verified(
    store: ObjectStore,
    key: str,
    expected: Expected,
    dest: str | os.PathLike[str],
    identities: Sequence[Any] = (),
    *,
    advance: Callable[[int], None] | None = None,
) -> ReadResult:
    """`read_verified` into a hidden temp file next to dest, renamed to dest only once
    proven; on any failure dest is untouched and the temp file removed."""
    tmp = Path(fsutil.temp_path(dest))
    try:
        with tmp.open("wb") as out:
            sink: Any = out if advance is None else _Advancing(out, advance)
            result = read_verified(store, key, expected, sink, identities)
        os.replace(tmp, dest)
    finally:
        fsutil.unlink_quietly(tmp)
    return result


def read_back(
    store: ObjectStore, f: FileInfo, identities: Sequence[Any]
) -> tuple[Digest, Digest | None]:
    """Read one stored file back and prove it (storage.verified.read_verified); returns
    (stored, content) digests, content None when it is age-encrypted and no identity is
    at hand.

    Raises ObjectMissing, IntegrityError (Superseded when a newer upload of the same
    content replaced the object); StoreError for transient failures."""
    if f.key is None or f.stored_sha256 is None:
        raise IntegrityError(f"{f.name}: no stored copy recorded")
    result = read_verified(store, f.key, Expected.of_file(f), None, identities)
    return result.stored, result.content
