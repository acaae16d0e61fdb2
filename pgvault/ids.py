"""Backup identifiers: UTC timestamps, sortable as text, safe in paths and keys."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

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


_RELATIVE = re.compile(r"^now\s*(?:-\s*(\d+)\s*(s|sec|secs|min|mins|m|h|hour|hours|d|day|days))?$")
_UNITS = {"s": 1, "sec": 1, "secs": 1, "m": 60, "min": 60, "mins": 60, "h": 3600}
_UNITS |= {"hour": 3600, "hours": 3600, "d": 86400, "day": 86400, "days": 86400}


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """A time from the command line: ISO 8601, `now`, `now-15min` (s, min, h, d units),
    or ISO 8601 with a trailing ` UTC`. No zone means UTC (DESIGN: CLI contract)."""
    raw = text.strip()
    rel = _RELATIVE.match(raw.lower())
    if rel:
        base = (now or datetime.now(UTC)).astimezone(UTC)
        amount, unit = rel.groups()
        return base - timedelta(seconds=int(amount) * _UNITS[unit]) if amount else base
    if raw.upper().endswith(" UTC"):
        raw = raw[:-4].rstrip() + "+00:00"
        if raw.endswith(("Z+00:00",)) or re.search(r"[+-]\d\d:\d\d\+00:00$", raw):
            raise ValueError(f"{text!r}: give one zone, not an offset and UTC")
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time (ISO 8601 such as 2026-11-24T03:00:00Z, "
            "'2026-11-24 03:00 UTC', now, now-15min, now-2h, now-1d)"
        ) from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def has_zone(text: str) -> bool:
    """Whether a command-line time names its zone (or is relative to now)."""
    raw = text.strip()
    if _RELATIVE.match(raw.lower()) or raw.upper().endswith((" UTC", "Z")):
        return True
    try:
        return datetime.fromisoformat(raw).tzinfo is not None
    except ValueError:
        return False


def utc_note(text: str) -> str | None:
    """A one-line reminder when a zoneless time was read as UTC and the local zone is
    not UTC (so `TZ=Asia/Shanghai` users do not restore 8 hours off)."""
    if has_zone(text):
        return None
    offset = datetime.now().astimezone().utcoffset()
    if not offset:
        return None
    local = datetime.now().astimezone().tzname() or "local time"
    return f"note: {text.strip()!r} has no zone and is read as UTC (your local zone is {local})"
