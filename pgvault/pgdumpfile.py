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
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

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


class _Reader:
    def __init__(self, f: BinaryIO, path: Path) -> None:
        self.f = f
        self.path = path
        self.buf = b""
        self.pos = 0
        self.base = 0  # file offset of buf[0]
        self.int_size = 4
        self.off_size = 8

    def _need(self, n: int) -> None:
        if self.pos + n <= len(self.buf):
            return
        more = self.f.read(max(HEAD_READ, n))
        self.buf = self.buf[self.pos :] + more
        self.base += self.pos
        self.pos = 0
        if len(self.buf) < n:
            raise DumpFormatError(f"{self.path}: the archive ends inside its table of contents")

    def byte(self) -> int:
        self._need(1)
        b = self.buf[self.pos]
        self.pos += 1
        return b

    def raw(self, n: int) -> bytes:
        self._need(n)
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def read_int(self) -> int:
        self._need(1 + self.int_size)
        sign = self.buf[self.pos]
        value = int.from_bytes(self.buf[self.pos + 1 : self.pos + 1 + self.int_size], "little")
        self.pos += 1 + self.int_size
        return -value if sign else value

    def read_str(self) -> str | None:
        n = self.read_int()
        if n < 0:
            return None
        return self.raw(n).decode("utf-8", errors="replace")

    def offset(self) -> tuple[int, int]:
        flag = self.byte()
        return flag, int.from_bytes(self.raw(self.off_size), "little")


def read_archive(path: Path) -> Archive:
    """The header and table of contents of a custom-format archive."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        r = _Reader(f, path)
        if r.raw(5) != MAGIC:
            raise DumpFormatError(f"{path} is not a pg_dump custom-format archive")
        version = (r.byte(), r.byte(), r.byte())
        if not MIN_VERSION <= version[:2] <= MAX_VERSION:
            raise UnsupportedArchive(f"archive version {'.'.join(map(str, version))}")
        r.int_size, r.off_size = r.byte(), r.byte()
        if not (1 <= r.int_size <= 8 and 1 <= r.off_size <= 8):
            raise DumpFormatError(f"{path}: implausible integer sizes in the header")
        if r.byte() != FORMAT_CUSTOM:
            raise DumpFormatError(f"{path} is not a custom-format archive")
        if version[:2] >= (1, 15):
            r.byte()  # compression algorithm
        else:
            r.read_int()  # compression level
        for _ in range(7):  # creation time
            r.read_int()
        r.read_str()  # database name
        r.read_str()  # server version
        r.read_str()  # pg_dump version
        count = r.read_int()
        if count < 0 or count > size:
            raise DumpFormatError(f"{path}: implausible TOC entry count {count}")
        entries = [_entry(r, version) for _ in range(count)]
    return Archive(version, r.int_size, r.off_size, size, entries)


def _entry(r: _Reader, version: tuple[int, int, int]) -> ArchiveEntry:
    dump_id = r.read_int()
    r.read_int()  # had dumper
    r.read_str()  # table oid
    r.read_str()  # oid
    tag = r.read_str() or ""
    desc = r.read_str() or ""
    r.read_int()  # section
    for _ in range(3):  # definition, drop statement, copy statement
        r.read_str()
    schema = r.read_str()
    r.read_str()  # tablespace
    if version[:2] >= (1, 14):
        r.read_str()  # table access method
    if version[:2] >= (1, 16):
        r.read_int()  # relkind
    owner = r.read_str()
    r.read_str()  # "with oids"
    deps = []
    while (dep := r.read_str()) is not None:
        deps.append(int(dep))
    state, offset = r.offset()
    return ArchiveEntry(dump_id, desc, schema, tag, owner, deps, state, offset)


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
