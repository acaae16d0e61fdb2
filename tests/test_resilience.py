"""Crashes and outages in the WAL pipeline: nothing is lost, nothing is doubled. (Damage
in the store being noticed and healed is stage logic: tests/test_stages.py.)"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from tests.conftest import EnvFactory
from tests.env import PgvaultEnv

pytestmark = pytest.mark.slow


def busy_segments(env: PgvaultEnv, rounds: int) -> list[str]:
    """Fill `rounds` WAL segments with incompressible-ish data, switching after each."""
    pg = env.pg
    assert pg is not None
    pg.sql("CREATE TABLE IF NOT EXISTS noise (id bigserial, v text)")
    names = []
    for _ in range(rounds):
        pg.sql(
            "INSERT INTO noise(v) SELECT md5(random()::text) || md5(random()::text) "
            "FROM generate_series(1, 60000)"
        )
        names.append(pg.switch_wal())
    pg.wait_archived(names[-1], 60)
    return names


def spool_segments(env: PgvaultEnv) -> list[str]:
    return sorted(
        p.name
        for p in (env.spool / "wal").iterdir()
        if len(p.name) == 24 and not p.name.startswith(".")
    )


def verified_names(env: PgvaultEnv) -> set[str]:
    return {r["name"] for r in env.wal_rows() if r["state"] == "verified"}


def test_upload_worker_killed_mid_upload_redelivers_and_verifies_once(
    make_env: EnvFactory,
) -> None:
    env = make_env("s3")
    env.cli("init")
    env.make_pg()
    busy_segments(env, 6)
    expected = spool_segments(env)
    env.cli("producer", "--once")
    worker = env.spawn("worker", "upload", log_name="upload-killed")
    store = env.store()
    prefix = f"pg/{env.cluster}/wal/"
    env.wait_for(lambda: len(list(store.list(prefix))) >= 3, 60, "three uploads")
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(10)
    assert len(list(store.list(prefix))) < len(expected), "killed too late to test anything"
    first = env.cli("-v", "worker", "upload", "--once")
    assert "redelivered" in first.stderr
    env.drain()
    rows = [r for r in env.wal_rows() if r["wal_type"] == "segment"]
    assert sorted(r["name"] for r in rows) == expected  # one row each, none missing
    assert all(r["state"] == "verified" for r in rows)
    assert len(list(store.list(prefix))) == len(expected)
    assert env.cli_json("catalog", "gaps")["gap_count"] == 0


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=120)


def test_broker_restart_while_producer_runs_loses_nothing(make_env: EnvFactory) -> None:
    if os.environ.get("PGVAULT_TEST_AMQP_URL") or os.environ.get("PGVAULT_TEST_NO_BROKER_RESTART"):
        pytest.skip("restarts the local RabbitMQ (not with a remote broker or when disabled)")
    env = make_env("local")
    env.cli("init")
    pg = env.make_pg()
    env.start_pipeline()  # producer and all workers stay up through the restart
    before = [pg.switch_wal() for _ in range(2)]
    pg.wait_archived(before[-1])
    time.sleep(1)
    _rabbitmqctl("stop_app")
    try:
        pg.sql("CREATE TABLE during (x int)")
        during = [pg.switch_wal() for _ in range(3)]
        pg.wait_archived(during[-1])  # archive_command does not need the broker
        time.sleep(3)  # the producer is now failing to publish, and retrying
    finally:
        _rabbitmqctl("start_app")
        _rabbitmqctl("await_startup")
    after = [pg.switch_wal()]
    pg.wait_archived(after[-1])
    expected = set(spool_segments(env))
    assert set(before + during + after) <= expected

    env.wait_for(
        lambda: expected <= verified_names(env),
        180,
        "every segment verified by the reconnected workers",
    )
    log = (env.base / "producer.log").read_text()
    assert "cannot publish" in log and "publishing resumed" in log
    for stage in ("upload", "verify", "catalog"):
        assert "reconnecting" in (env.base / f"{stage}.log").read_text(), stage
