"""Configuration written into a restored data directory.

Recovery settings are appended to postgresql.auto.conf, the file PostgreSQL reads last,
so they override whatever the backed-up cluster had (archive_command included). When the
backup came from a host that keeps postgresql.conf / pg_hba.conf outside the data
directory (Debian's /etc/postgresql), minimal ones are written, with the hot-standby
limits the backup's pg_control requires.
"""

from __future__ import annotations

import getpass
import re
import shlex
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path

from pgvault.config import Settings
from pgvault.pgtools import find_tool, run_tool
from pgvault.restore.walqueue import PREFETCH_DIR, READY

# pg_controldata line -> GUC that must be at least that large for recovery to run
_CONTROL_LIMITS = {
    "max_connections setting": "max_connections",
    "max_worker_processes setting": "max_worker_processes",
    "max_wal_senders setting": "max_wal_senders",
    "max_prepared_xacts setting": "max_prepared_transactions",
    "max_locks_per_xact setting": "max_locks_per_transaction",
}


def pgvault_command(settings: Settings) -> str:
    """How the restored server calls us back (restore_command), as a shell string."""
    venv_bin = Path(sys.executable).parent / "pgvault"
    argv = [str(venv_bin)] if venv_bin.exists() else [sys.executable, "-m", "pgvault"]
    if settings.config_file:
        argv += ["--config", str(settings.config_file.resolve())]
    return shlex.join(argv)


def restore_command_of(settings: Settings, *, from_store: bool) -> str:
    """restore_command for a restored cluster (%f/%p left for PostgreSQL to expand).

    Two steps, the cheap one first:
    - `mv -f pg_wal/.pgvault-prefetch/%f.ready %p`: a segment the prefetcher proved and
      published for the rename-only path (walqueue.READY) is moved into place, no
      interpreter started (PostgreSQL runs restore_command in the data directory, and
      always restores into pg_wal/);
    - otherwise this interpreter without site (-S) and without the script's directory on
      sys.path (-P) runs pgvault/restore/walget.py, which serves queued segments with a
      checked rename and hands every other call to `pgvault wal-restore` (the same
      arguments, the same exit codes)."""
    walget = Path(__file__).resolve().parent / "walget.py"
    argv = [sys.executable, "-S", "-P", str(walget)]
    if settings.config_file:
        argv += ["--config", str(settings.config_file.resolve())]
    if from_store:
        argv.append("--from-store")
    mv = shutil.which("mv") or "/bin/mv"
    ready = f"pg_wal/{PREFETCH_DIR}/%f{READY}"
    # PostgreSQL expands %f/%p/%r/%% in restore_command: a literal % in a path is %%
    fast = shlex.quote(mv).replace("%", "%%") + f" -f {ready} %p 2>/dev/null"
    return f"{fast} || exec " + shlex.join(argv).replace("%", "%%") + " %f %p"


def pg_timestamp(iso_text: str) -> str:
    """'2026-11-24T06:47:53.547212Z' -> '2026-11-24 06:47:53.547212+00' (the GUC check
    for recovery_target_time does not accept the 'T...Z' spelling)."""
    return iso_text.replace("T", " ").replace("Z", "+00")


def _quote(value: str) -> str:
    """A postgresql.conf string: backslash escapes are processed there, quotes doubled."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def control_limits(datadir: Path, bin_dir: str) -> dict[str, str]:
    proc = run_tool(
        [find_tool("pg_controldata", bin_dir), str(datadir)], check=False, env={"LC_ALL": "C"}
    )
    limits = {}
    for line in proc.stdout.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in _CONTROL_LIMITS and re.fullmatch(r"\s*\d+\s*", value):
            limits[_CONTROL_LIMITS[key.strip()]] = value.strip()
    return limits


def ensure_server_files(datadir: Path, bin_dir: str, superuser: str) -> list[str]:
    """Write postgresql.conf / pg_hba.conf / pg_ident.conf if the backup had none."""
    written = []
    conf = datadir / "postgresql.conf"
    if not conf.exists():
        lines = [
            "# Written by pgvault restore: the backed-up cluster kept its postgresql.conf",
            "# outside the data directory. Review before using this cluster for real.",
            "listen_addresses = 'localhost'",
        ]
        lines += [f"{k} = {v}" for k, v in control_limits(datadir, bin_dir).items()]
        conf.write_text("\n".join(lines) + "\n")
        written.append(conf.name)
    hba = datadir / "pg_hba.conf"
    if not hba.exists():
        hba.write_text(
            "# Written by pgvault restore (the backup had no pg_hba.conf).\n"
            "local   all   all                 peer map=pgvault\n"
            "host    all   all   127.0.0.1/32  scram-sha-256\n"
            "host    all   all   ::1/128       scram-sha-256\n"
        )
        (datadir / "pg_ident.conf").write_text(
            "# Written by pgvault restore: the restoring OS user may connect as the superuser.\n"
            f"pgvault   {getpass.getuser()}   {superuser}\n"
            "pgvault   /^(.*)$   \\1\n"
        )
        written += [hba.name, "pg_ident.conf"]
    return written


def write_recovery(
    datadir: Path,
    settings: Settings,
    *,
    target: str,
    timeline: int,
    action: str,
    port: int,
    socket_dir: Path,
    backup_id: str,
    as_primary: bool,
    from_store: bool = False,
) -> None:
    """Append the recovery block to postgresql.auto.conf and create recovery.signal."""
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    restore_command = restore_command_of(settings, from_store=from_store)
    lines = [
        "",
        f"# --- pgvault restore pitr, {now}: base backup {backup_id}, target {target}",
        f"restore_command = {_quote(restore_command)}",
        *(
            ["recovery_target = 'immediate'"]
            if target == "immediate"
            else [
                f"recovery_target_time = {_quote(pg_timestamp(target))}",
                "recovery_target_inclusive = on",
            ]
        ),
        f"recovery_target_timeline = {_quote(str(timeline))}",
        f"recovery_target_action = {_quote(action)}",
    ]
    if not as_primary:  # a copy beside production: its own port, a private socket, local only
        lines += [
            f"port = {port}",
            f"unix_socket_directories = {_quote(str(socket_dir))}",
            "listen_addresses = 'localhost'",
        ]
    if as_primary:
        lines.append("# --as-primary: this cluster becomes the new production; it keeps archiving.")
    else:
        lines += [
            "# Archiving is OFF: a restored copy must never write its new timeline into the",
            "# production archive (pgvault restore pitr --as-primary keeps it on).",
            "archive_mode = off",
        ]
    with (datadir / "postgresql.auto.conf").open("a") as fh:
        fh.write("\n".join(lines) + "\n")
    (datadir / "recovery.signal").write_text("")
    (datadir / "standby.signal").unlink(missing_ok=True)
