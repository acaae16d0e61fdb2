"""`pgvault metrics`: a Prometheus exporter at /metrics, and the status page at `/`
(pgvault/status/page.py: the checks, restorable windows and a timeline; read-only).
The exporter reads the catalog, the spool, RabbitMQ and the alert state on every scrape
(a custom Collector: nothing is cached between scrapes, so it is always as current as
the catalog).

Every metric family is always exposed (with no samples when there is nothing to report),
so dashboards and alert rules never break on a fresh install. A component that cannot be
read shows `pgvault_up{component=...} 0` instead of failing the scrape. The names are
part of the interface: deploy/grafana/pgvault-dashboard.json is built on them.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from pgvault.config import Settings
from pgvault.errors import PgvaultError
from pgvault.timeutil import parse_iso

log = logging.getLogger(__name__)

_G = "gauge"
_C = "counter"
# name -> (type, help, labels); every family also carries `cluster`
FAMILIES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "pgvault_up": (_G, "1 when the component could be read on this scrape", ("component",)),
    "pgvault_last_backup_timestamp_seconds": (
        _G,
        "When the newest verified backup finished (UNIX time)",
        ("kind", "database"),
    ),
    "pgvault_last_backup_size_bytes": (
        _G,
        "Size (original bytes) of the newest verified backup",
        ("kind", "database"),
    ),
    "pgvault_last_backup_run_timestamp_seconds": (
        _G,
        "When the latest backup run started",
        ("kind", "database"),
    ),
    "pgvault_last_backup_run_duration_seconds": (
        _G,
        "Duration of the latest backup run",
        ("kind", "database"),
    ),
    "pgvault_last_backup_run_success": (
        _G,
        "1 when the latest backup run succeeded",
        ("kind", "database"),
    ),
    "pgvault_wal_segments": (_G, "Catalogued WAL segments by state", ("state",)),
    "pgvault_wal_last_verified_timestamp_seconds": (
        _G,
        "When the newest verified WAL segment reached the spool",
        (),
    ),
    "pgvault_rpo_seconds": (_G, "Seconds since the newest verified WAL segment arrived", ()),
    "pgvault_restorable_window_end_timestamp_seconds": (
        _G,
        "Last commit in the newest verified WAL segment: how far PITR can go",
        (),
    ),
    "pgvault_wal_gap_segments": (_G, "WAL segments missing from the verified chain", ()),
    "pgvault_spool_unverified_artifacts": (_G, "Spool artifacts not verified remotely yet", ()),
    "pgvault_spool_oldest_unverified_age_seconds": (
        _G,
        "Age of the oldest spool artifact not verified remotely",
        (),
    ),
    "pgvault_spool_filesystem_size_bytes": (_G, "Size of the spool filesystem", ()),
    "pgvault_spool_filesystem_free_bytes": (_G, "Free space on the spool filesystem", ()),
    "pgvault_queue_messages": (_G, "Messages in a queue", ("queue", "stage", "type")),
    "pgvault_queue_consumers": (_G, "Consumers attached to a queue", ("queue", "stage", "type")),
    "pgvault_alerts_active": (_G, "Fingerprints currently alerting, by severity", ("severity",)),
    "pgvault_alert_notifications": (
        _C,
        "Notifications sent (or held for a digest), by severity",
        ("severity",),
    ),
    "pgvault_alert_channel_failures": (_C, "Failed deliveries, by channel", ("channel",)),
    "pgvault_alerts_held": (_G, "Alerts held back by the rate limit, awaiting a digest", ()),
    "pgvault_drill_last_timestamp_seconds": (_G, "When the latest drill finished", ("kind",)),
    "pgvault_drill_last_success": (_G, "1 when the latest drill passed", ("kind",)),
    "pgvault_drill_duration_seconds": (_G, "Duration of the latest drill (RTO)", ("kind",)),
}


def _ts(text: str | None) -> float | None:
    return parse_iso(text).timestamp() if text else None


class PgvaultCollector(Collector):
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def collect(self) -> Iterator[Metric]:
        fams: dict[str, GaugeMetricFamily | CounterMetricFamily] = {}
        for name, (kind, text, labels) in FAMILIES.items():
            cls = CounterMetricFamily if kind == _C else GaugeMetricFamily
            fams[name] = cls(name, text, labels=["cluster", *labels])
        cluster = self.settings.cluster

        def add(name: str, value: float | None, *labels: str) -> None:
            if value is not None:
                fams[name].add_metric([cluster, *labels], float(value))

        for component, part in (
            ("catalog", self._catalog),
            ("broker", self._queues),
            ("alert_state", self._alerts),
            ("spool", self._spool),
        ):
            try:
                part(add)
                add("pgvault_up", 1, component)
            except (PgvaultError, OSError) as exc:
                log.warning("metrics: %s unreadable: %s", component, exc)
                add("pgvault_up", 0, component)
        yield from fams.values()

    # -- parts ---------------------------------------------------------------------
    def _catalog(self, add: Callable[..., None]) -> None:
        from pgvault.catalog.queries import last_backups, wal_segment_counts
        from pgvault.catalog.rows import DrillRow
        from pgvault.catalog.runs import last_backup_runs, last_drills
        from pgvault.checks.base import CheckContext
        from pgvault.checks.wal import newest_verified_segment, wal_gaps

        ctx = CheckContext(self.settings)
        try:
            cat = ctx.catalog()
            for last in last_backups(cat):
                add("pgvault_last_backup_timestamp_seconds", _ts(last.at), last.kind, last.db)
                add("pgvault_last_backup_size_bytes", last.size, last.kind, last.db)
            for run in last_backup_runs(cat):
                target = run.target if run.kind == "logical" else "all"
                labels = (run.kind, target)
                add("pgvault_last_backup_run_timestamp_seconds", _ts(run.started_at), *labels)
                add("pgvault_last_backup_run_duration_seconds", run.duration_s, *labels)
                add("pgvault_last_backup_run_success", int(run.result == "ok"), *labels)
            for state, count in wal_segment_counts(cat).items():
                add("pgvault_wal_segments", count, state)
            newest = newest_verified_segment(ctx)
            if newest is not None:
                arrived = _ts(newest.created_at)
                add("pgvault_wal_last_verified_timestamp_seconds", arrived)
                add("pgvault_rpo_seconds", time.time() - arrived if arrived else None)
                add("pgvault_restorable_window_end_timestamp_seconds", _ts(newest.last_commit))
            add("pgvault_wal_gap_segments", wal_gaps(ctx)[0].value)
            latest: dict[str, DrillRow] = {}
            for drill in last_drills(cat):
                seen = latest[drill.kind].started_at if drill.kind in latest else ""
                if str(drill.started_at) > str(seen or ""):
                    latest[drill.kind] = drill
            for kind, drill in latest.items():
                add("pgvault_drill_last_timestamp_seconds", _ts(drill.finished_at), kind)
                add("pgvault_drill_last_success", int(drill.result == "ok"), kind)
                add("pgvault_drill_duration_seconds", drill.duration_s, kind)
        finally:
            ctx.close()

    def _spool(self, add: Callable[..., None]) -> None:
        from pgvault.checks.base import CheckContext
        from pgvault.checks.wal import spool_lag

        usage = shutil.disk_usage(self.settings.spool_dir)
        add("pgvault_spool_filesystem_size_bytes", usage.total)
        add("pgvault_spool_filesystem_free_bytes", usage.free)
        ctx = CheckContext(self.settings)
        try:
            lag = spool_lag(ctx)
        finally:
            ctx.close()
        add("pgvault_spool_unverified_artifacts", lag.details.get("unverified"))
        add("pgvault_spool_oldest_unverified_age_seconds", lag.value)

    def _queues(self, add: Callable[..., None]) -> None:
        from pgvault.broker import open_broker

        broker = open_broker(self.settings)
        topo = broker.topology
        kinds: dict[str, tuple[str, str]] = {}
        for stage in topo.stages:
            kinds[topo.queue(stage)] = (stage, "work")
            kinds[topo.dead_queue(stage)] = (stage, "dead")
            for delay in topo.retry_delays:
                kinds[topo.retry_queue(stage, delay)] = (stage, "retry")
        try:
            depths = broker.queue_depths()
        finally:
            broker.close()
        for depth in depths:
            stage, kind = kinds.get(depth.name, ("", "other"))
            add("pgvault_queue_messages", depth.messages, depth.name, stage, kind)
            add("pgvault_queue_consumers", depth.consumers, depth.name, stage, kind)

    def _alerts(self, add: Callable[..., None]) -> None:
        from pgvault.alerts.state import AlertState

        path = self.settings.alert_state_path
        if not path.exists():  # no alert worker ran yet: nothing sent, nothing active
            add("pgvault_alerts_held", 0)
            return
        stats = AlertState(path).stats()
        for severity, count in stats["active"].items():
            add("pgvault_alerts_active", count, severity)
        for name, value in stats["counters"].items():
            what, _, label = name.partition(".")
            if what == "notified":
                add("pgvault_alert_notifications", value, label)
            elif what == "failed":
                add("pgvault_alert_channel_failures", value, label)
        add("pgvault_alerts_held", stats["held"])


def registry_for(settings: Settings) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PgvaultCollector(settings))
    return registry


MAX_DAYS = 366


def _days(query: str) -> int:
    raw = parse_qs(query).get("days", ["14"])[0]
    return min(max(int(raw), 1), MAX_DAYS) if raw.isdigit() else 14


def handler_for(settings: Settings) -> type[BaseHTTPRequestHandler]:
    """GET /metrics (Prometheus text format) and GET / (the status page); nothing else."""
    registry = registry_for(settings)

    class Handler(BaseHTTPRequestHandler):
        server_version = "pgvault"

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            if url.path == "/metrics":
                self._send(200, CONTENT_TYPE_LATEST, generate_latest(registry))
            elif url.path in ("/", "/index.html"):
                from pgvault.status.model import build
                from pgvault.status.page import render

                page = render(build(settings, days=_days(url.query)))
                self._send(200, "text/html; charset=utf-8", page.encode())
            else:
                self._send(404, "text/plain; charset=utf-8", b"not found: try / or /metrics\n")

        def _send(self, code: int, ctype: str, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("metrics: %s %s", self.address_string(), format % args)

    return Handler


def serve(
    settings: Settings,
    host: str,
    port: int,
    stop: threading.Event,
    ready: Callable[[], Any] | None = None,
) -> None:
    """Serve /metrics and the status page at / until `stop` is set."""
    try:
        server = ThreadingHTTPServer((host, port), handler_for(settings))
    except OSError as exc:
        raise PgvaultError(f"metrics: cannot listen on {host}:{port}: {exc.strerror}") from None
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True)
    thread.start()
    log.info("serving the status page on http://%s:%d/ and metrics on /metrics", host, port)
    if ready is not None:
        ready()
    try:
        stop.wait()
    finally:
        server.shutdown()
        server.server_close()


def metric_names(families: Iterable[Metric]) -> set[str]:
    """Family and sample names in an exposition (for dashboard tests and tooling)."""
    names: set[str] = set()
    for fam in families:
        names.add(fam.name)
        names.update(s.name for s in fam.samples)
    return names
