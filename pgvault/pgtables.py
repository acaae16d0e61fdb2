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


COUNT_BATCH = 200  # small tables per query: one round trip each, a statement of modest size
BIG_TABLE = 8 << 20  # bytes: PostgreSQL's own min_parallel_table_scan_size default


def count_all(conn: Connection, tables: Iterable[TableRef] | None = None) -> dict[TableRef, int]:
    """Exact row counts of the given tables (default: every user table), in the order
    given: the small ones batched (`count_small`), the big ones one by one (`count_each`)."""
    refs = list_tables(conn) if tables is None else list(tables)
    small, big = split_by_size(conn, refs)
    found = count_small(conn, small)
    found.update(count_each(conn, big))
    return {t: found[t] for t in refs}


def split_by_size(
    conn: Connection, tables: list[TableRef]
) -> tuple[list[TableRef], list[TableRef]]:
    """(tables under BIG_TABLE bytes, the others), each in the order given."""
    big = _big(conn, tables)
    return [t for t in tables if t not in big], [t for t in tables if t in big]


def count_small(conn: Connection, tables: list[TableRef]) -> dict[TableRef, int]:
    """Row counts, COUNT_BATCH tables to a `UNION ALL` statement with parallel query off:
    a database of many small tables costs a few round trips, not one per table, and no
    parallel worker start-ups."""
    found: dict[TableRef, int] = {}
    if not tables:
        return found
    workers = fetch_value(conn, "SHOW max_parallel_workers_per_gather")
    fetch_all(conn, "SET max_parallel_workers_per_gather = 0")
    try:
        for start in range(0, len(tables), COUNT_BATCH):
            chunk = tables[start : start + COUNT_BATCH]
            query = sql.SQL(" UNION ALL ").join(
                sql.SQL("SELECT {} AS i, count(*) AS n FROM ONLY {}.{}").format(
                    sql.Literal(i), sql.Identifier(t.schema), sql.Identifier(t.name)
                )
                for i, t in enumerate(chunk)
            )
            for row in fetch_all(conn, query):
                found[chunk[int(row["i"])]] = int(row["n"])
    finally:
        fetch_all(
            conn, sql.SQL("SET max_parallel_workers_per_gather = {}").format(sql.Literal(workers))
        )
    return found


def count_each(conn: Connection, tables: list[TableRef]) -> dict[TableRef, int]:
    """Row counts, a statement per table: the server may scan each with parallel workers
    as its settings allow (meant for tables of BIG_TABLE bytes or more)."""
    return {t: count_rows(conn, t) for t in tables}


def _big(conn: Connection, tables: list[TableRef]) -> set[TableRef]:
    """Which of these tables hold BIG_TABLE bytes or more (main fork)."""
    if not tables:
        return set()
    rows = fetch_all(
        conn,
        "SELECT n.nspname AS schema, c.relname AS name FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE (n.nspname, c.relname) IN (SELECT * FROM unnest(%s::text[], %s::text[])) "
        "AND pg_relation_size(c.oid) >= %s",
        ([t.schema for t in tables], [t.name for t in tables], BIG_TABLE),
    )
    return {TableRef(r["schema"], r["name"]) for r in rows}


def count_through(conn: Connection, table: TableRef) -> int | None:
    """Rows of a table with its partitions/children (no ONLY); None when it is missing."""
    if table not in existing(conn, [table]):
        return None
    query = sql.SQL("SELECT count(*) FROM {}.{}").format(
        sql.Identifier(table.schema), sql.Identifier(table.name)
    )
    return int(fetch_value(conn, query))
