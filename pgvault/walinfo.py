"""Facts about a WAL file that the catalog needs, read on the host holding the spool.

For a segment: timeline, segment number, LSN range and system identifier from its page
header, the first and last transaction-end timestamps (commit/abort, the records a
`recovery_target_time` can stop at) and every CREATE/DROP TABLESPACE record (a restore
must map those into its own directory before replaying them) from `pg_waldump`.
For a history file: its parent timeline and switch point.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pgvault.errors import PostgresError
from pgvault.log import for_artifact
from pgvault.pgtools import find_tool, run_tool, tool_major, versioned_tool
from pgvault.walfile import header_bytes, parse_history, parse_name, read_header
from pgvault.walrec import (
    RM_TBLSPC_ID,
    Segments,
    WalRecordError,
    lsn_text,
    parse_lsn,
    straddling_record,
    tablespace_record,
)

log = logging.getLogger(__name__)

_XACT = re.compile(
    r"desc: (?:COMMIT|ABORT)(?:_PREPARED)? (?:\d+: )?"
    r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) UTC"
)


def _parse_ts(text: str) -> str:
    fmt = "%Y-%m-%d %H:%M:%S.%f" if "." in text else "%Y-%m-%d %H:%M:%S"
    when = datetime.strptime(text, fmt).replace(tzinfo=UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_TBLSPC = re.compile(r"rmgr: Tablespace .*?lsn: ([0-9A-F]+/[0-9A-F]+),.*?desc: (CREATE|DROP) (\d+)")
# bumped when the facts learn something new: rows without it were never scanned for it
TABLESPACE_SCAN_VERSION = 1


# XLOG_PAGE_MAGIC of each major: pg_waldump reads only its own version's WAL
PAGE_MAGIC_MAJOR = {0xD10D: 14, 0xD110: 15, 0xD113: 16, 0xD116: 17, 0xD118: 18}


def _waldump(path: Path, rmgrs: list[str], bin_dir: str, major: int | None = None) -> str | None:
    """pg_waldump's record lines for the given resource managers (one run per rmgr: a
    repeated --rmgr is only understood from PostgreSQL 15 on), with the pg_waldump of the
    WAL's own major version when it is known."""
    out = []
    try:
        if major:
            tool = versioned_tool("pg_waldump", major, bin_dir, search=True)
        else:
            tool = find_tool("pg_waldump", bin_dir)
        runs = [rmgrs] if tool_major(tool) >= 15 else [[r] for r in rmgrs]
        for run in runs:
            proc = run_tool(
                [tool, *(f"--rmgr={r}" for r in run), str(path)],
                env={"TZ": "UTC", "PGTZ": "UTC"},
                timeout=120,
                check=False,  # the last record of a segment usually continues in the next one
            )
            out.append(proc.stdout)
    except PostgresError as exc:
        for_artifact(log, path.name).warning("pg_waldump failed: %s", exc)
        return None
    return "".join(out)


def xact_time_range(text: str) -> tuple[str | None, str | None]:
    """(first, last) transaction-end timestamps in pg_waldump output, or (None, None)."""
    stamps = [_parse_ts(m.group(1)) for m in _XACT.finditer(text)]
    if not stamps:
        return None, None
    return min(stamps), max(stamps)


def tablespace_facts(path: Path, text: str, seg_size: int) -> dict[str, Any]:
    """CREATE/DROP TABLESPACE records in the segment, read back from the bytes (op, oid,
    location: CRC-checked), and a record straddling into the next segment whose kind
    cannot be told from this segment alone (pg_waldump shows it in neither)."""
    data = path.read_bytes()
    wal = parse_name(path.name)
    segs = Segments(wal.start_lsn(seg_size), seg_size, [bytearray(data)])
    records = []
    for m in _TBLSPC.finditer(text):
        op, oid, location = tablespace_record(segs, parse_lsn(m.group(1)))
        records.append({"op": op, "oid": oid, "location": location, "lsn": m.group(1)})
    facts: dict[str, Any] = {"tblspc_scan": TABLESPACE_SCAN_VERSION, "tablespaces": records}
    straddle = straddling_record(data, seg_size)
    if straddle is not None and straddle[1] in (None, RM_TBLSPC_ID):
        facts["tblspc_straddle"] = lsn_text(wal.start_lsn(seg_size) + straddle[0])
    return facts


def wal_facts(path: Path, bin_dir: str = "") -> dict[str, Any]:
    """Metadata for the catalog and the object store about one archived WAL file."""
    wal = parse_name(path.name)
    facts: dict[str, Any] = {"wal_type": wal.type, "timeline": wal.timeline}
    if wal.type == "history":
        entries = parse_history(path.read_text())
        if entries:
            parent = entries[-1]
            facts.update(
                parent=parent.parent_timeline,
                switchpoint=parent.switchpoint,
                reason=parent.reason[:200],
            )
        return facts
    if wal.type == "backup":
        return facts
    with path.open("rb") as fh:
        header = read_header(fh.read(header_bytes()))
    seg = header.seg_size
    facts.update(
        seg_size=seg,
        start_lsn=wal.start_lsn(seg),
        end_lsn=wal.start_lsn(seg) + seg,
        system_identifier=str(header.system_identifier),
    )
    if wal.type == "segment":
        facts["segno"] = wal.segno(seg)
    major = PAGE_MAGIC_MAJOR.get(header.magic)
    if major:
        facts["pg_major"] = major
    text = _waldump(path, ["Transaction", "Tablespace"], bin_dir, major)
    if text is None:
        facts.update(first_commit=None, last_commit=None)
        return facts
    first, last = xact_time_range(text)
    facts.update(first_commit=first, last_commit=last)
    try:
        facts.update(tablespace_facts(path, text, seg))
    except WalRecordError as exc:  # never claim "no tablespace here" without proof
        for_artifact(log, path.name).warning("tablespace records not read: %s", exc)
    return facts
