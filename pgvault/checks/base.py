"""What a health check returns, and the context it reads from.

A check is a function `(CheckContext) -> list[CheckResult]`: one result per thing it looks
at (a database, a queue, the spool). A result has a stable `name` (the check) and
`subject`; together with the cluster they form the alert fingerprint. Statuses follow
Nagios: OK, WARNING, CRITICAL, and UNKNOWN when the check could not be evaluated (say,
PostgreSQL unreachable), which is never reported as OK.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import IntEnum
from typing import TYPE_CHECKING, Any

from pgvault.catalog.db import CatalogDB
from pgvault.config import Settings
from pgvault.errors import PgvaultError
from pgvault.timeutil import parse_iso

if TYPE_CHECKING:
    from pgvault.broker.base import Broker
    from pgvault.checks.pgfacts import PgFacts
    from pgvault.storage.base import ObjectStore

log = logging.getLogger(__name__)


class Status(IntEnum):
    """Nagios plugin states; the value is the exit code."""

    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3


# Which status wins when several are reported: CRITICAL, then UNKNOWN, then WARNING.
_RANK = {Status.OK: 0, Status.WARNING: 1, Status.UNKNOWN: 2, Status.CRITICAL: 3}


def worst(statuses: list[Status]) -> Status:
    return max(statuses, key=_RANK.__getitem__, default=Status.OK)


def fmt_seconds(value: float) -> str:
    if abs(value) < 1:
        return f"{value * 1000:.0f} ms"
    if value < 120:
        return f"{value:.0f} s"
    if value < 7200:
        return f"{value / 60:.1f} min"
    if value < 3 * 86400:
        return f"{value / 3600:.1f} h"
    return f"{value / 86400:.1f} d"


def fmt_bytes(value: float) -> str:
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{value:.0f} B"


def fmt_value(value: float | None, unit: str) -> str | None:
    if value is None:
        return None
    if unit == "s":
        return fmt_seconds(value)
    if unit == "bytes":
        return fmt_bytes(value)
    if unit == "%":
        return f"{value:.1f} %"
    number = f"{value:.0f}" if float(value).is_integer() else f"{value:.2f}"
    return f"{number} {unit}".strip()


@dataclass(frozen=True)
class CheckResult:
    name: str
    subject: str
    status: Status
    message: str  # one line: what was measured and what it means
    value: float | None = None
    threshold: float | None = None
    unit: str = ""  # s | bytes | % | messages | segments | failures | ""
    action: str | None = None  # what the operator should do when it is not OK
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def display_value(self) -> str | None:
        return fmt_value(self.value, self.unit)

    @property
    def display_threshold(self) -> str | None:
        return fmt_value(self.threshold, self.unit)

    @property
    def measure(self) -> str:
        """`value (max threshold)` for one-line output."""
        if self.value is None:
            return ""
        if self.unit in ("s", "bytes", "%") or self.threshold is None:
            text = self.display_value or ""
            return text + (f" (max {self.display_threshold})" if self.threshold is not None else "")
        return f"{self.value:g}/{self.threshold:g} {self.unit}"

    @property
    def severity(self) -> str:
        """The alert severity this result publishes."""
        if self.status is Status.OK:
            return "resolved"
        return "critical" if self.status is Status.CRITICAL else "warning"

    def fingerprint(self, cluster: str) -> str:
        return f"{cluster}:{self.name}:{self.subject}"

    def as_json(self, cluster: str) -> dict[str, Any]:
        return {
            "name": self.name,
            "subject": self.subject,
            "status": self.status.name,
            "message": self.message,
            "value": self.value,
            "threshold": self.threshold,
            "unit": self.unit,
            "display_value": self.display_value,
            "display_threshold": self.display_threshold,
            "action": self.action,
            "severity": self.severity,
            "fingerprint": self.fingerprint(cluster),
            "details": self.details,
        }


def unknown(name: str, subject: str, why: str, action: str | None = None) -> CheckResult:
    why = " ".join(why.split())  # one line, whatever the exception said
    return CheckResult(name, subject, Status.UNKNOWN, f"cannot evaluate: {why}", action=action)


class CheckContext:
    """Settings, the time of the run, and lazily opened components (each opened once)."""

    def __init__(self, settings: Settings, now: datetime | None = None) -> None:
        self.settings = settings
        self.now = now or datetime.now(UTC)
        self._catalog: CatalogDB | None = None
        self._broker: Broker | None = None
        self._pg: PgFacts | PgvaultError | None = None

    def age_s(self, stamp: str | None) -> float | None:
        """Seconds from a catalog ISO time to now (None for no time)."""
        if not stamp:
            return None
        return (self.now - parse_iso(stamp)).total_seconds()

    def catalog(self) -> CatalogDB:
        if self._catalog is None:
            from pgvault.catalog import open_catalog

            self._catalog = open_catalog(self.settings, create=False)
        return self._catalog

    def broker(self) -> Broker:
        if self._broker is None:
            from pgvault.broker import open_broker

            self._broker = open_broker(self.settings)
        return self._broker

    def store(self) -> ObjectStore:
        from pgvault.storage import open_store

        return open_store(self.settings.storage)

    def pg(self) -> PgFacts:
        """What the server says about archiving; PostgresError when unreachable."""
        if self._pg is None:
            from pgvault.checks.pgfacts import read_pg_facts

            try:
                self._pg = read_pg_facts(self.settings.postgres)
            except PgvaultError as exc:
                self._pg = exc
        if isinstance(self._pg, PgvaultError):
            raise self._pg
        return self._pg

    def pg_or_none(self) -> PgFacts | None:
        try:
            return self.pg()
        except PgvaultError:
            return None

    def close(self) -> None:
        if self._catalog is not None:
            with contextlib.suppress(Exception):
                self._catalog.close()
        if self._broker is not None:
            with contextlib.suppress(Exception):
                self._broker.close()


def align(rows: Sequence[Sequence[str]], minimum: Sequence[int]) -> list[str]:
    """Rows as lines whose columns line up however long a subject is: every column but
    the last is as wide as its longest cell (at least `minimum`)."""
    widths = [max([m, *(len(row[i]) for row in rows)]) for i, m in enumerate(minimum)]
    out = []
    for row in rows:
        cells = [cell.ljust(w) for cell, w in zip(row, widths, strict=False)]
        out.append(" ".join([*cells, *row[len(widths) :]]).rstrip())
    return out
