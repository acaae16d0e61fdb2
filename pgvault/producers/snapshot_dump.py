"""One database's pg_dump inside an exported snapshot, with the exact row counts of
that snapshot (used by pgvault.producers.logical).

The session that exports the snapshot keeps its REPEATABLE READ transaction open until
pg_dump has finished, and counts in it: the counts describe exactly the rows the dump
holds. Tables under pgvault.pgtables.BIG_TABLE bytes are counted while pg_dump runs, a
few hundred to a statement (cheap round trips that hide in pg_dump's own waits on the
server); the big ones after pg_dump has finished, so that their scans do not take CPU
from it (on a small host the two fought over the same cores). Those are locked (ACCESS
SHARE, as pg_dump locks every table) before pg_dump starts, so that no TRUNCATE or DROP
slips in between pg_dump letting go of its locks and the count.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from pgvault import pg
from pgvault.pg import sql
from pgvault.pgtables import TableRef, count_each, count_small, list_tables, split_by_size
from pgvault.pgtools import run_tool
from pgvault.progress import watch_file


@dataclass
class SnapshotDump:
    snapshot: str
    snapshot_at: datetime
    finished: datetime
    counts: dict[TableRef, int]
    # seconds: pg_dump, the small tables' counts (during pg_dump), the big ones (after)
    timings: dict[str, float] = field(default_factory=dict)


def dump_in_snapshot(
    conn: pg.Connection,
    pg_dump_args: list[str],
    dump: Path,
    *,
    env: dict[str, str],
    label: str,
    total: int | None,
) -> SnapshotDump:
    """Export a snapshot on `conn`, run pg_dump (`pg_dump_args` + --snapshot + --file)
    in it and count every table's rows in it; the transaction ends with this call."""
    timings: dict[str, float] = {}
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
        # counted after pg_dump has let go of its locks: hold ours from now on, so that
        # no TRUNCATE (not MVCC-safe) or DROP comes between the dump and the count
        pg.fetch_all(
            conn,
            sql.SQL("LOCK TABLE {} IN ACCESS SHARE MODE").format(
                sql.SQL(", ").join(sql.Identifier(t.schema, t.name) for t in big)
            ),
        )
    counts: dict[TableRef, int] = {}
    failure: list[BaseException] = []

    def count_while_dumping() -> None:
        mark = time.monotonic()
        try:
            counts.update(count_small(conn, small))
        except BaseException as exc:
            failure.append(exc)
        timings["count_small_s"] = since(mark)

    counter = threading.Thread(target=count_while_dumping, name=f"count-{label}")
    args = [*pg_dump_args, f"--snapshot={snapshot}", f"--file={dump}"]
    mark = time.monotonic()
    counter.start()
    try:
        with watch_file(f"pg_dump {label}", lambda: file_size(dump), total=total):
            run_tool(args, env=env, what="pg_dump")
        finished = datetime.now(UTC)
        timings["dump_s"] = since(mark)
    finally:
        counter.join()
    if failure:
        raise failure[0]
    # still the transaction that exported the snapshot: these are the dump's rows
    mark = time.monotonic()
    counts.update(count_each(conn, big))
    pg.fetch_all(conn, "COMMIT")
    timings["count_s"] = since(mark)
    return SnapshotDump(snapshot, snapshot_at, finished, {t: counts[t] for t in refs}, timings)


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
