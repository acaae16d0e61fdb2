"""Database-level operations for restores and drills: create, drop, rename, and
passing a database name to client programs. Identifiers are always quoted by psycopg."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from pgvault import pg
from pgvault.config import Settings
from pgvault.dbprops import locale_clause
from pgvault.errors import PgvaultError
from pgvault.pg import sql
from pgvault.pgtools import libpq_env
from pgvault.schemas.manifest import DatabaseInfo

log = logging.getLogger(__name__)


@contextlib.contextmanager
def maintenance(settings: Settings) -> Iterator[pg.Connection]:
    """A connection to the maintenance database (postgres.dbname), autocommit."""
    with pg.connect(settings.postgres) as conn:
        yield conn


def dbname_arg(name: str) -> str:
    """A database name as a libpq connection string, so that names containing '=' or
    looking like URIs are never parsed as connection options."""
    escaped = name.replace("\\", "\\\\").replace("'", "\\'")
    return f"dbname='{escaped}'"


def tool_env(settings: Settings) -> dict[str, str]:
    ps = settings.postgres
    return libpq_env(ps.host, ps.port, ps.user)


def role_exists(conn: pg.Connection, role: str) -> bool:
    return bool(pg.fetch_value(conn, "SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)))


def create_database(
    conn: pg.Connection,
    name: str,
    info: DatabaseInfo | None,
    props: dict[str, Any] | None = None,
) -> None:
    """CREATE DATABASE from template0 with the source database's encoding, locale
    (provider, ICU locale, collation, ctype) and owner, as recorded in the manifest
    (`database_properties`, else the older `database` key), where this server can
    honour them."""
    base = (info or DatabaseInfo()).model_dump()
    base.update({k: v for k, v in (props or {}).items() if v is not None})
    info = DatabaseInfo.model_validate(
        {k: base.get(k) for k in ("encoding", "collate", "ctype", "owner")}
    )
    query: sql.Composable = sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(
        sql.Identifier(name)
    )
    if info.encoding:
        query += sql.SQL(" ENCODING {}").format(sql.Literal(info.encoding))
    if info.collate and info.ctype:
        query += sql.SQL(" LC_COLLATE {} LC_CTYPE {}").format(
            sql.Literal(info.collate), sql.Literal(info.ctype)
        )
    if props:
        query += locale_clause(props, pg.server_version_num(conn))
    if info.owner and role_exists(conn, info.owner):
        query += sql.SQL(" OWNER {}").format(sql.Identifier(info.owner))
    pg.fetch_all(conn, query)


def drop_database(conn: pg.Connection, name: str) -> None:
    """DROP DATABASE IF EXISTS ... WITH (FORCE): sessions connected to it are ended."""
    pg.fetch_all(
        conn, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
    )


def rename_database(conn: pg.Connection, old: str, new: str) -> None:
    pg.fetch_all(
        conn,
        sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(old), sql.Identifier(new)),
    )


def drop_quietly(settings: Settings, name: str) -> None:
    """Best-effort clean-up after a failure; logs instead of raising."""
    try:
        with maintenance(settings) as conn:
            drop_database(conn, name)
    except PgvaultError as exc:
        log.warning("could not drop database %s: %s", name, exc)


def first_error(stderr: str) -> str:
    """The first error pg_restore reported (the last line is only a summary)."""
    lines = [ln.strip() for ln in (stderr or "").splitlines() if ln.strip()]
    for ln in lines:
        if "error:" in ln:
            return ln
    return lines[-1] if lines else "(no output)"
