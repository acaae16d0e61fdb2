"""`pgvault metrics`: the real exporter over HTTP, reading a real catalog, RabbitMQ and the
alert state; and the Grafana dashboard uses only metric names the exporter exposes."""

from __future__ import annotations

import json
import re
import signal
import time
import urllib.request
from datetime import timedelta
from pathlib import Path
from typing import Any

from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pgvault.catalog.artifacts import apply_event
from pgvault.config import settings_from_dict
from pgvault.metrics import FAMILIES, registry_for
from pgvault.schemas import ArtifactEvent, FileInfo
from pgvault.timeutil import iso
from pgvault.walfile import segment_name
from tests.conftest import EnvFactory
from tests.monhelpers import ago, insert_backup, insert_drill, insert_run
from tests.pgcluster import free_port

DASHBOARD = Path(__file__).parent.parent / "deploy" / "grafana" / "pgvault-dashboard.json"


def verified_segment(cluster: str, segno: int, last_commit: str) -> ArtifactEvent:
    name = segment_name(1, segno)
    sha = f"{segno:064x}"
    return ArtifactEvent(
        cluster=cluster,
        kind="wal",
        state="verified",
        name=name,
        files=(
            FileInfo(
                name=name,
                size=16 << 20,
                sha256=sha,
                key=f"k/{name}",
                stored_size=10,
                stored_sha256=sha,
            ),
        ),
        meta={
            "wal_type": "segment",
            "timeline": 1,
            "segno": segno,
            "seg_size": 16 << 20,
            "start_lsn": segno << 24,
            "end_lsn": (segno + 1) << 24,
            "last_commit": last_commit,
        },
    )


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return str(resp.read().decode())


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k != "cluster")))] = (
                s.value
            )
    return out


def names(text: str) -> set[str]:
    found = set()
    for fam in text_string_to_metric_families(text):
        found.add(fam.name)
        found.update(s.name for s in fam.samples)
        if fam.type == "counter":  # a counter's samples are NAME_total, even before any
            found.add(f"{fam.name}_total")
    return found


def test_exporter_serves_catalog_queue_alert_and_drill_metrics(make_env: EnvFactory) -> None:
    env = make_env("local", extra={"postgres": {"port": 9, "databases": ["appdb"]}})
    env.cli("init")
    finished = ago(hours=3)
    insert_backup(env, finished=finished, size=123_456)
    insert_run(env, started=ago(hours=4), minutes=12)
    insert_drill(env, kind="pitr", finished=ago(hours=1))
    commit = ago(minutes=7)
    cat = env.catalog()
    for segno in (1, 2, 3):
        apply_event(
            cat, verified_segment(env.cluster, segno, iso(commit - timedelta(minutes=3 - segno)))
        )
    cat.close()
    env.cli("check", "--only", "backup_age", check=False)  # physical: critical
    env.cli("worker", "alert", "--once")  # log-only channels; counts the notification

    port = free_port()
    proc = env.spawn("metrics", "--listen", f"127.0.0.1:{port}", log_name="metrics")
    url = f"http://127.0.0.1:{port}/metrics"
    text = ""
    deadline = time.monotonic() + 30
    while not text:
        try:
            text = scrape(url)
        except OSError:
            assert time.monotonic() < deadline and proc.poll() is None, "exporter did not start"
            time.sleep(0.2)
    got = samples(text)

    def value(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        assert key in got, f"{key} not in {sorted(k for k in got if k[0] == name)}"
        return got[key]

    for component in ("catalog", "broker", "alert_state", "spool"):
        assert value("pgvault_up", component=component) == 1
    logical = {"kind": "logical", "database": "appdb"}
    assert abs(value("pgvault_last_backup_timestamp_seconds", **logical) - finished.timestamp()) < 1
    assert value("pgvault_last_backup_size_bytes", **logical) == 123_456
    assert value("pgvault_last_backup_run_duration_seconds", **logical) == 720
    assert value("pgvault_last_backup_run_success", **logical) == 1
    assert value("pgvault_wal_segments", state="verified") == 3
    assert value("pgvault_wal_gap_segments") == 0
    assert abs(value("pgvault_restorable_window_end_timestamp_seconds") - commit.timestamp()) < 1
    assert 0 <= value("pgvault_rpo_seconds") < 120
    alert_queue = f"pgvault.{env.cluster}.alert"
    assert value("pgvault_queue_messages", queue=alert_queue, stage="alert", type="work") == 0
    assert value("pgvault_queue_consumers", queue=alert_queue, stage="alert", type="work") == 0
    assert value("pgvault_alert_notifications_total", severity="critical") == 1
    assert value("pgvault_alerts_active", severity="critical") == 1
    assert value("pgvault_drill_duration_seconds", kind="pitr") == 180
    assert value("pgvault_drill_last_success", kind="pitr") == 1
    assert 'cluster="' + env.cluster + '"' in text

    exposed = names(text)
    assert set(FAMILIES) <= exposed  # every family, even those without samples
    used = set(
        re.findall(r"pgvault_[a-z0-9_]+", json.dumps(_exprs(json.loads(DASHBOARD.read_text()))))
    )
    assert used, "the dashboard queries no pgvault metric"
    assert used <= exposed, f"dashboard uses unknown metrics: {sorted(used - exposed)}"

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0


def _exprs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["expr"]] if isinstance(node.get("expr"), str) else []
        return found + [e for v in node.values() for e in _exprs(v)]
    if isinstance(node, list):
        return [e for v in node for e in _exprs(v)]
    return []


def test_unreadable_components_are_reported_not_fatal(tmp_path: Path) -> None:
    settings = settings_from_dict(
        {
            "cluster": "m1",
            "spool_dir": str(tmp_path / "spool"),
            "catalog_path": str(tmp_path / "absent" / "catalog.sqlite"),
            "broker": {"url": "amqp://guest:hunter2@127.0.0.1:9/%2F", "connect_timeout": 2},
        }
    )
    text = generate_latest(registry_for(settings)).decode()
    got = samples(text)
    assert got[("pgvault_up", (("component", "catalog"),))] == 0
    assert got[("pgvault_up", (("component", "broker"),))] == 0
    assert got[("pgvault_up", (("component", "alert_state"),))] == 1
    assert "hunter2" not in text
    assert set(FAMILIES) <= names(text)
