"""`pgvault catalog restorable [--at T]`: the question the catalog exists to answer."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from pgvault.cli.catalog import _catalog, _short_time
from pgvault.cli.output import emit_json, human_bytes

if TYPE_CHECKING:
    from pgvault.catalog.restorable import LogicalOption


def _window_json(w: Any) -> dict[str, Any]:
    return {
        "backup_id": w.backup_id,
        "start": w.start,
        "end": w.end,
        "usable": w.usable,
        "timeline": w.backup_timeline,
        "target_timeline": w.target_timeline,
        "segments": sum(p.count() for p in w.portions),
        "broken_at": w.broken_at,
        "needs": w.needs,
        "backup_type": w.chain[-1].backup_type if w.chain else "full",
        "chain": [b.label for b in w.chain],
    }


def _chain_json(plan: Any) -> dict[str, Any]:
    """The base backups a restore combines (full first) and their stored bytes."""
    chain = [
        {
            "backup_id": b.label,
            "backup_type": b.backup_type,
            "finished_at": b.finished_at,
            "size": int(b.stored_size or b.size or 0),
        }
        for b in plan.chain
    ]
    return {"chain": chain, "chain_bytes": sum(c["size"] for c in chain)}


def _logical_json(rows: list[LogicalOption], target: str | None) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        item: dict[str, Any] = {
            "db": r.db,
            "backup_id": r.backup_id,
            "finished_at": r.finished_at,
            "command": f"pgvault restore logical --db {r.db} --target-db "
            f"{r.db}_restored --backup {r.backup_id}",
        }
        if target:
            item["data_loss_s"] = r.data_loss_s
        out.append(item)
    return out


def restorable_cmd(
    ctx: typer.Context,
    at: str | None = typer.Option(
        None,
        "--at",
        help="Is this time restorable, and how? ISO 8601, no zone = UTC. Exit 0 yes, 1 no.",
    ),
    json_out: bool = typer.Option(False, "--json", help="Stable JSON (see docs/JSON.md)."),
) -> None:
    """What can I restore to, and how?

    Without --at: the restorable windows (from each verified base backup's stop time to
    the last commit its unbroken verified WAL chain covers, following timeline switches),
    merged; where each chain breaks; and the newest verified dump per database.
    With --at T: yes and the plan (base backup, WAL segments, the command), or no and the
    nearest restorable points, with the data-loss bound of each logical fallback.
    """
    from pgvault.cli.table import parse_at

    cat = _catalog(ctx)
    if at is None:
        _show_windows(cat, json_out)
        return
    if not _show_answer(cat, parse_at(at, json_out), json_out):
        raise typer.Exit(1)


def _show_windows(cat: Any, json_out: bool) -> None:
    from pgvault.catalog.restorable import logical_options, merged, windows

    ws = windows(cat)
    spans = merged(ws)
    logical = _logical_json(logical_options(cat), None)
    if json_out:
        emit_json(
            {
                "cluster": cat.cluster,
                "ok": bool(spans),
                "windows": [{"start": s, "end": e} for s, e in spans],
                "backups": [_window_json(w) for w in ws],
                "logical": logical,
            }
        )
        return
    typer.echo(
        "point-in-time windows (UTC):"
        if spans
        else "no point-in-time window yet (needs a verified base backup and its WAL)"
    )
    for s, e in spans:
        typer.echo(f"  {_short_time(s)} .. {_short_time(e)}")
    for w in ws:
        state = "usable" if w.usable else f"not usable (needs {w.needs or 'a commit after it'})"
        kind = f" (incremental, chain of {len(w.chain)})" if len(w.chain) > 1 else ""
        typer.echo(
            f"  base backup {w.backup_id}{kind}: {state}"
            + (f"; WAL chain breaks at {w.broken_at}" if w.broken_at else "")
        )
    typer.echo(
        "logical dumps (newest verified per database):" if logical else "no verified logical dump"
    )
    for item in logical:
        typer.echo(
            f"  {item['db']}: {item['backup_id']} (finished {_short_time(item['finished_at'])})"
        )


def _show_answer(cat: Any, when: Any, json_out: bool) -> bool:
    from pgvault.catalog.restorable import restorable_at

    answer = restorable_at(cat, when)
    plan = answer.plan
    logical = _logical_json(answer.logical, answer.target)
    tablespaces: dict[str, Any] = (
        _plan_tablespaces(cat, plan) if plan else {"created": [], "unscanned": 0}
    )
    command = f"pgvault restore pitr --to {answer.target} --target-dir DIR" if plan else None
    if json_out:
        emit_json(
            {
                "cluster": cat.cluster,
                "ok": plan is not None,
                "target": answer.target,
                "restorable": plan is not None,
                "plan": None
                if plan is None
                else {
                    "backup_id": plan.window.backup_id,
                    "backup_finished_at": plan.window.start,
                    "timeline": plan.target_timeline,
                    "first_segment": plan.first_segment,
                    "last_segment": plan.last_segment,
                    "segments": plan.segments,
                    "wal_bytes": plan.wal_bytes,
                    "command": command,
                    "tablespaces": tablespaces["created"],
                    "segments_to_scan_for_tablespaces": tablespaces["unscanned"],
                }
                | _chain_json(plan),
                "nearest": {"before": answer.before, "after": answer.after},
                "table_restore": _table_restore(plan, answer.target),
                "logical": logical,
            }
        )
        return plan is not None
    if plan:
        chain = _chain_json(plan)
        wal = (
            f"WAL segments {plan.first_segment} .. {plan.last_segment} ({plan.segments} "
            f"segments, {human_bytes(plan.wal_bytes)})"
        )
        if len(chain["chain"]) > 1:
            typer.echo(
                f"yes: incremental chain of {len(chain['chain'])} backups "
                f"({human_bytes(chain['chain_bytes'])}, combined by pg_combinebackup) + {wal}"
            )
            for c in chain["chain"]:
                typer.echo(
                    f"  {c['backup_type']:11s} {c['backup_id']} (taken "
                    f"{_short_time(c['finished_at'] or '')}, {human_bytes(c['size'])})"
                )
        else:
            typer.echo(
                f"yes: base backup {plan.window.backup_id} (taken "
                f"{_short_time(plan.window.start)}) + {wal}"
            )
        for ts in tablespaces["created"]:
            typer.echo(
                f"  replay creates tablespace {ts['oid']} (source {ts['location']}): restored "
                f"under DIR/pg_tblspc_data/{ts['oid']} unless --tablespace-map {ts['oid']}=DIR"
            )
        if tablespaces["unscanned"]:
            typer.echo(
                f"  {tablespaces['unscanned']} segment(s) were catalogued before tablespace "
                "facts existed: the restore scans them for tablespaces as it replays"
            )
        typer.echo(f"  -> {command}")
        table = _table_restore(plan, answer.target)
        typer.echo(f"  one table or one database as of T, beside production ({table['extracts']}):")
        for line in table["commands"]:
            typer.echo(f"  -> {line}")
    else:
        typer.echo(f"no: {answer.target} is not restorable by PITR")
        if answer.before:
            typer.echo(f"  latest restorable point before it: {_short_time(answer.before)}")
        if answer.after:
            typer.echo(f"  earliest restorable point after it: {_short_time(answer.after)}")
    for item in logical:
        typer.echo(
            f"  logical fallback {item['db']}: dump {item['backup_id']} taken "
            f"{_short_time(item['finished_at'])} (data after it is lost: "
            f"{_duration(item.get('data_loss_s') or 0)}) -> {item['command']}"
        )
    return plan is not None


def _table_restore(plan: Any, target: str) -> dict[str, Any]:
    """`restore table|database` (issue 20): the same plan, only one database's files."""
    if plan is None:
        return {"available": False, "commands": [], "databases": None, "extracts": ""}
    dbs = plan.backup.meta.get("databases")
    names = None if not isinstance(dbs, list) else sorted(str(d["name"]) for d in dbs)
    return {
        "available": True,
        "databases": names,
        "extracts": "global/, the templates and that database's files"
        if names is not None
        else "every file: this base backup predates its database list",
        "commands": [
            f"pgvault restore table --db DB --table SCHEMA.TABLE --at {target} "
            "--target-db DB --target-table NEW_TABLE",
            f"pgvault restore database --db DB --at {target} --target-db NEW_DB",
        ],
    }


def _plan_tablespaces(cat: Any, plan: Any) -> dict[str, Any]:
    """Tablespaces the replay to T creates (each restored inside the target), and how many
    segments of the plan the restore will have to scan itself."""
    from pgvault.catalog.tablespaces import replay_tablespaces

    replay = replay_tablespaces(
        cat.conn, [(p.timeline, p.first, p.last) for p in plan.window.portions]
    )
    last = plan.last_segment or ""
    return {
        "created": [
            {"oid": e.oid, "location": e.location, "lsn": e.lsn, "segment": e.segment}
            for e in replay.created
            if e.segment <= last
        ],
        "unscanned": sum(1 for n in replay.unscanned if n <= last),
    }


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def register(catalog_app: typer.Typer) -> None:
    catalog_app.command("restorable")(restorable_cmd)
