"""Verification receipts: incremental export, and a rebuild that restores exactly the
verified state (no broker, a real local store)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from pgvault.catalog import transitions
from pgvault.catalog.db import CatalogDB
from pgvault.catalog.export import export
from pgvault.catalog.rebuild import rebuild
from pgvault.catalog.restorable import restorable_at
from pgvault.storage.layout import Layout
from pgvault.storage.local import LocalStore
from pgvault.timeutil import now_iso
from tests.synthetic import physical_row, wal_rows

START = datetime(2026, 1, 1, tzinfo=UTC)


def test_export_is_incremental_and_rebuild_restores_the_verified_state(tmp_path: Path) -> None:
    cat = CatalogDB(tmp_path / "a.sqlite", "c")
    wal_rows(cat, 1, 1, 3000, START, timedelta(minutes=1))
    physical_row(cat, "B1", START + timedelta(minutes=3), 1, 2, 3)
    store = LocalStore(tmp_path / "store")
    layout = Layout("pg", "c")
    for i in range(1, 3001):  # the objects the receipts describe
        name = f"00000001{i // 256:08X}{i % 256:08X}"
        store.put_bytes(f"pg/c/wal/00000001/{name}.zst", b"x" * 4096, {})
    for f in ("base.tar.zst", "pg_wal.tar.zst", "backup_manifest", "manifest.json"):
        store.put_bytes(f"pg/c/physical/B1/{f}", b"y" * 1000, {})
    with cat.transaction() as conn:  # verified after the objects were written, as in life
        conn.execute("UPDATE artifacts SET checked_at = ?", (now_iso(),))
    first = export(cat, store, layout)
    assert first.written == 3 + 1  # blocks 0..2 of 1024 segments, one backup receipt
    assert export(cat, store, layout).written == 0  # nothing changed, nothing rewritten
    with cat.transaction() as conn:  # segment 2500 turns out damaged
        (damaged,) = conn.execute("SELECT id FROM artifacts WHERE segno=2500").fetchone()
        transitions.reset(conn, damaged, "corrupt", now_iso(), "read-back failed")
    again = export(cat, store, layout)
    assert again.written == 1  # only block 2
    # an object rewritten after its verification is not trusted by a rebuild
    store.put_bytes("pg/c/wal/00000001/000000010000000A000000F0.zst", b"z" * 4096, {})
    target = START + timedelta(minutes=2000)
    before = restorable_at(cat, target)
    assert before.plan is not None

    fresh = CatalogDB(tmp_path / "b.sqlite", "c")
    report = rebuild(fresh, store, layout)
    assert report.unproven == 2 and report.verified == 2998 + 1  # damaged + rewritten
    assert report.incomplete == [] and report.unknown == []
    after = restorable_at(fresh, target)
    assert after.plan is not None and after.plan.segments == before.plan.segments
    states = {
        r["segno"]: r["state"]
        for r in fresh.query("SELECT segno, state FROM artifacts WHERE segno BETWEEN 2499 AND 2501")
    }
    assert states == {2499: "verified", 2500: "stored", 2501: "verified"}
    assert restorable_at(fresh, START + timedelta(minutes=2600)).plan is None  # the hole
