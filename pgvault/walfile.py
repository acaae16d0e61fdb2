"""WAL file names, segment arithmetic and page headers.

Stdlib only: used by `wal-archive` (hot path) as well as the catalog and restore code.
"""

from __future__ import annotations

import re
import struct

DEFAULT_SEG_SIZE = 16 * 1024 * 1024
XLOG_PAGE_MAGIC_MASK = 0xFF00
XLOG_PAGE_MAGIC_HIGH = 0xD100  # every major version since 9.x uses 0xD1xx
XLP_LONG_HEADER = 0x0002
_LONG_HEADER = struct.Struct("<HHIQI4xQII")  # XLogLongPageHeaderData, little-endian x86/arm
_HEADER_BYTES = _LONG_HEADER.size

_SEGMENT = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$")
_HISTORY = re.compile(r"^([0-9A-F]{8})\.history$")
_PARTIAL = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})\.partial$")
_BACKUP = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})\.([0-9A-F]{8})\.backup$")


class WalName:
    """A file name PostgreSQL hands to archive_command/restore_command.

    (A plain class, not a dataclass: importing dataclasses costs the archive_command
    path several milliseconds per segment.)"""

    __slots__ = ("log", "name", "seg", "timeline", "type")

    def __init__(self, name: str, type: str, timeline: int, log: int = 0, seg: int = 0) -> None:
        self.name = name
        self.type = type  # "segment" | "history" | "partial" | "backup"
        self.timeline = timeline
        self.log = log
        self.seg = seg

    def __repr__(self) -> str:
        return f"WalName({self.name!r}, {self.type!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WalName) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)

    @property
    def kind(self) -> str:
        """Artifact kind in the pipeline: history files are their own kind."""
        return "history" if self.type == "history" else "wal"

    @property
    def is_segment(self) -> bool:
        return self.type == "segment"

    def segno(self, seg_size: int = DEFAULT_SEG_SIZE) -> int:
        return self.log * segments_per_xlogid(seg_size) + self.seg

    def start_lsn(self, seg_size: int = DEFAULT_SEG_SIZE) -> int:
        return self.segno(seg_size) * seg_size

    def store_suffix(self) -> str:
        """History files are stored as-is, everything else zstd-compressed."""
        return "" if self.type == "history" else ".zst"


def parse_name(name: str) -> WalName:
    """Parse a WAL file name or raise ValueError with a one-line reason."""
    if m := _SEGMENT.match(name):
        tli, log, seg = (int(g, 16) for g in m.groups())
        if tli == 0:
            raise ValueError(f"{name!r}: timeline 0 does not exist")
        return WalName(name, "segment", tli, log, seg)
    if m := _HISTORY.match(name):
        tli = int(m.group(1), 16)
        if tli == 0:  # 00000001.history never exists, but PostgreSQL asks for it
            raise ValueError(f"{name!r}: timeline 0 does not exist")
        return WalName(name, "history", tli)
    if m := _PARTIAL.match(name):
        tli, log, seg = (int(g, 16) for g in m.groups())
        return WalName(name, "partial", tli, log, seg)
    if m := _BACKUP.match(name):
        tli, log, seg = (int(g, 16) for g in m.groups()[:3])
        return WalName(name, "backup", tli, log, seg)
    raise ValueError(
        f"{name!r} is not a WAL file name (expected 24 hex digits, TLI.history, "
        "SEGMENT.partial or SEGMENT.OFFSET.backup)"
    )


def segments_per_xlogid(seg_size: int) -> int:
    return 0x100000000 // seg_size


def segment_name(timeline: int, segno: int, seg_size: int = DEFAULT_SEG_SIZE) -> str:
    per = segments_per_xlogid(seg_size)
    return f"{timeline:08X}{segno // per:08X}{segno % per:08X}"


def segno_of_lsn(lsn: int, seg_size: int = DEFAULT_SEG_SIZE) -> int:
    return lsn // seg_size


def format_lsn(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def parse_lsn(text: str) -> int:
    hi, _, lo = text.strip().partition("/")
    if not lo:
        raise ValueError(f"{text!r} is not an LSN (expected X/X)")
    return (int(hi, 16) << 32) | int(lo, 16)


class WalHeader:
    """The long page header at the start of every WAL segment."""

    __slots__ = (
        "block_size",
        "info",
        "magic",
        "pageaddr",
        "seg_size",
        "system_identifier",
        "timeline",
    )

    def __init__(
        self,
        *,
        magic: int,
        info: int,
        timeline: int,
        pageaddr: int,
        system_identifier: int,
        seg_size: int,
        block_size: int,
    ) -> None:
        self.magic = magic
        self.info = info
        self.timeline = timeline
        self.pageaddr = pageaddr
        self.system_identifier = system_identifier
        self.seg_size = seg_size
        self.block_size = block_size


def read_header(data: bytes) -> WalHeader:
    """Decode a segment's first page header or raise ValueError."""
    if len(data) < _HEADER_BYTES:
        raise ValueError("file is shorter than a WAL page header")
    magic, info, tli, pageaddr, _rem, sysid, seg_size, blcksz = _LONG_HEADER.unpack_from(data)
    if magic & XLOG_PAGE_MAGIC_MASK != XLOG_PAGE_MAGIC_HIGH:
        raise ValueError(f"bad WAL page magic 0x{magic:04X}")
    if not info & XLP_LONG_HEADER:
        raise ValueError("first page has no long header")
    if seg_size <= 0 or seg_size & (seg_size - 1) or not 1 << 20 <= seg_size <= 1 << 30:
        raise ValueError(f"implausible WAL segment size {seg_size}")
    return WalHeader(
        magic=magic,
        info=info,
        timeline=tli,
        pageaddr=pageaddr,
        system_identifier=sysid,
        seg_size=seg_size,
        block_size=blcksz,
    )


def header_bytes() -> int:
    return _HEADER_BYTES


class HistoryEntry:
    __slots__ = ("parent_timeline", "reason", "switchpoint")

    def __init__(self, parent_timeline: int, switchpoint: int, reason: str) -> None:
        self.parent_timeline = parent_timeline
        self.switchpoint = switchpoint
        self.reason = reason


def parse_history(text: str) -> list[HistoryEntry]:
    """Parse a timeline history file ("parentTLI<TAB>switchpoint<TAB>reason" lines)."""
    entries = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 2)
        if len(parts) < 2:
            raise ValueError(f"malformed history line {line!r}")
        entries.append(
            HistoryEntry(int(parts[0]), parse_lsn(parts[1]), parts[2] if len(parts) > 2 else "")
        )
    return entries
