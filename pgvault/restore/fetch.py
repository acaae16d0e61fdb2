"""Materializing catalogued files for a restore, proven by sha256 before use.

The spool copy is used when present and intact (fast, no egress); otherwise the object
is streamed from the store, decoded (age, zstd) and hashed on the way. Either way the
bytes must match the producer's sha256 before the file appears under its final name, so
nothing downstream (pg_restore, tar extraction, PostgreSQL) ever reads unproven bytes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pgvault.config import Settings
from pgvault.errors import IntegrityError, ObjectMissing
from pgvault.log import for_artifact
from pgvault.producers.spoolscan import locate
from pgvault.schemas import FileInfo
from pgvault.storage import ObjectStore, objmeta
from pgvault.storage.codec import CHUNK, Encoding, HashingWriter, decode_stream

log = logging.getLogger(__name__)


def files_of(row: dict[str, Any]) -> list[FileInfo]:
    """FileInfo list of a catalog row as returned by catalog.queries (files decoded)."""
    return [FileInfo.model_validate(f) for f in row["files"]]


def _copy_hashing(src: Path, out: Any, advance: Callable[[int], None] | None) -> HashingWriter:
    writer = HashingWriter(out)
    with src.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            writer.write(chunk)
            if advance:
                advance(len(chunk))
    return writer


def fetch_file(
    settings: Settings,
    store: ObjectStore,
    f: FileInfo,
    dest: Path,
    *,
    kind: str,
    name: str,
    identities: Sequence[Any] = (),
    prefer_spool: bool = True,
    advance: Callable[[int], None] | None = None,
) -> str:
    """Write the original bytes of `f` to `dest`; returns "spool" or "store"."""
    alog = for_artifact(log, f"{kind}/{name}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.part")
    try:
        if prefer_spool and (art := locate(settings.spool_dir, kind, name)) is not None:
            src = art.file_path(f.name)
            if src.is_file():
                with tmp.open("wb") as out:
                    writer = _copy_hashing(src, out, advance)
                if writer.hexdigest() == f.sha256:
                    os.replace(tmp, dest)
                    return "spool"
                alog.warning("spool copy of %s does not match its sha256; using the store", f.name)
        if f.key is None:
            raise ObjectMissing(f"{kind} {name}: {f.name} was never stored")
        info = store.head(f.key)
        if info is None:
            raise ObjectMissing(f"{f.key} is missing from {store.describe()}")
        encoding = objmeta.encoding_of(
            info.metadata, Encoding(f.codec or "none", f.encryption or "none")
        )
        with store.open_read(f.key) as fh, tmp.open("wb") as out:
            sink: Any = out
            if advance:
                sink = _Advancing(out, advance)
            stored, content = decode_stream(fh, sink, encoding, identities, what=f.key)
        if f.stored_sha256 and stored.sha256 != f.stored_sha256:
            raise IntegrityError(f"{f.key}: stored bytes do not match their recorded sha256")
        if content.sha256 != f.sha256 or content.size != f.size:
            raise IntegrityError(
                f"{f.key}: content sha256 {content.sha256[:12]}... does not match the "
                f"producer's {f.sha256[:12]}...; refusing to use it"
            )
        os.replace(tmp, dest)
        return "store"
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


class _Advancing:
    def __init__(self, inner: Any, advance: Callable[[int], None]) -> None:
        self.inner = inner
        self.advance = advance

    def write(self, data: bytes) -> int:
        self.inner.write(data)
        self.advance(len(data))
        return len(data)

    def flush(self) -> None:
        self.inner.flush()


def free_bytes(path: Path) -> int:
    usage = shutil.disk_usage(path)
    return usage.free
