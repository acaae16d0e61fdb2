"""The cluster lineage the archive accepts: one system identifier, known timelines.

Kept in `spool_dir/IDENTITY` as two `key=value` lines (read on every archive_command, so
no JSON, no pathlib):

    system_identifier=7711613630122653802
    timelines=1,2

The first WAL file archived into an empty spool establishes it. After that wal-archive
refuses (exit 1, alert) a segment whose page header names another system identifier
(a second cluster pointed at this spool), and a segment or history file on a timeline the
archive does not know. A new timeline becomes known through its history file, whose
parent must be known already (a promotion, a planned failover or `restore pitr
--as-primary`); that is reported with an info alert so an unplanned one is noticed.
"""

from __future__ import annotations

import os

from pgvault import fsutil
from pgvault.errors import ArchiveError
from pgvault.walfile import WalName, parse_history, read_header

FILE = "IDENTITY"


class Lineage:
    __slots__ = ("path", "system_identifier", "timelines")

    def __init__(self, path: str, system_identifier: int | None, timelines: set[int]) -> None:
        self.path = path
        self.system_identifier = system_identifier
        self.timelines = timelines

    @classmethod
    def load(cls, spool_dir: str) -> Lineage:
        path = os.path.join(spool_dir, FILE)
        sysid: int | None = None
        tlis: set[int] = set()
        try:
            with open(path) as fh:
                for line in fh:
                    key, _, value = line.strip().partition("=")
                    if key == "system_identifier" and value:
                        sysid = int(value)
                    elif key == "timelines" and value:
                        tlis = {int(t) for t in value.split(",")}
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as exc:
            raise ArchiveError(f"cannot read {path}: {exc}") from None
        return cls(path, sysid, tlis)

    def save(self) -> None:
        """Replace the IDENTITY file durably (fsutil.write_atomic); raises OSError."""
        text = (
            f"system_identifier={self.system_identifier or ''}\n"
            f"timelines={','.join(str(t) for t in sorted(self.timelines))}\n"
        )
        fsutil.write_atomic(self.path, text.encode())

    def admit(self, wal: WalName, first_bytes: bytes, history_text: str | None) -> str | None:
        """Check one file against the lineage. Returns a note when the lineage changed (the
        caller saves it), raises ArchiveError when the file belongs to another cluster or to
        a timeline the archive does not know."""
        note = None
        if wal.type in ("segment", "partial"):
            sysid = read_header(first_bytes).system_identifier
            if self.system_identifier is None:
                self.system_identifier = sysid
                note = f"system identifier {sysid} recorded"
            elif sysid != self.system_identifier:
                raise ArchiveError(
                    f"{wal.name} belongs to database system {sysid}, but this archive holds "
                    f"system {self.system_identifier}; another cluster is archiving into this "
                    "spool. Refusing to mix archives."
                )
        if wal.type == "history":
            if wal.timeline in self.timelines:
                return note
            try:
                entries = parse_history(history_text or "")
            except ValueError as exc:
                raise ArchiveError(f"{wal.name}: malformed history file ({exc})") from None
            parent = entries[-1].parent_timeline if entries else None
            if self.timelines and parent not in self.timelines:
                raise ArchiveError(
                    f"{wal.name}: timeline {wal.timeline} branches from timeline {parent}, "
                    "which this archive does not know. Refusing it."
                )
            self.timelines |= {e.parent_timeline for e in entries} | {wal.timeline}
            return f"new timeline {wal.timeline} branched from timeline {parent}"
        if wal.timeline in self.timelines:
            return note
        if self.timelines:
            known = ",".join(str(t) for t in sorted(self.timelines))
            raise ArchiveError(
                f"{wal.name} is on timeline {wal.timeline}, which this archive does not know "
                f"(known: {known}); its history file must come first. Refusing it."
            )
        self.timelines.add(wal.timeline)
        return note or f"archive started on timeline {wal.timeline}"
