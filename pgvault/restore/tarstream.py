"""A base backup's .tar.zst read as a stream of members, for extraction (issue 18).

Python's tarfile reads a compressed stream through 10 KiB records and copies every
member's bytes again on the way out. This reader decompresses in 1 MiB reads and hands
out each member's data as views into the decompressed buffers (no copy): extraction costs
zstd itself, the hashing and the kernel's writes (on the benchmark's 1.47 GB, ~0.2 s less
CPU than tarfile; the writes' system time is most of what remains).

What it accepts is what PostgreSQL's tar writer (and pgvault's one-pass re-headed WAL
tar) produces, plus what Python's tarfile writes for the same members: ustar headers with
valid checksums (pgvault.producers.bbstream.parse_header), regular files and directories,
a pax extended header ('x': path, size, mtime) or a GNU long name ('L') before a member,
global pax headers ('g', ignored). Links and special files are refused by name
(safetar's rules: tablespaces come as their own tars and are linked by pgvault). A
truncated stream or a damaged header is a RestoreError; the zstd frame is read to its
end, so its own checksum is checked too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

import zstandard

from pgvault.errors import BackupError, RestoreError
from pgvault.producers.bbstream import (
    BLOCK,
    StreamSource,
    StreamTruncated,
    parse_header,
    tar_checksum,
    tar_octal,
)

# decompressed bytes per read. 4 MiB reads cost twice the system time of 1 MiB ones here
# (fresh buffers faulted in page by page, bench/extract.py): 1 MiB is a few thousand
# Python calls per GB and stays in malloc's reused memory
READ = 1 << 20
FILE, DIRECTORY = "file", "dir"
_LINKS = (b"1", b"2")
_PAX, _PAX_GLOBAL, _GNU_LONGNAME = b"x", b"g", b"L"
_MAX_META = 1 << 20  # a pax header or long name bigger than this is not a backup's


@dataclass(frozen=True)
class Member:
    name: str
    size: int
    mode: int
    mtime: int
    kind: str  # FILE or DIRECTORY


class TarStream:
    """`members()` yields each member; a FILE's data must be consumed with `data()` (or
    `skip()`) before the next member is asked for."""

    def __init__(self, fh: IO[bytes], label: str) -> None:
        self.label = label
        reader = zstandard.ZstdDecompressor().stream_reader(fh, read_size=1 << 20)
        self._src = StreamSource(lambda _n: reader.read(READ))
        self._pending = 0  # data bytes (plus padding) of the last FILE not yet consumed

    def _fail(self, why: str) -> RestoreError:
        return RestoreError(f"{self.label}: damaged archive: {why}")

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        """The stream's failures as this archive's RestoreError."""
        try:
            yield
        except StreamTruncated:
            raise self._fail("the stream ended early (truncated)") from None
        except zstandard.ZstdError as exc:
            raise self._fail(str(exc)) from None

    def _exact(self, n: int) -> bytes:
        with self._reading():
            return self._src.exact(n)

    def _take(self, n: int) -> memoryview:
        """Up to n bytes (at least one) of the decompressed stream."""
        with self._reading():
            return self._src.take(n)

    def members(self) -> Iterator[Member]:
        meta: dict[str, str] = {}
        while True:
            if self._pending:
                raise RestoreError(f"{self.label}: a member's data was not read")
            header = self._exact(BLOCK)
            if header == bytes(BLOCK):
                self._finish()
                return
            typeflag = header[156:157]
            if tar_octal(header[148:156], "checksum") != tar_checksum(header):
                raise self._fail("tar header checksum mismatch")
            if typeflag in _LINKS:
                link = header[157:257].split(b"\0", 1)[0].decode("utf-8", "replace")
                raise RestoreError(
                    f"refusing link {meta.get('path', _name(header))!r} -> {link!r} in the "
                    "backup archive (tablespaces and links are not restored)"
                )
            if typeflag in (_PAX, _PAX_GLOBAL, _GNU_LONGNAME):
                meta = self._meta(header, typeflag, meta)
                continue
            if typeflag not in (b"0", b"\0", b"5"):
                raise RestoreError(
                    f"refusing special member {meta.get('path', _name(header))!r} in the "
                    "backup archive"
                )
            try:
                name, size, typeflag = parse_header(header)
            except BackupError as exc:
                raise self._fail(str(exc)) from None
            name = meta.get("path", name).removeprefix("./")
            try:
                size = int(meta.get("size", size))
                mtime = int(float(meta.get("mtime", tar_octal(header[136:148], "mtime"))))
                mode = tar_octal(header[100:108], "mode")
            except (BackupError, ValueError, OverflowError) as exc:
                raise self._fail(f"unreadable member header: {exc}") from None
            if size < 0:
                raise self._fail("negative member size")
            meta = {}
            if typeflag == b"5":
                self._skip_bytes(size + (-size % BLOCK))
                yield Member(name.rstrip("/"), 0, mode, mtime, DIRECTORY)
                continue
            self._pending = size
            yield Member(name, size, mode, mtime, FILE)

    def data(self) -> Iterator[memoryview]:
        """The current FILE member's bytes, as views into the decompressed buffers."""
        remaining, self._pending = self._pending, 0
        pad = -remaining % BLOCK
        while remaining:
            chunk = self._take(remaining)
            remaining -= len(chunk)
            yield chunk
        self._exact(pad)

    def skip(self) -> None:
        for _ in self.data():
            pass

    def _skip_bytes(self, n: int) -> None:
        while n:
            n -= len(self._take(n))

    def _meta(self, header: bytes, typeflag: bytes, meta: dict[str, str]) -> dict[str, str]:
        size = tar_octal(header[124:136], "size")
        if size > _MAX_META:
            raise self._fail("oversized extended header")
        raw = self._exact(size + (-size % BLOCK))[:size]
        if typeflag == _PAX_GLOBAL:
            return meta
        if typeflag == _GNU_LONGNAME:
            return {**meta, "path": raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")}
        out = dict(meta)
        while raw:  # "<len> <key>=<value>\n" records
            length_text, _, _ = raw.partition(b" ")
            try:
                length = int(length_text)
            except ValueError:
                raise self._fail("unreadable pax header") from None
            if not len(length_text) + 2 <= length <= len(raw):  # never loops on a 0
                raise self._fail("unreadable pax header")
            record, raw = raw[:length], raw[length:]
            key, _, value = record[len(length_text) + 1 : -1].partition(b"=")
            out[key.decode("utf-8", "replace")] = value.decode("utf-8", "surrogateescape")
        return out

    def _finish(self) -> None:
        """After the end-of-archive block: the zstd frame is read to its end, so its own
        checksum is checked (what follows the block is ignored, as tar does)."""
        with self._reading():
            self._src.rest()


def _name(header: bytes) -> str:
    return header[:100].split(b"\0", 1)[0].decode("utf-8", "replace")
