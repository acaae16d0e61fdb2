"""`pgvault init` and `pgvault doctor`."""

from __future__ import annotations

import json
import os
import pwd
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from pgvault.cli.output import emit_json
from pgvault.errors import PgvaultError

if TYPE_CHECKING:
    from pgvault.config import Settings


def _chown(path: Path, owner: str | None) -> None:
    if owner and os.geteuid() == 0:
        pw = pwd.getpwnam(owner)
        os.chown(path, pw.pw_uid, pw.pw_gid)


def _make_key(settings: Settings, owner: str | None) -> str:
    """The cluster's message HMAC key (pgvault.broker.auth), created once, mode 0600,
    owned by the service user."""
    from pgvault.broker.auth import create_key_file

    path = settings.hmac_key_path
    ids = None
    if owner and os.geteuid() == 0:
        pw = pwd.getpwnam(owner)
        ids = (pw.pw_uid, pw.pw_gid)
    created = create_key_file(path, settings.cluster, ids)
    return f"{path}: {'created' if created else 'ok'} (message HMAC key, mode 0600)"


def init(
    ctx: typer.Context,
    owner: str | None = typer.Option(
        None, "--owner", help="Owner of the spool and catalog (default when run as root: postgres)."
    ),
    create_bucket: bool = typer.Option(
        False, "--create-bucket", help="Create the S3 bucket when it does not exist."
    ),
    definitions: bool = typer.Option(
        False,
        "--definitions",
        help="Print the RabbitMQ definitions (rabbitmqctl import_definitions) and exit.",
    ),
) -> None:
    """Create the spool (owned by postgres, mode 0750), the catalog, the message key (HMAC,
    mode 0600, `[broker] hmac_key_file`), the broker topology and check the store with a
    canary object. Idempotent: a second run changes nothing. Every
    step is reported; exit 1 when one failed (the others still ran)."""
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
    owner = owner or ("postgres" if os.geteuid() == 0 else None)
    failed = False

    def step(label: str, fn: Callable[[], str]) -> None:
        nonlocal failed
        try:
            typer.echo(f"{label:10s} {fn()}")
        except PgvaultError as exc:
            failed = True
            typer.echo(f"{label:10s} FAILED: {exc}")

    def make_spool() -> str:
        spool.ensure_layout(settings.spool_dir)
        for sub in (settings.spool_dir, *(settings.spool_dir / d for d in spool.SUBDIRS)):
            _chown(sub, owner)
            sub.chmod(0o750)
        return f"{settings.spool_dir}: ok (owner {owner or 'current user'}, mode 0750)"

    def make_catalog() -> str:
        settings.catalog_path.parent.mkdir(parents=True, exist_ok=True)
        open_catalog(settings).close()
        for path in settings.catalog_path.parent.glob(settings.catalog_path.name + "*"):
            _chown(path, owner)
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
    step("msg key", lambda: _make_key(settings, owner))
    step("broker", make_topology)
    step("store", check_store)
    if failed:
        raise typer.Exit(1)


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
        emit_json({"ok": ok, "findings": [as_json(f) for f in findings]})
    else:
        for text in lines(findings, ("ok", "config", str(settings.config_file))):
            typer.echo(text)
    if not ok:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("init")(init)
    app.command("doctor")(doctor)
