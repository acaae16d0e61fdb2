"""Issue 15 §1/§6/§7: only authenticated messages of this cluster are acted on, names are
validated at the schema boundary, a bad catalog row does not stop retention or check, a
wedged broker cannot hang check/doctor, and critical alerts reach a person when the
broker is down."""

from __future__ import annotations

import json
import os
import socket
import stat
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from pgvault.broker.auth import (
    HMAC_HEADER,
    KeyRing,
    MessageAuth,
    create_key_file,
    read_ring,
    rotate_key_file,
)
from pgvault.broker.stub import StubBroker
from pgvault.broker.topology import ERROR_HEADER, Topology
from pgvault.catalog.db import CatalogDB
from pgvault.consumers.catalog import CatalogStage
from pgvault.consumers.worker import Worker
from pgvault.errors import MessageAuthError, MessageError
from pgvault.schemas import AlertEvent, ArtifactEvent, FileInfo, parse_event
from tests.alertfakes import FakeDiscord, FakeSMTP, discord_fixture, smtp_fixture  # noqa: F401
from tests.conftest import EnvFactory
from tests.test_alerts import alert_env

SEG = "000000010000000000000007"


def verified_event(cluster: str, name: str = SEG) -> ArtifactEvent:
    return ArtifactEvent(
        cluster=cluster,
        kind="wal",
        state="verified",
        name=name,
        files=(
            FileInfo(
                name=name,
                size=16 << 20,
                sha256="a" * 64,
                key=f"pg/{cluster}/wal/00000001/{name}.zst",
                stored_size=10,
                stored_sha256="b" * 64,
            ),
        ),
        meta={"wal_type": "segment", "timeline": 1},
    )


def raw_event(cluster: str, name: str) -> bytes:
    """A well-formed event body with an arbitrary name (bypassing the model)."""
    data = json.loads(verified_event(cluster).model_dump_json())
    data["name"] = name
    data["state"] = "ready"
    data["files"][0]["name"] = name.rsplit("/", 1)[-1]
    return json.dumps(data).encode()


def catalog_rows(cat: CatalogDB) -> list[str]:
    return [r["name"] for r in cat.query("SELECT name FROM artifacts")]


# -- in process, on the stub broker ------------------------------------------------------
def test_stub_forged_and_unsigned_verified_events_are_refused(tmp_path: Path) -> None:
    cat = CatalogDB(tmp_path / "c.sqlite", "c")
    broker = StubBroker(Topology("c", (5, 30)))
    broker.declare()
    body = verified_event("c").model_dump_json().encode()
    broker.publish("artifact.verified.wal", body)  # unsigned
    forged = MessageAuth.ephemeral("c").sign(body)  # someone else's key
    broker.publish("artifact.verified.wal", body, forged)
    tampered = broker.auth.sign(body)
    broker.publish("artifact.verified.wal", body.replace(b"aaaa", b"aaab", 1), tampered)
    stats = Worker(CatalogStage(cat, broker), broker, "c").run(once=True)
    assert (stats.acked, stats.retried, stats.dead) == (0, 0, 3)
    assert catalog_rows(cat) == []
    dead = broker.queues[broker.topology.dead_queue("catalog")]
    reasons = [d.headers[ERROR_HEADER] for d in dead]
    assert "unauthenticated" in reasons[0]
    assert "unknown key" in reasons[1] and "bad HMAC" in reasons[2]
    alerts = [json.loads(d.body) for d in broker.queues[broker.topology.queue("alert")]]
    assert [a["check"] for a in alerts] == ["message_refused"] * 3
    assert all(a["severity"] == "critical" for a in alerts)
    # the genuine event, signed by this cluster's key, is applied
    broker.publish_event(verified_event("c"))
    assert Worker(CatalogStage(cat, broker), broker, "c").run(once=True).acked == 1
    assert catalog_rows(cat) == [SEG]


@pytest.mark.parametrize(
    ("kind", "name"),
    [
        ("wal", "../../etc/passwd"),
        ("wal", "00000001.history"),
        ("history", "000000010000000000000001"),
        ("physical", ".."),
        ("physical", "20260101T000000Z/../x"),
        ("logical", "db/../../x"),
        ("logical", "\x00db/20260101T000000Z"),
        ("logical", "d" * 64 + "/20260101T000000Z"),
        ("logical", "/20260101T000000Z"),
    ],
)
def test_names_are_validated_at_the_schema_boundary(kind: str, name: str) -> None:
    data = json.loads(raw_event("c", SEG))
    data.update(kind=kind, name=name)
    data["files"][0]["name"] = "manifest.json" if kind in ("logical", "physical") else name
    with pytest.raises(MessageError, match="malformed event"):
        parse_event(json.dumps(data).encode())


def test_file_names_and_keys_are_plain() -> None:
    for bad in ("../x", "a/b", "..", ".", "", "a\x00b"):
        with pytest.raises(ValueError):
            FileInfo(name=bad, size=1, sha256="a" * 64)
    for bad in ("../x", "/abs", "a//b", "a/../b"):
        with pytest.raises(ValueError):
            FileInfo(name="f", size=1, sha256="a" * 64, key=bad)
    # database names: anything PostgreSQL accepts (path safety is the encoder's job)
    ok = ArtifactEvent(
        cluster="c",
        kind="logical",
        state="ready",
        name="My DB é/20260101T000000Z",
        files=(FileInfo(name="manifest.json", size=1, sha256="a" * 64),),
        meta={"db": "My DB é", "backup_id": "20260101T000000Z"},
    )
    assert ok.name.startswith("My DB")


def test_permanent_errors_go_straight_to_the_dead_letter_queue() -> None:
    broker = StubBroker(Topology("c", (5, 30)))
    broker.declare()

    class Bad:
        name = "upload"
        calls = 0

        def handle(self, event: ArtifactEvent | AlertEvent) -> None:
            Bad.calls += 1
            raise ValueError("bad name in a path")

    broker.publish_event(verified_event("c").evolve(state="ready"))
    body = raw_event("c", "../../etc/passwd")
    broker.publish("artifact.ready.wal", body, broker.auth.sign(body))
    stats = Worker(Bad(), broker, "c").run(once=True)
    assert (stats.retried, stats.dead) == (0, 2)
    assert Bad.calls == 1  # the bad name never reached the stage
    reasons = [d.headers[ERROR_HEADER] for d in broker.queues["pgvault.c.upload.dead"]]
    assert "unusable message: ValueError: bad name" in reasons[0]
    assert "not a WAL file name" in reasons[1]


def test_key_file_rotation_keeps_the_previous_key_for_the_grace_period(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    assert create_key_file(path, "c") is True
    assert create_key_file(path, "c") is False
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    signer = MessageAuth("c", path)
    verifier = MessageAuth("c", path)
    body = b'{"x": 1}'
    old_headers = signer.sign(body)
    old_id = verifier.verify(body, old_headers)
    time.sleep(0.01)
    ring = rotate_key_file(path, "c", timedelta(hours=1))
    assert ring.current.id != old_id and [k.id for k in ring.keys][1:] == [old_id]
    new_headers = signer.sign(body)  # picks up the new file without a restart
    assert new_headers[HMAC_HEADER].startswith(ring.current.id + ":")
    assert verifier.verify(body, new_headers) == ring.current.id
    assert verifier.verify(body, old_headers) == old_id  # in-flight message still valid
    rotate_key_file(path, "c", timedelta(0))  # grace over: the oldest key is gone
    with pytest.raises(MessageAuthError):
        MessageAuth("c", path).verify(body, old_headers)
    with pytest.raises(Exception, match="cluster 'c', not 'd'"):
        MessageAuth("d", path).sign(body)
    assert isinstance(read_ring(path), KeyRing)


# -- against the real broker and CLI ---------------------------------------------------
def test_forged_verified_event_on_the_exchange_is_refused(make_env: EnvFactory) -> None:
    env = make_env("local")
    env.cli("init")
    key = env.settings.hmac_key_path
    assert key.exists() and stat.S_IMODE(key.stat().st_mode) == 0o600
    broker = env.broker()
    body = verified_event(env.cluster).model_dump_json().encode()
    broker.publish("artifact.verified.wal", body)  # unsigned
    broker.publish("artifact.verified.wal", body, MessageAuth.ephemeral(env.cluster).sign(body))
    trav = raw_event(env.cluster, "../../etc/passwd")
    broker.publish("artifact.ready.wal", trav, broker.auth.sign(trav))  # signed, bad name
    out = json.loads(env.cli("worker", "catalog", "--once", "--json").stdout)
    assert (out["acked"], out["retried"], out["dead"]) == (0, 0, 3)
    assert env.wal_rows() == []
    dead = broker.take(broker.topology.dead_queue("catalog"))
    assert len(dead) == 3
    alerts = [json.loads(d.body) for d in broker.take(broker.topology.queue("alert"))]
    assert sorted(a["check"] for a in alerts) == [
        "dead_letter",
        "message_refused",
        "message_refused",
    ]
    # and a rotation does not break the pipeline: a genuine event still goes through
    env.cli("keys", "rotate-hmac", "--grace-hours", "1")
    env.broker().publish_event(verified_event(env.cluster))
    out = json.loads(env.cli("worker", "catalog", "--once", "--json").stdout)
    assert out["acked"] == 1 and [r["name"] for r in env.wal_rows()] == [SEG]


def test_a_bad_catalog_row_does_not_stop_retention_or_check(make_env: EnvFactory) -> None:
    env = make_env("local", extra={"postgres": {"port": 9, "databases": []}})
    env.cli("init")
    cat = env.catalog()
    with cat.transaction() as conn:  # as an old version could have written it
        conn.execute(
            "INSERT INTO artifacts(kind, name, state, state_at, files, meta, created_at, "
            "sha256) VALUES ('wal', '../../etc/passwd', 'ready', '2026-01-01T00:00:00.000000Z',"
            " '[]', '{}', '2026-01-01T00:00:00.000000Z', ?)",
            ("0" * 64,),
        )
    cat.close()
    proc = env.cli("retention", "apply", "--dry-run", "--json")
    data = json.loads(proc.stdout)
    assert [s["name"] for s in data["skipped"]] == ["../../etc/passwd"]
    text = env.cli("retention", "apply", "--dry-run").stdout
    assert "SKIPPED wal row '../../etc/passwd'" in text
    proc = env.cli("check", "--no-alerts", "--json", check=False)
    report = json.loads(proc.stdout)
    assert not [c for c in report["checks"] if "internal error" in c["message"]], report


@pytest.fixture
def wedged_port() -> Iterator[int]:
    """A TCP server that accepts connections and never says a word (a wedged broker)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield srv.getsockname()[1]
    stop.set()
    thread.join(5)
    for s in held:
        s.close()
    srv.close()


def test_a_wedged_broker_does_not_hang_check_or_doctor(
    make_env: EnvFactory, wedged_port: int
) -> None:
    env = make_env("local", extra={"postgres": {"port": 9, "databases": ["appdb"]}})
    env.cli("init")  # against the real broker: creates the key
    env.data["broker"].update(
        url=f"amqp://guest:guest@127.0.0.1:{wedged_port}/%2F", connect_timeout=2, call_timeout=3
    )
    env.write_config()
    for args in (("check", "--json"), ("doctor", "--no-switch")):
        started = time.monotonic()
        proc = env.cli(*args, check=False, timeout=90)
        elapsed = time.monotonic() - started
        assert elapsed < 45, f"{args} took {elapsed:.0f}s"
        assert proc.returncode != 0
    started = time.monotonic()
    proc = env.cli("init", check=False, timeout=90)
    assert time.monotonic() - started < 45 and proc.returncode == 1
    assert "broker     FAILED" in proc.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_check_delivers_critical_alerts_itself_when_the_broker_is_down(
    make_env: EnvFactory,
    discord: FakeDiscord,
    smtp: FakeSMTP,
) -> None:
    env = alert_env(make_env, discord, smtp)
    env.data["broker"].update(
        url=f"amqp://guest:guest@127.0.0.1:{_free_port()}/%2F", connect_timeout=2, call_timeout=3
    )
    env.write_config()
    proc = env.cli("check", "--only", "backup_age", check=False)
    assert proc.returncode == 2
    assert "delivered directly to discord" in proc.stdout, proc.stdout + proc.stderr
    assert len(discord.posts) == 1 and "[CRITICAL] backup_age" in discord.posts[0]["content"]
    assert len(smtp.mails) == 1
    # the same de-duplication state: a second run within renotify_minutes sends nothing
    proc = env.cli("check", "--only", "backup_age", "--json", check=False)
    alerts = json.loads(proc.stdout)["alerts"]
    assert alerts["direct"] == 0 and "already notified" in alerts["direct_note"]
    assert len(discord.posts) == 1
    assert len(list((env.spool / "alerts").iterdir())) >= 1  # spooled for the pipeline too


def test_check_delivers_directly_when_no_alert_worker_consumes(
    make_env: EnvFactory,
    discord: FakeDiscord,
    smtp: FakeSMTP,
) -> None:
    env = alert_env(make_env, discord, smtp, direct_if_no_consumer=True)
    proc = env.cli("check", "--only", "backup_age", check=False)
    assert proc.returncode == 2
    assert "no consumer on the alert queue" in proc.stdout
    assert len(discord.posts) == 1
    # the alert worker, started later, finds it already notified and stays quiet
    out = json.loads(env.cli("worker", "alert", "--once", "--json").stdout)
    assert out["acked"] >= 1 and len(discord.posts) == 1


def test_library_errors_are_one_line(make_env: EnvFactory) -> None:
    env = make_env("local")
    env.data["broker"].update(url=f"amqp://guest:guest@127.0.0.1:{_free_port()}/%2F")
    env.write_config()
    proc = env.cli("producer", "--once", check=False)
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) <= 2, proc.stderr
    assert "Traceback" not in proc.stderr and "unreachable" in proc.stderr


def test_producer_waits_for_the_broker_instead_of_exiting(make_env: EnvFactory) -> None:
    env = make_env("local")
    env.data["broker"].update(url=f"amqp://guest:guest@127.0.0.1:{_free_port()}/%2F")
    env.write_config()
    proc = env.spawn("producer", log_name="producer")
    time.sleep(6)
    assert proc.poll() is None  # still retrying
    proc.send_signal(15)
    assert proc.wait(30) == 0
    log = (env.base / "producer.log").read_text()
    assert log.count("retrying with backoff") == 1 and "Traceback" not in log
    assert os.path.exists(env.config_path)
