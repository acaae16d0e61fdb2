"""Opening the SQLite catalog, its pragmas, transactions and migrations.

Migrations follow the sqlite-utils idiom: an ordered list of idempotent steps
(`if_not_exists`), each recorded in `_migrations` once applied, so a crash half-way
through simply reruns. WAL journal mode lets readers (CLI, producer) run beside the one
writer (the catalog worker); `synchronous=FULL` makes a commit durable before the worker
acks the message that caused it.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pgvault.errors import CatalogClusterMismatch, CatalogError
from pgvault.timeutil import now_iso

if TYPE_CHECKING:  # imported only when a migration runs: it costs a short command ~30 ms
    import sqlite_utils

Migration = Callable[["sqlite_utils.Database"], None]


# Facts about a WAL file's content (pg_waldump, object metadata) and about a backup.
WAL_FACT_COLUMNS = (
    "wal_type",
    "timeline",
    "segno",
    "seg_size",
    "start_lsn",
    "end_lsn",
    "first_commit",
    "last_commit",
)
BACKUP_FACT_COLUMNS = ("db", "backup_id", "started_at", "finished_at")
# Every column of `artifacts` but the id, in schema order (listing, export, rebuild).
ARTIFACT_COLUMNS = (
    "kind",
    "name",
    "state",
    "state_at",
    *WAL_FACT_COLUMNS,
    *BACKUP_FACT_COLUMNS,
    "size",
    "stored_size",
    "sha256",
    "files",
    "meta",
    "created_at",
    "stored_at",
    "verified_at",
    "checked_at",
    "error",
    "expiring_at",
    "deleted_at",
)


def _m001_core(db: sqlite_utils.Database) -> None:
    db.table("settings").create({"key": str, "value": str}, pk="key", if_not_exists=True)
    db.table("artifacts").create(
        {
            "id": int,
            "kind": str,  # wal | history | logical | physical
            "name": str,  # WAL file name, "<db>/<backup_id>", "<backup_id>"
            "state": str,  # ready | stored | verified | corrupt | missing
            "state_at": str,  # time of the event that set the state
            "wal_type": str,  # segment | partial | backup | history (WAL kinds only)
            "timeline": int,
            "segno": int,  # WAL segments only: position in the timeline's chain
            "seg_size": int,
            "start_lsn": int,
            "end_lsn": int,
            "first_commit": str,
            "last_commit": str,
            "db": str,
            "backup_id": str,
            "started_at": str,
            "finished_at": str,
            "size": int,  # original bytes (sum over files)
            "stored_size": int,  # bytes in the store (sum over files)
            "sha256": str,  # identity checksum: the WAL file or manifest.json
            "files": str,  # JSON list of FileInfo
            "meta": str,  # JSON: kind-specific metadata (manifest summary, pg_waldump facts)
            "created_at": str,
            "stored_at": str,
            "verified_at": str,
            "checked_at": str,  # last successful read-back
            "error": str,
            "expiring_at": str,  # retention: marked for deletion
            "deleted_at": str,
        },
        pk="id",
        not_null=["kind", "name", "state", "state_at", "created_at", "files", "meta"],
        defaults={"files": "[]", "meta": "{}"},
        if_not_exists=True,
    )
    db.execute("CREATE UNIQUE INDEX IF NOT EXISTS artifacts_identity ON artifacts(kind, name)")
    db.execute(
        "CREATE INDEX IF NOT EXISTS artifacts_wal_chain ON artifacts(timeline, segno) "
        "WHERE segno IS NOT NULL"
    )
    db.execute(
        "CREATE INDEX IF NOT EXISTS artifacts_backups ON artifacts(kind, db, finished_at) "
        "WHERE kind IN ('logical', 'physical')"
    )
    db.execute("CREATE INDEX IF NOT EXISTS artifacts_state ON artifacts(state, kind)")
    # Contiguous runs of verified WAL segments per timeline, maintained incrementally so
    # that gap and restorable-window questions never scan the segment table.
    db.table("wal_runs").create(
        {"timeline": int, "start_segno": int, "end_segno": int},
        pk=("timeline", "start_segno"),
        not_null=["end_segno"],
        if_not_exists=True,
    )
    db.execute("CREATE INDEX IF NOT EXISTS wal_runs_end ON wal_runs(timeline, end_segno)")
    db.table("timelines").create(
        {
            "timeline": int,
            "parent": int,
            "switchpoint": int,
            "reason": str,
            "is_current": int,
            "recorded_at": str,
        },
        pk="timeline",
        if_not_exists=True,
    )
    db.table("drills").create(
        {
            "id": int,
            "kind": str,
            "target": str,
            "backup": str,
            "started_at": str,
            "finished_at": str,
            "duration_s": float,
            "result": str,
            "details": str,
        },
        pk="id",
        if_not_exists=True,
    )
    db.table("leases").create(
        {
            "id": str,
            "purpose": str,
            "holder": str,
            "artifacts": str,
            "created_at": str,
            "expires_at": str,
        },
        pk="id",
        if_not_exists=True,
    )
    db.table("backup_runs").create(
        {
            "id": int,
            "kind": str,
            "target": str,
            "started_at": str,
            "finished_at": str,
            "duration_s": float,
            "result": str,
            "error": str,
        },
        pk="id",
        if_not_exists=True,
    )
    db.execute(
        "CREATE INDEX IF NOT EXISTS backup_runs_target ON backup_runs(kind, target, started_at)"
    )


def _m002_backup_indexes(db: sqlite_utils.Database) -> None:
    """Partial indexes SQLite can prove usable from `kind='logical'` / `kind='physical'`
    (it cannot from an IN list), so backup lookups never scan the WAL rows."""
    db.execute("DROP INDEX IF EXISTS artifacts_backups")
    db.execute(
        "CREATE INDEX IF NOT EXISTS artifacts_logical ON artifacts(db, finished_at) "
        "WHERE kind = 'logical'"
    )
    db.execute(
        "CREATE INDEX IF NOT EXISTS artifacts_physical ON artifacts(finished_at) "
        "WHERE kind = 'physical'"
    )


def _m003_exports(db: sqlite_utils.Database) -> None:
    """What has been exported to the store as verification receipts (catalog/export.py)."""
    db.table("exports").create(
        {"key": str, "fingerprint": str, "exported_at": str}, pk="key", if_not_exists=True
    )


def _m004_incremental_export(db: sqlite_utils.Database) -> None:
    """Blocks of WAL whose verified membership changed since the last export (filled by
    the chain bookkeeping), and an index for the few WAL files outside the chain."""
    db.table("dirty_blocks").create(
        {"timeline": int, "block": int}, pk=("timeline", "block"), if_not_exists=True
    )
    db.execute(
        "CREATE INDEX IF NOT EXISTS artifacts_wal_files ON artifacts(kind, state) "
        "WHERE segno IS NULL"
    )


def _m005_store_audit(db: sqlite_utils.Database) -> None:
    """The scheduled store audit (catalog/audit.py): one row per run, and the read-back
    cycles (a cycle re-proves every retained verified object whose `checked_at` is older
    than the cycle's start; the open cycle is where the next run resumes)."""
    db.table("audit_runs").create(
        {
            "id": int,
            "started_at": str,
            "finished_at": str,
            "listing": int,  # 1: the listing pass ran to the end
            "listed": int,  # objects in the store listing
            "missing": int,
            "corrupt": int,
            "objects_read": int,
            "bytes_read": int,
            "cycle_id": int,  # the read-back cycle this run worked on (NULL: none)
            "cycle_complete": int,  # 1: this run finished its cycle
            "reuploads": int,  # re-uploads requested from the spool
            "result": str,  # ok | found | failed
            "error": str,
            "details": str,  # JSON: the artifacts found missing/corrupt, alerts raised
        },
        pk="id",
        not_null=["started_at", "result"],
        if_not_exists=True,
    )
    db.execute("CREATE INDEX IF NOT EXISTS audit_runs_started ON audit_runs(started_at)")
    db.table("audit_cycles").create(
        {
            "id": int,
            "started_at": str,
            "completed_at": str,
            "objects_read": int,
            "bytes_read": int,
        },
        pk="id",
        not_null=["started_at"],
        defaults={"objects_read": 0, "bytes_read": 0},
        if_not_exists=True,
    )


MIGRATIONS: list[tuple[str, Migration]] = [
    ("001_core", _m001_core),
    ("002_backup_indexes", _m002_backup_indexes),
    ("003_exports", _m003_exports),
    ("004_incremental_export", _m004_incremental_export),
    ("005_store_audit", _m005_store_audit),
]


class CatalogDB:
    """A connection to one cluster's catalog. Not thread-safe: one per thread."""

    def __init__(self, path: Path, cluster: str, *, create: bool = True) -> None:
        self.path = Path(path)
        self.cluster = cluster
        if not create and not self.path.exists():
            raise CatalogError(
                f"catalog {self.path} does not exist (run `pgvault init`, or "
                "`pgvault catalog rebuild` to recreate it from the store)"
            )
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                str(self.path), timeout=30, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA busy_timeout=30000")
            self._conn = conn
            self._db: sqlite_utils.Database | None = None
            self._migrate()
            self._check_cluster()
            self._keep_owner()
        except sqlite3.Error as exc:
            raise CatalogError(f"catalog {self.path}: {exc}") from None
        except OSError as exc:
            raise CatalogError(f"catalog {self.path}: {exc.strerror}") from None

    def _keep_owner(self) -> None:
        """Run as root (an admin's `catalog list`), SQLite would leave -wal/-shm files the
        catalog's owner (postgres, running the workers) cannot open: hand them over."""
        if os.geteuid() != 0:
            return
        st = self.path.stat()
        for suffix in ("-wal", "-shm"):
            side = self.path.with_name(self.path.name + suffix)
            with contextlib.suppress(OSError):
                if side.stat().st_uid != st.st_uid:
                    os.chown(side, st.st_uid, st.st_gid)

    @property
    def conn(self) -> sqlite3.Connection:
        return self._conn

    @property
    def db(self) -> sqlite_utils.Database:
        """The connection as a sqlite_utils Database (what the migrations use)."""
        if self._db is None:
            import sqlite_utils

            self._db = sqlite_utils.Database(self._conn)
        return self._db

    def close(self) -> None:
        self.conn.close()

    def _migrate(self) -> None:
        try:  # the usual case, all applied: answered without sqlite_utils
            done = {r[0] for r in self.conn.execute("SELECT name FROM _migrations")}
        except sqlite3.OperationalError:  # no such table yet
            done = set()
        if all(name in done for name, _ in MIGRATIONS):
            return
        self.db.table("_migrations").create(
            {"name": str, "applied_at": str}, pk="name", if_not_exists=True
        )
        done = {row["name"] for row in self.db.table("_migrations").rows}
        for name, step in MIGRATIONS:
            if name not in done:
                step(self.db)
                self.conn.execute(
                    "INSERT OR IGNORE INTO _migrations(name, applied_at) VALUES (?, ?)",
                    (name, now_iso()),
                )

    def _check_cluster(self) -> None:
        row = self.conn.execute("SELECT value FROM settings WHERE key='cluster'").fetchone()
        if row is None:
            self.conn.execute(
                "INSERT OR IGNORE INTO settings(key, value) VALUES ('cluster', ?)",
                (self.cluster,),
            )
        elif row[0] != self.cluster:
            raise CatalogClusterMismatch(
                f"catalog {self.path} belongs to cluster {row[0]!r}, not {self.cluster!r}"
            )

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT: one writer at a time, durable on exit."""
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise CatalogError(f"catalog {self.path}: cannot begin: {exc}") from None
        try:
            yield self.conn
        except sqlite3.Error as exc:
            self.conn.execute("ROLLBACK")
            raise CatalogError(f"catalog {self.path}: {exc}") from None
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        try:
            self.conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise CatalogError(f"catalog {self.path}: commit failed: {exc}") from None

    def query(
        self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()
    ) -> list[dict[str, Any]]:
        try:
            cur = self.conn.execute(sql, params)
        except sqlite3.Error as exc:
            raise CatalogError(f"catalog query failed: {exc}") from None
        cols = [c[0] for c in cur.description or ()]
        return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]

    def has_artifact(self, kind: str, name: str) -> bool:
        """Whether kind/name has a row (deleted or not); without pgvault.catalog.rows'
        typed rows, for `backup logical`, which asks before its pg_dump starts."""
        return bool(self.query("SELECT 1 FROM artifacts WHERE kind=? AND name=?", (kind, name)))

    def scalar(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        row = self.conn.execute(sql, params).fetchone()
        return row[0] if row else None
