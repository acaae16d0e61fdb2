"""`restore table --target-table NAME`: the table's rows at T under a new name.

Made inside the (promoted, private) scratch cluster before the dump, so the dump holds
a table that nothing else refers to: `CREATE TABLE schema.NAME (LIKE schema.table
INCLUDING ALL)` (columns, defaults, identity, generated columns, checks, indexes,
comments; not foreign keys, triggers or partitioning: a partitioned table comes back
as one plain table with all its rows) filled with `INSERT ... SELECT`. Defaults that
draw from the original's sequences (serial) are dropped: the copy must not keep the
original's sequence from being dropped or replaced later. The original
table, its views and the foreign keys pointing at it are left alone in the target.
"""

from __future__ import annotations

from pgvault import pg
from pgvault.config import PostgresSettings
from pgvault.pgtables import TableRef

_COLUMNS = (
    "SELECT a.attname AS name, a.attidentity AS identity FROM pg_attribute a "
    "WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped "
    "AND a.attgenerated = '' ORDER BY a.attnum"
)
_SEQUENCE_DEFAULTS = (
    "SELECT a.attname AS name FROM pg_attrdef d JOIN pg_attribute a "
    "ON a.attrelid = d.adrelid AND a.attnum = d.adnum "
    "WHERE d.adrelid = %s::regclass AND pg_get_expr(d.adbin, d.adrelid) LIKE 'nextval(%%'"
)


def copy_table(server: PostgresSettings, db: str, source: TableRef, name: str) -> TableRef:
    copy = TableRef(source.schema, name)
    src = pg.sql.SQL("{}.{}").format(
        pg.sql.Identifier(source.schema), pg.sql.Identifier(source.name)
    )
    dst = pg.sql.SQL("{}.{}").format(pg.sql.Identifier(copy.schema), pg.sql.Identifier(copy.name))
    quoted = '"{}"."{}"'.format(source.schema.replace('"', '""'), source.name.replace('"', '""'))
    with pg.connect(server, db, autocommit=False) as conn:
        cols = pg.fetch_all(conn, _COLUMNS, (quoted,))
        names = pg.sql.SQL(", ").join(pg.sql.Identifier(str(c["name"])) for c in cols)
        override = (
            pg.sql.SQL(" OVERRIDING SYSTEM VALUE")
            if any(c["identity"] == "a" for c in cols)
            else pg.sql.SQL("")
        )
        conn.execute(pg.sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL)").format(dst, src))
        conn.execute(
            pg.sql.SQL("INSERT INTO {} ({}){} SELECT {} FROM {}").format(
                dst, names, override, names, src
            )
        )
        copied = '"{}"."{}"'.format(copy.schema.replace('"', '""'), name.replace('"', '""'))
        for col in pg.fetch_all(conn, _SEQUENCE_DEFAULTS, (copied,)):
            conn.execute(
                pg.sql.SQL("ALTER TABLE {} ALTER COLUMN {} DROP DEFAULT").format(
                    dst, pg.sql.Identifier(str(col["name"]))
                )
            )
        conn.commit()
    return copy
