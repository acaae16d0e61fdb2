"""One pass over pg_basebackup's tar stream (`pg_basebackup -D - -Ft -Xfetch`).

pg_basebackup writing to stdout sends one tar: the data directory, then the WAL from the
backup's start to its end under `pg_wal/` (-Xfetch), then `backup_manifest`, which it
injects as the last member. `split_stream` reads that tar once, as it arrives, and
writes the spool's usual layout:

    data members        -> base.tar.zst    (header and data bytes passed through)
    pg_wal/<file>       -> pg_wal.tar.zst  (re-headed without the pg_wal/ prefix)
    backup_manifest     -> backup_manifest (kept in memory, written by the caller)

In the same pass it takes the size and SHA-256 of every regular member, WAL included
(compared with backup_manifest once that arrives: `basebackup_verify.check_digests`; with
-Xfetch the server lists the WAL files it sends in the manifest too), the names of the
WAL files, and the size and SHA-256 of the stored (compressed) bytes. Compression is
`zstandard` with `threads` worker threads, so it runs beside the reading and hashing.

Only what PostgreSQL's tar writer produces is accepted: ustar headers with valid
checksums, regular files, directories and symbolic links. A truncated stream, a damaged
header, a member after the end-of-archive blocks or a stream without backup_manifest is
a BackupError; the caller removes whatever was written.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, BinaryIO, cast

import zstandard

from pgvault.errors import BackupError
from pgvault.storage.codec import Digest, HashingWriter

BLOCK = 512
CHUNK = 1 << 20
END_OF_ARCHIVE = bytes(2 * BLOCK)
WAL_PREFIX = "pg_wal/"
MANIFEST_MEMBER = "backup_manifest"
MAX_MANIFEST = 1 << 30  # a manifest lists every file; 1 GiB would be millions of them
REGULAR, DIRECTORY, SYMLINK = (b"0", b"\0"), b"5", b"2"


class StreamTruncated(BackupError):
    """The stream ended before its end-of-archive blocks (pg_basebackup died, or was cut)."""


@dataclass
class StreamResult:
    """What one pass proved and wrote."""

    members: dict[str, Digest] = field(default_factory=dict)  # regular data files
    wal_files: list[str] = field(default_factory=list)  # relative to pg_wal/
    manifest: bytes = b""
    stored: dict[str, Digest] = field(default_factory=dict)  # file name -> stored bytes
    bytes_in: int = 0


class StreamSource:
    """Bytes from `read` (os.read on a pipe, or a file's read) with exact-length takes."""

    def __init__(self, read: Callable[[int], bytes]) -> None:
        self._read = read
        self._buf = memoryview(b"")
        self.total = 0

    def take(self, n: int) -> memoryview:
        """Up to n (> 0) bytes, at least one; EOF is a truncated stream."""
        if not self._buf:
            data = self._read(CHUNK)
            if not data:
                raise StreamTruncated("pg_basebackup's tar stream ended early (truncated)")
            self.total += len(data)
            self._buf = memoryview(data)
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def exact(self, n: int) -> bytes:
        parts = []
        while n:
            part = self.take(n)
            parts.append(bytes(part))
            n -= len(part)
        return b"".join(parts)

    def rest(self) -> bytes:
        """Everything left (after the end-of-archive blocks)."""
        parts = [bytes(self._buf)]
        self._buf = memoryview(b"")
        while data := self._read(CHUNK):
            self.total += len(data)
            parts.append(data)
        return b"".join(parts)


class ZstdTarSink:
    """A tar file written as zstd into `path`, the stored bytes hashed on their way."""

    def __init__(self, path: Path, level: int, threads: int) -> None:
        self.path = path
        self._fh: BinaryIO = path.open("xb")
        self._stored = HashingWriter(self._fh)
        cctx = zstandard.ZstdCompressor(level=level, threads=threads, write_checksum=True)
        self._writer = cctx.stream_writer(cast(IO[bytes], self._stored), closefd=False)

    def write(self, data: bytes | memoryview) -> None:
        self._writer.write(data)

    def finish(self) -> Digest:
        """End the tar and the zstd frame, fsync; the stored file's size and SHA-256."""
        self._writer.write(END_OF_ARCHIVE)
        self._writer.flush(zstandard.FLUSH_FRAME)
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        return Digest(self._stored.size, self._stored.hexdigest())

    def abort(self) -> None:
        self._fh.close()


def tar_octal(field_: bytes, what: str) -> int:
    if field_[:1] and field_[0] & 0x80:  # GNU base-256, which PostgreSQL uses past 8 GiB
        return int.from_bytes(field_[1:], "big") | ((field_[0] & 0x7F) << (8 * (len(field_) - 1)))
    text = field_.split(b"\0", 1)[0].strip()
    try:
        return int(text, 8) if text else 0
    except ValueError:
        raise BackupError(f"tar header {what} is not a number: {text[:20]!r}") from None


def tar_checksum(header: bytes) -> int:
    return sum(header[:148]) + 8 * 32 + sum(header[156:])


def parse_header(header: bytes) -> tuple[str, int, bytes]:
    """(name, size, type flag) of one ustar header, its checksum proven."""
    if tar_octal(header[148:156], "checksum") != tar_checksum(header):
        raise BackupError("tar header checksum mismatch in pg_basebackup's stream")
    name = header[:100].split(b"\0", 1)[0]
    if header[257:262] == b"ustar" and header[345] != 0:
        name = header[345:500].split(b"\0", 1)[0] + b"/" + name
    typeflag = header[156:157]
    if typeflag not in (*REGULAR, DIRECTORY, SYMLINK):
        raise BackupError(f"unsupported tar member type {typeflag!r} for {name[:100]!r}")
    text = name.decode("utf-8", "surrogateescape")
    return text.removeprefix("./"), tar_octal(header[124:136], "size"), typeflag


def renamed_header(header: bytes, name: str) -> bytes:
    """The same header under another (short) name, its checksum recomputed."""
    raw = name.encode("utf-8", "surrogateescape")
    if len(raw) > 99 or (header[257:262] == b"ustar" and header[345] != 0):
        raise BackupError(f"tar member name {name!r} cannot be re-headed")
    out = bytearray(header)
    out[:100] = raw.ljust(100, b"\0")
    out[148:156] = b" " * 8
    out[148:156] = f"{tar_checksum(bytes(out)):06o}\0 ".encode()
    return bytes(out)


class _Splitter:
    """Routes each member of the stream to its sink, hashing data files on the way."""

    def __init__(self, src: StreamSource, base: ZstdTarSink, wal: ZstdTarSink) -> None:
        self.src, self.base, self.wal = src, base, wal
        self.result = StreamResult()
        self.manifest: bytearray | None = None

    def member(self, header: bytes) -> None:
        name, size, typeflag = parse_header(header)
        regular = typeflag in REGULAR
        if regular and name == MANIFEST_MEMBER:
            if self.manifest is not None or size > MAX_MANIFEST:
                raise BackupError("pg_basebackup's stream holds an unusable backup_manifest")
            self.manifest = bytearray()
            self._copy(size, self.manifest.extend, None, padding=False)
            return
        digest = hashlib.sha256() if regular else None
        if regular and name.startswith(WAL_PREFIX):
            # -Xfetch: the server lists these in backup_manifest too, so they are checked
            relative = name.removeprefix(WAL_PREFIX)
            self.wal.write(renamed_header(header, relative))
            self.result.wal_files.append(relative)
            self._copy(size, self.wal.write, digest)
        else:
            self.base.write(header)
            self._copy(size, self.base.write, digest)
        if digest is not None:
            if name in self.result.members:
                raise BackupError(f"pg_basebackup's stream holds {name} twice")
            self.result.members[name] = Digest(size, digest.hexdigest())

    def _copy(
        self,
        size: int,
        write: Callable[[memoryview], object],
        digest: hashlib._Hash | None,
        *,
        padding: bool = True,
    ) -> None:
        """The member's data to `write` (and `digest`), then its padding (to `write` too
        when the member is copied into a tar)."""
        remaining = size
        while remaining:
            chunk = self.src.take(min(remaining, CHUNK))
            remaining -= len(chunk)
            if digest is not None:
                digest.update(chunk)
            write(chunk)
        pad = self.src.exact(-size % BLOCK)
        if padding:
            write(memoryview(pad))


def split_stream(
    read: Callable[[int], bytes], out_dir: Path, *, level: int, threads: int
) -> StreamResult:
    """Read pg_basebackup's tar from `read` into out_dir/base.tar.zst and
    out_dir/pg_wal.tar.zst; see the module docstring. Files are fsynced, not renamed."""
    src = StreamSource(read)
    sinks: list[ZstdTarSink] = []
    try:
        sinks.append(ZstdTarSink(out_dir / "base.tar.zst", level, threads))
        sinks.append(ZstdTarSink(out_dir / "pg_wal.tar.zst", level, threads))
        split = _Splitter(src, *sinks)
        while (header := src.exact(BLOCK)) != bytes(BLOCK):
            split.member(header)
        # PostgreSQL 14 injects backup_manifest unpadded, so its 1024 zero bytes end
        # 512 - (size % 512) short of a second block: after the first, zeros only
        if src.rest().strip(b"\0"):
            raise BackupError("pg_basebackup's tar stream has data after its end")
        if split.manifest is None:
            raise BackupError("pg_basebackup's stream ended without backup_manifest")
        result = split.result
        result.manifest = bytes(split.manifest)
        result.stored["base.tar.zst"] = split.base.finish()
        result.stored["pg_wal.tar.zst"] = split.wal.finish()
    except BaseException:
        for sink in sinks:
            sink.abort()
        raise
    result.bytes_in = src.total
    return result
