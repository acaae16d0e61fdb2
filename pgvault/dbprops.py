"""What a database is besides its contents (`pg_dump --create` semantics).

`database_properties(conn, db)` reads them at backup time into the manifest key
`database_properties`; a whole-database restore creates the new database with the same
encoding, locale provider, ICU locale, collation and ctype, and afterwards applies the
comment, CONNECTION LIMIT, ACL, `ALTER DATABASE ... SET` and `ALTER ROLE ... IN DATABASE
... SET` settings (`apply_properties`); `differences` compares the source's record with
the restored database, and a difference fails the restore and the drill.

Not re-applied (recorded only): IS_TEMPLATE and ALLOW_CONNECTIONS (a restored copy must
stay droppable and reachable), the default tablespace (restored into the server default).
"""

from __future__ import annotations

import re
from typing import Any, TypedDict

from pgvault import pg
from pgvault.pg import sql

PROVIDERS = {"c": "libc", "i": "icu", "b": "builtin"}
# GUCs whose value is a list of quoted items (pg_dump's variable_is_guc_list_quote)
LIST_GUCS = frozenset(
    {
        "local_preload_libraries",
        "search_path",
        "session_preload_libraries",
        "shared_preload_libraries",
        "temp_tablespaces",
        "unix_socket_directories",
    }
)
COMPARED = (
    "encoding",
    "locale_provider",
    "collate",
    "ctype",
    "icu_locale",
    "icu_rules",
    "owner",
    "comment",
    "connection_limit",
    "acl",
    "settings",
)


class Grant(TypedDict):
    grantee: str  # role name, or "PUBLIC"
    privilege: str  # CONNECT | CREATE | TEMPORARY
    grantable: bool


class RoleSetting(TypedDict):
    role: str | None  # None: ALTER DATABASE ... SET (every role)
    setting: str  # "name=value" as stored in pg_db_role_setting


class DatabaseProperties(TypedDict):
    name: str
    owner: str
    encoding: str
    locale_provider: str  # libc | icu | builtin
    collate: str
    ctype: str
    icu_locale: str | None
    icu_rules: str | None
    comment: str | None
    connection_limit: int
    is_template: bool
    allow_connections: bool
    acl: list[Grant] | None  # None: the default privileges (datacl IS NULL)
    settings: list[RoleSetting]


def database_properties(conn: pg.Connection, db: str) -> DatabaseProperties:
    """The properties of database `db` on the connected server (any database will do)."""
    row = pg.fetch_one(
        conn,
        "SELECT to_jsonb(d) AS d, pg_get_userbyid(d.datdba) AS owner, "
        "pg_encoding_to_char(d.encoding) AS encoding, "
        "shobj_description(d.oid, 'pg_database') AS comment, d.datacl IS NULL AS default_acl "
        "FROM pg_database d WHERE d.datname = %s",
        (db,),
    )
    if row is None:
        raise LookupError(f"database {db} does not exist")
    d: dict[str, Any] = row["d"]
    provider = PROVIDERS.get(str(d.get("datlocprovider") or "c"), "libc")
    acl: list[Grant] | None = None
    if not row["default_acl"]:
        grants = pg.fetch_all(
            conn,
            "SELECT coalesce(r.rolname, 'PUBLIC') AS grantee, a.privilege_type AS privilege, "
            "a.is_grantable AS grantable FROM pg_database d, aclexplode(d.datacl) a "
            "LEFT JOIN pg_roles r ON r.oid = a.grantee WHERE d.datname = %s",
            (db,),
        )
        acl = sorted(
            (
                Grant(grantee=g["grantee"], privilege=g["privilege"], grantable=g["grantable"])
                for g in grants
            ),
            key=lambda g: (g["grantee"], g["privilege"], g["grantable"]),
        )
    rows = pg.fetch_all(
        conn,
        "SELECT r.rolname AS role, unnest(s.setconfig) AS setting FROM pg_db_role_setting s "
        "JOIN pg_database d ON d.oid = s.setdatabase "
        "LEFT JOIN pg_roles r ON r.oid = s.setrole WHERE d.datname = %s",
        (db,),
    )
    settings = sorted(
        (RoleSetting(role=r["role"], setting=r["setting"]) for r in rows),
        key=lambda s: (s["role"] or "", s["setting"]),
    )
    return DatabaseProperties(
        name=db,
        owner=row["owner"],
        encoding=row["encoding"],
        locale_provider=provider,
        collate=d["datcollate"],
        ctype=d["datctype"],
        icu_locale=(d.get("daticulocale") or d.get("datlocale")) if provider != "libc" else None,
        icu_rules=d.get("daticurules"),
        comment=row["comment"],
        connection_limit=int(d["datconnlimit"]),
        is_template=bool(d["datistemplate"]),
        allow_connections=bool(d["datallowconn"]),
        acl=acl,
        settings=settings,
    )


def locale_clause(props: dict[str, Any], server_num: int) -> sql.Composable:
    """LOCALE_PROVIDER / ICU_LOCALE / ICU_RULES for CREATE DATABASE, where this server
    knows them (PostgreSQL 15+; ICU rules 16+)."""
    provider = props.get("locale_provider") or "libc"
    if server_num < 150000 or provider == "libc":
        return sql.SQL("")
    out: sql.Composable = sql.SQL(" LOCALE_PROVIDER {}").format(sql.SQL(provider))
    if props.get("icu_locale"):
        word = "ICU_LOCALE" if provider == "icu" else "BUILTIN_LOCALE"
        out += sql.SQL(" {} {}").format(sql.SQL(word), sql.Literal(props["icu_locale"]))
    if props.get("icu_rules") and server_num >= 160000:
        out += sql.SQL(" ICU_RULES {}").format(sql.Literal(props["icu_rules"]))
    return out


def split_guc_list(value: str) -> list[str]:
    """'"$user", public' -> ['$user', 'public'] (pg_dump's SplitGUCList)."""
    items = re.findall(r'\s*(?:"((?:[^"]|"")*)"|([^,]*?))\s*(?:,|$)', value)
    out = [q.replace('""', '"') if q else p for q, p in items]
    while out and out[-1] == "":
        out.pop()
    return out


def _set_clause(setting: str) -> sql.Composable:
    name, _, value = setting.partition("=")
    values: sql.Composable
    if name.lower() in LIST_GUCS:
        values = sql.SQL(", ").join(sql.Literal(v) for v in split_guc_list(value))
    else:
        values = sql.Literal(value)
    return sql.SQL("SET {} TO {}").format(sql.Identifier(name), values)


def apply_properties(conn: pg.Connection, db: str, props: dict[str, Any]) -> list[str]:
    """Comment, connection limit, ACL and settings of `props` onto database `db`.
    Returns what could not be applied (roles that do not exist on this server)."""
    ident = sql.Identifier(db)
    roles = {r["rolname"] for r in pg.fetch_all(conn, "SELECT rolname FROM pg_roles")}
    missing: list[str] = []
    if props.get("comment") is not None:
        pg.fetch_all(
            conn,
            sql.SQL("COMMENT ON DATABASE {} IS {}").format(ident, sql.Literal(props["comment"])),
        )
    if props.get("connection_limit") is not None:
        pg.fetch_all(
            conn,
            sql.SQL("ALTER DATABASE {} CONNECTION LIMIT {}").format(
                ident, sql.Literal(int(props["connection_limit"]))
            ),
        )
    if props.get("acl") is not None:
        owner = str(
            pg.fetch_value(
                conn, "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (db,)
            )
        )
        for who in (sql.SQL("PUBLIC"), sql.Identifier(owner)):
            pg.fetch_all(conn, sql.SQL("REVOKE ALL ON DATABASE {} FROM {}").format(ident, who))
        for g in props["acl"]:
            if g["grantee"] != "PUBLIC" and g["grantee"] not in roles:
                missing.append(f"GRANT {g['privilege']} to missing role {g['grantee']}")
                continue
            grantee = (
                sql.SQL("PUBLIC") if g["grantee"] == "PUBLIC" else sql.Identifier(g["grantee"])
            )
            pg.fetch_all(
                conn,
                sql.SQL("GRANT {} ON DATABASE {} TO {}{}").format(
                    sql.SQL(g["privilege"]),
                    ident,
                    grantee,
                    sql.SQL(" WITH GRANT OPTION" if g["grantable"] else ""),
                ),
            )
    for s in props.get("settings") or []:
        role = s.get("role")
        if role is None:
            query = sql.SQL("ALTER DATABASE {} ").format(ident) + _set_clause(s["setting"])
        elif role in roles:
            query = sql.SQL("ALTER ROLE {} IN DATABASE {} ").format(
                sql.Identifier(role), ident
            ) + _set_clause(s["setting"])
        else:
            missing.append(f"setting {s['setting']} of missing role {role}")
            continue
        pg.fetch_all(conn, query)
    return missing


def differences(expected: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    """'what: source X, restored Y' for each compared property that differs."""
    out = []
    for key in COMPARED:
        if key in expected and expected[key] != actual.get(key):
            out.append(f"{key}: source {expected[key]!r}, restored {actual.get(key)!r}")
    return out


__all__ = [
    "DatabaseProperties",
    "apply_properties",
    "database_properties",
    "differences",
    "locale_clause",
]
