"""Pipeline commands: wal-archive, producer, worker, init, config show."""

from __future__ import annotations

import json
import threading
from enum import StrEnum
from pathlib import Path

import typer

from pgvault.cli.output import emit_json
from pgvault.errors import UsageError


class StageName(StrEnum):
    upload = "upload"
    verify = "verify"
    catalog = "catalog"
    alert = "alert"


def wal_archive(
    ctx: typer.Context,
    path: Path = typer.Argument(..., help="%p: the WAL file, relative to the data directory."),
    name: str = typer.Argument(..., help="%f: its file name."),
) -> int:
    """PostgreSQL's archive_command: copy one WAL file durably into the spool.

    Set archive_command = 'pgvault wal-archive %p %f'. Exits 0 only once the file and
    its directory are fsynced in spool_dir/wal/; the same name with the same bytes again
    is 0, with different bytes it is refused (exit 1, alert). Bad arguments exit 2.
    """
    from pgvault.cli import state
    from pgvault.producers import wal_archive as impl

    cfg = state(ctx).config
    return impl.main([str(path), name], str(cfg) if cfg else None)


def producer(
    ctx: typer.Context,
    once: bool = typer.Option(False, "--once", help="Reconcile the spool once, then exit."),
    rescan: float = typer.Option(60.0, help="Seconds between full spool reconciliations."),
) -> None:
    """Spool watcher daemon: announce finished spool files on RabbitMQ.

    On start (and every --rescan seconds) it re-announces everything in the spool that the
    catalog does not show as verified, and removes spool copies verified more than
    retention.local_keep_days ago. SIGTERM finishes the current announcement and exits.
    """
    from pgvault.broker import open_broker
    from pgvault.catalog import open_catalog
    from pgvault.cli import state
    from pgvault.daemon import install_stop_handlers
    from pgvault.producers.watcher import Producer

    settings = state(ctx).settings
    broker = open_broker(settings)
    from pgvault.storage import open_store

    prod = Producer(
        settings,
        broker,
        open_catalog(settings),
        store=open_store(settings.storage),
        rescan_s=rescan,
    )
    restore = install_stop_handlers(prod.stop, "producer")
    try:
        prod.run(once=once)
    finally:
        restore()
        broker.close()


def worker(
    ctx: typer.Context,
    stage: StageName = typer.Argument(..., help="Which stage to run."),
    once: bool = typer.Option(
        False, "--once", help="Drain the queue (and its retry queues), then exit 0."
    ),
    json_out: bool = typer.Option(False, "--json", help="With --once: print counts as JSON."),
) -> None:
    """Run one pipeline stage: upload, verify, catalog or alert.

    Messages are acked only after their side effect is durable; failures are retried
    after broker.retry_delays, then dead-lettered to pgvault.<cluster>.<stage>.dead with an
    alert. SIGTERM finishes the message in hand, then exits. Several upload or verify
    workers may run at once; the catalog queue has a single active consumer.
    """
    from pgvault.broker import open_broker
    from pgvault.broker.base import declare_until_up
    from pgvault.cli import state
    from pgvault.consumers.factory import build_stage
    from pgvault.consumers.worker import Worker
    from pgvault.daemon import install_stop_handlers, sd_notify

    settings = state(ctx).settings
    if stage is StageName.catalog and settings.broker.prefetch != 1:
        settings = settings.model_copy(
            update={"broker": settings.broker.model_copy(update={"prefetch": 1})}
        )
    broker = open_broker(settings)
    stop = threading.Event()
    restore = install_stop_handlers(stop, f"worker {stage.value}")
    try:
        if once:
            broker.declare()
        elif not declare_until_up(broker, stop, f"worker {stage.value}"):
            return
        impl = build_stage(stage.value, settings, broker)
        sd_notify("READY=1")
        stats = Worker(impl, broker, settings.cluster).run(once=once, stop=stop)
    finally:
        restore()
        broker.close()
    if once:
        counts = {"acked": stats.acked, "retried": stats.retried, "dead": stats.dead}
        if json_out:
            emit_json(
                {"cluster": settings.cluster, "ok": not stats.dead, "stage": stage.value, **counts}
            )
        else:
            typer.echo(
                f"{stage.value}: {stats.acked} done, {stats.retried} retried, "
                f"{stats.dead} dead-lettered"
            )


config_app = typer.Typer(no_args_is_help=True, help="Show the effective configuration.")


@config_app.command("show")
def config_show(
    ctx: typer.Context,
    json_out: bool = typer.Option(False, "--json", help="JSON instead of TOML-like text."),
) -> None:
    """Print the effective configuration (file + environment), secrets masked."""
    from pgvault.cli import state

    data = state(ctx).settings.redacted()
    if json_out:
        emit_json(data | {"ok": True})
        return
    for key, value in data.items():
        if not isinstance(value, dict):
            typer.echo(f"{key} = {json.dumps(value)}")
    for key, value in data.items():
        if isinstance(value, dict):
            typer.echo(f"\n[{key}]")
            for k, v in value.items():
                typer.echo(f"{k} = {json.dumps(v)}")


def register(app: typer.Typer) -> None:
    app.command("wal-archive")(wal_archive)
    app.command("producer")(producer)
    app.command("worker")(worker)
    app.add_typer(config_app, name="config")


__all__ = ["UsageError", "register"]
