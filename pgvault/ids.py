"""Backup identifiers: UTC timestamps, sortable as text, safe in paths and keys."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime

BACKUP_ID_RE = re.compile(r"^\d{8}T\d{6}Z$")


def new_backup_id(now: datetime | None = None) -> str:
    """'20261124T000000Z' for 2026-11-24 00:00:00 UTC."""
    return (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def unique_backup_id(taken: Callable[[str], bool]) -> tuple[str, datetime]:
    """A new backup id that `taken` says is free, and its time. Ids have a resolution of one
    second, so a second backup within the same second waits for the next one."""
    while True:
        now = datetime.now(UTC)
        backup_id = new_backup_id(now)
        if not taken(backup_id):
            return backup_id, now
        time.sleep(1.05 - now.microsecond / 1e6)


def backup_id_time(backup_id: str) -> datetime:
    return datetime.strptime(backup_id, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


def parse_time(text: str) -> datetime:
    """ISO 8601 from the command line; no zone means UTC (DESIGN: CLI contract)."""
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO 8601 time (e.g. 2026-11-24T03:00:00Z)") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
