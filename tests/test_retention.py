"""Retention on a synthetic but realistic history (fast, deterministic), and end to end
on real objects in the local store and moto S3."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pgvault.catalog import transitions
from pgvault.catalog.db import CatalogDB
from pgvault.catalog.leases import lease
from pgvault.catalog.restorable import restorable_at
from pgvault.config import RetentionSettings
from pgvault.retention.apply import apply, victims
from pgvault.retention.policy import plan
from pgvault.storage.local import LocalStore
from pgvault.timeutil import iso
from tests.conftest import EnvFactory
from tests.synthetic import SEG, logical_row, physical_row, wal_rows
from tests.test_pitr import mark_target, prepare, restore_and_read

START = datetime(2026, 1, 1, tzinfo=UTC)
EVERY = timedelta(minutes=5)


def bid(day: int) -> str:
    """The id of the base backup of `day` (a real id: retention skips rows it cannot parse)."""
    return (START + timedelta(days=day)).strftime("%Y%m%dT%H%M%SZ")


def did(day: int) -> str:
    """The id of the dumps of `day`."""
    return (START + timedelta(days=day, hours=1)).strftime("%Y%m%dT%H%M%SZ")


PER_DAY = 288
SWITCH = 56 * PER_DAY  # index of the first timeline-2 segment
NOW = START + timedelta(days=70)
POLICY = RetentionSettings(logical_days=30, physical_weeks=4, wal_days=7, local_keep_days=2)
BACKUP_DAYS = [d for d in range(0, 70, 7) if d != 49]  # week 8 failed: no backup


def seg_of_day(day: int) -> int:
    return 1 + day * PER_DAY + 1


def history(tmp_path: Path) -> CatalogDB:
    cat = CatalogDB(tmp_path / "c.sqlite", "c")
    # timeline 1: days 0..56, with a 3-segment gap on day 17; timeline 2 after the switch,
    # with a 2-segment gap on day 66 (inside the 7-day window)
    wal_rows(cat, 1, 1, SWITCH, START, EVERY, skip={5000, 5001, 5002})
    wal_rows(
        cat,
        2,
        SWITCH + 1,
        70 * PER_DAY - SWITCH,
        START + EVERY * SWITCH,
        EVERY,
        skip={66 * PER_DAY + 1, 66 * PER_DAY + 2},
    )
    with cat.transaction() as conn:
        conn.execute(
            "INSERT INTO timelines(timeline, parent, switchpoint, reason, is_current, "
            "recorded_at) VALUES (2, 1, ?, 'failover', 0, ?)",
            ((SWITCH + 1) * SEG, iso(START)),
        )
        conn.execute(
            "INSERT INTO artifacts(kind, name, state, state_at, wal_type, timeline, "
            "files, meta, created_at, sha256) VALUES ('history', '00000002.history', "
            "'verified', ?, 'history', 2, '[]', '{}', ?, ?)",
            (iso(START), iso(START), "0" * 64),
        )
    for day in BACKUP_DAYS:
        seg = seg_of_day(day)
        tli = 1 if seg <= SWITCH else 2
        physical_row(
            cat, bid(day), START + EVERY * (seg - 1) + timedelta(minutes=2), tli, seg, seg + 1
        )
    for day in range(10, 70):
        for db in ("medusa_production", "strapi_production"):
            logical_row(cat, db, did(day), START + timedelta(days=day, hours=1))
    for day in range(10, 26):  # a database whose dumps stopped 44 days ago
        logical_row(cat, "legacy", did(day), START + timedelta(days=day, hours=1))
    return cat


def names(decisions: list, kind: str, remove: bool) -> set[str]:  # type: ignore[type-arg]
    return {d.name for d in decisions if d.kind == kind and d.remove is remove}


def test_policy_keeps_exactly_what_the_rules_say(tmp_path: Path) -> None:
    cat = history(tmp_path)
    result = plan(cat, POLICY, NOW)
    assert result.anchor == bid(56)  # newest backup at or before now - 7 days
    assert names(result.decisions, "physical", False) == {bid(42), bid(56), bid(63)}
    assert names(result.decisions, "physical", True) == {bid(d) for d in (0, 7, 14, 21, 28, 35)}
    kept_dumps = names(result.decisions, "logical", False)
    for db in ("medusa_production", "strapi_production"):
        assert {n for n in kept_dumps if n.startswith(db)} == {
            f"{db}/{did(d)}" for d in range(40, 70)
        }
    assert {n for n in kept_dumps if n.startswith("legacy")} == {
        f"legacy/{did(25)}"
    }  # newest, any age
    assert names(result.decisions, "history", False) == {"00000002.history"}
    keep = sorted((r.timeline, r.first, r.last) for r in result.wal if not r.remove)
    b42 = seg_of_day(42)
    assert keep == [(1, b42, b42 + 1), (2, seg_of_day(56), 70 * PER_DAY)]
    removed = sorted((r.timeline, r.first, r.last) for r in result.wal if r.remove)
    assert removed == [(1, 1, b42 - 1), (1, b42 + 2, SWITCH), (2, SWITCH + 1, seg_of_day(56) - 1)]


def test_windows_inside_the_policy_survive_apply(tmp_path: Path) -> None:
    cat = history(tmp_path)
    samples = [NOW - timedelta(days=7) + timedelta(minutes=30 * i) for i in range(7 * 48)]
    before = {t: restorable_at(cat, t) for t in samples}
    retained = {
        r["name"]: r["finished_at"]
        for r in cat.query(
            "SELECT name, finished_at FROM artifacts WHERE kind='physical' AND name IN "
            f"('{bid(42)}', '{bid(56)}', '{bid(63)}')"
        )
    }
    old = START + timedelta(days=10)
    assert restorable_at(cat, old).plan is not None  # before retention, via B07
    assert restorable_at(cat, START + timedelta(days=20)).plan is None  # the day-17 gap
    report = apply(cat, LocalStore(tmp_path / "store"), tmp_path / "spool", plan(cat, POLICY, NOW))
    assert report.failed == [] and report.deleted["physical"] == 6
    for t in samples:
        a, b = before[t], restorable_at(cat, t)
        assert (a.plan is None) == (b.plan is None), t
        if a.plan and b.plan:
            assert (a.plan.window.backup_id, a.plan.segments) == (
                b.plan.window.backup_id,
                b.plan.segments,
            ), t
    assert sum(1 for t in samples if before[t].plan is None) > 0  # the day-66 gap is visible
    for name, finished in retained.items():
        t = datetime.fromisoformat(finished.replace("Z", "+00:00")) + timedelta(minutes=1)
        assert restorable_at(cat, t).plan is not None, name  # each retained backup restores
    assert restorable_at(cat, old).plan is None  # outside the policy: gone, as intended
    # a second run has nothing left to do
    again = plan(cat, POLICY, NOW)
    assert victims(cat, again) == []


def test_leases_pending_and_resume(tmp_path: Path) -> None:
    cat = history(tmp_path)
    with cat.transaction() as conn:  # a segment still in the pipeline, in the old region
        conn.execute(
            "UPDATE artifacts SET state='stored' WHERE kind='wal' AND timeline=1 AND segno=100"
        )
    with lease(cat, "drill", artifacts=[("physical", bid(35))], wal=[(1, 200, 210)]):
        held = plan(cat, POLICY, NOW)
        b35 = next(d for d in held.decisions if d.name == bid(35))
        assert not b35.remove and "in use by a running restore or drill" in b35.reasons
        kept = [(r.first, r.last) for r in held.wal if not r.remove and r.timeline == 1]
        assert (200, 210) in kept
        doomed = {v.segno for v in victims(cat, held) if v.kind == "wal"}
        assert 100 not in doomed and 205 not in doomed and 99 in doomed
    # a run that crashed after marking: the next run finishes those deletions
    first = plan(cat, POLICY, NOW)
    rows = victims(cat, first)
    with cat.transaction() as conn:
        for r in rows[:10]:
            assert r.id is not None
            transitions.mark_expiring(conn, r.id, iso(NOW))
    resumed = plan(cat, POLICY, NOW)
    assert len(resumed.resume) == 10
    apply(cat, LocalStore(tmp_path / "store"), tmp_path / "spool", resumed)
    assert (
        cat.scalar(
            "SELECT COUNT(*) FROM artifacts WHERE expiring_at IS NOT NULL AND deleted_at IS NULL"
        )
        == 0
    )


@pytest.mark.slow
@pytest.mark.parametrize("storage", ["local", "s3"])
def test_retention_really_deletes_and_the_window_still_restores(
    make_env: EnvFactory, storage: str
) -> None:
    env = make_env(
        storage,
        extra={
            "retention": {
                "physical_weeks": 1,
                "wal_days": 1,
                "logical_days": 1,
                "local_keep_days": 0,
            }
        },
    )
    pg = prepare(env)
    env.cli("backup", "physical")
    for i in range(2):
        pg.sql("INSERT INTO ticks(note) VALUES (%s)", (f"old {i}",))
        pg.switch_wal()
    pg.wait_archived(pg.switch_wal())
    env.cli("backup", "physical")
    target, expected = mark_target(env, pg, "inside the window")
    store = env.store()
    before = {o.key for o in store.list(f"pg/{env.cluster}/")}
    backups = sorted(
        r["name"] for r in env.catalog().query("SELECT name FROM artifacts WHERE kind='physical'")
    )
    # as of 10 days from now: the older base backup and the WAL before the newer one expire
    later = (datetime.now(UTC) + timedelta(days=10)).isoformat()
    dry = env.cli_json("retention", "apply", "--dry-run", "--now", later)
    assert [i["name"] for i in dry["artifacts"]["physical"]["remove"]] == [backups[0]]
    assert {o.key for o in store.list(f"pg/{env.cluster}/")} == before  # dry run: untouched
    done = env.cli_json("retention", "apply", "--now", later)
    assert done["result"]["deleted"]["physical"] == 1 and done["result"]["failed"] == []
    after = {o.key for o in store.list(f"pg/{env.cluster}/")}
    gone = before - after
    assert any(f"/physical/{backups[0]}/" in k for k in gone)
    assert any("/wal/00000001/" in k for k in gone)
    assert not any(f"/physical/{backups[1]}/" in k for k in gone)
    assert not (env.spool / "physical" / backups[0]).exists()
    _r, rows = restore_and_read(env, target, "after-retention")
    assert rows == expected
