"""Facts about a WAL file that the catalog needs, read on the host holding the spool.

For a segment: timeline, segment number, LSN range and system identifier from its page
header, and the first and last transaction-end timestamps (commit/abort, the records a
`recovery_target_time` can stop at) from `pg_waldump --rmgr=Transaction`.
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
from pgvault.pgtools import find_tool, run_tool
from pgvault.walfile import header_bytes, parse_history, parse_name, read_header

log = logging.getLogger(__name__)

_XACT = re.compile(
    r"desc: (?:COMMIT|ABORT)(?:_PREPARED)? (?:\d+: )?"
    r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) UTC"
)


def _parse_ts(text: str) -> str:
    fmt = "%Y-%m-%d %H:%M:%S.%f" if "." in text else "%Y-%m-%d %H:%M:%S"
    when = datetime.strptime(text, fmt).replace(tzinfo=UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def xact_time_range(path: Path, bin_dir: str = "") -> tuple[str | None, str | None]:
    """(first, last) transaction-end timestamps in a segment, or (None, None)."""
    try:
        tool = find_tool("pg_waldump", bin_dir)
        proc = run_tool(
            [tool, "--rmgr=Transaction", str(path)],
            env={"TZ": "UTC", "PGTZ": "UTC"},
            timeout=120,
            check=False,  # the last record of a segment usually continues in the next one
        )
    except PostgresError as exc:
        for_artifact(log, path.name).warning("no commit timestamps: %s", exc)
        return None, None
    stamps = [_parse_ts(m.group(1)) for m in _XACT.finditer(proc.stdout)]
    if not stamps:
        return None, None
    return min(stamps), max(stamps)


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
    first, last = xact_time_range(path, bin_dir)
    facts.update(first_commit=first, last_commit=last)
    return facts
