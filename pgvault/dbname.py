"""Database names in spool paths and object keys.

PostgreSQL accepts almost any name (`Ext DB/ü..`); paths and keys do not. A database
name becomes a path/key component by percent-encoding (RFC 3986 style, upper-case hex
of the UTF-8 bytes) of every byte outside `[A-Za-z0-9_.-]`, plus a leading dot (so the
component is never hidden, `.` or `..`). Plain names (`shop`, `app.v2`, `my-db`) are
unchanged, so existing spool directories and object keys keep their names. The encoding
is reversible (`decode(encode(n)) == n`); the original name is also recorded as `db` in
every manifest and catalog row, and that is what users pass to `--db`.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from pgvault.errors import UsageError

_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")
_ENCODED_RE = re.compile(r"^(?:[A-Za-z0-9_.-]|%[0-9A-F]{2})+$")
MAX_NAME_BYTES = 63  # NAMEDATALEN - 1


def check(name: str) -> str:
    """A name PostgreSQL could have given a database (non-empty, no NUL, <= 63 bytes)."""
    if not name or "\0" in name or len(name.encode()) > MAX_NAME_BYTES:
        raise UsageError(f"{name!r} is not a PostgreSQL database name")
    return name


def encode(name: str) -> str:
    """The path/key component for a database name: 'Ext DB/ü..' -> 'Ext%20DB%2F%C3%BC..'."""
    check(name)
    out = []
    for i, byte in enumerate(name.encode()):
        if byte in _SAFE and not (i == 0 and byte == ord(".")):
            out.append(chr(byte))
        else:
            out.append(f"%{byte:02X}")
    return "".join(out)


def decode(component: str) -> str:
    """The database name of an encoded path/key component."""
    if not _ENCODED_RE.match(component) or component.startswith("."):
        raise ValueError(f"{component!r} is not an encoded database name")
    return unquote(component, errors="strict")


__all__ = ["MAX_NAME_BYTES", "check", "decode", "encode"]
