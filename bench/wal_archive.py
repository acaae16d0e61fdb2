"""archive_command cost per 16 MiB segment: `pgvault wal-archive` vs
`pgbackrest archive-push` (posix repo, compress-type=zst) on the same real segments,
side by side in one run; then the end-to-end lag from pg_switch_wal() to "verified in
the catalog" with the local store.

    .venv/bin/python bench/wal_archive.py [--segments 20] [--lag-samples 20]
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import time
from pathlib import Path

from common import AMQP, PgvaultEnv, as_postgres, chown_pg, cleanup, fmt_ms, stats, workdir
from common import pgvault_for_postgres as pg_bin_for_postgres


def collect_segments(env: PgvaultEnv, count: int) -> list[Path]:
    """Fill `count` segments with table data; the pgvault spool keeps copies of them."""
    pg = env.pg
    assert pg is not None
    pg.sql("CREATE TABLE IF NOT EXISTS bench (id bigserial, v text)")
    names = []
    while len(names) < count:
        pg.sql("INSERT INTO bench(v) SELECT md5(random()::text) FROM generate_series(1, 150000)")
        names.append(pg.switch_wal())
    pg.wait_archived(names[-1], 120)
    segs = sorted(p for p in (env.spool / "wal").iterdir() if len(p.name) == 24)
    return segs[:count]


def pgbackrest_setup(base: Path, env: PgvaultEnv, name: str) -> Path:
    pg = env.pg
    assert pg is not None
    root = base / name
    for sub in ("repo", "log", "lock", "spool"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    conf = root / "pgbackrest.conf"
    conf.write_text(
        "[global]\n"
        f"repo1-path={root / 'repo'}\nlog-path={root / 'log'}\nlock-path={root / 'lock'}\n"
        f"spool-path={root / 'spool'}\ncompress-type=zst\nlog-level-console=warn\n"
        "log-level-file=off\narchive-async=n\n\n"
        f"[bench]\npg1-path={pg.datadir}\npg1-port={pg.port}\npg1-socket-path={pg.sockdir}\n"
    )
    chown_pg(root)
    proc = as_postgres(["pgbackrest", f"--config={conf}", "--stanza=bench", "stanza-create"])
    if proc.returncode != 0:
        sys.exit(f"pgbackrest stanza-create failed: {proc.stderr or proc.stdout}")
    return conf


def time_cmd(args: list[str]) -> float:
    # PostgreSQL has fsynced a segment long before it calls archive_command; start each
    # run with no dirty pages, or ext4's journal makes the next fsync pay for them.
    os.sync()
    start = time.perf_counter()
    proc = as_postgres(args)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{args[0]} failed: {proc.stderr}")
    return elapsed


def pgvault_setup(base: Path, name: str) -> Path:
    spool = base / name
    spool.mkdir()
    chown_pg(spool)
    cfg = base / f"{name}.toml"
    cfg.write_text(f'cluster = "bench"\nspool_dir = "{spool}"\n')
    cfg.chmod(0o644)
    return cfg


def report(title: str, ours: list[float], theirs: list[float]) -> None:
    s_ours, s_theirs = stats(ours), stats(theirs)
    print(f"  {title}")
    print(f"    pgvault wal-archive        {fmt_ms(s_ours)}")
    print(f"    pgbackrest archive-push    {fmt_ms(s_theirs)}")
    print(
        f"    ratio pgvault/pgbackrest   mean {s_ours['mean'] / s_theirs['mean']:.2f}  "
        f"p50 {s_ours['p50'] / s_theirs['p50']:.2f}"
    )


def bench_archive(base: Path, env: PgvaultEnv, segs: list[Path], pgvault: Path) -> None:
    src = base / "segments"
    src.mkdir()
    for seg in segs:
        (src / seg.name).write_bytes(seg.read_bytes())
    chown_pg(src)
    noop = time_cmd(["true"])  # runuser's own cost, paid by both tools alike

    def ours_cmd(cfg: Path, seg: Path) -> list[str]:
        return [str(pgvault), "--config", str(cfg), "wal-archive", str(seg), seg.name]

    def theirs_cmd(conf: Path, seg: Path) -> list[str]:
        return ["pgbackrest", f"--config={conf}", "--stanza=bench", "archive-push", str(seg)]

    print(
        f"\narchive_command, {len(segs)} real 16 MiB segments, each tool into an empty "
        f"archive (runuser -u postgres alone costs {noop * 1000:.1f} ms):"
    )
    # 1. interleaved: the same segment through both tools back to back, order alternating
    cfg, conf = pgvault_setup(base, "spool-a"), pgbackrest_setup(base, env, "pgbackrest-a")
    ours, theirs = [], []
    order = list(range(len(segs)))
    random.Random(1).shuffle(order)
    for i in order:
        seg = src / segs[i].name
        pair = [("pgvault", ours_cmd(cfg, seg)), ("pgbackrest", theirs_cmd(conf, seg))]
        if i % 2:
            pair.reverse()
        for tool, args in pair:
            (ours if tool == "pgvault" else theirs).append(time_cmd(args))
    report("interleaved (same segment through both, alternating order):", ours, theirs)
    # 2. each tool alone over all segments (no interference from the other's writeback)
    cfg, conf = pgvault_setup(base, "spool-b"), pgbackrest_setup(base, env, "pgbackrest-b")
    ours = [time_cmd(ours_cmd(cfg, src / s.name)) for s in segs]
    theirs = [time_cmd(theirs_cmd(conf, src / s.name)) for s in segs]
    report("each tool alone, one after the other:", ours, theirs)
    print(
        "  (pgBackRest compresses with zstd inside archive-push; pgvault copies, hashes and "
        "fsyncs, and compresses later in the upload worker, by design)"
    )


def bench_lag(env: PgvaultEnv, samples: int) -> None:
    pg = env.pg
    assert pg is not None
    env.start_pipeline()
    try:
        pg.sql("CREATE TABLE IF NOT EXISTS lag (id bigserial, at timestamptz)")
        time.sleep(2)
        lags = []
        cat = env.catalog()
        for _ in range(samples):
            pg.sql("INSERT INTO lag(at) SELECT now() FROM generate_series(1, 20000)")
            name = pg.one("SELECT pg_walfile_name(pg_current_wal_insert_lsn())")
            start = time.perf_counter()
            pg.sql("SELECT pg_switch_wal()")
            deadline = start + 60
            while time.perf_counter() < deadline:
                row = cat.query("SELECT state FROM artifacts WHERE kind='wal' AND name=?", (name,))
                if row and row[0]["state"] == "verified":
                    break
                time.sleep(0.01)
            lags.append(time.perf_counter() - start)
        s = stats(lags)
        print(
            f"\nend-to-end lag pg_switch_wal() -> verified in catalog (local store), "
            f"{samples} samples:"
        )
        print(f"  {fmt_ms(s)}")
    finally:
        env.stop_pipeline()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--segments", type=int, default=20)
    parser.add_argument("--lag-samples", type=int, default=20)
    args = parser.parse_args()
    if subprocess.run(["which", "pgbackrest"], capture_output=True).returncode:
        sys.exit("pgbackrest is not installed (make services installs it)")
    base = workdir("wal")
    pgvault = pg_bin_for_postgres()
    env = (
        PgvaultEnv(base / "env", AMQP, {"type": "local", "path": str(base / "store")}, pgvault)
        if (base / "env").mkdir() is None
        else None
    )
    assert env is not None
    try:
        env.cli("init")
        env.make_pg()
        segs = collect_segments(env, args.segments)
        bench_archive(base, env, segs, pgvault)
        bench_lag(env, args.lag_samples)
    finally:
        env.close()
        cleanup(base)


if __name__ == "__main__":
    main()
