"""Infrastructure checks: queues (RabbitMQ), disk (the spool filesystem), store (canary)."""

from __future__ import annotations

import shutil

from pgvault.broker.base import QueueDepth
from pgvault.broker.topology import Topology
from pgvault.checks.base import CheckContext, CheckResult, Status, fmt_bytes
from pgvault.errors import PgvaultError


def queues(ctx: CheckContext) -> list[CheckResult]:
    """Per stage: the work queue (plus its delay queues) and its dead-letter queue."""
    broker = ctx.broker()
    try:
        depths = {d.name: d for d in broker.queue_depths()}
    except PgvaultError as exc:
        return [
            CheckResult(
                "queues",
                "broker",
                Status.CRITICAL,
                f"cannot read queue depths: {exc}",
                action="start RabbitMQ or fix broker.url; producers keep files in the spool",
            )
        ]
    limit = ctx.settings.alerts.max_queue_depth
    topo = broker.topology
    results = [CheckResult("queues", "broker", Status.OK, "broker reachable")]
    for stage in topo.stages:
        if topo.queue(stage) not in depths:
            results.append(
                CheckResult(
                    "queues",
                    stage,
                    Status.CRITICAL,
                    f"queue {topo.queue(stage)} does not exist",
                    action="run `pgvault init` to declare the topology",
                )
            )
            continue
        results.append(_work_queue(topo, stage, depths, limit))
        results.append(_dead_queue(topo, stage, depths))
    return results


def _work_queue(
    topo: Topology, stage: str, depths: dict[str, QueueDepth], limit: int
) -> CheckResult:
    """A stage's work queue: consumed, and not backed up beyond the limit."""
    name = topo.queue(stage)
    work = depths[name]
    retrying = sum(
        depths[q].messages
        for q in (topo.retry_queue(stage, d) for d in topo.retry_delays)
        if q in depths
    )
    total = work.messages + retrying
    worker = f"`pgvault worker {stage}`"
    if work.messages and not work.consumers:
        status = Status.CRITICAL
        text = f"{work.messages} message(s) wait and no worker consumes"
        action: str | None = f"start {worker} (or its service) and read its log"
    elif total > limit:
        status, text = Status.WARNING, f"backlog of {total} message(s)"
        action = f"add {worker} instances or look for a slow store"
    elif not work.consumers:
        status, text = Status.WARNING, "no worker attached"
        action = f"start {worker}"
    else:
        status, text, action = Status.OK, f"{work.consumers} consumer(s)", None
    return CheckResult(
        "queues",
        stage,
        status,
        f"{name}: {text} ({work.messages} ready, {retrying} in retry)",
        value=total,
        threshold=limit,
        unit="messages",
        action=action,
        details={
            "queue": name,
            "ready": work.messages,
            "retrying": retrying,
            "consumers": work.consumers,
        },
    )


def _dead_queue(topo: Topology, stage: str, depths: dict[str, QueueDepth]) -> CheckResult:
    """A stage's dead-letter queue: anything in it needs a person."""
    dead_name = topo.dead_queue(stage)
    dead = depths.get(dead_name)
    count = dead.messages if dead else 0
    return CheckResult(
        "queues",
        f"{stage}.dead",
        Status.CRITICAL if count else Status.OK,
        f"{dead_name}: {count} dead-lettered message(s)",
        value=count,
        threshold=0,
        unit="messages",
        action="read the x-pgvault-error header of each message (management UI or "
        "rabbitmqadmin get), fix the cause, then shovel them back or discard them"
        if count
        else None,
        details={"queue": dead_name},
    )


def disk(ctx: CheckContext) -> list[CheckResult]:
    alerts = ctx.settings.alerts
    path = ctx.settings.spool_dir
    try:
        usage = shutil.disk_usage(path)
    except OSError as exc:
        return [
            CheckResult("disk", "spool", Status.UNKNOWN, f"cannot evaluate: {path}: {exc.strerror}")
        ]
    pct = usage.used / (usage.used + usage.free) * 100 if usage.used + usage.free else 0.0
    if pct > alerts.disk_critical_pct:
        status = Status.CRITICAL
    elif pct > alerts.disk_usage_pct:
        status = Status.WARNING
    else:
        status = Status.OK
    return [
        CheckResult(
            "disk",
            "spool",
            status,
            f"spool filesystem ({path}) {pct:.1f} % used, {fmt_bytes(usage.free)} free",
            value=round(pct, 2),
            threshold=alerts.disk_usage_pct,
            unit="%",
            action="find what fills it (stuck uploads: see upload_lag; retention.local_keep_days)"
            "; when it is full, wal-archive fails and PostgreSQL keeps WAL in pg_wal"
            if status is not Status.OK
            else None,
            details={
                "path": str(path),
                "total": usage.total,
                "used": usage.used,
                "free": usage.free,
                "critical_pct": alerts.disk_critical_pct,
            },
        )
    ]


def store(ctx: CheckContext) -> list[CheckResult]:
    from pgvault.storage.canary import canary

    try:
        backend = ctx.store()
        where = backend.describe()
        seconds = canary(backend, ctx.settings)
    except PgvaultError as exc:
        return [
            CheckResult(
                "store",
                "store",
                Status.CRITICAL,
                f"canary write/read/delete failed: {exc}",
                action="check the store endpoint, bucket, credentials and permissions; "
                "uploads retry meanwhile and the spool keeps the files",
            )
        ]
    return [
        CheckResult(
            "store",
            "store",
            Status.OK,
            f"{where}: canary written, read back and deleted",
            value=round(seconds, 3),
            unit="s",
        )
    ]
