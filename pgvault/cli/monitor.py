"""`pgvault check` (health checks, alerts) and `pgvault metrics` (Prometheus exporter)."""

from __future__ import annotations

import typer

from pgvault.cli.output import emit_json
from pgvault.errors import UsageError


def check(
    ctx: typer.Context,
    json_out: bool = typer.Option(False, "--json", help="Stable JSON (see docs/JSON.md)."),
    nagios: bool = typer.Option(
        False, "--nagios", help="One Nagios plugin line with perfdata instead of a table."
    ),
    only: list[str] = typer.Option(
        [], "--only", help="Run only this check (repeatable), e.g. --only backup_age."
    ),
    no_alerts: bool = typer.Option(
        False, "--no-alerts", help="Do not publish alerts or resolves (ad hoc runs)."
    ),
) -> int:
    """Run the health checks; exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (Nagios codes).

    Checks: backup_age, backup_size, backup_duration, backup_result, upload_lag, archiver,
    wal_gaps, queues, disk, store, drills, spool (docs/OPERATIONS.md). Each failing check
    publishes alert.<severity>.<check>; each passing one a resolve, which the alert
    worker sends only for alerts it had sent. A bad config exits 2 as well.
    """
    from pgvault.checks.runner import publish, run_checks
    from pgvault.cli import state

    if json_out and nagios:
        raise UsageError("--json and --nagios exclude each other")
    settings = state(ctx).settings
    report = run_checks(settings, only)
    report.alerts_enabled = not no_alerts
    if not no_alerts:
        publish(report, settings)
    if json_out:
        emit_json(report.as_json())
    elif nagios:
        typer.echo(report.nagios())
    else:
        for line in report.lines():
            typer.echo(line)
    return report.exit_code


def _parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--listen {listen!r}: expected [HOST]:PORT, e.g. :9187")
    return host.strip("[]") or "0.0.0.0", int(port)  # noqa: S104 - an exporter listens


def metrics(
    ctx: typer.Context,
    listen: str = typer.Option(
        "127.0.0.1:9187",
        "--listen",
        help="[HOST]:PORT to serve / and /metrics on; :PORT listens on every interface.",
    ),
) -> None:
    """Serve Prometheus metrics (catalog, queues, alerts, drills) at /metrics and the
    status page (what `pgvault status` says, plus a timeline; `/?days=N`) at /.

    Both are read on every request, read-only. Localhost only unless --listen says otherwise.

    Metric names are listed in docs/OPERATIONS.md; deploy/grafana/pgvault-dashboard.json
    is a dashboard built on them. SIGTERM stops the server.
    """
    import threading

    from pgvault.cli import state
    from pgvault.daemon import install_stop_handlers, sd_notify
    from pgvault.metrics import serve

    host, port = _parse_listen(listen)
    settings = state(ctx).settings
    stop = threading.Event()
    restore = install_stop_handlers(stop, "metrics")
    try:
        serve(settings, host, port, stop, ready=lambda: sd_notify("READY=1"))
    finally:
        restore()


def register(app: typer.Typer) -> None:
    app.command("check")(check)
    app.command("metrics")(metrics)
