"""WAL record layout: find records by LSN across page headers, and re-point a
CREATE TABLESPACE record into the restored cluster's own directory.

PostgreSQL replays `CREATE TABLESPACE ... LOCATION '/srv/ts1'` by creating the symlink
`pg_tblspc/<oid> -> /srv/ts1` and writing into it: a restored copy on the production host
would write into production's tablespace. There is no recovery-time remap for tablespaces
created after the base backup. What PostgreSQL does offer is the "in place" tablespace: a
record whose location is the empty string makes redo use `pg_tblspc/<oid>` itself (a
directory, or a symlink pgvault created beforehand pointing at the mapped directory), and
never touches any other path. So before a segment is handed to a restore, the location
bytes of every CREATE TABLESPACE record in it are zeroed (the record keeps its length; the
path is a NUL-terminated string) and the record's CRC-32C is recomputed. The original CRC
is checked first, so a wrong offset can never corrupt a segment silently.

Layout (the same in PostgreSQL 14 to 18): pages of XLOG_BLCKSZ (8 KiB) each start with a
24-byte header (40 bytes on a segment's first page); records are 8-byte aligned and may
continue across page (and segment) boundaries after the next page's header. XLogRecord:
xl_tot_len u32, xl_xid u32, xl_prev u64, xl_info u8, xl_rmid u8, 2 pad, xl_crc u32. The
CRC covers the record after the header, then the header up to xl_crc.

Stdlib only: used by `wal-restore` (restore_command).
"""

from __future__ import annotations

import struct

PAGE = 8192
SHORT_PHD = 24
LONG_PHD = 40
RECORD_HDR = 24
RM_TBLSPC_ID = 5
XLOG_TBLSPC_CREATE = 0x00
XLOG_TBLSPC_DROP = 0x10
XLP_FIRST_IS_CONTRECORD = 0x0001
_BLOCK_DATA_SHORT = 255
_BLOCK_DATA_LONG = 254
_BLOCK_ORIGIN = 253
_BLOCK_TOPLEVEL_XID = 252


class WalRecordError(ValueError):
    """The bytes at an LSN are not the record the caller expected."""


def _crc_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc_table()


def crc32c(data: bytes | bytearray, crc: int = 0) -> int:
    """CRC-32C (Castagnoli), continuable: crc32c(b, crc32c(a)) == crc32c(a + b)."""
    c = crc ^ 0xFFFFFFFF
    for b in data:
        c = _TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def _header_size(offset_in_segment: int) -> int:
    return LONG_PHD if offset_in_segment == 0 else SHORT_PHD


class Segments:
    """Consecutive WAL segments of one timeline as mutable buffers, addressed by LSN."""

    def __init__(self, first_lsn: int, seg_size: int, buffers: list[bytearray]) -> None:
        self.first_lsn = first_lsn
        self.seg_size = seg_size
        self.buffers = buffers

    @property
    def end_lsn(self) -> int:
        return self.first_lsn + self.seg_size * len(self.buffers)

    def _spans(self, lsn: int, length: int) -> list[tuple[int, int, int]]:
        """(buffer index, offset, length) of the `length` record bytes starting at lsn."""
        out = []
        pos = lsn
        while length > 0:
            if pos >= self.end_lsn:
                raise WalRecordError(f"record at {lsn_text(lsn)} continues past the given WAL")
            rel = pos - self.first_lsn
            idx, off = divmod(rel, self.seg_size)
            page_off = off % PAGE
            if page_off == 0:  # a page boundary: skip the page header
                off += _header_size(off)
                page_off = off % PAGE
            take = min(length, PAGE - page_off)
            out.append((idx, off, take))
            length -= take
            pos = self.first_lsn + idx * self.seg_size + off + take
        return out

    def read(self, lsn: int, length: int) -> bytes:
        return b"".join(bytes(self.buffers[i][o : o + n]) for i, o, n in self._spans(lsn, length))

    def write(self, lsn: int, data: bytes) -> None:
        pos = 0
        for i, o, n in self._spans(lsn, len(data)):
            self.buffers[i][o : o + n] = data[pos : pos + n]
            pos += n


def lsn_text(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def parse_lsn(text: str) -> int:
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def _main_data_offset(record: bytes) -> tuple[int, int]:
    """(offset, length) of a block-less record's main data."""
    pos = RECORD_HDR
    while pos < len(record):
        block_id = record[pos]
        if block_id == _BLOCK_DATA_SHORT:
            return pos + 2, record[pos + 1]
        if block_id == _BLOCK_DATA_LONG:
            return pos + 5, struct.unpack_from("<I", record, pos + 1)[0]
        if block_id == _BLOCK_ORIGIN:
            pos += 3
        elif block_id == _BLOCK_TOPLEVEL_XID:
            pos += 5
        else:
            raise WalRecordError(f"unexpected block header {block_id} in a tablespace record")
    raise WalRecordError("tablespace record without main data")


def _checked_record(segs: Segments, lsn: int) -> bytes:
    tot_len = struct.unpack("<I", segs.read(lsn, 4))[0]
    if not RECORD_HDR < tot_len <= RECORD_HDR + 16 + 8192:
        raise WalRecordError(f"no tablespace record at {lsn_text(lsn)} (length {tot_len})")
    record = segs.read(lsn, tot_len)
    stored = struct.unpack_from("<I", record, 20)[0]
    if crc32c(record[:20], crc32c(record[RECORD_HDR:])) != stored:
        raise WalRecordError(f"record at {lsn_text(lsn)} fails its CRC: not the expected record")
    return record


def tablespace_record(segs: Segments, lsn: int) -> tuple[str, int, str]:
    """(op, oid, location) of the CREATE/DROP TABLESPACE record at lsn (CRC checked)."""
    record = _checked_record(segs, lsn)
    if record[17] != RM_TBLSPC_ID:
        raise WalRecordError(f"record at {lsn_text(lsn)} is not a tablespace record")
    start, length = _main_data_offset(record)
    oid = struct.unpack_from("<I", record, start)[0]
    if record[16] & 0xF0 == XLOG_TBLSPC_DROP:
        return "drop", oid, ""
    raw = record[start + 4 : start + length]
    return "create", oid, raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def make_in_place(segs: Segments, lsn: int) -> tuple[int, str]:
    """Zero the location of the CREATE TABLESPACE record at lsn, fix its CRC.

    Returns (oid, original location); a record already in place is left as it is."""
    record = bytearray(_checked_record(segs, lsn))
    if record[17] != RM_TBLSPC_ID or record[16] & 0xF0 != XLOG_TBLSPC_CREATE:
        raise WalRecordError(f"record at {lsn_text(lsn)} is not a CREATE TABLESPACE")
    start, length = _main_data_offset(bytes(record))
    oid = struct.unpack_from("<I", record, start)[0]
    path = bytes(record[start + 4 : start + length]).split(b"\0", 1)[0]
    if path:
        record[start + 4 : start + length] = bytes(length - 4)
        crc = crc32c(record[:20], crc32c(record[RECORD_HDR:]))
        struct.pack_into("<I", record, 20, crc)
        segs.write(lsn, bytes(record))
    return oid, path.decode("utf-8", "replace")


def straddling_record(segment: bytes | bytearray, seg_size: int) -> tuple[int, int | None] | None:
    """The record that starts in this segment and continues into the next one.

    Returns (offset in the segment, rmid or None when the header itself is cut before
    xl_rmid), or None when the segment's records all end inside it (or WAL ends here).
    Only the last page is walked: a record that starts on an earlier page and still
    reaches the next segment is longer than a page, and no tablespace record is."""
    page_start = seg_size - PAGE
    if len(segment) < seg_size:
        return None
    info, rem_len = (
        struct.unpack_from("<H", segment, page_start + 2)[0],
        struct.unpack_from("<I", segment, page_start + 16)[0],
    )
    off = SHORT_PHD
    if info & XLP_FIRST_IS_CONTRECORD:
        off += (rem_len + 7) & ~7
    while off < PAGE:
        if PAGE - off < 4:
            return None  # no room for a record's length: the next one starts a page later
        tot_len = struct.unpack_from("<I", segment, page_start + off)[0]
        if tot_len == 0:
            return None  # end of WAL (or the rest of a switched segment)
        if off + tot_len > PAGE:
            rmid = segment[page_start + off + 17] if off + 18 <= PAGE else None
            return page_start + off, rmid
        off += (tot_len + 7) & ~7
    return None
