"""Synthetic WAL files with valid page headers, for tests that need no server."""

from __future__ import annotations

import os
import struct
from pathlib import Path

from pgvault.walfile import DEFAULT_SEG_SIZE, parse_name

PG15_MAGIC = 0xD110


def segment_bytes(
    name: str,
    sysid: int = 7000000000000000001,
    seg_size: int = DEFAULT_SEG_SIZE,
    fill: bytes | None = None,
) -> bytes:
    wal = parse_name(name)
    header = struct.pack(
        "<HHIQI4xQII",
        PG15_MAGIC,
        0x0002,
        wal.timeline,
        wal.start_lsn(seg_size),
        0,
        sysid,
        seg_size,
        8192,
    )
    body = fill if fill is not None else os.urandom(4096)
    data = bytearray(seg_size)
    data[: len(header)] = header
    data[len(header) : len(header) + len(body)] = body
    return bytes(data)


def write_segment(directory: Path, name: str, **kw: object) -> Path:
    path = directory / name
    path.write_bytes(segment_bytes(name, **kw))  # type: ignore[arg-type]
    return path
