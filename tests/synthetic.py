"""Synthetic but realistic catalogs, written straight into a real SQLite catalog:
WAL every few minutes, weekly base backups, daily dumps. For query-plan/timing tests,
the restorable benchmark and retention tests."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pgvault.catalog import transitions
from pgvault.catalog.db import CatalogDB
from pgvault.timeutil import iso
from pgvault.walfile import DEFAULT_SEG_SIZE, segment_name

SEG = DEFAULT_SEG_SIZE
SHA = "0" * 64


def wal_rows(
    catalog: CatalogDB,
    timeline: int,
    first: int,
    count: int,
    start: datetime,
    every: timedelta,
    *,
    skip: set[int] | None = None,
    build_runs: bool = True,
) -> None:
    """`count` verified segments from segno `first`, one every `every`."""
    skip = skip or set()
    rows = []
    # one JSON encoding, the segment name filled in per row (names need no escaping)
    files_json = json.dumps(
        [
            {
                "name": "@NAME@",
                "size": SEG,
                "sha256": SHA,
                "key": f"pg/c/wal/{timeline:08X}/@NAME@.zst",
                "stored_size": 4096,
                "stored_sha256": SHA,
                "codec": "zstd",
                "encryption": "none",
            }
        ]
    )
    for i in range(count):
        segno = first + i
        if segno in skip:
            continue
        at = start + every * i
        at_iso = iso(at)  # once per row: strftime dominated big catalogs' build time
        name = segment_name(timeline, segno)
        files = files_json.replace("@NAME@", name)
        rows.append(
            (
                "wal",
                name,
                "verified",
                at_iso,
                "segment",
                timeline,
                segno,
                SEG,
                segno * SEG,
                (segno + 1) * SEG,
                iso(at - every / 2),
                at_iso,
                SEG,
                4096,
                SHA,
                files,
                "{}",
                at_iso,
                at_iso,
                at_iso,
                at_iso,
            )
        )
    with catalog.transaction() as conn:
        conn.executemany(
            "INSERT INTO artifacts(kind, name, state, state_at, wal_type, timeline, segno, "
            "seg_size, start_lsn, end_lsn, first_commit, last_commit, size, stored_size, sha256, "
            "files, meta, created_at, stored_at, verified_at, checked_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        if build_runs:
            run_start = None
            for i in range(count + 1):
                segno = first + i
                present = i < count and segno not in skip
                if present and run_start is None:
                    run_start = segno
                elif not present and run_start is not None:
                    conn.execute(
                        "INSERT INTO wal_runs VALUES (?, ?, ?)", (timeline, run_start, segno - 1)
                    )
                    run_start = None


def mark_verified(catalog: CatalogDB, timeline: int, segno: int) -> None:
    with catalog.transaction() as conn:
        (artifact_id,) = conn.execute(
            "SELECT id FROM artifacts WHERE timeline=? AND segno=?", (timeline, segno)
        ).fetchone()
        transitions.advance(conn, int(artifact_id), {"state": "verified"})


def physical_row(
    catalog: CatalogDB,
    backup_id: str,
    finished: datetime,
    timeline: int,
    start_segno: int,
    stop_segno: int,
    state: str = "verified",
) -> None:
    files = [
        {
            "name": n,
            "size": 1000,
            "sha256": SHA,
            "key": f"pg/c/physical/{backup_id}/{n}",
            "stored_size": 1000,
            "stored_sha256": SHA,
        }
        for n in ("base.tar.zst", "pg_wal.tar.zst", "backup_manifest", "manifest.json")
    ]
    meta = {
        "kind": "physical",
        "backup_id": backup_id,
        "timeline": timeline,
        "seg_size": SEG,
        "data_size": 10**9,
    }
    with catalog.transaction() as conn:
        conn.execute(
            "INSERT INTO artifacts(kind, name, state, state_at, timeline, start_lsn, end_lsn, "
            "backup_id, started_at, finished_at, size, stored_size, sha256, files, meta, "
            "created_at, verified_at) VALUES ('physical', ?, ?, ?, ?, ?, ?, ?, ?, ?, 4000, 4000, "
            "?, ?, ?, ?, ?)",
            (
                backup_id,
                state,
                iso(finished),
                timeline,
                start_segno * SEG + 40,
                stop_segno * SEG + 300,
                backup_id,
                iso(finished - timedelta(minutes=5)),
                iso(finished),
                SHA,
                json.dumps(files),
                json.dumps(meta),
                iso(finished),
                iso(finished),
            ),
        )


def logical_row(
    catalog: CatalogDB,
    db: str,
    backup_id: str,
    finished: datetime,
    size: int = 10**6,
    state: str = "verified",
) -> None:
    name = f"{db}/{backup_id}"
    files = [
        {
            "name": f"{db}.dump",
            "size": size,
            "sha256": SHA,
            "key": f"pg/c/logical/{name}/{db}.dump",
            "stored_size": size,
            "stored_sha256": SHA,
        },
        {
            "name": "manifest.json",
            "size": 100,
            "sha256": SHA,
            "key": f"pg/c/logical/{name}/manifest.json",
            "stored_size": 100,
            "stored_sha256": SHA,
        },
    ]
    with catalog.transaction() as conn:
        conn.execute(
            "INSERT INTO artifacts(kind, name, state, state_at, db, backup_id, started_at, "
            "finished_at, size, stored_size, sha256, files, meta, created_at, verified_at) "
            "VALUES ('logical', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, '{}', ?, ?)",
            (
                name,
                state,
                iso(finished),
                db,
                backup_id,
                iso(finished - timedelta(minutes=3)),
                iso(finished),
                size,
                size,
                SHA,
                json.dumps(files),
                iso(finished),
                iso(finished),
            ),
        )


def big_catalog(path: Path, segments: int, *, start: datetime | None = None) -> CatalogDB:
    """`segments` WAL segments every 5 minutes with a weekly base backup."""
    start = start or datetime(2025, 1, 1, tzinfo=UTC)
    catalog = CatalogDB(path, "c")
    every = timedelta(minutes=5)
    chunk = 100_000
    for first in range(1, segments + 1, chunk):
        wal_rows(
            catalog,
            1,
            first,
            min(chunk, segments - first + 1),
            start + every * (first - 1),
            every,
            build_runs=False,
        )
    with catalog.transaction() as conn:
        conn.execute("INSERT INTO wal_runs VALUES (1, 1, ?)", (segments,))
    per_week = int(timedelta(days=7) / every)
    for i, segno in enumerate(range(1, segments, per_week)):
        physical_row(
            catalog,
            f"B{i:05d}",
            start + every * (segno - 1) + timedelta(minutes=2),
            1,
            segno,
            segno,
        )
    catalog.conn.execute("ANALYZE")
    return catalog
