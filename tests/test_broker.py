"""Broker behaviour against the real RabbitMQ: topology, confirms, retries through the
delay queues, dead-lettering with alerts, and the stub twin's policy. The policy tests
run against both brokers: the stub variant needs no service (`make test-fast`)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
import uuid

import pytest

from pgvault.broker.base import Broker, ConsumeStats, Delivery
from pgvault.broker.rabbit import RabbitBroker
from pgvault.broker.stub import StubBroker
from pgvault.broker.topology import ATTEMPT_HEADER, ERROR_HEADER, Topology
from pgvault.consumers.worker import Worker
from pgvault.errors import BrokerError, IntegrityError, StoreUnavailable
from pgvault.schemas import AlertEvent, ArtifactEvent, FileInfo
from tests.conftest import EnvFactory
from tests.env import PGVAULT


def wal_event(cluster: str, n: int = 1) -> ArtifactEvent:
    name = f"0000000100000000000000{n:02X}"
    return ArtifactEvent(
        cluster=cluster,
        kind="wal",
        state="ready",
        name=name,
        files=(FileInfo(name=name, size=1, sha256="c" * 64),),
    )


class FlakyStage:
    """Fails with the given errors first, then succeeds; records what it saw."""

    name = "upload"

    def __init__(self, errors: list[Exception]) -> None:
        self.errors = list(errors)
        self.seen: list[str] = []

    def handle(self, event: ArtifactEvent | AlertEvent) -> None:
        assert isinstance(event, ArtifactEvent)
        self.seen.append(event.name)
        if self.errors:
            raise self.errors.pop(0)


@pytest.fixture
def rabbit(amqp_url: str) -> RabbitBroker:
    broker = RabbitBroker(amqp_url, Topology(f"t{uuid.uuid4().hex[:10]}", (1, 2)))
    broker.declare()
    yield broker
    broker.delete_topology()
    broker.close()


@pytest.fixture(
    params=[pytest.param("rabbit", marks=pytest.mark.needs_services), "stub"],
)
def any_broker(request: pytest.FixtureRequest) -> Broker:
    """The same policy tests on RabbitMQ and on the in-memory stub."""
    if request.param == "rabbit":
        broker: Broker = request.getfixturevalue("rabbit")
        return broker
    stub = StubBroker(Topology(f"t{uuid.uuid4().hex[:10]}", (1, 2)))
    stub.declare()
    return stub


def run_all(worker: Worker, broker: Broker) -> ConsumeStats:
    """`run(once=True)` until the stage's delay queues are empty too: RabbitMQ waits the
    delays out itself; the stub releases parked messages as if the delay had passed."""
    total = worker.run(once=True)
    while isinstance(broker, StubBroker) and broker.release_delayed(worker.stage.name):
        stats = worker.run(once=True)
        total.acked += stats.acked
        total.retried += stats.retried
        total.dead += stats.dead
    return total


def take(broker: Broker, queue: str) -> list[Delivery]:
    assert isinstance(broker, RabbitBroker | StubBroker)
    return broker.take(queue)


def test_declare_is_idempotent_and_unroutable_is_an_error(amqp_url: str) -> None:
    broker = RabbitBroker(amqp_url, Topology(f"t{uuid.uuid4().hex[:10]}", (1, 2)))
    with pytest.raises(BrokerError, match="pgvault init"):  # nothing declared yet
        broker.publish("artifact.ready.wal", b"{}")
    broker.declare()
    broker.declare()
    names = {d.name for d in broker.queue_depths()}
    assert f"pgvault.{broker.topology.cluster}.catalog" in names
    assert len(names) == len(broker.topology.all_queues())
    broker.delete_topology()


def test_unreachable_broker_is_one_line() -> None:
    broker = RabbitBroker("amqp://guest:secret@127.0.0.1:9/%2F", Topology("x"))
    with pytest.raises(BrokerError) as info:
        broker.declare()
    assert "unreachable" in str(info.value) and "secret" not in str(info.value)


def test_transient_failure_is_retried_through_delay_queues(any_broker: Broker) -> None:
    broker = any_broker
    cluster = broker.topology.cluster
    stage = FlakyStage([StoreUnavailable("store down"), StoreUnavailable("store down")])
    broker.publish_event(wal_event(cluster))
    started = time.monotonic()
    stats = run_all(Worker(stage, broker, cluster), broker)
    elapsed = time.monotonic() - started
    assert stage.seen == [wal_event(cluster).name] * 3
    assert (stats.retried, stats.acked, stats.dead) == (2, 1, 0)
    if isinstance(broker, RabbitBroker):
        assert elapsed >= 3  # waited 1 s, then 2 s in the delay queues
    assert take(broker, broker.topology.dead_queue("upload")) == []


def test_exhausted_retries_dead_letter_with_alert(any_broker: Broker) -> None:
    broker = any_broker
    cluster = broker.topology.cluster
    stage = FlakyStage([StoreUnavailable("store down")] * 5)
    broker.publish_event(wal_event(cluster))
    stats = run_all(Worker(stage, broker, cluster), broker)
    assert (stats.retried, stats.dead) == (2, 1)
    dead = take(broker, broker.topology.dead_queue("upload"))
    assert len(dead) == 1
    assert dead[0].headers[ATTEMPT_HEADER] == 2 and "store down" in dead[0].headers[ERROR_HEADER]
    alerts = [json.loads(d.body) for d in take(broker, broker.topology.queue("alert"))]
    assert [a["check"] for a in alerts] == ["dead_letter"]
    assert alerts[0]["severity"] == "critical" and "store down" in alerts[0]["summary"]


def test_permanent_failure_skips_retries(any_broker: Broker) -> None:
    broker = any_broker
    cluster = broker.topology.cluster
    stage = FlakyStage([IntegrityError("sha256 mismatch")])
    broker.publish_event(wal_event(cluster, 1))
    broker.publish_event(wal_event(cluster, 2))
    stats = run_all(Worker(stage, broker, cluster), broker)
    assert (stats.retried, stats.dead, stats.acked) == (0, 1, 1)
    assert len(take(broker, broker.topology.dead_queue("upload"))) == 1


def test_poison_message_is_dead_lettered_and_worker_keeps_consuming(
    make_env: EnvFactory,
) -> None:
    env = make_env("local")
    env.cli("init")
    broker = env.broker()
    for body in (b"this is not json", json.dumps({"type": "artifact", "v": 1}).encode()):
        broker.publish("artifact.ready.wal", body, broker.auth.sign(body))  # signed poison
    broker.publish_event(wal_event("some-other-cluster"))
    proc = env.cli("worker", "upload", "--once", "--json")
    assert json.loads(proc.stdout) == {
        "cluster": env.cluster,
        "ok": False,  # something was dead-lettered
        "stage": "upload",
        "acked": 0,
        "retried": 0,
        "dead": 3,
    }
    dead = broker.take(broker.topology.dead_queue("upload"))
    assert len(dead) == 3
    assert "malformed event" in dead[0].headers[ERROR_HEADER]
    alerts = [json.loads(d.body) for d in broker.take(broker.topology.queue("alert"))]
    assert [a["check"] for a in alerts] == ["dead_letter"] * 3


def test_graceful_stop_finishes_the_message_in_hand(any_broker: Broker) -> None:
    rabbit = any_broker
    cluster = rabbit.topology.cluster
    stop = threading.Event()
    started = threading.Event()
    finished: list[str] = []

    class Slow:
        name = "upload"

        def handle(self, event: ArtifactEvent | AlertEvent) -> None:
            started.set()
            time.sleep(1.5)
            finished.append("done")

    rabbit.publish_event(wal_event(cluster, 1))
    rabbit.publish_event(wal_event(cluster, 2))
    thread = threading.Thread(target=lambda: Worker(Slow(), rabbit, cluster).run(stop=stop))
    thread.start()
    assert started.wait(10)
    stop.set()  # what SIGTERM does
    thread.join(20)
    assert not thread.is_alive()
    assert finished == ["done"]
    # the first message was acked after it finished; the second is still queued
    depth = {d.name: d.messages for d in rabbit.queue_depths()}
    assert depth[rabbit.topology.queue("upload")] == 1


def test_stub_broker_applies_the_same_policy() -> None:
    broker = StubBroker(Topology("stub", (5, 30)))
    broker.declare()
    stage = FlakyStage(
        [StoreUnavailable("down"), StoreUnavailable("down"), StoreUnavailable("down")]
    )
    broker.publish_event(wal_event("stub"))
    worker = Worker(stage, broker, "stub")
    for _ in range(3):
        worker.run(once=True)
        broker.release_delayed("upload")
    assert len(broker.queues[broker.topology.dead_queue("upload")]) == 1
    assert [json.loads(d.body)["check"] for d in broker.queues[broker.topology.queue("alert")]] == [
        "dead_letter"
    ]


def test_worker_speaks_systemd_notify_and_stops_on_sigterm(make_env: EnvFactory) -> None:
    """Type=notify units: READY=1 once consuming, STOPPING=1 and exit 0 on SIGTERM."""
    env = make_env("local")
    env.cli("init")
    sock_path = env.base / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(sock_path))
        sock.settimeout(30)
        proc = subprocess.Popen(
            [*PGVAULT, "--config", str(env.config_path), "worker", "upload"],
            env={**os.environ, "NOTIFY_SOCKET": str(sock_path)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert sock.recv(256) == b"READY=1"
            proc.send_signal(signal.SIGTERM)
            assert sock.recv(256) == b"STOPPING=1"
            _out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, err
