"""`catalog restorable` edge cases on small synthetic catalogs (real SQLite)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from pgvault.catalog.db import CatalogDB
from pgvault.catalog.restorable import restorable_at, windows
from pgvault.timeutil import iso, parse_iso
from tests.synthetic import SEG, physical_row, wal_rows

START = datetime(2026, 2, 1, tzinfo=UTC)
EVERY = timedelta(minutes=5)


def timeline_switch(cat: CatalogDB, tli: int, parent: int, switch_lsn: int) -> None:
    with cat.transaction() as conn:
        conn.execute(
            "INSERT INTO timelines(timeline, parent, switchpoint, reason, is_current, "
            "recorded_at) VALUES (?, ?, ?, 'promotion', 0, ?)",
            (tli, parent, switch_lsn, iso(START)),
        )


def test_latest_restorable_point_is_just_before_the_last_commit(tmp_path: Path) -> None:
    cat = CatalogDB(tmp_path / "c.sqlite", "c")
    wal_rows(cat, 1, 1, 20, START, EVERY)
    physical_row(cat, "B", START + timedelta(minutes=2), 1, 1, 2)
    (w,) = windows(cat)
    last_commit = START + EVERY * 19  # segment 20's last transaction end
    assert parse_iso(w.end or "") == last_commit - timedelta(microseconds=1)
    assert restorable_at(cat, parse_iso(w.end or "")).plan is not None
    # exactly the last commit: PostgreSQL would never see a later one and fail recovery
    assert restorable_at(cat, last_commit).plan is None


def test_promotion_inside_the_backups_start_segment(tmp_path: Path) -> None:
    cat = CatalogDB(tmp_path / "c.sqlite", "c")
    wal_rows(cat, 1, 1, 5, START, EVERY)  # timeline 1 up to segment 5
    physical_row(cat, "B", START + EVERY * 4 + timedelta(minutes=1), 1, 5, 5)
    timeline_switch(cat, 2, 1, 5 * SEG + 100_000)  # promoted later in segment 5
    wal_rows(cat, 2, 5, 6, START + EVERY * 4, EVERY)  # timeline 2: segments 5..10
    (w,) = windows(cat)
    assert w.needs is None and w.usable, w
    assert [(p.timeline, p.first, p.last) for p in w.portions] == [(2, 5, 10)]
    answer = restorable_at(cat, START + EVERY * 7)
    assert answer.plan is not None and answer.plan.target_timeline == 2


def test_a_timeline_that_forked_before_the_backup_is_not_followed(tmp_path: Path) -> None:
    cat = CatalogDB(tmp_path / "c.sqlite", "c")
    wal_rows(cat, 1, 1, 10, START, EVERY)
    # the backup started in segment 5 after an old fork at the start of segment 5
    physical_row(cat, "B", START + EVERY * 5, 1, 5, 5)
    timeline_switch(cat, 2, 1, 5 * SEG + 8)
    wal_rows(cat, 2, 5, 2, START + EVERY * 4, EVERY)
    (w,) = windows(cat)
    assert [p.timeline for p in w.portions] == [1]  # stays on the backup's own timeline
