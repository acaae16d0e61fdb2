"""Stage logic on the in-process harness (tests/harness.py): the real upload, verify,
catalog and alert stages behind the real Worker, a stub broker, a local store and a
SQLite catalog in a temp directory. No RabbitMQ, PostgreSQL or S3 needed."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

from pgvault import keys
from pgvault.broker.base import Delivery
from pgvault.broker.topology import ATTEMPT_HEADER, ERROR_HEADER, STAGE_HEADER
from pgvault.catalog.wal import runs
from pgvault.schemas import ArtifactEvent, FileInfo
from pgvault.spool.scan import scan
from pgvault.storage import objmeta
from pgvault.storage.codec import decode_stream
from pgvault.walfile import segment_name
from tests.alertfakes import FakeDiscord, discord_fixture  # noqa: F401 - fixture "discord"
from tests.harness import Harness


def all_kinds(h: Harness) -> dict[str, list[str]]:
    """Three segments, a timeline switch, a dump and a base backup in the spool."""
    return {
        "wal": h.archive_segments(1, 1, 3),
        "history": [h.archive_history(2, 3)],
        "logical": [h.add_logical("shop", "20250101T000000Z")],
        "physical": [h.add_physical("20250101T000500Z")],
    }


def spool_bytes(h: Harness, kind: str, name: str, filename: str) -> bytes:
    if kind in ("wal", "history"):
        return (h.spool / "wal" / name).read_bytes()
    return (h.spool / kind / name / filename).read_bytes()


def stored_content(h: Harness, key: str) -> bytes:
    info = h.store.head(key)
    assert info is not None, key
    out = io.BytesIO()
    with h.store.open_read(key) as fh:
        decode_stream(fh, out, objmeta.encoding_of(info.metadata))
    return out.getvalue()


def test_every_kind_goes_ready_stored_verified_catalogued(harness: Harness) -> None:
    h = harness
    made = all_kinds(h)
    assert h.announce() == 6
    drained = h.run_until_idle()
    assert drained.total("dead") == 0 and drained.total("retried") == 0
    for kind, names in made.items():
        for name in names:
            row = h.row(kind, name)
            assert row["state"] == "verified", (kind, name, row["error"])
            states = [e.state for e in h.artifact_events() if e.name == name]
            assert states == ["ready", "stored", "verified"], (name, states)
            verified = h.artifact_events("verified")
            assert next(e for e in verified if e.name == name).meta["content_verified"] is True
            for f in h.stored_files(kind, name):
                # the store holds the producer's bytes, under the recorded sha256
                info = h.store.head(f["key"])
                assert info is not None and info.metadata["sha256"] == f["stored_sha256"]
                assert info.size == f["stored_size"]
                assert stored_content(h, f["key"]) == spool_bytes(h, kind, name, f["name"])
    wal = h.row("wal", made["wal"][0])
    assert json.loads(wal["files"])[0]["key"].endswith(".zst")  # WAL is compressed
    assert (wal["timeline"], wal["segno"], wal["start_lsn"]) == (1, 1, 16 << 20)
    assert json.loads(wal["meta"])["system_identifier"] == "7000000000000000001"
    logical = h.row("logical", made["logical"][0])
    assert (logical["db"], logical["backup_id"]) == ("shop", "20250101T000000Z")
    assert {f["name"] for f in h.stored_files("logical", made["logical"][0])} == {
        "shop.dump",
        "manifest.json",
    }
    physical = h.row("physical", made["physical"][0])
    assert physical["timeline"] == 1 and physical["backup_id"] == "20250101T000500Z"
    with h.catalog.transaction() as conn:
        assert runs(conn, 1) == [(1, 3)]
    tl = h.catalog.query("SELECT timeline, parent FROM timelines WHERE timeline=2")
    assert tl == [{"timeline": 2, "parent": 1}]
    # the only alert is wal-archive's note about the new timeline, published by the producer
    assert [a.check for a in h.alerts()] == ["new_timeline"]
    assert all(h.depth(s) == 0 for s in ("upload", "verify", "catalog", "alert"))
    # a second producer pass finds everything verified: nothing to announce
    assert h.announce() == 0


def test_corrupt_bytes_in_the_store_are_not_verified_and_healed_from_the_spool(
    harness: Harness,
) -> None:
    h = harness
    [name] = h.archive_segments(1, 7, 1)
    h.announce()
    h.run_stage("upload")
    [stored] = h.artifact_events("stored")
    key = stored.files[0].key
    assert key is not None
    h.corrupt_object(key)
    h.run_stage("verify")
    [corrupt] = h.artifact_events("corrupt")
    assert corrupt.error is not None and corrupt.error.startswith(f"{key}: zstd stream is corrupt")
    h.run_stage("catalog")
    assert h.state("wal", name) == "ready"  # corrupt, then announced again for re-upload
    assert h.catalog.query("SELECT * FROM wal_runs") == []
    [alert] = h.alerts("artifact_corrupt")
    assert alert.severity == "critical" and alert.subject == f"wal/{name}"
    assert alert.action == "re-uploading from the spool copy"
    # verify asked upload to replace the bad copy; the pipeline heals it
    assert [e.reupload for e in h.artifact_events("ready")] == [False, True]
    h.run_until_idle()
    assert h.state("wal", name) == "verified"
    assert stored_content(h, key) == (h.spool / "wal" / name).read_bytes()
    with h.catalog.transaction() as conn:
        assert runs(conn, 1) == [(7, 7)]
    assert h.dead("upload") == [] and h.dead("verify") == []


def test_corrupt_object_without_a_spool_copy_stays_corrupt(harness: Harness) -> None:
    h = harness
    backup = h.add_logical("shop", "20250102T000000Z")
    h.announce()
    h.run_stage("upload")
    [stored] = h.artifact_events("stored")
    dump = next(f for f in stored.files if f.name == "shop.dump")
    assert dump.key is not None
    h.corrupt_object(dump.key, flip_at=10_000)
    shutil.rmtree(h.spool / "logical" / "shop")
    h.run_until_idle()
    assert h.state("logical", backup) == "corrupt"
    [alert] = h.alerts("artifact_corrupt")
    assert "no spool copy left" in (alert.action or "")
    assert h.artifact_events("verified") == []
    assert [e.reupload for e in h.artifact_events("ready")] == [False]


def test_missing_object_is_reported_missing(harness: Harness) -> None:
    h = harness
    backup = h.add_physical("20250103T000000Z")
    h.announce()
    h.run_stage("upload")
    [stored] = h.artifact_events("stored")
    key = next(f.key for f in stored.files if f.name == "base.tar.zst")
    assert key is not None
    h.store.delete(key)
    shutil.rmtree(h.spool / "physical" / backup)
    h.run_until_idle()
    assert h.state("physical", backup) == "missing"
    assert "missing" in (h.row("physical", backup)["error"] or "")
    assert [a.check for a in h.alerts()] == ["artifact_missing"]


def test_malformed_and_foreign_messages_are_dead_lettered_with_alerts(harness: Harness) -> None:
    """The stage-logic half of test_broker's poison-message test: the stub broker instead
    of RabbitMQ, the Worker in this process instead of `worker upload --once`."""
    h = harness
    broker = h.broker
    other = ArtifactEvent(
        cluster="some-other-cluster",
        kind="wal",
        state="ready",
        name=segment_name(1, 1),
        files=(FileInfo(name=segment_name(1, 1), size=1, sha256="c" * 64),),
    )
    for body in (b"this is not json", json.dumps({"type": "artifact", "v": 1}).encode()):
        broker.publish("artifact.ready.wal", body, broker.auth.sign(body))  # signed poison
    broker.publish_event(other)
    stats = h.run_stage("upload")
    assert (stats.acked, stats.retried, stats.dead) == (0, 0, 3)
    dead = h.dead("upload")
    assert len(dead) == 3
    assert "malformed event" in dead[0].headers[ERROR_HEADER]
    assert dead[0].headers[STAGE_HEADER] == "upload"
    assert dead[0].headers["x-pgvault-routing-key"] == "artifact.ready.wal"
    assert "some-other-cluster" in dead[2].headers[ERROR_HEADER]
    alerts = [json.loads(d.body) for d in broker.take(broker.topology.queue("alert"))]
    assert [a["check"] for a in alerts] == ["dead_letter"] * 3
    assert all(a["severity"] == "critical" for a in alerts)
    # the catalog stage gets the same messages (artifact.#) and refuses them the same way
    h.run_until_idle()
    assert len(h.dead("catalog")) == 3
    assert h.catalog.query("SELECT * FROM artifacts") == []
    # the alert stage never dead-letters into itself
    broker.publish("alert.critical", b"{broken")
    h.run_until_idle()
    assert len(h.dead("alert")) == 1
    assert [a.check for a in h.alerts()].count("dead_letter") == 6


def test_redelivery_of_every_message_changes_nothing(harness: Harness) -> None:
    h = harness
    made = all_kinds(h)
    h.announce()
    h.run_until_idle()
    before_rows = h.catalog.query(
        "SELECT kind, name, state, sha256, stored_size, files FROM artifacts ORDER BY id"
    )
    objects = {o.key: o.metadata for o in h.store.list("")}
    published = list(h.broker.published)
    for stage, prefix in (
        ("upload", "artifact.ready."),
        ("verify", "artifact.stored."),
        ("catalog", "artifact."),
    ):
        h.broker.redeliver(stage, [d for d in published if d.routing_key.startswith(prefix)])
    # and the producer announces every spool artifact again, as with a lost catalog
    for art in scan(h.spool):
        h.broker.publish_event(art.ready_event(h.cluster))
    drained = h.run_until_idle()
    assert drained.total("dead") == 0 and drained.total("retried") == 0
    after_rows = h.catalog.query(
        "SELECT kind, name, state, sha256, stored_size, files FROM artifacts ORDER BY id"
    )
    assert after_rows == before_rows
    assert {o.key: o.metadata for o in h.store.list("")} == objects  # adopted, not rewritten
    assert [a.check for a in h.alerts()] == ["new_timeline"]  # no conflict, no dead letter
    with h.catalog.transaction() as conn:
        assert runs(conn, 1) == [(1, 3)]
    assert sum(len(v) for v in made.values()) == len(after_rows)


def test_the_same_artifact_announced_twice_is_uploaded_once(harness: Harness) -> None:
    h = harness
    [name] = h.archive_segments(1, 9, 1)
    h.announce()
    h.announce()
    assert h.depth("upload") == 2
    h.run_until_idle()
    assert h.state("wal", name) == "verified"
    assert len(list(h.store.list(""))) == 1
    assert len(h.artifact_events("stored")) == 2  # the second adopts the first upload
    keys = {e.files[0].stored_sha256 for e in h.artifact_events("stored")}
    assert len(keys) == 1
    assert h.alerts() == []


def test_unavailable_store_is_retried_then_dead_lettered_with_an_alert(harness: Harness) -> None:
    h = harness
    [name] = h.archive_segments(1, 4, 1)
    h.announce()
    shutil.rmtree(h.base / "store")  # the mount is gone
    drained = h.run_until_idle()
    assert drained.stats["upload"].retried == 2 and drained.stats["upload"].dead == 1
    [dead] = h.dead("upload")
    assert dead.headers[ATTEMPT_HEADER] == 2
    assert "does not exist or is not mounted" in dead.headers[ERROR_HEADER]
    [alert] = h.alerts("dead_letter")
    assert alert.subject == f"upload:wal/{name}" and "after 3 attempt(s)" in alert.summary
    assert h.state("wal", name) == "ready"


def test_transient_failure_recovers_on_retry(harness: Harness) -> None:
    h = harness
    [name] = h.archive_segments(1, 5, 1)
    h.announce()
    store_dir = h.base / "store"
    shutil.rmtree(store_dir)
    stats = h.run_stage("upload")
    assert (stats.acked, stats.retried) == (0, 1)
    assert h.broker.delayed("upload") == 1
    store_dir.mkdir()  # back before the delay ran out
    drained = h.run_until_idle()
    assert drained.stats["upload"].acked == 1 and drained.total("dead") == 0
    assert h.state("wal", name) == "verified"
    assert h.alerts() == []


def test_object_with_other_content_is_never_overwritten(harness: Harness) -> None:
    h = harness
    [name] = h.archive_segments(1, 6, 1)
    key = h.stages["upload"].layout.key("wal", name, name)  # type: ignore[attr-defined]
    h.store.put_bytes(key, b"someone else's bytes", {"content-sha256": "d" * 64})
    h.announce()
    drained = h.run_until_idle()
    assert drained.stats["upload"].dead == 1 and drained.stats["upload"].retried == 0
    assert h.store.get_bytes(key) == b"someone else's bytes"
    [dead] = h.dead("upload")
    assert "refusing to overwrite" in dead.headers[ERROR_HEADER]
    assert [a.check for a in h.alerts()] == ["dead_letter"]
    assert h.state("wal", name) == "ready"


def test_spool_file_changed_after_archiving_is_not_uploaded(harness: Harness) -> None:
    h = harness
    [name] = h.archive_segments(1, 8, 1)
    path = h.spool / "wal" / name
    data = bytearray(path.read_bytes())
    data[5000] ^= 0xFF
    path.write_bytes(bytes(data))
    h.announce()
    h.run_until_idle()
    assert list(h.store.list("")) == []
    assert sorted(a.check for a in h.alerts()) == ["dead_letter", "spool_corrupt"]
    [dead] = h.dead("upload")
    assert "changed since it was written" in dead.headers[ERROR_HEADER]


def test_conflicting_event_for_a_catalogued_artifact_raises_an_alert(harness: Harness) -> None:
    h = harness
    [name] = h.archive_segments(1, 2, 1)
    h.announce()
    h.run_until_idle()
    [verified] = h.artifact_events("verified")
    forged = verified.model_copy(
        update={"files": (verified.files[0].model_copy(update={"sha256": "e" * 64}),)}
    )
    h.broker.publish_event(forged)
    h.run_until_idle()
    assert h.state("wal", name) == "verified"
    [alert] = h.alerts("catalog_conflict")
    assert alert.subject == f"wal/{name}"


def test_stub_broker_refuses_publishing_before_declare_like_rabbitmq(harness: Harness) -> None:
    from pgvault.broker.stub import StubBroker
    from pgvault.errors import BrokerError

    broker = StubBroker(harness.broker.topology)
    try:
        broker.publish("artifact.ready.wal", b"{}")
    except BrokerError as exc:
        assert "pgvault init" in str(exc)
    else:
        raise AssertionError("publish before declare must fail")
    broker.declare()
    broker.publish("artifact.ready.wal", b"{}")
    assert [d.routing_key for d in broker.take(broker.topology.queue("upload"))] == [
        "artifact.ready.wal"
    ]
    assert isinstance(broker.published[0], Delivery)


def test_deleted_object_is_reported_missing_and_healed_from_spool(harness: Harness) -> None:
    """Moved from test_resilience (it needed a cluster and RabbitMQ only to make WAL and
    run the stages): a verify request finds two objects gone; the one still in the spool
    is uploaded again, the other is a gap that `catalog gaps` reports."""
    h = harness
    names = h.archive_segments(1, 1, 5)
    h.announce()
    h.run_until_idle()
    store = h.store
    victim, healed = names[2], names[1]
    # `victim` is also gone from the spool (as after local_keep_days): it cannot heal
    for name in (victim, healed):
        store.delete(f"pg/{h.cluster}/wal/00000001/{name}.zst")
    (h.spool / "wal" / victim).unlink()
    assert h.request_verify("wal") == 5
    h.run_until_idle()
    gaps = h.cli_json("catalog", "gaps", ok_codes=(1,))
    assert gaps["gap_count"] == 1
    (gap,) = gaps["timelines"][0]["gaps"]
    assert gap["names"] == [victim] and gap["missing"] == 1
    assert h.cli("catalog", "gaps", check=False).returncode == 1
    rows = {r["name"]: r for r in h.catalog.query("SELECT * FROM artifacts WHERE kind='wal'")}
    assert rows[victim]["state"] == "missing" and "missing" in rows[victim]["error"]
    # the spool still had `healed`: verify re-queued it, upload replaced the object
    assert rows[healed]["state"] == "verified"
    assert store.head(f"pg/{h.cluster}/wal/00000001/{healed}.zst") is not None
    assert segment_name(1, rows[victim]["segno"]) == victim


def test_encrypted_artifacts_verify_stored_bytes_without_identity_and_content_with_it(
    tmp_path: Path,
) -> None:
    identity = tmp_path / "identity.txt"
    recipient = keys.generate(identity)
    plain_host = Harness(tmp_path / "plain", extra={"encryption": {"recipients": [recipient]}})
    try:
        [name] = plain_host.archive_segments(1, 1, 1)
        backup = plain_host.add_logical("shop", "20250104T000000Z", dump=b"PGDMP secret rows")
        plain_host.announce()
        plain_host.run_until_idle()
        for kind, art in (("wal", name), ("logical", backup)):
            row = plain_host.row(kind, art)
            assert row["state"] == "verified"
            assert json.loads(row["meta"])["content_verified"] is False  # no identity here
        files = {f["name"]: f for f in plain_host.stored_files("logical", backup)}
        assert files["shop.dump"]["encryption"] == "age"
        assert files["manifest.json"]["encryption"] == "none"  # the commit marker stays plain
        assert b"secret rows" not in plain_host.store.get_bytes(files["shop.dump"]["key"])
    finally:
        plain_host.close()
    # the same store and catalog seen from a host that holds the identity: re-verification
    # decrypts and proves the producer's sha256
    restore_host = Harness(
        tmp_path / "plain",
        extra={"encryption": {"recipients": [recipient], "identity_file": str(identity)}},
    )
    try:
        assert restore_host.request_verify() == 2
        restore_host.run_until_idle()
        for kind, art in (("wal", name), ("logical", backup)):
            assert json.loads(restore_host.row(kind, art)["meta"])["content_verified"] is True
    finally:
        restore_host.close()


def test_pipeline_alerts_reach_the_channels_through_the_alert_stage(
    tmp_path: Path, discord: FakeDiscord
) -> None:
    """Verify's alert travels the broker to the real alert stage, which posts it to a
    Discord stand-in (a local HTTP server); a failed post is retried by the policy and
    not sent twice."""
    h = Harness(tmp_path / "pgvault", extra={"alerts": {"discord_webhook_url": discord.url}})
    try:
        [name] = h.archive_segments(1, 3, 1)
        h.announce()
        h.run_stage("upload")
        [stored] = h.artifact_events("stored")
        assert stored.files[0].key is not None
        h.store.delete(stored.files[0].key)
        (h.spool / "wal" / name).unlink()
        discord.fail_next = 1
        drained = h.run_until_idle()
        assert drained.stats["alert"].retried == 1 and drained.stats["alert"].acked == 1
        assert len(discord.attempts) == 2 and len(discord.posts) == 1
        assert discord.posts[0]["content"].startswith("🔴 **[CRITICAL] artifact_missing")
        assert f"wal/{name}" in discord.posts[0]["content"]
        assert h.dead("alert") == []
    finally:
        h.close()
