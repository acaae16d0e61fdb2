"""age keys: `pgvault keys generate` writes an identity the way age-keygen does.

The production host needs only the recipient (public key, `[encryption] recipients`);
the identity (private key) belongs where restores, drills and content verification run,
and on an offline break-glass medium. The file format is age's, so `age -d -i FILE`
decrypts pgvault's objects without pgvault.
"""

from __future__ import annotations

import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pgvault import fsutil
from pgvault.errors import EncryptionError, UsageError

if TYPE_CHECKING:
    from pgvault.config import Settings


def generate(path: Path, *, force: bool = False) -> str:
    """Write a new identity to `path` (mode 0600); returns its recipient."""
    import pyrage

    if path.exists() and not force:
        raise UsageError(f"{path} exists; refusing to overwrite a key (use --force)")
    identity = pyrage.x25519.Identity.generate()
    recipient = str(identity.to_public())
    created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    text = f"# created: {created}\n# public key: {recipient}\n{identity}\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fsutil.write_atomic(path, text.encode(), mode=0o600)
    except OSError as exc:
        raise EncryptionError(f"cannot write {path}: {exc.strerror or exc}") from None
    return recipient


def loose_permissions(path: Path) -> bool:
    """True when an identity file is readable by group or others."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return bool(mode & (stat.S_IRWXG | stat.S_IRWXO))


def identities_for(settings: Settings) -> list[Any]:
    """age identities for content verification and restores, when configured."""
    from pgvault.storage.codec import load_identities

    path = settings.encryption.identity_file
    return load_identities(path) if path else []
