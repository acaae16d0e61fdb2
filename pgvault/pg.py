"""PostgreSQL adapter (psycopg). The only module that imports psycopg.

Connection failures and SQL errors become PostgresError with one line that names the
server and never the password. `sql` is psycopg's composition module, re-exported so
callers quote identifiers with `sql.Identifier` without importing psycopg themselves.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg  # noqa: TID251 - this module is the psycopg adapter
from psycopg import sql  # noqa: TID251
from psycopg.rows import dict_row  # noqa: TID251

from pgvault.config import PostgresSettings
from pgvault.errors import PostgresError

__all__ = [
    "Connection",
    "PostgresError",
    "cancel",
    "connect",
    "fetch_all",
    "fetch_one",
    "fetch_value",
    "sql",
]

Connection = psycopg.Connection[dict[str, Any]]
Query = str | sql.Composable


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def conninfo(
    settings: PostgresSettings, dbname: str | None = None, **overrides: Any
) -> dict[str, Any]:
    """libpq keywords; the password comes from PGPASSWORD/.pgpass, never from here."""
    info: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "user": settings.user,
        "dbname": dbname or settings.dbname,
        "connect_timeout": 10,
        "application_name": "pgvault",
    }
    info.update(overrides)
    return info


@contextlib.contextmanager
def connect(
    settings: PostgresSettings,
    dbname: str | None = None,
    *,
    autocommit: bool = True,
    **overrides: Any,
) -> Iterator[Connection]:
    info = conninfo(settings, dbname, **overrides)
    where = f"{info['host']}:{info['port']}/{info['dbname']} as {info['user']}"
    try:
        conn = psycopg.connect(autocommit=autocommit, row_factory=dict_row, **info)
    except psycopg.OperationalError as exc:
        raise PostgresError(f"cannot connect to PostgreSQL {where}: {_first_line(exc)}") from None
    try:
        yield conn
    except psycopg.Error as exc:
        raise PostgresError(f"PostgreSQL {where}: {_first_line(exc)}") from None
    finally:
        conn.close()


def fetch_all(
    conn: Connection, query: Query, params: Sequence[Any] | dict[str, Any] = ()
) -> list[dict[str, Any]]:
    try:
        with conn.cursor() as cur:
            cur.execute(query, params)  # type: ignore[arg-type]
            return list(cur.fetchall()) if cur.description else []
    except psycopg.Error as exc:
        raise PostgresError(f"query failed: {_first_line(exc)}") from None


def fetch_one(
    conn: Connection, query: Query, params: Sequence[Any] | dict[str, Any] = ()
) -> dict[str, Any] | None:
    rows = fetch_all(conn, query, params)
    return rows[0] if rows else None


def fetch_value(conn: Connection, query: Query, params: Sequence[Any] | dict[str, Any] = ()) -> Any:
    row = fetch_one(conn, query, params)
    return next(iter(row.values())) if row else None


def cancel(conn: Connection, timeout: float = 5.0) -> None:
    """Ask the server to cancel the statement `conn` runs (from another thread); best
    effort: nothing happens when it is between statements."""
    with contextlib.suppress(psycopg.Error):
        conn.cancel_safe(timeout=timeout)


def database_exists(conn: Connection, name: str) -> bool:
    return bool(fetch_value(conn, "SELECT 1 FROM pg_database WHERE datname = %s", (name,)))


def server_version_num(conn: Connection) -> int:
    return int(fetch_value(conn, "SHOW server_version_num"))
