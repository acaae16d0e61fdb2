"""What PostgreSQL itself does not restore (issue 16 §6).

Unlogged tables (and their sequences, materialized views) are not WAL-logged: after a
point-in-time restore, crash recovery resets them to empty. That is PostgreSQL's
behaviour, not data loss by pgvault; the PITR and drill reports list every such relation
of the restored cluster (`relpersistence = 'u'`), so nobody mistakes it for one.
"""

from __future__ import annotations

from typing import TypedDict

from pgvault import pg
from pgvault.config import PostgresSettings
from pgvault.errors import PgvaultError

KINDS = {"r": "table", "p": "partitioned table", "m": "materialized view", "S": "sequence"}

_SQL = """
SELECT n.nspname AS schema, c.relname AS name, c.relkind AS kind
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relpersistence = 'u' AND c.relkind IN ('r', 'p', 'm', 'S')
ORDER BY 1, 2
"""


class UnloggedRelation(TypedDict):
    db: str
    schema: str
    name: str
    kind: str


def unlogged_relations(server: PostgresSettings) -> list[UnloggedRelation]:
    """Unlogged relations in every database of a running (restored) server that accepts
    connections; they come back empty after a PITR."""
    out: list[UnloggedRelation] = []
    with pg.connect(server) as conn:
        dbs = [
            r["datname"]
            for r in pg.fetch_all(
                conn, "SELECT datname FROM pg_database WHERE datallowconn ORDER BY 1"
            )
        ]
    for db in dbs:
        with pg.connect(server, db) as conn:
            for r in pg.fetch_all(conn, _SQL):
                out.append(
                    UnloggedRelation(
                        db=db, schema=r["schema"], name=r["name"], kind=KINDS[r["kind"]]
                    )
                )
    return out


def best_effort(server: PostgresSettings) -> tuple[list[UnloggedRelation], str | None]:
    """(relations, None), or ([], why) when the server cannot be asked."""
    try:
        return unlogged_relations(server), None
    except PgvaultError as exc:
        return [], str(exc)


__all__ = ["UnloggedRelation", "best_effort", "unlogged_relations"]
