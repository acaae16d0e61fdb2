"""WAL archiving end to end: PostgreSQL -> wal-archive -> spool -> RabbitMQ -> upload ->
verify -> catalog, with the local store and with S3 over HTTP (moto)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pgvault.walfile import format_lsn, parse_name
from tests.conftest import EnvFactory

pytestmark = pytest.mark.slow


def _write_and_switch(pg, rounds: int) -> list[tuple[str, datetime]]:
    """Insert a row and switch WAL `rounds` times; returns (segment, commit time) pairs."""
    pg.sql("CREATE TABLE IF NOT EXISTS t (id serial PRIMARY KEY, at timestamptz, pad text)")
    out = []
    for _ in range(rounds):
        at = pg.one(
            "INSERT INTO t(at, pad) VALUES (clock_timestamp(), repeat('x', 2000)) RETURNING at"
        )
        seg = pg.one("SELECT pg_walfile_name(pg_current_wal_insert_lsn())")
        pg.sql("SELECT pg_switch_wal()")
        out.append((seg, at))
    pg.wait_archived(out[-1][0])
    return out


@pytest.mark.parametrize("storage", ["local", "s3"])
def test_every_segment_reaches_the_store_verified_and_catalogued(
    make_env: EnvFactory, storage: str
) -> None:
    env = make_env(storage)
    env.cli("init")
    pg = env.make_pg()
    env.start_pipeline()
    written = _write_and_switch(pg, 4)
    archived = sorted(p.name for p in env.spool.glob("wal/0*") if not p.name.endswith(".sha256"))
    assert set(s for s, _ in written) <= set(archived)

    def all_verified() -> bool:
        rows = {r["name"]: r for r in env.wal_rows()}
        return all(rows.get(n, {}).get("state") == "verified" for n in archived)

    env.wait_for(all_verified, 60, "all archived segments verified")
    env.stop_pipeline()
    rows = {r["name"]: r for r in env.wal_rows()}
    sysid = pg.system_identifier()
    store = env.store()
    for seg, commit_at in written:
        row = rows[seg]
        wal = parse_name(seg)
        assert row["timeline"] == 1
        assert row["segno"] == wal.segno()
        assert row["start_lsn"] == wal.start_lsn()
        assert row["end_lsn"] - row["start_lsn"] == 16 * 1024 * 1024
        # our INSERT committed in this segment, just after `commit_at` (its clock_timestamp)
        first = datetime.fromisoformat(row["first_commit"])
        last = datetime.fromisoformat(row["last_commit"])
        assert first <= commit_at + timedelta(seconds=1), (row, commit_at)
        assert last >= commit_at.astimezone(UTC), (row, commit_at)
        meta = row["meta"]
        assert str(sysid) in meta
        key = f"pg/{env.cluster}/wal/00000001/{seg}.zst"
        info = store.head(key)
        assert info is not None, key
        assert info.metadata["content-sha256"] == row["sha256"]
        spool_sha = (env.spool / "wal" / f"{seg}.sha256").read_text().split()[0]
        assert spool_sha == row["sha256"]
    gaps = env.cli_json("catalog", "gaps")
    assert gaps["gap_count"] == 0, gaps
    listed = env.cli_json("catalog", "list", "--kind", "wal")
    assert {a["name"] for a in listed["artifacts"]} >= {s for s, _ in written}
    assert all(
        a["start_lsn"] == format_lsn(parse_name(a["name"]).start_lsn())
        for a in listed["artifacts"]
        if a["wal_type"] == "segment"
    )
