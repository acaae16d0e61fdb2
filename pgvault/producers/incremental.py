"""Incremental base backups (PostgreSQL 17+): whether to take one, and against what.

`decide` answers for `backup physical` (--full, --incremental, or the `[physical]`
policy when neither is given):

- 14-16: --incremental is a usage error (exit 2); the policy takes full backups.
- the parent is the newest verified, live base backup (full or incremental) of this
  system and timeline whose own chain is complete (catalog.chains);
- PostgreSQL must have `summarize_wal = on` and WAL summaries covering the parent's
  start LSN up to what the summarizer reached (pg_available_wal_summaries,
  pg_get_wal_summarizer_state); when it does not, the backup falls back to a full one
  with a one-line warning and says why (`fallback_reason`);
- policy `auto`: incremental unless the newest full is older than `full_every_days` or
  the chain already holds `max_chain` incrementals.

`prepare` fetches the parent's backup_manifest (spool copy or store, sha256 proven by
the verified read path) into a private directory and returns the BasebackupExtras
(`--incremental=FILE`, the manifest fields) for producers.physical.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from pgvault import fsutil, pg
from pgvault.catalog.chains import Chain, by_id, chain_rows
from pgvault.catalog.db import CatalogDB
from pgvault.catalog.restorable import physical_backups
from pgvault.catalog.rows import BackupRow
from pgvault.config import Settings
from pgvault.errors import IntegrityError, PgvaultError, PostgresError, UsageError
from pgvault.keys import identities_for
from pgvault.producers.physical import BasebackupExtras
from pgvault.schemas.manifest import INCREMENTAL_MANIFEST_VERSION
from pgvault.spool.scan import locate
from pgvault.storage import ObjectStore
from pgvault.storage.verified import Expected, fetch_verified
from pgvault.timeutil import parse_iso
from pgvault.walfile import format_lsn

log = logging.getLogger(__name__)
Mode = Literal["full", "incremental", "auto"]
MIN_MAJOR = 17


@dataclass
class ServerState:
    major: int
    system_identifier: str
    timeline: int
    summarize_wal: bool
    summaries: list[tuple[int, int, int]] = field(default_factory=list)  # (tli, start, end)
    summarized_lsn: int | None = None  # None: this role may not ask
    summaries_readable: bool = True


@dataclass
class Decision:
    mode: Mode
    incremental: bool
    chain: list[BackupRow] = field(default_factory=list)  # the parent's, full first
    reason: str | None = None  # why a full backup (policy, or a fallback)
    fallback: bool = False  # an incremental was wanted and is impossible

    @property
    def parent(self) -> BackupRow | None:
        return self.chain[-1] if self.chain else None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"incremental": self.incremental}
        if self.parent is not None and self.incremental:
            out["parent_id"] = self.parent.label
        if self.fallback:
            out["fallback_reason"] = self.reason
        elif self.reason:
            out["full_reason"] = self.reason
        return out


def server_state(settings: Settings) -> ServerState:
    with pg.connect(settings.postgres) as conn:
        row = pg.fetch_one(
            conn,
            "SELECT current_setting('server_version_num')::int AS v,"
            " (SELECT system_identifier::text FROM pg_control_system()) AS sysid,"
            " (SELECT timeline_id FROM pg_control_checkpoint()) AS tli",
        )
        assert row is not None
        state = ServerState(int(row["v"]) // 10000, str(row["sysid"]), int(row["tli"]), False)
        if state.major < MIN_MAJOR:
            return state
        state.summarize_wal = pg.fetch_value(conn, "SHOW summarize_wal") == "on"
        try:
            summaries = pg.fetch_all(
                conn,
                "SELECT tli::int AS tli, (start_lsn - '0/0')::bigint AS s,"
                " (end_lsn - '0/0')::bigint AS e FROM pg_available_wal_summaries()",
            )
            reached = pg.fetch_value(
                conn,
                "SELECT (summarized_lsn - '0/0')::bigint FROM pg_get_wal_summarizer_state()",
            )
        except PostgresError as exc:  # not granted to this role: pg_basebackup decides
            log.info("WAL summaries not readable (%s): pg_basebackup checks them", exc)
            state.summaries_readable = False
            return state
    state.summaries = [(int(r["tli"]), int(r["s"]), int(r["e"])) for r in summaries]
    state.summarized_lsn = int(reached or 0)
    return state


def summaries_gap(state: ServerState, timeline: int, start_lsn: int) -> str | None:
    """Why the WAL summaries do not cover start_lsn .. what the summarizer reached."""
    if not state.summarize_wal:
        return "summarize_wal is off (set summarize_wal = on; PostgreSQL 17+)"
    if not state.summaries_readable or state.summarized_lsn is None:
        return None
    if state.summarized_lsn <= start_lsn:
        return None  # the summarizer is behind: pg_basebackup waits for it
    position = start_lsn
    for _tli, start, end in sorted(s for s in state.summaries if s[0] == timeline):
        if start <= position < end:
            position = end
    if position == start_lsn:
        return (
            f"no WAL summary covers the parent's start {format_lsn(start_lsn)} "
            "(summarize_wal was off then, or wal_summary_keep_time removed them)"
        )
    if position < state.summarized_lsn:
        return f"WAL summaries have a gap at {format_lsn(position)}"
    return None


def _candidates(catalog: CatalogDB, state: ServerState) -> Chain | None:
    """The newest usable parent of this system and timeline, with its complete chain."""
    backups = physical_backups(catalog)
    usable = by_id(backups)
    for b in backups:
        if b.meta.get("system_identifier") != state.system_identifier:
            continue
        if int(b.timeline or b.meta.get("timeline") or 0) != state.timeline:
            continue
        if b.start_lsn is None or (b.meta.get("pg_major") or 0) < MIN_MAJOR:
            continue
        chain = chain_rows(b, usable)
        if chain.ok:
            return chain
    return None


def _policy_full(settings: Settings, chain: Chain, now: datetime) -> str | None:
    cfg = settings.physical
    full = chain.rows[0]
    age = now - parse_iso(str(full.finished_at))
    if age > timedelta(days=cfg.full_every_days):
        return f"newest full backup {full.label} is older than {cfg.full_every_days:g} days"
    if len(chain.rows) - 1 >= cfg.max_chain:
        return f"the chain already holds {cfg.max_chain} incrementals (physical.max_chain)"
    return None


def requested_mode(settings: Settings, full: bool, incremental: bool) -> Mode:
    if full and incremental:
        raise UsageError("give --full or --incremental, not both")
    if full:
        return "full"
    if incremental:
        return "incremental"
    return "auto" if settings.physical.incremental == "auto" else "full"


def decide(settings: Settings, catalog: CatalogDB, mode: Mode) -> Decision:
    """Full or incremental, and the parent (see the module docstring)."""
    if mode == "full":
        return Decision(mode, False)
    state = server_state(settings)
    if state.major < MIN_MAJOR:
        if mode == "incremental":
            raise UsageError(
                f"--incremental needs PostgreSQL {MIN_MAJOR} or newer; the server is "
                f"PostgreSQL {state.major}"
            )
        return Decision(mode, False, reason=f"PostgreSQL {state.major} has no incrementals")
    chain = _candidates(catalog, state)
    if chain is None:
        return Decision(
            mode,
            False,
            reason="no verified base backup of this system and timeline to build on",
            fallback=mode == "incremental",
        )
    if mode == "auto" and (why := _policy_full(settings, chain, datetime.now(UTC))):
        return Decision(mode, False, chain.rows, reason=why)
    parent = chain.rows[-1]
    gap = summaries_gap(state, state.timeline, int(parent.start_lsn or 0))
    if gap is not None:
        return Decision(mode, False, chain.rows, reason=gap, fallback=True)
    return Decision(mode, True, chain.rows)


def _fetch_parent_manifest(
    settings: Settings, store: ObjectStore, parent: BackupRow, dest: Path
) -> None:
    info = next((f for f in parent.file_infos() if f.name == "backup_manifest"), None)
    if info is None:
        raise PgvaultError(f"physical/{parent.label}: the catalog lists no backup_manifest")
    art = locate(settings.spool_dir, "physical", parent.label)
    if art is not None and art.file_path("backup_manifest").is_file():
        try:
            fsutil.copy_verified(art.file_path("backup_manifest"), dest, info.sha256)
            return
        except IntegrityError:
            log.warning("spool copy of %s/backup_manifest is damaged: the store", parent.label)
    if info.key is None:
        raise PgvaultError(f"physical/{parent.label}: backup_manifest was never stored")
    fetch_verified(store, info.key, Expected.of_file(info), dest, identities_for(settings))


def prepare(
    settings: Settings, store: ObjectStore, decision: Decision, workdir: Path
) -> BasebackupExtras:
    """The extras of an incremental decision (parent manifest fetched into workdir); when
    the parent's backup_manifest cannot be read, the decision becomes a fallback."""
    parent = decision.parent
    if not decision.incremental or parent is None:
        return BasebackupExtras()
    manifest = workdir / f"{parent.label}.backup_manifest"
    try:
        _fetch_parent_manifest(settings, store, parent, manifest)
    except PgvaultError as exc:  # e.g. encrypted in the store, no identity on this host
        decision.incremental, decision.fallback = False, True
        decision.reason = f"cannot read the parent's backup_manifest ({exc})"
        return BasebackupExtras()
    ancestors = tuple(b.label for b in decision.chain)

    def fields(backup_id: str) -> dict[str, Any]:
        return {
            "manifest_version": INCREMENTAL_MANIFEST_VERSION,
            "backup_type": "incremental",
            "parent_id": parent.label,
            "chain": (*ancestors, backup_id),
        }

    return BasebackupExtras(args=(f"--incremental={manifest}",), fields=fields)


def private_workdir(settings: Settings) -> tempfile.TemporaryDirectory[str]:
    """Where the parent's backup_manifest waits for pg_basebackup (mode 0700)."""
    parent = settings.work_dir if settings.work_dir.is_dir() else None
    return tempfile.TemporaryDirectory(prefix="pgvault-incr-", dir=parent)
