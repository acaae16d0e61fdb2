"""Cost of age encryption on the upload and restore paths (issue 10).

Encodes and decodes the same files with and without recipients through pgvault's own
codec (the code upload, verify, restore and wal-restore use), on one core:
  - a 512 MiB already-compressed file (a base.tar.zst / dump stand-in): age only
  - 32 real-looking 16 MiB WAL segments: zstd, then age

    .venv/bin/python bench/encryption.py
"""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

from common import cleanup, workdir

from pgvault.keys import generate
from pgvault.storage.codec import decode_stream, encode_file, load_identities


def rate(nbytes: int, secs: float) -> str:
    return f"{nbytes / secs / 2**20:7.0f} MiB/s"


def run(
    label: str,
    files: list[Path],
    compress: bool,
    recipients: list[str],
    identities: list[object],
    out: Path,
) -> tuple[float, float]:
    total = sum(f.stat().st_size for f in files)
    t_enc = t_dec = 0.0
    for f in files:
        t0 = time.perf_counter()
        encoding, _s, _c = encode_file(f, out, compress=compress, recipients=recipients)
        t_enc += time.perf_counter() - t0
        t0 = time.perf_counter()
        with out.open("rb") as fh:
            decode_stream(fh, None, encoding, identities)
        t_dec += time.perf_counter() - t0
    print(f"  {label:34s} encode {rate(total, t_enc)}   decode {rate(total, t_dec)}")
    return t_enc, t_dec


def main() -> None:
    base = workdir("encryption")
    try:
        recipient = generate(base / "id.txt")
        ident = load_identities(base / "id.txt")
        big = base / "base.tar.zst"
        with big.open("wb") as fh:
            for _ in range(512):
                fh.write(os.urandom(1 << 20))
        segments = []
        for i in range(32):
            seg = base / f"seg{i}"
            text = io.BytesIO()
            while text.tell() < 16 << 20:
                text.write(os.urandom(64).hex().encode() + b" INSERT INTO orders VALUES ... ")
            seg.write_bytes(text.getvalue()[: 16 << 20])
            segments.append(seg)
        out = base / "out"
        print("512 MiB incompressible file (dumps, base backups: stored as-is):")
        plain = run("no encryption", [big], False, [], [], out)
        enc = run("age", [big], False, [recipient], ident, out)
        print(f"  overhead: encode x{enc[0] / plain[0]:.2f}, decode x{enc[1] / plain[1]:.2f}")
        print("32 x 16 MiB WAL-like segments (zstd level 3):")
        plain = run("zstd", segments, True, [], [], out)
        enc = run("zstd + age", segments, True, [recipient], ident, out)
        print(f"  overhead: encode x{enc[0] / plain[0]:.2f}, decode x{enc[1] / plain[1]:.2f}")
    finally:
        cleanup(base)


if __name__ == "__main__":
    main()
