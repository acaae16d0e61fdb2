"""An in-process pipeline for stage-level tests: no RabbitMQ, no PostgreSQL, no S3.

dramatiq's `stub_broker` + `stub_worker` idea: pgvault's own StubBroker (same topology,
routing and dispositions as RabbitBroker), a local object store and a catalog in a temp
directory, and the real upload / verify / catalog / alert stages, each behind the real
Worker (parsing, retry policy, dead letters). Artifacts enter the spool the way the
producers put them there (the real `wal_archive.archive`, manifest-committed backup
directories) and are announced by the real Producer's reconciliation.

    h = Harness(tmp_path)
    h.archive_wal(segment_name(1, 3))
    h.announce()
    h.run_until_idle()
    assert h.state("wal", segment_name(1, 3)) == "verified"

`run_until_idle()` drains every stage queue round after round; messages a stage asked to
retry wait in their delay queue and are released (as if the delay had passed) until the
retry policy is exhausted, so a run always ends, with each message acked or dead.
End-to-end behaviour across processes (the CLI, RabbitMQ's delay queues and redelivery,
S3, real clusters) stays in the tests marked `needs_services`.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pgvault import spool
from pgvault.broker import topology_for
from pgvault.broker.base import ConsumeStats, Delivery
from pgvault.broker.stub import StubBroker
from pgvault.catalog.db import CatalogDB
from pgvault.config import Settings, settings_from_dict
from pgvault.consumers.alert import AlertStage
from pgvault.consumers.factory import build_stage
from pgvault.consumers.worker import Stage, Worker
from pgvault.errors import MessageError
from pgvault.producers.wal_archive import archive
from pgvault.producers.watcher import Producer
from pgvault.schemas import AlertEvent, ArtifactEvent, parse_event
from pgvault.storage import ObjectStore, open_store
from pgvault.storage.codec import sha256_file
from pgvault.walfile import DEFAULT_SEG_SIZE, segment_name
from tests.env import cli_json_of, run_cli, write_toml
from tests.walgen import segment_bytes

SYSID = 7000000000000000001
PIPELINE = ("upload", "verify", "catalog", "alert")


@dataclass
class Drained:
    """What one `run_until_idle()` did, per stage."""

    stats: dict[str, ConsumeStats] = field(default_factory=dict)
    rounds: int = 0

    def total(self, what: str) -> int:
        return sum(int(getattr(s, what)) for s in self.stats.values())


class Harness:
    """One pgvault installation in a directory, its pipeline running in this process."""

    def __init__(
        self,
        base: Path,
        *,
        cluster: str = "h",
        retry_delays: Sequence[int] = (1, 2),
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.base = base
        self.spool = base / "spool"
        spool.ensure_layout(self.spool)
        data: dict[str, Any] = {
            "cluster": cluster,
            "spool_dir": str(self.spool),
            "catalog_path": str(base / "catalog.sqlite"),
            "broker": {"retry_delays": list(retry_delays)},
            "storage": {"type": "local", "path": str(base / "store"), "prefix": "pg"},
            # the test process is the service user: nothing switches (tests/env.py does so)
            "service": {"user": pwd.getpwuid(os.geteuid()).pw_name, "work_dir": str(base / "work")},
        }
        for key, value in (extra or {}).items():
            if isinstance(value, dict):
                data.setdefault(key, {}).update(value)
            else:
                data[key] = value
        self.settings: Settings = settings_from_dict(data)
        # for CLI commands that need no broker (catalog queries, restorable, gaps)
        self.config_path = base / "pgvault.toml"
        write_toml(self.config_path, data)
        self.cluster = cluster
        self.broker = StubBroker(topology_for(self.settings))
        self.broker.declare()
        (base / "store").mkdir(parents=True, exist_ok=True)  # what `pgvault init` does
        self.store: ObjectStore = open_store(self.settings.storage)
        self.catalog = CatalogDB(self.settings.catalog_path, cluster)
        self.stages: dict[str, Stage] = {}
        for name in ("upload", "verify", "catalog"):
            self.stages[name] = build_stage(name, self.settings, self.broker)
        # the real alert stage with the configured channels, without the long-running
        # worker's background digest thread (a test calls `flush()` when it wants one)
        self.stages["alert"] = AlertStage.from_settings(self.settings)
        self.workers = {name: Worker(s, self.broker, cluster) for name, s in self.stages.items()}
        self.producer = Producer(self.settings, self.broker, self.catalog, store=self.store)

    def close(self) -> None:
        self.catalog.close()
        self.broker.close()

    # -- producing into the spool ---------------------------------------------------
    def archive_wal(self, name: str, *, sysid: int = SYSID, data: bytes | None = None) -> Path:
        """Archive a synthetic WAL file through the real archive_command code path."""
        src_dir = self.base / "pg_wal"
        src_dir.mkdir(exist_ok=True)
        src = src_dir / name
        src.write_bytes(data if data is not None else segment_bytes(name, sysid=sysid))
        assert archive(str(src), name, str(self.spool)) == "archived"
        return self.spool / "wal" / name

    def archive_segments(self, timeline: int, first: int, count: int) -> list[str]:
        names = [segment_name(timeline, segno) for segno in range(first, first + count)]
        for name in names:
            self.archive_wal(name)
        return names

    def archive_history(self, timeline: int, switch_segno: int) -> str:
        """`0000000N.history`: timeline N forked from N-1 at the start of a segment."""
        name = f"{timeline:08X}.history"
        lsn = switch_segno * DEFAULT_SEG_SIZE
        lines = [
            f"{t}\t{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}\tno recovery target specified"
            for t in range(1, timeline)
        ]
        self.archive_wal(name, data=("\n".join(lines) + "\n").encode())
        return name

    def _commit_backup(
        self, directory: Path, manifest: dict[str, Any], files: dict[str, bytes]
    ) -> None:
        """Write the files, then manifest.json last, then rename the directory in: the
        producers' commit protocol."""
        tmp = directory.with_name(f".{directory.name}.tmp")
        tmp.mkdir(parents=True)
        listed = []
        for name, body in files.items():
            (tmp / name).write_bytes(body)
            digest = sha256_file(tmp / name)
            listed.append({"name": name, "size": digest.size, "sha256": digest.sha256})
        manifest = {**manifest, "files": listed}
        spool.write_atomic(tmp / "manifest.json", json.dumps(manifest, indent=1).encode())
        directory.parent.mkdir(parents=True, exist_ok=True)
        os.rename(tmp, directory)

    def add_logical(self, db: str, backup_id: str, dump: bytes | None = None, **meta: Any) -> str:
        """A committed logical backup directory as `backup logical` leaves it."""
        body = dump if dump is not None else b"PGDMP" + os.urandom(50_000)
        finished = meta.pop("finished_at", "2025-01-01T00:01:00.000000Z")
        manifest = {
            "manifest_version": 2,
            "kind": "logical",
            "cluster": self.cluster,
            "db": db,
            "backup_id": backup_id,
            "started_at": meta.pop("started_at", "2025-01-01T00:00:00.000000Z"),
            "snapshot_at": finished,
            "finished_at": finished,
            "duration_s": 60.0,
            "source": "127.0.0.1:5432",
            "server_version": "15.19",
            "server_version_num": 150019,
            "pg_dump_version": "15.19",
            "snapshot": "00000003-00000002-1",
            "format": "custom",
            "compression": {"method": "zstd", "level": 3},
            "dump_size": len(body),
            "dump_sha256": hashlib.sha256(body).hexdigest(),
            "table_count": 1,
            "row_count": 10,
            "tables": [{"schema": "public", "name": "t", "rows": 10}],
            **meta,
        }
        self._commit_backup(self.spool / "logical" / db / backup_id, manifest, {f"{db}.dump": body})
        return f"{db}/{backup_id}"

    def add_physical(self, backup_id: str, *, timeline: int = 1, start_segno: int = 2) -> str:
        """A committed physical backup directory as `backup physical` leaves it."""
        seg = DEFAULT_SEG_SIZE
        start, end = start_segno * seg + 40, start_segno * seg + 300
        manifest = {
            "manifest_version": 2,
            "kind": "physical",
            "backup_id": backup_id,
            "label": f"pgvault-{backup_id}",
            "started_at": "2025-01-01T00:00:00.000000Z",
            "finished_at": "2025-01-01T00:05:00.000000Z",
            "duration_s": 300.0,
            "timeline": timeline,
            "start_lsn": start,
            "end_lsn": end,
            "start_lsn_text": f"{start >> 32:X}/{start & 0xFFFFFFFF:X}",
            "end_lsn_text": f"{end >> 32:X}/{end & 0xFFFFFFFF:X}",
            "start_wal": segment_name(timeline, start_segno),
            "stop_wal": segment_name(timeline, start_segno),
            "seg_size": seg,
            "system_identifier": str(SYSID),
            "pg_version": "15.19",
            "pg_version_num": 150019,
            "data_size": 60_000,
            "size": 60_000,
            "verification": {"base_files_sha256_checked": 0, "wal_segments": []},
        }
        files = {
            "base.tar.zst": os.urandom(40_000),
            "pg_wal.tar.zst": os.urandom(20_000),
            "backup_manifest": b'{"PostgreSQL-Backup-Manifest-Version": 1, "Files": []}\n',
        }
        self._commit_backup(self.spool / "physical" / backup_id, manifest, files)
        return backup_id

    def announce(self) -> int:
        """The producer's start-up pass: publish alert files left by wal-archive, announce
        every spool artifact the catalog does not show as verified."""
        self.producer.publish_alert_files()
        return self.producer.reconcile(initial=True)

    def request_verify(self, kind: str | None = None) -> int:
        """What `pgvault catalog verify [--kind K]` publishes: a `stored` event for every
        stored artifact, so verify reads it back again."""
        sql = "SELECT kind, name, files, meta FROM artifacts WHERE state != 'ready'"
        params: tuple[str, ...] = ()
        if kind:
            sql += " AND kind = ?"
            params = (kind,)
        count = 0
        for r in self.catalog.query(sql, params):
            files = json.loads(r["files"])
            if not all(f.get("key") for f in files):
                continue
            self.broker.publish_event(
                ArtifactEvent(
                    cluster=self.cluster,
                    kind=r["kind"],
                    state="stored",
                    name=r["name"],
                    files=tuple(files),
                    meta=json.loads(r["meta"]),
                )
            )
            count += 1
        return count

    # -- the CLI, for commands that need no broker ---------------------------------------
    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run_cli(self.config_path, args, check=check, timeout=120)

    def cli_json(self, *args: str, ok_codes: tuple[int, ...] = (0,)) -> Any:
        return cli_json_of(self.cli(*args, "--json", check=False), ok_codes)

    # -- running the stages -----------------------------------------------------------
    def run_stage(self, stage: str) -> ConsumeStats:
        """Drain one stage's work queue once (no delay-queue release)."""
        return self.workers[stage].run(once=True)

    def run_until_idle(
        self, *, stages: Sequence[str] = PIPELINE, retries: bool = True, max_rounds: int = 50
    ) -> Drained:
        """Drain the stage queues until no stage has work. With `retries`, messages parked
        in delay queues are released (their delay taken as passed) until each one is
        acked or dead-lettered by the retry policy."""
        drained = Drained({s: ConsumeStats() for s in stages})
        for _ in range(max_rounds):
            drained.rounds += 1
            busy = 0
            for stage in stages:
                stats = self.run_stage(stage)
                total = drained.stats[stage]
                total.acked += stats.acked
                total.retried += stats.retried
                total.dead += stats.dead
                busy += stats.acked + stats.retried + stats.dead
            if busy:
                continue
            released = sum(self.broker.release_delayed(s) for s in stages) if retries else 0
            if not released:
                return drained
        raise AssertionError(f"the pipeline did not go idle in {max_rounds} rounds")

    # -- looking at the outcome ---------------------------------------------------------
    def events(self, prefix: str = "") -> list[ArtifactEvent | AlertEvent]:
        """Every well-formed event published so far (routing key starting with `prefix`),
        in order; malformed bodies a test published itself are skipped."""
        out: list[ArtifactEvent | AlertEvent] = []
        for d in self.broker.published:
            if d.routing_key.startswith(prefix):
                try:
                    out.append(parse_event(d.body))
                except MessageError:
                    continue
        return out

    def artifact_events(self, state: str | None = None) -> list[ArtifactEvent]:
        return [
            e
            for e in self.events("artifact.")
            if isinstance(e, ArtifactEvent) and (state is None or e.state == state)
        ]

    def alerts(self, check: str | None = None) -> list[AlertEvent]:
        return [
            e
            for e in self.events("alert.")
            if isinstance(e, AlertEvent) and (check is None or e.check == check)
        ]

    def dead(self, stage: str) -> list[Delivery]:
        return list(self.broker.queues[self.broker.topology.dead_queue(stage)])

    def depth(self, stage: str) -> int:
        return len(self.broker.queues[self.broker.topology.queue(stage)])

    def row(self, kind: str, name: str) -> dict[str, Any]:
        rows = self.catalog.query("SELECT * FROM artifacts WHERE kind=? AND name=?", (kind, name))
        assert rows, f"{kind}/{name} is not in the catalog"
        return rows[0]

    def state(self, kind: str, name: str) -> str | None:
        rows = self.catalog.query(
            "SELECT state FROM artifacts WHERE kind=? AND name=?", (kind, name)
        )
        return str(rows[0]["state"]) if rows else None

    def stored_files(self, kind: str, name: str) -> list[dict[str, Any]]:
        files: list[dict[str, Any]] = json.loads(self.row(kind, name)["files"])
        return files

    def corrupt_object(self, key: str, flip_at: int = 100) -> None:
        """Damage an object's bytes in the store, keeping its metadata (bit rot)."""
        info = self.store.head(key)
        assert info is not None, f"{key} is not in the store"
        data = bytearray(self.store.get_bytes(key))
        data[min(flip_at, len(data) - 1)] ^= 0xFF
        self.store.put_bytes(key, bytes(data), info.metadata)
