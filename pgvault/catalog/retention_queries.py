"""Read-side queries of retention (pgvault/retention): what may be planned and removed.

Every row is typed (`ArtifactRow` by kind); "live" means not deleted, "plannable" also not
already `expiring` (a row being removed is finished by `resume`, not planned again).
"""

from __future__ import annotations

from dataclasses import dataclass

from pgvault.catalog.db import CatalogDB
from pgvault.catalog.queries import SELECT_ALL
from pgvault.catalog.rows import ArtifactRow, artifact_row


@dataclass(frozen=True, slots=True)
class WalBounds:
    """The first and last catalogued WAL segment of one timeline."""

    timeline: int
    lo: int
    hi: int


def plannable(catalog: CatalogDB, kind: str) -> list[ArtifactRow]:
    """Live, not expiring rows of a kind, newest finished first."""
    rows = catalog.query(
        f"SELECT {SELECT_ALL} FROM artifacts WHERE kind = ? AND deleted_at IS NULL "  # noqa: S608
        "AND expiring_at IS NULL ORDER BY finished_at DESC",
        (kind,),
    )
    return [artifact_row(r) for r in rows]


def wal_bounds(catalog: CatalogDB) -> list[WalBounds]:
    """Per timeline, the lowest and highest live, not expiring WAL segment."""
    rows = catalog.query(
        "SELECT timeline, MIN(segno) AS lo, MAX(segno) AS hi FROM artifacts WHERE kind = 'wal' "
        "AND segno IS NOT NULL AND deleted_at IS NULL AND expiring_at IS NULL GROUP BY timeline"
    )
    return [WalBounds(int(r["timeline"]), int(r["lo"]), int(r["hi"])) for r in rows]


def odd_wal(catalog: CatalogDB) -> list[ArtifactRow]:
    """Live, not expiring WAL files that are not segments (.partial, .backup)."""
    rows = catalog.query(
        f"SELECT {SELECT_ALL} FROM artifacts WHERE kind = 'wal' "  # noqa: S608
        "AND segno IS NULL AND deleted_at IS NULL AND expiring_at IS NULL"
    )
    return [artifact_row(r) for r in rows]


def expiring(catalog: CatalogDB) -> list[tuple[str, str]]:
    """(kind, name) of every row marked expiring and not deleted yet: a run to finish."""
    return [
        (str(r["kind"]), str(r["name"]))
        for r in catalog.query(
            "SELECT kind, name FROM artifacts WHERE expiring_at IS NOT NULL AND deleted_at IS NULL"
        )
    ]


def removable_segments(
    catalog: CatalogDB, timeline: int, first: int, last: int
) -> list[ArtifactRow]:
    """Live, not expiring segments of `timeline` in [first, last] past the pipeline
    (verified or damaged: `ready` and `stored` ones stay)."""
    rows = catalog.query(
        f"SELECT {SELECT_ALL} FROM artifacts WHERE kind = 'wal' "  # noqa: S608
        "AND segno IS NOT NULL AND timeline = ? AND segno BETWEEN ? AND ? "
        "AND deleted_at IS NULL AND expiring_at IS NULL "
        "AND state NOT IN ('ready', 'stored')",
        (timeline, first, last),
    )
    return [artifact_row(r) for r in rows]


def live(catalog: CatalogDB, kind: str, name: str) -> list[ArtifactRow]:
    """The not deleted row(s) of kind/name."""
    rows = catalog.query(
        f"SELECT {SELECT_ALL} FROM artifacts "  # noqa: S608
        "WHERE kind = ? AND name = ? AND deleted_at IS NULL",
        (kind, name),
    )
    return [artifact_row(r) for r in rows]
