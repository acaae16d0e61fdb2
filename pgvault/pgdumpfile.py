"""Reading a custom-format dump (`pg_dump -Fc`) without running pg_restore.

What the logical backup checks before it keeps a dump, and what a whole-database restore
needs from its table of contents, read straight from the archive in one pass over its
head and one small read per data block (no decompression):

- the header (`PGDMP`, archive version, integer and offset sizes, format custom) and every
  TOC entry: dump id, description, schema, tag, owner, dependencies, and where its data
  block starts;
- `check_blocks`: every entry that has data has a block at its recorded offset that
  starts with its own dump id and ends, right where the next block starts (or at the end
  of the file), with the end-of-data marker. A truncated or overwritten archive fails.

Archive versions 1.12 to 1.16 (PostgreSQL 9.2 to 18) are understood; any other answers
`UnsupportedArchive`, and the caller falls back to `pg_restore --list`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pgvault.errors import BackupError
from pgvault.pgtables import TableRef

MAGIC = b"PGDMP"
FORMAT_CUSTOM = 1
MIN_VERSION = (1, 12)
MAX_VERSION = (1, 16)
POS_NOT_SET, POS_SET, NO_DATA = 1, 2, 3
BLK_DATA, BLK_BLOBS = 1, 3
HEAD_READ = 1 << 20  # the TOC of most databases fits; more is read when it does not


class DumpFormatError(BackupError):
    """The file is not a complete custom-format archive."""


class UnsupportedArchive(Exception):
    """An archive version this reader does not know (ask pg_restore instead)."""


@dataclass
class ArchiveEntry:
    id: int
    desc: str
    schema: str | None
    tag: str
    owner: str | None
    deps: list[int] = field(default_factory=list)
    data_state: int = NO_DATA
    offset: int = 0

    @property
    def ref(self) -> TableRef:
        return TableRef(self.schema or "", self.tag)


@dataclass
class Archive:
    version: tuple[int, int, int]
    int_size: int
    off_size: int
    size: int
    entries: list[ArchiveEntry]

    def data_tables(self) -> set[TableRef]:
        """Tables with a TABLE DATA entry whose data was written into the archive."""
        return {e.ref for e in self.entries if e.desc == "TABLE DATA" and e.data_state == POS_SET}

    def partitions(self) -> dict[TableRef, list[TableRef]]:
        """Partitioned table -> its direct partitions, from the TABLE ATTACH entries (each
        depends on the partition's and the parent's TABLE entries)."""
        tables = {e.id: e for e in self.entries if e.desc == "TABLE"}
        out: dict[TableRef, list[TableRef]] = {}
        for e in self.entries:
            if e.desc != "TABLE ATTACH":
                continue
            deps = [tables[d] for d in e.deps if d in tables]
            child = next((t for t in deps if t.ref == e.ref), None)
            parent = next((t for t in deps if t is not child), None)
            if child is not None and parent is not None:
                out.setdefault(parent.ref, []).append(child.ref)
        return out


class _Short(Exception):
    """The bytes read so far end inside the table of contents."""


def read_archive(path: Path) -> Archive:
    """The header and table of contents of a custom-format archive."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        want = HEAD_READ
        while True:
            f.seek(0)
            head = f.read(want)
            try:
                return _parse(head, path, size)
            except _Short:
                if len(head) >= size:
                    raise DumpFormatError(
                        f"{path}: the archive ends inside its table of contents"
                    ) from None
                want *= 4


@dataclass(frozen=True)
class _Fields:
    """Readers over the archive's bytes sharing one position (closures: fast)."""

    integer: Callable[[], int]
    text: Callable[[], str | None]
    skip: Callable[[], None]
    raw: Callable[[int], bytes]


def _fields(buf: bytes, start: int, isz: int) -> _Fields:
    end = len(buf)
    from_bytes = int.from_bytes
    pos = start

    def raw(n: int) -> bytes:
        nonlocal pos
        nxt = pos + n
        if nxt > end:
            raise _Short
        out = buf[pos:nxt]
        pos = nxt
        return out

    def integer() -> int:
        nonlocal pos
        nxt = pos + 1 + isz
        if nxt > end:
            raise _Short
        value = from_bytes(buf[pos + 1 : nxt], "little")
        sign = buf[pos]
        pos = nxt
        return -value if sign else value

    def text() -> str | None:
        n = integer()
        return None if n < 0 else raw(n).decode("utf-8", errors="replace")

    def skip() -> None:
        nonlocal pos
        n = integer()
        if n > 0:
            pos += n
            if pos > end:
                raise _Short

    return _Fields(integer, text, skip, raw)


def _header(buf: bytes, path: Path) -> tuple[tuple[int, int, int], int, int]:
    """(archive version, integer size, offset size) of a custom-format archive."""
    head = buf[:5]
    if head != MAGIC[: len(head)]:
        raise DumpFormatError(f"{path} is not a pg_dump custom-format archive")
    if len(buf) < 11:
        raise _Short
    version = (buf[5], buf[6], buf[7])
    if not MIN_VERSION <= version[:2] <= MAX_VERSION:
        raise UnsupportedArchive(f"archive version {'.'.join(map(str, version))}")
    isz, osz = buf[8], buf[9]
    if not (1 <= isz <= 8 and 1 <= osz <= 8):
        raise DumpFormatError(f"{path}: implausible integer sizes in the header")
    if buf[10] != FORMAT_CUSTOM:
        raise DumpFormatError(f"{path} is not a custom-format archive")
    return version, isz, osz


def _parse(buf: bytes, path: Path, size: int) -> Archive:
    """Parse from bytes; _Short when they end too early."""
    version, isz, osz = _header(buf, path)
    f = _fields(buf, 11, isz)
    if version[:2] >= (1, 15):
        f.raw(1)  # compression algorithm
    else:
        f.integer()  # compression level
    for _ in range(7):  # creation time
        f.integer()
    for _ in range(3):  # database name, server version, pg_dump version
        f.skip()
    count = f.integer()
    if count < 0 or count > size:
        raise DumpFormatError(f"{path}: implausible TOC entry count {count}")
    entries = [_entry(f, version, osz) for _ in range(count)]
    return Archive(version, isz, osz, size, entries)


def _entry(f: _Fields, version: tuple[int, int, int], osz: int) -> ArchiveEntry:
    integer, text, skip = f.integer, f.text, f.skip
    dump_id = integer()
    integer()  # had dumper
    skip()  # table oid
    skip()  # oid
    tag = text() or ""
    desc = text() or ""
    integer()  # section
    skip()  # definition
    skip()  # drop statement
    skip()  # copy statement
    schema = text()
    skip()  # tablespace
    if version[:2] >= (1, 14):
        skip()  # table access method
    if version[:2] >= (1, 16):
        integer()  # relkind
    owner = text()
    skip()  # "with oids"
    deps = []
    while (dep := text()) is not None:
        deps.append(int(dep))
    where = f.raw(1 + osz)
    offset = int.from_bytes(where[1:], "little")
    return ArchiveEntry(dump_id, desc, schema, tag, owner, deps, where[0], offset)


def check_blocks(path: Path, archive: Archive) -> None:
    """Every data block where the TOC says, with its own dump id, and complete."""
    blocks = sorted((e.offset, e) for e in archive.entries if e.data_state == POS_SET)
    unset = [e for e in archive.entries if e.data_state == POS_NOT_SET]
    if unset:
        raise DumpFormatError(
            f"{path}: data of {unset[0].desc} {unset[0].tag} has no position in the archive "
            "(written to a pipe, or pg_dump did not finish)"
        )
    end_marker = bytes(1 + archive.int_size)  # WriteInt(0): sign byte and zero bytes
    with open(path, "rb") as f:
        for i, (offset, entry) in enumerate(blocks):
            end = blocks[i + 1][0] if i + 1 < len(blocks) else archive.size
            what = f"{path}: data block of {entry.desc} {entry.tag}"
            if not 0 < offset < end - len(end_marker):
                raise DumpFormatError(f"{what} lies outside the archive")
            f.seek(offset)
            head = f.read(2 + archive.int_size)
            if head[0] not in (BLK_DATA, BLK_BLOBS) or head[1] != 0:
                raise DumpFormatError(f"{what} does not start with a block header")
            if int.from_bytes(head[2:], "little") != entry.id:
                raise DumpFormatError(f"{what} holds another entry's data")
            f.seek(end - len(end_marker))
            if f.read(len(end_marker)) != end_marker:
                raise DumpFormatError(f"{what} is incomplete (no end-of-data marker)")


__all__ = [
    "Archive",
    "ArchiveEntry",
    "DumpFormatError",
    "UnsupportedArchive",
    "check_blocks",
    "read_archive",
]
