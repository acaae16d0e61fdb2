"""`pgvault init` and `pgvault doctor`."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from pgvault.cli.output import emit_json
from pgvault.errors import PgvaultError

if TYPE_CHECKING:
    from pgvault.config import Settings


def _make_key(settings: Settings) -> str:
    """The cluster's message HMAC key (pgvault.broker.auth), created once, mode 0600, by
    the service user (init has switched to it by then)."""
    from pgvault.broker.auth import create_key_file

    path = settings.hmac_key_path
    created = create_key_file(path, settings.cluster, None)
    return f"{path}: {'created' if created else 'ok'} (message HMAC key, mode 0600)"


def _give(path: Path, user: str, *, tree: bool = False) -> None:
    """Root-only: `path` (and, with tree, everything below it) to the service user."""
    from pgvault.identity import lookup

    svc = lookup(user)
    if svc.uid == 0:  # `[service] user = "root"`: nothing switches, ownership is left alone
        return
    paths = [path]
    if tree:
        for dirpath, dirs, files in os.walk(path):
            paths += [Path(dirpath, n) for n in (*dirs, *files)]
    for p in paths:
        st = p.lstat()
        if (st.st_uid, st.st_gid) != (svc.uid, svc.gid):
            os.lchown(p, svc.uid, svc.gid)


def _mkdirs(path: Path, user: str, mode: int) -> None:
    """Create `path` and its missing parents; those it created go to the service user."""
    missing = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    path.mkdir(parents=True, exist_ok=True, mode=mode)
    for created in missing:
        _give(created, user)


def root_setup(settings: Settings) -> list[tuple[str, str]]:
    """init's root-only steps: the directories the service user must own are created (or
    taken over) as root and chowned to it; the caller then switches to the service user.
    Returns (label, message) lines; raises PgvaultError on the first that fails."""
    from pgvault import spool
    from pgvault.identity import lookup

    user = settings.service.user
    lookup(user)
    lines = []
    try:
        _mkdirs(settings.spool_dir, user, 0o750)
        spool.ensure_layout(settings.spool_dir)
        for sub in (settings.spool_dir, *(settings.spool_dir / d for d in spool.SUBDIRS)):
            _give(sub, user)
            sub.chmod(0o750)
        lines.append(("spool", f"{settings.spool_dir}: owner {user}, mode 0750"))
        catalog_dir = settings.catalog_path.parent
        _mkdirs(catalog_dir, user, 0o750)
        for path in catalog_dir.glob(settings.catalog_path.name + "*"):
            _give(path, user)
        for path in (settings.alert_state_path, settings.hmac_key_path):
            if path.exists():
                _give(path, user)
        _mkdirs(settings.work_dir, user, 0o700)
        _give(settings.work_dir, user)
        lines.append(("work dir", f"{settings.work_dir}: owner {user}, mode 0700"))
        if settings.storage.type == "local":
            _mkdirs(settings.storage.path, user, 0o750)
            _give(settings.storage.path, user, tree=True)
            lines.append(("store dir", f"{settings.storage.path}: owner {user}"))
    except OSError as exc:
        raise PgvaultError(
            f"init as root: {exc.filename or ''}: {exc.strerror or exc}".replace(": :", ":")
        ) from None
    return lines


def _as_service_user(settings: Settings) -> None:
    """init's root-only steps (as root), then the switch to the service user."""
    from pgvault import identity

    user = settings.service.user
    if os.geteuid() == 0:
        for label, message in root_setup(settings):
            typer.echo(f"{label:10s} {message}")
        identity.become(user)
    elif not identity.is_service_user(user):
        raise PgvaultError(
            f"init must run as root or as the service user {user}: "
            f"sudo pgvault init (or sudo -u {user} pgvault init)"
        )


def init(
    ctx: typer.Context,
    create_bucket: bool = typer.Option(
        False, "--create-bucket", help="Create the S3 bucket when it does not exist."
    ),
    definitions: bool = typer.Option(
        False,
        "--definitions",
        help="Print the RabbitMQ definitions (rabbitmqctl import_definitions) and exit.",
    ),
) -> None:
    """Create the spool (mode 0750), the catalog, the work directory, the message key (HMAC,
    mode 0600, `[broker] hmac_key_file`), the broker topology and check the store with a
    canary object, all owned by the service user (`[service] user`, default postgres).
    Run as root, it creates the directories and chowns them to that user, then switches
    to it for everything else. Idempotent: a second run changes nothing. Every step is
    reported; exit 1 when one failed (the others still ran)."""
    from pgvault import spool
    from pgvault.broker import open_broker, topology_for
    from pgvault.catalog import open_catalog
    from pgvault.cli import state
    from pgvault.storage import open_store
    from pgvault.storage.canary import canary

    settings = state(ctx).settings
    if definitions:
        print(json.dumps(topology_for(settings).definitions() | {"policies": []}, indent=2))
        return
    failed = False
    _as_service_user(settings)

    def step(label: str, fn: Callable[[], str]) -> None:
        nonlocal failed
        try:
            typer.echo(f"{label:10s} {fn()}")
        except PgvaultError as exc:
            failed = True
            typer.echo(f"{label:10s} FAILED: {exc}")

    def make_spool() -> str:
        try:
            spool.ensure_layout(settings.spool_dir)
            settings.work_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise PgvaultError(f"{exc.filename}: {exc.strerror or exc}") from None
        return f"{settings.spool_dir}: ok (owner {settings.service.user}, mode 0750)"

    def make_catalog() -> str:
        settings.catalog_path.parent.mkdir(parents=True, exist_ok=True)
        open_catalog(settings).close()
        for path in settings.catalog_path.parent.glob(settings.catalog_path.name + "*"):
            path.chmod(0o640)
        return f"{settings.catalog_path}: ok"

    def make_topology() -> str:
        broker = open_broker(settings)
        broker.declare()
        broker.close()
        return (
            f"exchange {broker.topology.exchange} and "
            f"{len(broker.topology.all_queues())} queues: ok"
        )

    def check_store() -> str:
        store = open_store(settings.storage)
        note = ""
        if create_bucket and settings.storage.type == "s3":
            from pgvault.storage.s3 import S3Store

            assert isinstance(store, S3Store)
            if store.ensure_bucket():
                note = f" (created bucket {settings.storage.bucket})"
        canary(store, settings)
        return f"{store.describe()}: writable{note}"

    step("spool", make_spool)
    step("catalog", make_catalog)
    step("msg key", lambda: _make_key(settings))
    step("broker", make_topology)
    step("store", check_store)
    _incremental_note(settings)
    if failed:
        raise typer.Exit(1)


def _incremental_note(settings: Settings) -> None:
    """PostgreSQL 17+: whether incremental backups can work (summarize_wal); nothing when
    the server is older or not reachable (doctor says why)."""
    note = _summarize_wal_note(settings)
    if note:
        typer.echo(f"{'postgres':10s} {note}")


def _summarize_wal_note(settings: Settings) -> str | None:
    from pgvault import pg

    try:
        with pg.connect(settings.postgres) as conn:
            major = pg.server_version_num(conn) // 10000
            value = str(pg.fetch_value(conn, "SHOW summarize_wal")) if major >= 17 else ""
    except PgvaultError:
        return None
    if major < 17:
        return None
    if value == "on":
        return f"PostgreSQL {major}, summarize_wal = on: `backup physical --incremental` works"
    return (
        f"PostgreSQL {major}: set summarize_wal = on for incremental base backups "
        '(`backup physical --incremental`, [physical] incremental = "auto")'
    )


def doctor(
    ctx: typer.Context,
    no_switch: bool = typer.Option(
        False, "--no-switch", help="Do not force a WAL switch to prove archive_command works."
    ),
    send_test_alert: bool = typer.Option(
        False, "--send-test-alert", help="Publish an info alert through the pipeline."
    ),
    json_out: bool = typer.Option(False, "--json", help="Findings as JSON."),
) -> None:
    """Check everything a failed night would trip over; one line each, with the fix.

    PostgreSQL reachable with REPLICATION, wal_level/archive_mode/archive_command (and
    that archive_command really runs: pg_switch_wal(), then the segment must reach the
    spool), client tools present and not older than the server, broker topology, store
    writable (canary), spool writable by postgres, disk space, alert channels, encryption
    keys. Exit 1 when anything fails (warnings do not), 2 when the configuration does
    not load.
    """
    from pgvault.cli import state
    from pgvault.doctor import Doctor, as_json, failed, lines

    try:
        settings = state(ctx).settings
    except PgvaultError as exc:
        if json_out:
            emit_json(
                {
                    "cluster": None,  # the config naming it did not load
                    "ok": False,
                    "findings": [
                        {"name": "config", "status": "fail", "message": str(exc), "fix": ""}
                    ],
                }
            )
        else:
            typer.echo(f"FAIL config           {exc}")
        raise typer.Exit(2) from None  # configuration: the documented usage exit code
    findings = Doctor(settings, switch_wal=not no_switch).run()
    if send_test_alert:
        from pgvault.alerting import raise_alert
        from pgvault.broker import open_broker

        raise_alert(
            settings,
            open_broker(settings),
            severity="info",
            check="doctor",
            subject="test",
            summary="pgvault doctor test alert: the alert path works",
        )
    ok = not failed(findings)
    if json_out:
        emit_json(
            {"cluster": settings.cluster, "ok": ok, "findings": [as_json(f) for f in findings]}
        )
    else:
        for text in lines(findings, ("ok", "config", str(settings.config_file))):
            typer.echo(text)
    if not ok:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("init")(init)
    app.command("doctor")(doctor)
