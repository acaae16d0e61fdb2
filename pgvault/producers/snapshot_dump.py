"""One database's pg_dump inside an exported snapshot, with the exact row counts of
that snapshot (used by pgvault.producers.logical).

The session that exports the snapshot keeps its REPEATABLE READ transaction open until
pg_dump has finished, and counts in it: the counts describe exactly the rows the dump
holds. A thread counts while pg_dump runs: first the tables under
pgvault.pgtables.BIG_TABLE bytes, a few hundred to a statement (cheap round trips that
hide in pg_dump's own waits on the server); then the big ones, one by one and without
parallel workers, with the session's server backend at the lowest CPU priority (nice 19,
pgvault.producers.backend_priority) so that their scans take only the CPU pg_dump leaves
idle. That needs the backend to be provably a process of this machine and the right to
renice it; otherwise the big tables are counted after pg_dump has finished, so that
their scans do not take CPU from it (on a small host the two fought over the same
cores). Once pg_dump is over the backend gets its priority back for what is left to
count. The big tables are locked (ACCESS SHARE, as pg_dump locks every table) before
pg_dump starts, so that no TRUNCATE or DROP slips in between pg_dump letting go of its
locks and the count.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from pgvault import pg
from pgvault.pg import sql
from pgvault.pgtables import TableRef, count_each, count_small, list_tables, split_by_size
from pgvault.pgtools import run_tool
from pgvault.producers.backend_priority import LowPriority, local_backend
from pgvault.progress import watch_file

log = logging.getLogger(__name__)


@dataclass
class SnapshotDump:
    snapshot: str
    snapshot_at: datetime
    finished: datetime
    counts: dict[TableRef, int]
    # seconds: dump_s (pg_dump), count_small_s (during it), count_big_during_s (the big
    # tables beside it, at nice 19), count_s (after it, to COMMIT); count_niced: whether
    # the big tables were counted beside pg_dump
    timings: dict[str, float] = field(default_factory=dict)


def dump_in_snapshot(
    conn: pg.Connection,
    pg_dump_args: list[str],
    dump: Path,
    *,
    env: dict[str, str],
    label: str,
    total: int | None,
    beside: Callable[[], None] | None = None,
) -> SnapshotDump:
    """Export a snapshot on `conn`, run pg_dump (`pg_dump_args` + --snapshot + --file)
    in it and count every table's rows in it; the transaction ends with this call.
    `beside` runs while pg_dump does, once the small tables are counted (its failure is
    ignored): the caller's preparation for what comes after the dump."""
    # like pg_dump's own session: no server-side timeouts for the snapshot holder;
    # JIT compiling costs more than it saves on count(*)
    pg.fetch_all(
        conn,
        "SET idle_in_transaction_session_timeout = 0; SET statement_timeout = 0; SET jit = off",
    )
    pg.fetch_all(conn, "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
    snapshot = str(pg.fetch_value(conn, "SELECT pg_export_snapshot()"))
    snapshot_at = datetime.now(UTC)
    refs = list_tables(conn)
    small, big = split_by_size(conn, refs)
    if big:
        # whether counted beside pg_dump or after it has let go of its locks: hold ours
        # from now on, so that no TRUNCATE (not MVCC-safe) or DROP comes before the count
        pg.fetch_all(
            conn,
            sql.SQL("LOCK TABLE {} IN ACCESS SHARE MODE").format(
                sql.SQL(", ").join(sql.Identifier(t.schema, t.name) for t in big)
            ),
        )
    # asked only when there is something to count beside pg_dump (small databases: one
    # round trip less before it starts)
    backend = local_backend(conn) if big else None
    niced = LowPriority(backend) if backend is not None else None
    counter = Counter(conn, small, big, niced, label=label, beside=beside)
    args = [*pg_dump_args, f"--snapshot={snapshot}", f"--file={dump}"]
    mark = time.monotonic()
    counter.thread.start()
    dumped = False
    try:
        with watch_file(f"pg_dump {label}", lambda: file_size(dump), total=total):
            run_tool(args, env=env, what="pg_dump")
        dumped = True
        finished = datetime.now(UTC)
        counter.timings["dump_s"] = since(mark)
        mark = time.monotonic()
    finally:
        counter.end(dumped)
    counts, timings = counter.counts, counter.timings
    # still the transaction that exported the snapshot: these are the dump's rows
    counts.update(count_each(conn, [t for t in big if t not in counts]))
    pg.fetch_all(conn, "COMMIT")
    timings["count_s"] = since(mark)  # from pg_dump's end: the wait for the counts too
    return SnapshotDump(snapshot, snapshot_at, finished, {t: counts[t] for t in refs}, timings)


class Counter:
    """The counts taken on the snapshot's connection while pg_dump runs (a thread): the
    small tables, then, with `niced` (the backend's priority) lowered, the big ones."""

    def __init__(
        self,
        conn: pg.Connection,
        small: list[TableRef],
        big: list[TableRef],
        niced: LowPriority | None,
        *,
        label: str,
        beside: Callable[[], None] | None = None,
    ) -> None:
        self.conn, self.small, self.big, self.niced, self.label = conn, small, big, niced, label
        self.beside = beside
        self.counts: dict[TableRef, int] = {}
        self.timings: dict[str, float] = {"count_niced": False, "count_big_during_s": 0.0}
        self.failure: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, name=f"count-{label}")

    def _run(self) -> None:
        mark = time.monotonic()
        try:
            self.counts.update(count_small(self.conn, self.small))
            self.timings["count_small_s"] = since(mark)
            if self.beside is not None:
                try:
                    self.beside()
                except Exception:
                    log.debug("%s: beside pg_dump", self.label, exc_info=True)
            if self.niced is not None and self.niced.lower():
                self.timings["count_niced"] = True
                log.debug("%s: counting %d big table(s) beside pg_dump", self.label, len(self.big))
                mark = time.monotonic()
                try:
                    # parallel workers are the postmaster's children: they would not
                    # share the backend's priority
                    pg.fetch_all(self.conn, "SET LOCAL max_parallel_workers_per_gather = 0")
                    self.counts.update(count_each(self.conn, self.big))
                finally:
                    self.niced.restore()
                self.timings["count_big_during_s"] = since(mark)
        except BaseException as exc:
            self.failure.append(exc)

    def end(self, dumped: bool) -> None:
        """pg_dump is over: what is left counts at the backend's own priority; without a
        dump to keep, no count is waited for. Raises the thread's failure."""
        if self.niced is not None:
            self.niced.restore()
        while not dumped and self.thread.is_alive():
            pg.cancel(self.conn)
            self.thread.join(1.0)
        self.thread.join()
        if self.failure and dumped:
            raise self.failure[0]


@dataclass(frozen=True)
class Digest:
    size: int
    sha256: str


def sha256(path: Path) -> Digest:
    """Size and sha256 of a file (as pgvault.storage.codec.sha256_file, without importing
    the storage layer's compression libraries into the backup command)."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb", buffering=0) as fh:
        buf = bytearray(1 << 20)
        view = memoryview(buf)
        while n := fh.readinto(buf):
            digest.update(view[:n])
            size += n
    return Digest(size, digest.hexdigest())


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def since(start: float) -> float:
    return round(time.monotonic() - start, 3)
