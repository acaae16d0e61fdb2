"""`pgvault doctor`: everything a failed night would trip over, one line each, with the fix.

Unlike `check` (is the backup healthy *now*?), doctor asks whether the set-up can work:
privileges, settings, tools, broker topology, store access, spool permissions, alerting,
keys. It never changes anything except forcing one WAL switch to prove archive_command
really runs (skip with --no-switch).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from pgvault.checks.base import CheckResult, Status, align
from pgvault.checks.spool import access_findings
from pgvault.config import Settings
from pgvault.errors import PgvaultError

TOOLS = (
    "pg_dump",
    "pg_restore",
    "pg_basebackup",
    "pg_waldump",
    "pg_verifybackup",
    "pg_ctl",
    "pg_controldata",
)


SUBJECT = "doctor"
# doctor's words for the statuses: a warning does not fail it, anything worse does
LABELS = {Status.OK: "ok", Status.WARNING: "warn", Status.CRITICAL: "fail", Status.UNKNOWN: "fail"}


def label(finding: CheckResult) -> str:
    """ok | warn | fail, as doctor prints it."""
    return LABELS[finding.status]


def failed(findings: list[CheckResult]) -> bool:
    """Doctor exits 1 when anything failed (warnings do not count)."""
    return any(label(f) == "fail" for f in findings)


def as_json(finding: CheckResult) -> dict[str, str]:
    return {
        "name": finding.name,
        "status": label(finding),
        "message": finding.message,
        "fix": finding.action or "",
    }


def line(finding: CheckResult) -> str:
    """One line of doctor's output: status, name, message and, unless ok, the fix."""
    return lines([finding])[0]


def lines(findings: Sequence[CheckResult], first: tuple[str, str, str] | None = None) -> list[str]:
    """Doctor's output, the name column as wide as the longest name (`first`: a leading
    (status, name, message) row such as the config file's)."""
    rows = [first] if first else []
    for finding in findings:
        status = label(finding)
        fix = f"  -> {finding.action}" if finding.action and status != "ok" else ""
        rows.append((status, finding.name, f"{finding.message}{fix}"))
    return align(rows, (4, 15))


class Doctor:
    def __init__(self, settings: Settings, *, switch_wal: bool = True) -> None:
        self.settings = settings
        self.switch_wal = switch_wal
        self.findings: list[CheckResult] = []
        self.server_major: int | None = None

    def _add(self, name: str, status: Status, message: str, fix: str = "") -> None:
        self.findings.append(CheckResult(name, SUBJECT, status, message, action=fix or None))

    def _run(self, name: str, fn: Callable[[], None]) -> None:
        try:
            fn()
        except PgvaultError as exc:
            self._add(name, Status.CRITICAL, str(exc), _FIXES.get(name, ""))

    # -- PostgreSQL ------------------------------------------------------------------
    def postgres(self) -> None:
        from pgvault import pg

        pgs = self.settings.postgres
        with pg.connect(pgs) as conn:
            row = pg.fetch_one(
                conn,
                "SELECT current_setting('server_version_num')::int AS v, "
                "r.rolreplication OR r.rolsuper AS repl FROM pg_roles r "
                "WHERE r.rolname = current_user",
            )
            present = {
                str(r["datname"])
                for r in pg.fetch_all(
                    conn,
                    "SELECT datname FROM pg_database WHERE datname = ANY(%s)",
                    (list(pgs.databases),),
                )
            }
        assert row is not None
        self.server_major = int(row["v"]) // 10000
        for db in pgs.databases:  # one line per configured database that is not there
            if db not in present:
                self._add(
                    f"database:{db}",
                    Status.CRITICAL,
                    f"postgres.databases lists {db}, which does not exist on {pgs.host}:{pgs.port}",
                    f"create it, or remove {db} from postgres.databases",
                )
        self._add(
            "postgres",
            Status.OK,
            f"reachable as {pgs.user}@{pgs.host}:{pgs.port} (PostgreSQL {self.server_major})",
        )
        if row["repl"]:
            self._add("replication", Status.OK, f"role {pgs.user} may take base backups")
        else:
            self._add(
                "replication",
                Status.CRITICAL,
                f"role {pgs.user} lacks REPLICATION",
                f"ALTER ROLE {pgs.user} REPLICATION;",
            )

    def archiving(self) -> None:
        from pgvault.checks.pgfacts import read_pg_facts

        facts = read_pg_facts(self.settings.postgres)
        if facts.wal_level not in ("replica", "logical"):
            self._add(
                "wal_level",
                Status.CRITICAL,
                f"wal_level = {facts.wal_level}",
                "set wal_level = replica (deploy/postgresql/pgvault.conf) and restart",
            )
        else:
            self._add("wal_level", Status.OK, f"wal_level = {facts.wal_level}")
        if facts.archive_mode not in ("on", "always"):
            self._add(
                "archive_mode",
                Status.CRITICAL,
                f"archive_mode = {facts.archive_mode}",
                "set archive_mode = on (deploy/postgresql/pgvault.conf) and restart PostgreSQL",
            )
            return
        self._add("archive_mode", Status.OK, f"archive_mode = {facts.archive_mode}")
        if self.server_major and self.server_major >= 17:
            self._summaries()
        if self.switch_wal:
            self._archive_roundtrip()

    def _summaries(self) -> None:
        """PostgreSQL 17+: incremental backups need summarize_wal = on."""
        from pgvault import pg

        with pg.connect(self.settings.postgres) as conn:
            value = str(pg.fetch_value(conn, "SHOW summarize_wal"))
        if value == "on":
            self._add("summarize_wal", Status.OK, "summarize_wal = on: incremental backups work")
        elif self.settings.physical.incremental == "auto":
            self._add(
                "summarize_wal",
                Status.WARNING,
                'summarize_wal = off but [physical] incremental = "auto": every backup is full',
                "set summarize_wal = on (deploy/postgresql/pgvault.conf) and reload PostgreSQL",
            )
        else:
            self._add(
                "summarize_wal",
                Status.OK,
                "summarize_wal = off: full backups only (set it on for --incremental)",
            )

    def _archive_roundtrip(self) -> None:
        from pgvault import pg

        with pg.connect(self.settings.postgres) as conn:
            command = pg.fetch_value(conn, "SELECT current_setting('archive_command')")
            if "wal-archive" not in str(command):
                self._add(
                    "archive_command",
                    Status.CRITICAL,
                    f"archive_command = {command!r}",
                    "archive_command = 'pgvault --config FILE wal-archive %p %f'",
                )
                return
            pg.fetch_value(conn, "SELECT txid_current()")
            name = pg.fetch_value(conn, "SELECT pg_walfile_name(pg_current_wal_insert_lsn())")
            pg.fetch_value(conn, "SELECT pg_switch_wal()")
            deadline = time.monotonic() + 30
            row: dict[str, object] | None = None
            while time.monotonic() < deadline:
                row = pg.fetch_one(
                    conn,
                    "SELECT last_archived_wal, last_failed_wal, "
                    "last_failed_time > COALESCE(last_archived_time, "
                    "'-infinity') AS failing FROM pg_stat_archiver",
                )
                assert row is not None
                if (row["last_archived_wal"] or "") >= name:
                    break
                time.sleep(0.5)
        spooled = (self.settings.spool_dir / "wal" / name).exists()
        if spooled:
            self._add("archive_command", Status.OK, f"pg_switch_wal(): {name} reached the spool")
        else:
            self._add(
                "archive_command",
                Status.CRITICAL,
                f"{name} did not reach {self.settings.spool_dir}"
                f" within 30 s (last failed: {(row or {}).get('last_failed_wal')})",
                "read the PostgreSQL log for the wal-archive error; check the spool "
                "permissions and the --config path in archive_command",
            )

    def tools(self) -> None:
        from pgvault.pgtools import find_tool

        for tool in TOOLS:
            try:
                # the server's own major version (configured dir, PATH, Debian layout)
                path = find_tool(tool, self.settings.postgres.bin_dir, self.server_major or None)
            except PgvaultError as exc:
                self._add(
                    f"tool:{tool}",
                    Status.CRITICAL,
                    str(exc),
                    f"install PostgreSQL {self.server_major or 'the server'}'s client programs"
                    " (same major version) or set postgres.bin_dir",
                )
                continue
            out = subprocess.run(
                [path, "--version"], capture_output=True, text=True, check=False
            ).stdout
            match = re.search(r"(\d+)(?:\.\d+)?", out)
            major = int(match.group(1)) if match else 0
            if self.server_major and major < self.server_major:
                self._add(
                    f"tool:{tool}",
                    Status.CRITICAL,
                    f"{tool} {major} is older than the server ({self.server_major})",
                    "point postgres.bin_dir at the server's version of the client tools",
                )
            else:
                self._add(f"tool:{tool}", Status.OK, f"{path} ({major})")

    # -- pipeline --------------------------------------------------------------------
    def broker(self) -> None:
        from pgvault.broker import open_broker

        broker = open_broker(self.settings)
        present = {d.name for d in broker.queue_depths()}
        broker.close()
        wanted = {q.name for q in broker.topology.all_queues()}
        missing = sorted(wanted - present)
        if missing:
            self._add(
                "broker",
                Status.CRITICAL,
                f"reachable, but {len(missing)} queue(s) missing, e.g. {missing[0]}",
                "run `pgvault init`",
            )
        else:
            self._add("broker", Status.OK, f"topology of {len(wanted)} queues present")

    def store(self) -> None:
        from pgvault.storage import open_store
        from pgvault.storage.canary import canary

        store = open_store(self.settings.storage)
        took = canary(store, self.settings)
        self._add(
            "store",
            Status.OK,
            f"{store.describe()}: canary written, read, deleted in {took * 1000:.0f} ms",
        )

    def spool(self) -> None:
        wal = self.settings.spool_dir / "wal"
        if not wal.is_dir():
            self._add("spool", Status.CRITICAL, f"{wal} does not exist", "run `pgvault init`")
            return
        self.access()
        usage = shutil.disk_usage(self.settings.spool_dir)
        pct = 100 * usage.used / usage.total
        level = Status.OK if pct < self.settings.alerts.disk_usage_pct else Status.WARNING
        self._add(
            "disk",
            level,
            f"spool filesystem {pct:.0f}% used, {usage.free // 2**30} GiB free",
            ""
            if level is Status.OK
            else "free space or move spool_dir; the spool grows while the store is unreachable",
        )

    def access(self) -> None:
        """Spool, work dir, catalog and a local store written and read AS the service user
        (a probe process under its uid): what root can do proves nothing."""
        for result in access_findings(self.settings, subject=SUBJECT):
            self.findings.append(result)

    def alerting(self) -> None:
        a = self.settings.alerts
        channels = []
        if a.discord_webhook_url.get_secret_value():
            channels.append("discord")
        if a.smtp_host and a.email_to:
            channels.append("e-mail")
        if channels:
            self._add("alerts", Status.OK, f"channels: {', '.join(channels)}")
        else:
            self._add(
                "alerts",
                Status.WARNING,
                "no alert channel configured: failures are only logged",
                "set alerts.discord_webhook_url (env) or alerts.smtp_host + email_to",
            )

    def encryption(self) -> None:
        from pgvault.keys import loose_permissions

        enc = self.settings.encryption
        if not enc.recipients and self.settings.storage.type == "s3":
            self._add(
                "encryption",
                Status.WARNING,
                "backups go to a remote store unencrypted",
                "`pgvault keys generate` and set [encryption] recipients",
            )
        elif enc.recipients:
            self._add("encryption", Status.OK, f"{len(enc.recipients)} age recipient(s)")
        if enc.identity_file and loose_permissions(Path(enc.identity_file)):
            self._add(
                "identity",
                Status.WARNING,
                f"{enc.identity_file} is readable by group/others",
                f"chmod 600 {enc.identity_file}",
            )

    def run(self) -> list[CheckResult]:
        self._run("postgres", self.postgres)
        if self.server_major:
            self._run("archive_mode", self.archiving)
        self.tools()
        self._run("broker", self.broker)
        self._run("store", self.store)
        self.spool()
        self.alerting()
        self.encryption()
        return self.findings


_FIXES = {
    "postgres": "check [postgres] host/port/user and PGPASSWORD/.pgpass; is PostgreSQL up?",
    "archive_mode": "check that this role may read pg_stat_archiver and settings",
    "broker": "is RabbitMQ running? check broker.url (user, password, vhost)",
    "store": "check [storage] and the credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)",
}
