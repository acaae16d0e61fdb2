"""Starting, watching and stopping a restored cluster.

The server's unix socket lives in a private directory (`make_socket_dir`, under $TMPDIR or
/tmp, short enough for the 107-byte socket path limit). When pgvault stops the server
(`RestoredServer.stop`, a failed recovery, `--target-action shutdown`, drills) the
directory goes with it; a server the operator stops with pg_ctl leaves the empty
directory behind (the `stop:` line printed after `restore pitr --start` removes it too).

When pgvault runs as root (an operator with sudo, the test suite), server programs run
as the data directory's owner through `runuser`, as PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from pgvault import pg
from pgvault.config import PostgresSettings, Settings
from pgvault.errors import RestoreError
from pgvault.pgtools import find_tool, last_line, run_tool
from pgvault.restore import walqueue

log = logging.getLogger(__name__)

SOCKET_PREFIX = "pgvault-sock-"
MAX_SOCKET_PATH = 107  # bytes of sun_path usable for `<dir>/.s.PGSQL.<port>` on Linux


def socket_path(socket_dir: Path, port: int) -> Path:
    return socket_dir / f".s.PGSQL.{port}"


def make_socket_dir(port: int) -> Path:
    """A private directory for a restored server's socket whose socket path fits the
    limit: under $TMPDIR, else under /tmp when $TMPDIR is too long."""
    for base in (None, "/tmp"):  # noqa: S108 (mkdtemp: private, 0700, unpredictable)
        made = Path(tempfile.mkdtemp(prefix=SOCKET_PREFIX, dir=base))
        if len(bytes(socket_path(made, port))) <= MAX_SOCKET_PATH:
            return made
        made.rmdir()
    raise RestoreError(
        f"no socket directory short enough for the {MAX_SOCKET_PATH}-byte unix socket path "
        "limit; set TMPDIR to a short directory"
    )


def remove_socket_dir(socket_dir: Path) -> None:
    """Remove a socket directory pgvault made (never one the operator named)."""
    if socket_dir.name.startswith(SOCKET_PREFIX):
        shutil.rmtree(socket_dir, ignore_errors=True)


_SERVER_ENV = (
    "PATH",
    "LANG",
    "TZ",
    "HOME",
    "USER",
    "LOGNAME",
    "PGVAULT_CONFIG",
    "PGVAULT_AGE_IDENTITY",
    "PGVAULT_SPOOL_DIR",
    "PGVAULT_CATALOG_PATH",
    "PGVAULT_CLUSTER",
)
_SERVER_ENV_PREFIXES = ("LC_", "AWS_", "PGVAULT_STORAGE__", "PGVAULT_ENCRYPTION__")


def server_environment() -> dict[str, str]:
    """What a restored server's restore_command (pgvault wal-restore) needs, nothing more:
    no PGPASSWORD, broker URL, SMTP password or webhook in a postmaster's environment."""
    return {
        k: v
        for k, v in os.environ.items()
        if k in _SERVER_ENV or k.startswith(_SERVER_ENV_PREFIXES)
    }


class RestoredServer:
    def __init__(
        self, datadir: Path, port: int, bin_dir: str, superuser: str, socket_dir: Path
    ) -> None:
        self.datadir = datadir
        self.port = port
        self.socket_dir = socket_dir
        self.bin_dir = bin_dir
        self.superuser = superuser
        self.logfile = datadir / "log" / "pgvault-restore.log"
        self.owner = pwd.getpwuid(datadir.stat().st_uid).pw_name
        self._prefetcher: subprocess.Popen[bytes] | None = None

    def prefetch_from(
        self, first_segment: str, seg_size: int, settings: Settings, *, from_store: bool
    ) -> None:
        """Before start(): the restore's WAL prefetcher, already at the first segment
        replay reads (restore/prefetch_start.py), as the server's user."""
        from pgvault.restore.prefetch_start import start_early

        try:
            self._prefetcher = start_early(
                self.datadir, first_segment, seg_size, settings, from_store=from_store
            )
        except OSError as exc:  # only speed is lost: restore_command starts it later
            log.warning("%s: WAL prefetcher not started early: %s", self.datadir, exc)

    def _major(self) -> int | None:
        """The data directory's major version (PG_VERSION): its own pg_ctl runs it."""
        try:
            return int((self.datadir / "PG_VERSION").read_text().strip())
        except (OSError, ValueError):
            return None

    def _cmd(self, tool: str, *args: str) -> list[str]:
        argv = [find_tool(tool, self.bin_dir, self._major()), *args]
        if os.geteuid() == 0 and self.owner != "root":
            return ["runuser", "-u", self.owner, "--", *argv]
        return argv

    def settings(self) -> PostgresSettings:
        return PostgresSettings(
            host=str(self.socket_dir), port=self.port, user=self.superuser, dbname="postgres"
        )

    def start(self, timeout: int, *, may_stop_at_target: bool = False) -> None:
        """Start and wait; with recovery_target_action=shutdown (`may_stop_at_target`) a
        server that already reached its target and stopped is a success."""
        self.logfile.parent.mkdir(exist_ok=True)
        if os.geteuid() == 0:
            st = self.datadir.stat()
            os.chown(self.logfile.parent, st.st_uid, st.st_gid)
        # port and socket on the command line: a restored production (--as-primary) keeps
        # its own settings for later starts; secrets the server does not need stay out of
        # its environment (superusers can read it)
        options = f"-p {self.port} -k {self.socket_dir}"
        proc = run_tool(
            self._cmd(
                "pg_ctl",
                "-D",
                str(self.datadir),
                "-l",
                str(self.logfile),
                "-o",
                options,
                "-w",
                "-t",
                str(timeout),
                "start",
            ),
            check=False,
            timeout=timeout + 30,
            env=server_environment(),
            inherit=False,
        )
        if proc.returncode != 0 and not self.running():
            if may_stop_at_target and self._stopped_at_target():
                return
            raise RestoreError(f"restored server did not start: {self.log_problem()}")

    def running(self) -> bool:
        proc = run_tool(self._cmd("pg_ctl", "-D", str(self.datadir), "status"), check=False)
        return proc.returncode == 0

    def stop(self, mode: str = "fast") -> None:
        """Stop the server; once it is down its socket directory is removed."""
        if self.running():
            run_tool(
                self._cmd("pg_ctl", "-D", str(self.datadir), "-m", mode, "-w", "stop"),
                check=False,
                timeout=120,
            )
        if not self.running():
            remove_socket_dir(self.socket_dir)
            # the restore's WAL prefetcher (restore_command's) leaves with the server
            walqueue.wait_gone(str(self.datadir / "pg_wal" / walqueue.PREFETCH_DIR))
            if self._prefetcher is not None:  # the one prefetch_from started: reaped
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._prefetcher.wait(timeout=5)

    def _stopped_at_target(self) -> bool:
        try:
            return "shutdown at recovery target" in self.logfile.read_text(errors="replace")
        except OSError:
            return False

    def log_problem(self) -> str:
        try:
            lines = self.logfile.read_text(errors="replace").splitlines()
        except OSError:
            return "(no server log)"
        for line in reversed(lines):
            if "FATAL" in line or "PANIC" in line:
                return line.split("FATAL:", 1)[-1].strip() if "FATAL:" in line else line
        return last_line("\n".join(lines))

    def forget_recovery_settings(self) -> None:
        """After promotion to production: drop the recovery block from the configuration."""
        with pg.connect(self.settings()) as conn:
            for name in (
                "restore_command",
                "recovery_target_time",
                "recovery_target_inclusive",
                "recovery_target_timeline",
                "recovery_target_action",
            ):
                pg.fetch_all(
                    conn, pg.sql.SQL("ALTER SYSTEM RESET {}").format(pg.sql.Identifier(name))
                )
            pg.fetch_all(conn, "SELECT pg_reload_conf()")

    def timeline(self) -> int:
        with pg.connect(self.settings()) as conn:
            return int(pg.fetch_value(conn, "SELECT timeline_id FROM pg_control_checkpoint()"))

    def wait_recovered(self, action: str, timeout: float) -> str | None:
        """Wait until recovery reached its target; returns the last replayed commit time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                if action == "shutdown":
                    return None
                raise RestoreError(f"restored server stopped during recovery: {self.log_problem()}")
            try:
                with pg.connect(self.settings()) as conn:
                    row = pg.fetch_one(
                        conn,
                        "SELECT pg_is_in_recovery() AS rec, "
                        "pg_last_xact_replay_timestamp() AS replayed, "
                        "CASE WHEN pg_is_in_recovery() THEN pg_get_wal_replay_pause_state() "
                        "END AS pause",
                    )
                assert row is not None
                done = (action == "promote" and not row["rec"]) or (
                    action == "pause" and row["pause"] == "paused"
                )
                if done:
                    replayed = row["replayed"]
                    return replayed.isoformat() if replayed else None
            except pg.PostgresError:
                pass  # not accepting connections yet
            time.sleep(0.1)  # the restore's replay time is measured by this loop
        raise RestoreError(f"recovery did not reach its target within {timeout:.0f}s")
