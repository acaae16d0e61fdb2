"""One pgvault installation per test: config file, spool, catalog, store, broker names.

Every test gets its own cluster name, so its exchange and queues on the shared RabbitMQ
never see another test's events; teardown deletes them.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pgvault.broker import message_auth
from pgvault.broker.rabbit import RabbitBroker
from pgvault.broker.topology import Topology
from pgvault.catalog.db import CatalogDB
from pgvault.config import Settings, load_settings
from pgvault.storage import ObjectStore, open_store
from tests.pgcluster import PgCluster, chown_pg

PGVAULT = [sys.executable, "-m", "pgvault"]


def toml_value(value: Any) -> str:
    return json.dumps(value)


def write_toml(path: Path, data: dict[str, Any]) -> None:
    lines = []
    for key, value in data.items():
        if not isinstance(value, dict):
            lines.append(f"{key} = {toml_value(value)}")
    for key, value in data.items():
        if isinstance(value, dict):
            lines.append(f"\n[{key}]")
            lines.extend(f"{k} = {toml_value(v)}" for k, v in value.items())
    path.write_text("\n".join(lines) + "\n")


def run_cli(
    config_path: Path,
    args: Sequence[str],
    *,
    check: bool = True,
    timeout: float = 300,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """`pgvault --config CONFIG ARGS...` in a subprocess; with check, a failure raises
    with its output."""
    proc = subprocess.run(
        [*PGVAULT, "--config", str(config_path), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ, **(env or {})),
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"pgvault {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def cli_json_of(proc: subprocess.CompletedProcess[str], ok_codes: tuple[int, ...]) -> Any:
    assert proc.returncode in ok_codes, f"exit {proc.returncode}: {proc.stderr}"
    return json.loads(proc.stdout)


class PgvaultEnv:
    def __init__(
        self,
        base: Path,
        amqp_url: str,
        storage: dict[str, Any],
        pgvault_bin: Path,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.base = base
        self.cluster = f"t{uuid.uuid4().hex[:10]}"
        self.spool = base / "spool"
        self.config_path = base / "pgvault.toml"
        self.pgvault_bin = pgvault_bin
        self.procs: list[subprocess.Popen[str]] = []
        self.pg: PgCluster | None = None
        for sub in ("wal", "logical", "physical", "alerts", "tmp"):
            (self.spool / sub).mkdir(parents=True, exist_ok=True)
        chown_pg(self.spool)
        os.chmod(base, 0o755)
        if storage.get("type") == "local":
            # a root rig arranges that PostgreSQL's user can read the store: the restored
            # server's restore_command (`pgvault wal-restore`) runs as postgres
            Path(storage["path"]).mkdir(parents=True, exist_ok=True, mode=0o755)
        self.data: dict[str, Any] = {
            "cluster": self.cluster,
            "spool_dir": str(self.spool),
            "catalog_path": str(base / "catalog.sqlite"),
            "broker": {"url": amqp_url, "retry_delays": [1, 2], "heartbeat": 30},
            "storage": storage,
            "retention": {"local_keep_days": 2},
            # the suite runs as root and owns what it makes: root is this env's service
            # user (no switch); use_service_user() makes an env that switches like a host
            "service": {"user": pwd.getpwuid(os.geteuid()).pw_name, "work_dir": str(base / "work")},
        }
        for key, value in (extra or {}).items():
            if isinstance(value, dict):
                self.data.setdefault(key, {}).update(value)
            else:
                self.data[key] = value
        self.write_config()

    def use_service_user(self, name: str = "postgres") -> None:
        """Run this env as a host does: `[service] user = name`, the catalog in a directory
        of its own (init creates it and gives it to that user), commands started as root
        switching to it."""
        self.data["service"]["user"] = name
        self.data["catalog_path"] = str(self.base / "var" / "catalog.sqlite")
        self.write_config()

    def write_config(self) -> None:
        write_toml(self.config_path, self.data)
        os.chmod(self.config_path, 0o644)
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config_path)
        return self._settings

    # -- components --------------------------------------------------------------
    def store(self) -> ObjectStore:
        return open_store(self.settings.storage)

    def catalog(self) -> CatalogDB:
        return CatalogDB(self.settings.catalog_path, self.cluster)

    def broker(self) -> RabbitBroker:
        s = self.settings
        return RabbitBroker(
            s.broker.url.get_secret_value(),
            Topology(self.cluster, tuple(s.broker.retry_delays)),
            auth=message_auth(s),  # signs like the cluster's stages (after `init`)
        )

    def archive_command(self) -> str:
        return f"{self.pgvault_bin} --config {self.config_path} wal-archive %p %f"

    def make_pg(self, extra: dict[str, str] | None = None, start: bool = True) -> PgCluster:
        pg = PgCluster(self.base)
        pg.initdb(self.archive_command(), extra)
        if start:
            pg.start()
        self.pg = pg
        # pgvault backs up this cluster from now on
        self.data.setdefault("postgres", {}).update(host="127.0.0.1", port=pg.port, user="postgres")
        self.write_config()
        return pg

    # -- running the CLI -----------------------------------------------------------
    def cli(
        self,
        *args: str,
        check: bool = True,
        timeout: float = 300,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        return run_cli(self.config_path, args, check=check, timeout=timeout, env=env)

    def cli_json(self, *args: str, ok_codes: tuple[int, ...] = (0,)) -> Any:
        return cli_json_of(self.cli(*args, "--json", check=False), ok_codes)

    def spawn(self, *args: str, log_name: str | None = None) -> subprocess.Popen[str]:
        log = open(self.base / f"{log_name or args[-1]}.log", "a")
        proc = subprocess.Popen(
            [*PGVAULT, "--config", str(self.config_path), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.procs.append(proc)
        return proc

    def start_pipeline(self) -> None:
        self.spawn("producer", "--rescan", "2", log_name="producer")
        for stage in ("upload", "verify", "catalog", "alert"):
            self.spawn("worker", stage, log_name=stage)

    def stop_pipeline(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.procs.clear()

    def drain(self, rounds: int = 8, *, cli: bool = False) -> None:
        """Run the producer once, then the upload, verify and catalog stages (each as
        `--once`) until a whole round finds nothing to do.

        By default this runs in the test process what `producer --once` and `worker
        <stage> --once` run (the same settings, RabbitMQ, store and stages, in pipeline
        order, with a short idle grace): most tests drain only to get their WAL and
        backups catalogued, and process start-up was most of their time. `cli=True`
        runs the real commands side by side, for tests about the processes themselves."""
        if cli:
            self._drain_cli(rounds)
            return
        from pgvault.broker import open_broker, rabbit
        from pgvault.catalog import open_catalog
        from pgvault.consumers.factory import build_stage
        from pgvault.consumers.worker import Worker
        from pgvault.producers.watcher import Producer

        settings = self.settings
        broker = open_broker(settings)
        catalog = open_catalog(settings)
        grace, rabbit.DRAIN_GRACE_S = rabbit.DRAIN_GRACE_S, 0.1
        try:
            Producer(settings, broker, catalog, store=self.store()).run(once=True)
            workers = [
                Worker(build_stage(stage, settings, broker), broker, settings.cluster)
                for stage in ("upload", "verify", "catalog")
            ]
            for _ in range(rounds):
                busy = 0
                for worker in workers:
                    stats = worker.run(once=True)
                    busy += stats.acked + stats.retried + stats.dead
                if not busy:
                    return
        finally:
            rabbit.DRAIN_GRACE_S = grace
            catalog.close()
            broker.close()
        raise AssertionError(f"the pipeline did not go quiet in {rounds} rounds")

    def _drain_cli(self, rounds: int) -> None:
        self.cli("producer", "--once")
        for _ in range(rounds):
            procs = [
                subprocess.Popen(
                    [
                        *PGVAULT,
                        "--config",
                        str(self.config_path),
                        "worker",
                        stage,
                        "--once",
                        "--json",
                    ],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for stage in ("upload", "verify", "catalog")
            ]
            busy = 0
            for proc in procs:
                out, err = proc.communicate(timeout=300)
                assert proc.returncode == 0, f"worker --once failed: {err[-2000:]}"
                counts = json.loads(out)
                busy += counts["acked"] + counts["retried"] + counts["dead"]
            if not busy:
                return
        raise AssertionError(f"the pipeline did not go quiet in {rounds} rounds")

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 60, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.25)
        logs = "\n".join(
            f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.base.glob("*.log"))
        )
        raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{logs}")

    def wal_rows(self) -> list[dict[str, Any]]:
        cat = self.catalog()
        try:
            return cat.query("SELECT * FROM artifacts WHERE kind='wal' ORDER BY name")
        finally:
            cat.close()

    def close(self) -> None:
        self.stop_pipeline()
        if self.pg is not None:
            self.pg.destroy()
        with contextlib.suppress(Exception):
            self.broker().delete_topology()
