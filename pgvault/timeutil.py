"""Time as the catalog and the manifests write it: fixed-width UTC text, so that string
order is time order (in SQL too). Stdlib only."""

from __future__ import annotations

from datetime import UTC, datetime


def now_iso() -> str:
    return iso(datetime.now(UTC))


def iso(when: datetime) -> str:
    """Fixed-width UTC text, so string order is time order in SQL."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
