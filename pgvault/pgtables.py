"""User tables of a database and their exact row counts.

Used on both sides of a logical backup: at dump time (inside the dump's snapshot, so the
counts describe exactly what the dump holds) and after a restore (to prove the restored
database holds the same rows). Both sides list and count tables the same way:

- ordinary and partitioned tables (relkind r, p) outside pg_catalog, information_schema,
  pg_toast and temp schemas, and not members of an extension (pg_dump skips those);
- `count(*) FROM ONLY t`: each table's own rows, so inheritance parents and partitioned
  tables do not count their children twice.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pgvault.pg import Connection, fetch_all, fetch_value, sql

TABLES_SQL = """
SELECT n.nspname AS schema, c.relname AS name
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p')
  AND n.nspname <> 'information_schema' AND n.nspname !~ '^pg_'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1, 2
"""


@dataclass(frozen=True, order=True)
class TableRef:
    schema: str
    name: str

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"


def list_tables(conn: Connection) -> list[TableRef]:
    return [TableRef(r["schema"], r["name"]) for r in fetch_all(conn, TABLES_SQL)]


def count_rows(conn: Connection, table: TableRef) -> int:
    query = sql.SQL("SELECT count(*) FROM ONLY {}.{}").format(
        sql.Identifier(table.schema), sql.Identifier(table.name)
    )
    return int(fetch_value(conn, query))


def existing(conn: Connection, tables: Iterable[TableRef]) -> set[TableRef]:
    """Which of these relations (tables, views, ...) exist in the connected database."""
    wanted = list(tables)
    if not wanted:
        return set()
    rows = fetch_all(
        conn,
        "SELECT n.nspname AS schema, c.relname AS name FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE (n.nspname, c.relname) IN (SELECT * FROM unnest(%s::text[], %s::text[]))",
        ([t.schema for t in wanted], [t.name for t in wanted]),
    )
    return {TableRef(r["schema"], r["name"]) for r in rows}


COUNT_BATCH = 200  # tables per query: one round trip each, a statement of modest size


def count_all(conn: Connection, tables: Iterable[TableRef] | None = None) -> dict[TableRef, int]:
    """Exact row counts of the given tables (default: every user table), in the order
    given. One `UNION ALL` statement per COUNT_BATCH tables, so a database of many small
    tables costs a few round trips, and the server may scan big tables with parallel
    workers (as its settings allow)."""
    refs = list_tables(conn) if tables is None else list(tables)
    found: dict[TableRef, int] = {}
    for start in range(0, len(refs), COUNT_BATCH):
        chunk = refs[start : start + COUNT_BATCH]
        query = sql.SQL(" UNION ALL ").join(
            sql.SQL("SELECT {} AS i, count(*) AS n FROM ONLY {}.{}").format(
                sql.Literal(i), sql.Identifier(t.schema), sql.Identifier(t.name)
            )
            for i, t in enumerate(chunk)
        )
        for row in fetch_all(conn, query):
            found[chunk[int(row["i"])]] = int(row["n"])
    return {t: found[t] for t in refs}


def count_through(conn: Connection, table: TableRef) -> int | None:
    """Rows of a table with its partitions/children (no ONLY); None when it is missing."""
    if table not in existing(conn, [table]):
        return None
    query = sql.SQL("SELECT count(*) FROM {}.{}").format(
        sql.Identifier(table.schema), sql.Identifier(table.name)
    )
    return int(fetch_value(conn, query))
