"""WAL record surgery without a server: CRC-32C, records across page and segment
boundaries, and the restore guard's patch of a CREATE TABLESPACE that straddles two
segments (pg_waldump shows such a record in neither segment, so pgvault must find it)."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest

from pgvault.restore import tblspc_guard
from pgvault.walfile import segment_name
from pgvault.walrec import (
    LONG_PHD,
    PAGE,
    SHORT_PHD,
    Segments,
    WalRecordError,
    crc32c,
    make_in_place,
    straddling_record,
    tablespace_record,
)

SEG = 1 << 20  # PostgreSQL's smallest segment size keeps the buffers small
MAGIC = 0xD110


def test_crc32c_matches_the_castagnoli_check_value() -> None:
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"6789", crc32c(b"12345")) == crc32c(b"123456789")


def tblspc_record(oid: int, path: bytes) -> bytes:
    data = struct.pack("<I", oid) + path + b"\0"
    body = bytes([255, len(data)]) + data
    tot = 24 + len(body)
    head = struct.pack("<IIQBBH", tot, 731, 0x1234, 0x00, 5, 0)
    crc = crc32c(head, crc32c(body))
    return head + struct.pack("<I", crc) + body


def page_header(info: int, pageaddr: int, rem_len: int, long: bool) -> bytes:
    hdr = struct.pack("<HHIQI", MAGIC, info | (2 if long else 0), 1, pageaddr, rem_len)
    if long:
        hdr += struct.pack("<4xQII", 42, SEG, PAGE)
    return hdr.ljust(LONG_PHD if long else SHORT_PHD, b"\0")


def two_segments(record: bytes, start_in_page: int) -> tuple[bytearray, bytearray, int]:
    """Segment 1 whose last page holds a filler record then `record` at page offset
    `start_in_page`, continued at the start of segment 2. Returns both and the LSN."""
    seg1 = bytearray(SEG)
    seg1[0:LONG_PHD] = page_header(0, SEG, 0, True)
    last = SEG - PAGE
    seg1[last : last + SHORT_PHD] = page_header(0, SEG + last, 0, False)
    filler = start_in_page - SHORT_PHD
    seg1[last + SHORT_PHD : last + SHORT_PHD + 4] = struct.pack("<I", filler)
    in_first = PAGE - start_in_page
    seg1[last + start_in_page :] = record[:in_first]
    seg2 = bytearray(SEG)
    rest = record[in_first:]
    seg2[0:LONG_PHD] = page_header(1, 2 * SEG, len(rest), True)
    seg2[LONG_PHD : LONG_PHD + len(rest)] = rest
    return seg1, seg2, SEG + last + start_in_page


@pytest.mark.parametrize("start_in_page", [PAGE - 40, PAGE - 16, PAGE - 8])
def test_a_record_across_two_segments_is_found_and_made_in_place(start_in_page: int) -> None:
    record = tblspc_record(16390, b"/srv/production/ts1")
    seg1, seg2, lsn = two_segments(record, start_in_page)
    found = straddling_record(seg1, SEG)
    assert found is not None and found[0] == lsn - SEG
    assert found[1] == (5 if start_in_page + 18 <= PAGE else None)
    segs = Segments(SEG, SEG, [seg1, seg2])
    assert tablespace_record(segs, lsn) == ("create", 16390, "/srv/production/ts1")
    assert make_in_place(segs, lsn) == (16390, "/srv/production/ts1")
    assert tablespace_record(segs, lsn) == ("create", 16390, "")  # CRC checked again
    assert segs.read(lsn, len(record))[:16] == record[:16]  # only path and CRC changed
    with pytest.raises(WalRecordError, match="fails its CRC"):
        tablespace_record(Segments(SEG, SEG, [seg1, bytearray(b"\xaa" * SEG)]), lsn)
    with pytest.raises(WalRecordError, match="continues past"):
        tablespace_record(Segments(SEG, SEG, [seg1]), lsn)


@pytest.mark.parametrize("start_in_page", [PAGE - 40, PAGE - 16])
def test_the_guard_patches_a_straddling_record_across_the_two_served_segments(
    tmp_path: Path, start_in_page: int
) -> None:
    record = tblspc_record(16391, b"/srv/prod/ts2")
    seg1, seg2, lsn = two_segments(record, start_in_page)
    datadir = tmp_path / "data"
    (datadir / "pg_wal").mkdir(parents=True)
    (datadir / "pg_tblspc").mkdir()
    n1, n2 = segment_name(1, 1, SEG), segment_name(1, 2, SEG)
    store = tmp_path / "archive"
    store.mkdir()
    (store / n2).write_bytes(seg2)
    guard = {
        "version": tblspc_guard.GUARD_VERSION,
        "ranges": [[1, 1, 2]],
        "segments": {},
        "straddles": [n1],
        "unscanned": [],
        "map": {},
        "by_location": {},
        "default_dir": str(datadir / "pg_tblspc_data"),
        "pg_waldump": "/nonexistent/pg_waldump",  # every segment here has facts
    }
    (datadir / tblspc_guard.GUARD_FILE).write_text(json.dumps(guard))
    served = datadir / "pg_wal" / "RECOVERYXLOG"
    served.write_bytes(seg1)
    fetched: list[str] = []

    def fetch_next(name: str) -> str | None:
        fetched.append(name)
        return str(store / name)

    done = tblspc_guard.apply(str(datadir), n1, str(served), fetch_next)
    assert fetched == [n2] and len(done) == 1 and "16391" in done[0]
    first = served.read_bytes()
    # the CRC (record offset 20) is in the first segment only when 24 bytes fit there
    assert (first != bytes(seg1)) == (start_in_page + 24 <= PAGE)
    assert (store / n2).read_bytes() == bytes(seg2)  # the fetched copy is not touched
    link = datadir / "pg_tblspc" / "16391"
    assert os.path.realpath(link) == str((datadir / "pg_tblspc_data" / "16391").resolve())
    # the next segment is served later, from wherever: the pending bytes go with it
    served.write_bytes(seg2)
    assert tblspc_guard.apply(str(datadir), n2, str(served), fetch_next) == []
    second = served.read_bytes()
    segs = Segments(SEG, SEG, [bytearray(first), bytearray(second)])
    assert tablespace_record(segs, lsn) == ("create", 16391, "")


def test_the_guard_refuses_a_link_that_points_elsewhere(tmp_path: Path) -> None:
    datadir = tmp_path / "data"
    (datadir / "pg_tblspc").mkdir(parents=True)
    os.symlink("/srv/production", datadir / "pg_tblspc" / "7")
    with pytest.raises(tblspc_guard.GuardError, match="points at /srv/production"):
        tblspc_guard.link_tablespace(str(datadir), 7, str(tmp_path / "mine"))


def test_only_segments_the_guard_never_touches_are_published_for_the_rename_path() -> None:
    """tblspc_guard.served_as_is decides which segments restore_command may take with
    `mv` alone (walqueue.READY): exactly those apply() would neither read nor change."""
    seg = 16 * 1024 * 1024
    names = [segment_name(1, n, seg) for n in range(10, 16)]
    guard = {
        "ranges": [[1, 10, 15]],
        "segments": {names[2]: ["0/2A000028"]},  # a CREATE TABLESPACE record in it
        "straddles": [names[4]],  # a record may run from names[4] into names[5]
        "unscanned": [names[5]],
    }
    served = {n: tblspc_guard.served_as_is(guard, n, seg) for n in names}
    assert served == {
        names[0]: False,  # the plan's first: its predecessor is outside the plan
        names[1]: True,
        names[2]: False,  # patched when served
        names[3]: True,
        names[4]: False,  # its straddle check reads it
        names[5]: False,  # unscanned (pg_waldump when served), and a patch may wait for it
    }
    assert tblspc_guard.served_as_is(guard, "00000002.history", seg)
    assert tblspc_guard.served_as_is(None, names[0], seg)  # no guard file: nothing to do
    assert not tblspc_guard.served_as_is(guard, segment_name(1, 16, seg), seg)  # out of plan
