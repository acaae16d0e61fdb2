"""A directory as object store (the embedded default, also the 'local copy' target).

Object `k` is the file `root/k`; its metadata is the JSON file `root/k.pgvault-meta`.
Writes go to a hidden temp file in the same directory, are fsynced and renamed, so a
reader never sees a partial object.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from pgvault.errors import ObjectMissing, StoreError, StoreUnavailable
from pgvault.fsutil import fsync_dir
from pgvault.storage.base import ObjectInfo, ObjectStore

META_SUFFIX = ".pgvault-meta"


class LocalStore(ObjectStore):
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def describe(self) -> str:
        return f"local:{self.root}"

    def _path(self, key: str) -> Path:
        if not key or key.startswith("/") or ".." in key.split("/"):
            raise StoreError(f"invalid object key {key!r}")
        return self.root / key

    def _ensure_root(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreUnavailable(f"local store {self.root}: {exc.strerror}") from None

    def _write(self, path: Path, writer: BinaryIO | bytes) -> None:
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            with tmp.open("wb") as out:
                if isinstance(writer, bytes):
                    out.write(writer)
                else:
                    shutil.copyfileobj(writer, out, 1 << 20)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise StoreError(f"local store: cannot write {path}: {exc.strerror}") from None

    def _put(self, key: str, source: BinaryIO | bytes, metadata: Mapping[str, str]) -> None:
        self._ensure_root()
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"local store: cannot create {path.parent}: {exc.strerror}") from None
        meta_path = path.with_name(path.name + META_SUFFIX)
        self._write(meta_path, json.dumps(dict(metadata), sort_keys=True).encode())
        self._write(path, source)
        fsync_dir(path.parent)

    def put_file(self, key: str, path: Path, metadata: Mapping[str, str]) -> None:
        try:
            fh = path.open("rb")
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc.strerror}") from None
        with fh:
            self._put(key, fh, metadata)

    def put_bytes(self, key: str, data: bytes, metadata: Mapping[str, str]) -> None:
        self._put(key, data, metadata)

    def head(self, key: str) -> ObjectInfo | None:
        if not self.root.is_dir():  # unmounted or mistyped: not "the object is absent"
            raise StoreUnavailable(f"local store {self.root} does not exist or is not mounted")
        path = self._path(key)
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreUnavailable(f"local store: {path}: {exc.strerror}") from None
        try:
            meta = json.loads(path.with_name(path.name + META_SUFFIX).read_text())
        except (OSError, ValueError):
            meta = {}
        return ObjectInfo(key, st.st_size, meta, datetime.fromtimestamp(st.st_mtime, UTC))

    @contextlib.contextmanager
    def _reader(self, path: Path, key: str) -> Iterator[BinaryIO]:
        try:
            fh = path.open("rb")
        except FileNotFoundError:
            raise ObjectMissing(f"object {key} not found in {self.describe()}") from None
        except OSError as exc:
            raise StoreUnavailable(f"local store: {path}: {exc.strerror}") from None
        with fh:
            yield fh

    def open_read(self, key: str) -> contextlib.AbstractContextManager[BinaryIO]:
        return self._reader(self._path(key), key)

    def delete(self, key: str) -> None:
        path = self._path(key)
        for victim in (path, path.with_name(path.name + META_SUFFIX)):
            try:
                victim.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise StoreError(f"local store: cannot delete {victim}: {exc.strerror}") from None

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        if not self.root.is_dir():  # an unmounted store must not look like an empty one
            raise StoreUnavailable(f"local store {self.root} does not exist or is not mounted")
        base = self.root / prefix if prefix else self.root
        start = base if base.is_dir() else base.parent
        if not start.is_dir():
            return
        for dirpath, dirs, files in os.walk(start):
            dirs.sort()
            for name in sorted(files):
                if name.endswith(META_SUFFIX) or name.startswith("."):
                    continue
                path = Path(dirpath) / name
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    st = path.stat()
                    yield ObjectInfo(key, st.st_size, {}, datetime.fromtimestamp(st.st_mtime, UTC))
