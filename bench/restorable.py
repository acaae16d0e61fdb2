"""`catalog restorable` at scale: a synthetic catalog of N WAL segments (one every 5
minutes, a weekly base backup, daily dumps of two databases), then the questions timed.

    .venv/bin/python bench/restorable.py [--segments 1000000]
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import UTC, datetime, timedelta

from common import cleanup, workdir

from pgvault.catalog.restorable import merged, restorable_at, windows
from pgvault.catalog.wal import chains
from tests.synthetic import big_catalog, logical_row


def timed(fn, repeat: int = 20) -> float:  # type: ignore[no-untyped-def]
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--segments", type=int, default=1_000_000)
    args = parser.parse_args()
    base = workdir("restorable")
    start = datetime(2017, 1, 1, tzinfo=UTC)
    try:
        t0 = time.perf_counter()
        cat = big_catalog(base / "catalog.sqlite", args.segments, start=start)
        days = args.segments * 5 // (60 * 24)
        for db in ("medusa_production", "strapi_production"):
            for day in range(0, days, max(1, days // 400)):
                logical_row(cat, db, f"D{day:06d}", start + timedelta(days=day))
        build = time.perf_counter() - t0
        size = (base / "catalog.sqlite").stat().st_size
        end = start + timedelta(minutes=5 * args.segments)
        recent = end - timedelta(days=2)
        print(
            f"synthetic catalog: {args.segments:,} WAL segments, "
            f"{len(windows(cat))} base backups, {size / 2**20:.0f} MiB, built in {build:.0f}s"
        )
        cases = [
            ("restorable --at (2 days ago)", lambda: restorable_at(cat, recent), 20),
            ("restorable --at (before backups)", lambda: restorable_at(cat, start), 20),
            ("restorable (all windows, merged)", lambda: merged(windows(cat)), 20),
            ("catalog gaps (all timelines)", lambda: chains(cat.conn), 5),
        ]
        for label, fn, repeat in cases:
            print(f"  {label:34s} median {timed(fn, repeat) * 1000:8.1f} ms")
    finally:
        cleanup(base)


if __name__ == "__main__":
    main()
