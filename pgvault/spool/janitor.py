"""Keeping the spool small: verified copies past local_keep_days, stale work files."""

from __future__ import annotations

import logging
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pgvault.catalog.db import CatalogDB
from pgvault.catalog.queries import state_of
from pgvault.config import Settings
from pgvault.log import for_artifact
from pgvault.spool.scan import scan
from pgvault.timeutil import iso

log = logging.getLogger(__name__)


def clean_spool(settings: Settings, catalog: CatalogDB, now: datetime | None = None) -> list[str]:
    """Remove spool copies verified in the store more than local_keep_days ago (never an
    unverified one: until then the spool copy is the only complete copy)."""
    now = now or datetime.now(UTC)
    cutoff = iso(now - timedelta(days=settings.retention.local_keep_days))
    removed = []
    for art in scan(settings.spool_dir):
        row = state_of(catalog, art.kind, art.name)
        if row is None or row.state != "verified" or not row.verified_at:
            continue
        if row.verified_at > cutoff:
            continue
        if row.sha256 != art.files[-1].sha256:
            for_artifact(log, f"{art.kind}/{art.name}").warning(
                "spool copy differs from the catalogued one (sha256); kept for inspection"
            )
            continue
        art.discard()
        removed.append(f"{art.kind}/{art.name}")
        for_artifact(log, f"{art.kind}/{art.name}").info(
            "removed from spool (verified %s, keep %s days)",
            row.verified_at,
            settings.retention.local_keep_days,
        )
    return removed


def clean_stale_tmp(spool_dir: Path, max_age_s: float = 6 * 3600) -> int:
    """Remove work files left by killed processes (tmp/ and hidden .tmp files)."""
    cutoff = time.time() - max_age_s
    removed = 0
    candidates = [*(spool_dir / "tmp").glob("*"), *(spool_dir / "wal").glob(".*.tmp")]
    for path in candidates:
        try:
            if path.stat().st_mtime < cutoff:
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink()
                removed += 1
        except FileNotFoundError:
            continue
    if removed:
        log.info("removed %d stale work file(s) from the spool", removed)
    return removed
