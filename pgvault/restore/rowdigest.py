"""Row digests: the same rows give the same digest, whatever their physical order."""

from __future__ import annotations

from pgvault import pg
from pgvault.pgtables import TableRef

_DIGEST = (
    "SELECT count(*) AS n, md5(coalesce(string_agg(h, '' ORDER BY h), '')) AS digest "
    "FROM (SELECT md5(t::text) AS h FROM ONLY {} t) x"
)


def row_digest(conn: pg.Connection, table: TableRef) -> tuple[int, str]:
    """(rows, md5 of the sorted md5s of every row's text) of one table (ONLY)."""
    query = pg.sql.SQL(_DIGEST).format(
        pg.sql.SQL("{}.{}").format(pg.sql.Identifier(table.schema), pg.sql.Identifier(table.name))
    )
    row = pg.fetch_one(conn, query)
    assert row is not None
    return int(row["n"]), str(row["digest"])
