"""Message authentication between stages (invariant 12).

Every message a pgvault stage publishes carries the header

    x-pgvault-hmac: <key id>:<hex HMAC-SHA256 of the message body>

computed with the cluster's message key; every stage verifies it before it parses or
acts on a message. A message without the header, with an unknown key id or a wrong MAC
is refused (dead-lettered with an alert), so nothing that merely holds broker
credentials can make the catalog call a segment verified.

The key file (`[broker] hmac_key_file`, default `pgvault-<cluster>.hmac.json` beside the
catalog) is JSON, mode 0600, owned by the service user, written by `pgvault init` and
rotated by `pgvault keys rotate-hmac`:

    {"format": "pgvault-hmac-keys", "version": 1, "cluster": "main",
     "keys": [{"id": "20261124T000000Z-3f2a9c1e", "secret": "<64 hex>",
               "created": "2026-11-24T00:00:00Z", "expires": null}, ...]}

The first key signs; every key whose `expires` is unset or in the future verifies
(rotation keeps the previous key for a grace period so queued messages still pass).
Processes re-read the file when it changes, so a rotation needs no restart.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pgvault import fsutil
from pgvault.errors import MessageAuthError, MessageKeyError

HMAC_HEADER = "x-pgvault-hmac"
KEY_FORMAT = "pgvault-hmac-keys"
DEFAULT_GRACE = timedelta(hours=24)


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


@dataclass(frozen=True)
class HmacKey:
    id: str
    secret: bytes
    created: datetime
    expires: datetime | None = None

    @classmethod
    def generate(cls, now: datetime | None = None) -> HmacKey:
        now = now or datetime.now(UTC)
        key_id = f"{now.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(4)}"
        return cls(key_id, secrets.token_bytes(32), now)

    def valid_at(self, now: datetime) -> bool:
        return self.expires is None or now < self.expires

    def mac(self, body: bytes) -> str:
        return hmac.new(self.secret, body, hashlib.sha256).hexdigest()

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "secret": self.secret.hex(),
            "created": _iso(self.created),
            "expires": _iso(self.expires) if self.expires else None,
        }


@dataclass(frozen=True)
class KeyRing:
    cluster: str
    keys: tuple[HmacKey, ...]  # first one signs

    @property
    def current(self) -> HmacKey:
        return self.keys[0]

    def dumps(self) -> bytes:
        data = {
            "format": KEY_FORMAT,
            "version": 1,
            "cluster": self.cluster,
            "keys": [k.to_json() for k in self.keys],
        }
        return (json.dumps(data, indent=2) + "\n").encode()

    @classmethod
    def loads(cls, raw: bytes, where: str) -> KeyRing:
        try:
            data = json.loads(raw)
            if data.get("format") != KEY_FORMAT:
                raise ValueError("not a pgvault message key file")
            keys = tuple(
                HmacKey(
                    str(k["id"]),
                    bytes.fromhex(k["secret"]),
                    _parse_time(k["created"]),
                    _parse_time(k["expires"]) if k.get("expires") else None,
                )
                for k in data["keys"]
            )
            if not keys or any(len(k.secret) < 16 for k in keys):
                raise ValueError("no usable key")
            return cls(str(data["cluster"]), keys)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise MessageKeyError(f"message key file {where} is unusable ({exc})") from None

    def rotated(self, grace: timedelta, now: datetime | None = None) -> KeyRing:
        """A new signing key; the old one keeps verifying for `grace`, expired ones go."""
        now = now or datetime.now(UTC)
        old = [
            HmacKey(k.id, k.secret, k.created, min(k.expires or now + grace, now + grace))
            for k in self.keys
            if k.valid_at(now)
        ]
        kept = [k for k in old if k.expires is not None and k.expires > now]
        return KeyRing(self.cluster, (HmacKey.generate(now), *kept))


def read_ring(path: Path) -> KeyRing:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise MessageKeyError(
            f"no message key at {path}; run `pgvault init` (or copy the key file from the "
            "host where it was created)"
        ) from None
    except OSError as exc:
        raise MessageKeyError(f"cannot read message key {path}: {exc.strerror or exc}") from None
    return KeyRing.loads(raw, str(path))


def write_ring(path: Path, ring: KeyRing, owner: tuple[int, int] | None = None) -> None:
    """Atomically (re)write the key file with mode 0600 (owner: uid, gid when root)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fsutil.write_atomic(path, ring.dumps(), mode=0o600)
        os.chmod(path, 0o600)
        if owner is not None and os.geteuid() == 0:
            os.chown(path, *owner)
    except OSError as exc:
        raise MessageKeyError(f"cannot write message key {path}: {exc.strerror or exc}") from None


def create_key_file(path: Path, cluster: str, owner: tuple[int, int] | None = None) -> bool:
    """Create the key file if it does not exist; True when it was created. An existing
    file is checked (readable, this cluster's) and left alone."""
    if path.exists():
        ring = read_ring(path)
        if ring.cluster != cluster:
            raise MessageKeyError(
                f"{path} holds the key of cluster {ring.cluster!r}, not {cluster!r}"
            )
        if owner is not None and os.geteuid() == 0:
            os.chown(path, *owner)
        return False
    write_ring(path, KeyRing(cluster, (HmacKey.generate(),)), owner)
    return True


def rotate_key_file(path: Path, cluster: str, grace: timedelta = DEFAULT_GRACE) -> KeyRing:
    ring = read_ring(path)
    if ring.cluster != cluster:
        raise MessageKeyError(f"{path} holds the key of cluster {ring.cluster!r}, not {cluster!r}")
    st = path.stat()
    new = ring.rotated(grace)
    write_ring(path, new, (st.st_uid, st.st_gid))
    return new


class MessageAuth:
    """Signs outgoing and verifies incoming message bodies for one cluster."""

    def __init__(self, cluster: str, path: Path | None = None, ring: KeyRing | None = None) -> None:
        if path is None and ring is None:
            raise ValueError("MessageAuth needs a key file or a key ring")
        self.cluster = cluster
        self.path = path
        self._ring = ring
        self._stamp: tuple[int, int, int] | None = None
        self._lock = threading.Lock()

    @classmethod
    def ephemeral(cls, cluster: str) -> MessageAuth:
        """A random in-memory key: for brokers built without settings (tests, tools),
        whose publishers and consumers share the object."""
        return cls(cluster, ring=KeyRing(cluster, (HmacKey.generate(),)))

    def ring(self) -> KeyRing:
        """The key ring, re-read when the file changed (rotation needs no restart)."""
        if self.path is None:
            assert self._ring is not None
            return self._ring
        with self._lock:
            try:
                st = self.path.stat()
                stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
            except OSError:
                stamp = None
            if self._ring is None or stamp != self._stamp:
                ring = read_ring(self.path)
                if ring.cluster != self.cluster:
                    raise MessageKeyError(
                        f"{self.path} holds the key of cluster {ring.cluster!r}, "
                        f"not {self.cluster!r}"
                    )
                self._ring, self._stamp = ring, stamp
            return self._ring

    def sign(self, body: bytes) -> dict[str, str]:
        key = self.ring().current
        return {HMAC_HEADER: f"{key.id}:{key.mac(body)}"}

    def verify(self, body: bytes, headers: Mapping[str, Any]) -> str:
        """The id of the key that signed `body`; MessageAuthError when the header is
        missing, names an unknown or expired key, or the MAC does not match."""
        value = headers.get(HMAC_HEADER)
        if isinstance(value, bytes):
            value = value.decode("ascii", "replace")
        if not isinstance(value, str) or ":" not in value:
            raise MessageAuthError(
                "unauthenticated message (no x-pgvault-hmac header): not from a pgvault "
                f"stage of cluster {self.cluster!r}; refused"
            )
        key_id, _, mac = value.rpartition(":")
        now = datetime.now(UTC)
        for key in self.ring().keys:
            if key.id == key_id:
                if not key.valid_at(now):
                    raise MessageAuthError(f"message signed with expired key {key_id}; refused")
                if not hmac.compare_digest(key.mac(body), mac):
                    raise MessageAuthError(
                        f"message authentication failed (bad HMAC for key {key_id}): forged "
                        "or altered; refused"
                    )
                return key.id
        raise MessageAuthError(
            f"message signed with unknown key {key_id[:40]!r} (another cluster, or a key "
            "rotated out); refused"
        )
