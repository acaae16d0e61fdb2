"""The byte pipeline between the spool and the store: compress -> encrypt, and back.

One code path for every artifact kind: `encode_file` turns an original file into the
stored bytes (zstd, then age when recipients are configured) and hashes what it writes;
`decode_stream` reverses it and hashes both sides, which is how verify, restore and
wal-restore prove the bytes they read are the bytes the producer wrote.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO, Protocol, cast

import zstandard

from pgvault.errors import EncryptionError, IntegrityError, StoreError

CHUNK = 1 << 20


class _Readable(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


class HashingWriter:
    """A write-only file object that hashes and counts what passes through."""

    def __init__(self, inner: BinaryIO | None) -> None:
        self.inner = inner
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self.digest.update(data)
        self.size += len(data)
        if self.inner is not None:
            self.inner.write(data)
        return len(data)

    def flush(self) -> None:
        if self.inner is not None:
            self.inner.flush()

    def writable(self) -> bool:
        return True

    def hexdigest(self) -> str:
        return self.digest.hexdigest()


class HashingReader:
    """A read-only file object that hashes and counts what is read from it."""

    def __init__(self, inner: _Readable) -> None:
        self.inner = inner
        self.digest = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self.inner.read(n)
        self.digest.update(data)
        self.size += len(data)
        return data

    def readinto(self, buf: bytearray | memoryview) -> int:
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)

    def readable(self) -> bool:
        return True

    def hexdigest(self) -> str:
        return self.digest.hexdigest()


@dataclass(frozen=True)
class Encoding:
    codec: str  # "zstd" | "none"
    encryption: str  # "age" | "none"


@dataclass(frozen=True)
class Digest:
    size: int
    sha256: str


def _recipients(keys: Sequence[str]) -> list[Any]:
    import pyrage

    try:
        return [pyrage.x25519.Recipient.from_str(k) for k in keys]
    except Exception as exc:  # pyrage raises its own RecipientError / ValueError
        raise EncryptionError(f"invalid age recipient: {exc}") from None


def load_identities(path: str | Path) -> list[Any]:
    """Read an age identity file (AGE-SECRET-KEY-1... lines; comments allowed)."""
    import pyrage

    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise EncryptionError(f"cannot read age identity file {path}: {exc.strerror}") from None
    keys = [ln.strip() for ln in lines if ln.strip().startswith("AGE-SECRET-KEY-")]
    if not keys:
        raise EncryptionError(f"{path} holds no age identity (AGE-SECRET-KEY-1...)")
    try:
        return [pyrage.x25519.Identity.from_str(k) for k in keys]
    except Exception:
        raise EncryptionError(f"{path}: malformed age identity") from None


def encode_file(
    src: Path, dst: Path, *, compress: bool, level: int = 3, recipients: Sequence[str] = ()
) -> tuple[Encoding, Digest, Digest]:
    """src -> [zstd] -> [age] -> dst (fsynced). Returns the encoding, the digest of the
    stored bytes and the digest of the source bytes actually read."""
    encoding = Encoding("zstd" if compress else "none", "age" if recipients else "none")
    try:
        with src.open("rb") as fin, dst.open("wb") as fout:
            out = HashingWriter(fout)
            source = HashingReader(fin)
            reader: Any = source
            if compress:
                cctx = zstandard.ZstdCompressor(level=level, write_checksum=True)
                reader = cctx.stream_reader(
                    cast(IO[bytes], source), size=os.fstat(fin.fileno()).st_size
                )
            if recipients:
                import pyrage

                try:
                    pyrage.encrypt_io(reader, out, _recipients(recipients))
                except pyrage.EncryptError as exc:
                    raise EncryptionError(f"{src.name}: encryption failed: {exc}") from None
            else:
                shutil.copyfileobj(reader, out, CHUNK)
            fout.flush()
            os.fsync(fout.fileno())
    except OSError as exc:
        raise StoreError(f"{src.name}: cannot encode to {dst}: {exc.strerror}") from None
    return encoding, Digest(out.size, out.hexdigest()), Digest(source.size, source.hexdigest())


def decode_stream(
    src: _Readable,
    dst: BinaryIO | None,
    encoding: Encoding,
    identities: Sequence[Any] = (),
    what: str = "object",
) -> tuple[Digest, Digest]:
    """Stored bytes -> [age] -> [zstd] -> dst. Returns (stored digest, content digest).

    `dst=None` only hashes (verify). Raises IntegrityError for undecodable bytes and
    EncryptionError when the object is encrypted and no identity fits.
    """
    stored = HashingReader(src)
    content = HashingWriter(dst)
    sink: Any = content
    dctx_writer = None
    try:
        if encoding.codec == "zstd":
            dctx_writer = zstandard.ZstdDecompressor().stream_writer(
                cast(IO[bytes], content), closefd=False
            )
            sink = dctx_writer
        if encoding.encryption == "age":
            if not identities:
                raise EncryptionError(
                    f"{what} is age-encrypted; set [encryption] identity_file "
                    "or PGVAULT_AGE_IDENTITY to read it"
                )
            import pyrage

            try:
                pyrage.decrypt_io(stored, sink, list(identities))
            except pyrage.DecryptError as exc:
                msg = str(exc)
                if "No matching keys" in msg or "no identity" in msg.lower():
                    raise EncryptionError(f"{what}: no given age identity can decrypt it") from None
                raise IntegrityError(f"{what}: ciphertext does not authenticate ({msg})") from None
        else:
            shutil.copyfileobj(stored, sink, CHUNK)
        if dctx_writer is not None:
            dctx_writer.flush()  # type: ignore[no-untyped-call]
            dctx_writer.close()  # type: ignore[no-untyped-call]
    except zstandard.ZstdError as exc:
        raise IntegrityError(f"{what}: zstd stream is corrupt ({exc})") from None
    # drain anything a decoder did not consume, so the stored digest covers every byte
    while stored.read(CHUNK):
        pass
    return Digest(stored.size, stored.hexdigest()), Digest(content.size, content.hexdigest())


def sha256_file(path: Path) -> Digest:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb", buffering=0) as fh:
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        while n := fh.readinto(buf):
            digest.update(view[:n])
            size += n
    return Digest(size, digest.hexdigest())
