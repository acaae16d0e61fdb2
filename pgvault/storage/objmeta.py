"""Object metadata written at upload and read back by verify, restore and rebuild.

Keys (S3 user metadata, lowercase ASCII):
    sha256             of the stored bytes (after compression/encryption)
    content-sha256     of the original file (what the producer wrote and checksummed)
    content-size       original size in bytes
    pgvault-kind       wal | history | logical | physical
    pgvault-name       artifact name
    pgvault-codec      zstd | none
    pgvault-encryption age | none
    pgvault-recipients comma-separated age recipients the object was encrypted to
    pgvault-meta       compact JSON of the catalog facts (WAL: timeline, LSNs, commit times)
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from pgvault.schemas import FileInfo
from pgvault.storage.codec import Digest, Encoding


def build(
    *,
    kind: str,
    name: str,
    original: FileInfo,
    encoding: Encoding,
    stored: Digest,
    meta: Mapping[str, Any] | None = None,
    recipients: Sequence[str] = (),
) -> dict[str, str]:
    data = {
        "sha256": stored.sha256,
        "content-sha256": original.sha256,
        "content-size": str(original.size),
        "pgvault-kind": kind,
        "pgvault-name": name,
        "pgvault-codec": encoding.codec,
        "pgvault-encryption": encoding.encryption,
    }
    if recipients:
        data["pgvault-recipients"] = ",".join(recipients)
    if meta:
        data["pgvault-meta"] = json.dumps(dict(meta), separators=(",", ":"), sort_keys=True)
    return data


def encoding_of(metadata: Mapping[str, str], default: Encoding | None = None) -> Encoding:
    if "pgvault-codec" not in metadata and default is not None:
        return default
    return Encoding(
        metadata.get("pgvault-codec", "none"), metadata.get("pgvault-encryption", "none")
    )


def facts_of(metadata: Mapping[str, str]) -> dict[str, Any]:
    try:
        value = json.loads(metadata.get("pgvault-meta", "{}"))
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
