"""Leases: a running restore or drill protects what it reads from retention.

A lease names artifacts (kind, name) and WAL ranges (timeline, first, last segno) and
expires on its own (a killed restore cannot pin objects forever). Retention skips
everything an unexpired lease covers.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from pgvault.catalog.db import CatalogDB
from pgvault.timeutil import iso, now_iso


@dataclass
class LeaseSet:
    artifacts: set[tuple[str, str]] = field(default_factory=set)
    wal: list[tuple[int, int, int]] = field(default_factory=list)
    holders: list[str] = field(default_factory=list)

    def covers(
        self, kind: str, name: str, timeline: int | None = None, segno: int | None = None
    ) -> bool:
        if (kind, name) in self.artifacts:
            return True
        if timeline is None or segno is None:
            return False
        return any(t == timeline and a <= segno <= b for t, a, b in self.wal)


@contextlib.contextmanager
def lease(
    catalog: CatalogDB,
    purpose: str,
    *,
    artifacts: list[tuple[str, str]],
    wal: list[tuple[int, int, int]],
    hours: float = 24,
) -> Iterator[str]:
    lease_id = uuid.uuid4().hex
    holder = f"{socket.gethostname()}:{os.getpid()}"
    expires = iso(datetime.now(UTC) + timedelta(hours=hours))
    with catalog.transaction() as conn:
        conn.execute(
            "INSERT INTO leases(id, purpose, holder, artifacts, created_at, expires_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (
                lease_id,
                purpose,
                holder,
                json.dumps({"artifacts": artifacts, "wal": wal}),
                now_iso(),
                expires,
            ),
        )
    try:
        yield lease_id
    finally:
        with catalog.transaction() as conn:
            conn.execute("DELETE FROM leases WHERE id = ?", (lease_id,))


def active(catalog: CatalogDB, now: datetime | None = None) -> LeaseSet:
    out = LeaseSet()
    moment = iso(now or datetime.now(UTC))
    for row in catalog.query("SELECT * FROM leases WHERE expires_at > ?", (moment,)):
        data = json.loads(row["artifacts"] or "{}")
        out.artifacts |= {(k, n) for k, n in data.get("artifacts", [])}
        out.wal += [(int(t), int(a), int(b)) for t, a, b in data.get("wal", [])]
        out.holders.append(f"{row['purpose']} ({row['holder']}, until {row['expires_at']})")
    return out
