"""Durable alert state shared by every alert worker: a small SQLite file (sqlite-utils).

    alerts      one row per fingerprint (cluster:check:subject): current severity, when it
                was last notified and by which event, whether every channel has it
    deliveries  (event_id, channel) pairs already delivered: a retried message is not
                sent again to a channel that already has it
    sends       notification times, for alerts.max_per_minute (shared by all workers)
    held        alerts over the rate limit, delivered later as one digest
    counters    notifications per severity (metrics)
    leases      who is flushing the digest right now

Decisions are taken in BEGIN IMMEDIATE transactions, so two workers never both notify
the same fingerprint. Times are UNIX seconds.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlite_utils

from pgvault.errors import StateError
from pgvault.schemas import AlertEvent

RATE_WINDOW_S = 60.0
KEEP_SENDS_S = 3600.0


def _migrate(db: sqlite_utils.Database) -> None:
    db.table("alerts").create(
        {
            "fingerprint": str,
            "cluster": str,
            "check_name": str,
            "subject": str,
            "severity": str,
            "summary": str,
            "first_seen": float,
            "last_seen": float,
            "event_at": float,  # created_at of the newest event handled
            "notified_at": float,
            "notified_event": str,
            "delivered": int,
            "repeats": int,  # duplicates suppressed since the last notification
            "notifications": int,
        },
        pk="fingerprint",
        if_not_exists=True,
    )
    db.table("deliveries").create(
        {"event_id": str, "channel": str, "at": float},
        pk=("event_id", "channel"),
        if_not_exists=True,
    )
    db.table("sends").create({"id": int, "at": float}, pk="id", if_not_exists=True)
    db.execute("CREATE INDEX IF NOT EXISTS sends_at ON sends(at)")
    db.table("held").create(
        {"event_id": str, "fingerprint": str, "body": str, "held_at": float},
        pk="event_id",
        if_not_exists=True,
    )
    db.table("counters").create({"name": str, "value": int}, pk="name", if_not_exists=True)
    db.table("leases").create(
        {"name": str, "holder": str, "until": float}, pk="name", if_not_exists=True
    )


@dataclass(frozen=True)
class Policy:
    renotify_s: float
    claim_ttl_s: float  # an undelivered claim younger than this still dedupes repeats
    max_per_minute: int


class AlertState:
    """Thread-safe: one SQLite connection per thread."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._local = threading.local()
        self.conn()  # create and migrate now: configuration errors surface at start

    def conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(str(self.path), timeout=30, isolation_level=None)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")
                conn.execute("PRAGMA busy_timeout=30000")
                _migrate(sqlite_utils.Database(conn))
            except (sqlite3.Error, OSError) as exc:
                raise StateError(f"alert state {self.path}: {exc}") from None
            self._local.conn = conn
        return conn

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self.conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StateError(f"alert state {self.path}: {exc}") from None
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StateError(f"alert state {self.path}: commit failed: {exc}") from None

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        try:
            cur = self.conn().execute(sql, params)
        except sqlite3.Error as exc:
            raise StateError(f"alert state {self.path}: {exc}") from None
        cols = [c[0] for c in cur.description or ()]
        return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]

    def record(self, fingerprint: str) -> dict[str, Any] | None:
        rows = self.query("SELECT * FROM alerts WHERE fingerprint=?", (fingerprint,))
        return rows[0] if rows else None

    # -- deciding ----------------------------------------------------------------
    def decide(self, event: AlertEvent, now: float, policy: Policy) -> str:
        """What to do with an alert event, recorded atomically:

        notify    send it now (a rate-limit slot is taken)
        continue  a retry of our own notification: send to the channels still missing
        hold      over the rate limit: kept in `held` for the next digest
        repeat    same severity already notified within the re-notify interval
        quiet     a resolve for something not alerted (or already resolved)
        stale     older than an event already handled for this fingerprint
        duplicate this very event was handled already (redelivery)
        """
        fp = event.fingerprint
        event_at = event.created_at.timestamp()
        with self.transaction() as conn:
            rec = self._row(conn, "SELECT * FROM alerts WHERE fingerprint=?", (fp,))
            if rec is not None and rec["notified_event"] == event.event_id:
                return "duplicate" if rec["delivered"] else "continue"
            if self._row(conn, "SELECT 1 AS x FROM held WHERE event_id=?", (event.event_id,)):
                return "duplicate"
            if rec is not None and rec["event_at"] is not None and event_at < rec["event_at"]:
                return "stale"
            if self._suppressed(rec, event, now, policy):
                conn.execute(
                    "UPDATE alerts SET last_seen=?, event_at=?, repeats=repeats+1, summary=? "
                    "WHERE fingerprint=?",
                    (now, event_at, event.summary, fp),
                )
                return "quiet" if event.severity == "resolved" else "repeat"
            conn.execute("DELETE FROM sends WHERE at < ?", (now - KEEP_SENDS_S,))
            recent = self._row(
                conn, "SELECT COUNT(*) AS n FROM sends WHERE at > ?", (now - RATE_WINDOW_S,)
            )
            hold = recent is not None and recent["n"] >= policy.max_per_minute
            if hold:
                conn.execute(
                    "INSERT OR IGNORE INTO held(event_id, fingerprint, body, held_at) "
                    "VALUES (?, ?, ?, ?)",
                    (event.event_id, fp, event.model_dump_json(), now),
                )
            else:
                conn.execute("INSERT INTO sends(at) VALUES (?)", (now,))
            conn.execute(
                "INSERT INTO alerts(fingerprint, cluster, check_name, subject, severity, "
                "summary, first_seen, last_seen, event_at, notified_at, notified_event, "
                "delivered, repeats, notifications) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,0,1) "
                "ON CONFLICT(fingerprint) DO UPDATE SET severity=excluded.severity, "
                "summary=excluded.summary, last_seen=excluded.last_seen, "
                "event_at=excluded.event_at, notified_at=excluded.notified_at, "
                "notified_event=excluded.notified_event, delivered=excluded.delivered, "
                "repeats=0, notifications=notifications+1, first_seen=CASE WHEN "
                "alerts.severity='resolved' THEN excluded.first_seen ELSE alerts.first_seen END",
                (
                    fp,
                    event.cluster,
                    event.check,
                    event.subject,
                    event.severity,
                    event.summary,
                    now,
                    now,
                    event_at,
                    now,
                    event.event_id,
                    1 if hold else 0,
                ),
            )
            self._bump(conn, f"notified.{event.severity}")
            return "hold" if hold else "notify"

    @staticmethod
    def _suppressed(
        rec: dict[str, Any] | None, event: AlertEvent, now: float, policy: Policy
    ) -> bool:
        if event.severity == "resolved":
            return rec is None or rec["severity"] == "resolved"
        if rec is None or rec["severity"] != event.severity or rec["notified_at"] is None:
            return False
        since = now - float(rec["notified_at"])
        in_flight = since < policy.claim_ttl_s  # another worker is still delivering it
        return since < policy.renotify_s and (bool(rec["delivered"]) or in_flight)

    @staticmethod
    def _row(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> dict[str, Any] | None:
        cur = conn.execute(sql, params)
        row = cur.fetchone()
        if row is None:
            return None
        return dict(zip([c[0] for c in cur.description], row, strict=True))

    @staticmethod
    def _bump(conn: sqlite3.Connection, name: str, by: int = 1) -> None:
        conn.execute(
            "INSERT INTO counters(name, value) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET value=value+excluded.value",
            (name, by),
        )

    # -- delivering ----------------------------------------------------------------
    def delivered_channels(self, event_id: str) -> set[str]:
        rows = self.query("SELECT channel FROM deliveries WHERE event_id=?", (event_id,))
        return {r["channel"] for r in rows}

    def mark_delivered(self, event_id: str, channel: str, now: float) -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO deliveries(event_id, channel, at) VALUES (?, ?, ?)",
                (event_id, channel, now),
            )

    def finish(self, event_id: str) -> None:
        """Every channel has this event: the notification is complete."""
        with self.transaction() as conn:
            conn.execute("UPDATE alerts SET delivered=1 WHERE notified_event=?", (event_id,))
            conn.execute("DELETE FROM deliveries WHERE event_id=?", (event_id,))

    def count_failure(self, channel: str) -> None:
        with self.transaction() as conn:
            self._bump(conn, f"failed.{channel}")

    # -- the digest of held alerts ---------------------------------------------------
    def held(self) -> list[AlertEvent]:
        """Held alerts still current: one superseded by a newer notification for its
        fingerprint (say, its resolve) is dropped, so a digest never reports stale news."""
        with self.transaction() as conn:
            conn.execute(
                "DELETE FROM held WHERE NOT EXISTS (SELECT 1 FROM alerts a WHERE "
                "a.fingerprint = held.fingerprint AND a.notified_event = held.event_id)"
            )
        rows = self.query("SELECT body FROM held ORDER BY held_at, rowid")
        return [AlertEvent.model_validate_json(r["body"]) for r in rows]

    def take_slot(self, now: float, max_per_minute: int) -> bool:
        """One rate-limit slot, if the last minute has one left."""
        with self.transaction() as conn:
            recent = self._row(
                conn, "SELECT COUNT(*) AS n FROM sends WHERE at > ?", (now - RATE_WINDOW_S,)
            )
            if recent is not None and recent["n"] >= max_per_minute:
                return False
            conn.execute("INSERT INTO sends(at) VALUES (?)", (now,))
            return True

    def drop_held(self, event_ids: list[str]) -> None:
        with self.transaction() as conn:
            for event_id in event_ids:
                conn.execute("DELETE FROM held WHERE event_id=?", (event_id,))
                conn.execute("DELETE FROM deliveries WHERE event_id=?", (event_id,))

    def lease(self, name: str, holder: str, now: float, ttl: float) -> bool:
        with self.transaction() as conn:
            row = self._row(conn, "SELECT holder, until FROM leases WHERE name=?", (name,))
            if row is not None and row["holder"] != holder and row["until"] > now:
                return False
            conn.execute(
                "INSERT INTO leases(name, holder, until) VALUES (?, ?, ?) ON CONFLICT(name) "
                "DO UPDATE SET holder=excluded.holder, until=excluded.until",
                (name, holder, now + ttl),
            )
            return True

    def release(self, name: str, holder: str) -> None:
        with self.transaction() as conn:
            conn.execute("DELETE FROM leases WHERE name=? AND holder=?", (name, holder))

    # -- numbers for metrics ---------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        active = self.query(
            "SELECT severity, COUNT(*) AS n FROM alerts WHERE severity != 'resolved' "
            "GROUP BY severity"
        )
        counters = self.query("SELECT name, value FROM counters")
        held = self.query("SELECT COUNT(*) AS n FROM held")
        return {
            "active": {r["severity"]: r["n"] for r in active},
            "counters": {r["name"]: r["value"] for r in counters},
            "held": held[0]["n"] if held else 0,
        }
