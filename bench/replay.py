"""PITR replay: pgvault vs pgBackRest vs the floor, side by side in one run.

    .venv/bin/python bench/replay.py [--scale 100] [--transactions 50000] [--rounds 2]

One throw-away cluster, `pgbench -i -s SCALE`, archived by both tools in the same
archive_command (`pgvault wal-archive ... && pgbackrest archive-push %p`); a base backup
by each (`pgvault backup physical`, `pgbackrest backup --type=full`, and a bare
`pg_basebackup -Ft -Xstream` for the floor), then ~500 MiB of WAL by pgbench. Each round
restores to the end of that WAL (the same recovery_target_time) with:

- `pgvault restore pitr --start`, WAL from the spool;
- the same with the spool's WAL hidden: every segment from the store (zstd, verified);
- `pgbackrest restore --type=time` + start;
- floor, cp: untar the bare backup, restore_command = `cp <raw WAL dir>/%f %p`;
- floor, redo only: untar, every segment placed in pg_wal beforehand, restore_command
  = `false` (PostgreSQL's own redo on this machine: nothing is fetched at all).

Printed: total (files + replay), replay (server start -> recovery finished), replay
rate in MiB/s of WAL, ratios against pgBackRest and the cp floor, and a data check
(sum of pgbench balances identical in every restore).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from common import (
    AMQP,
    PG_BIN,
    PgvaultEnv,
    chown_pg,
    cleanup,
    start_and_wait,
    workdir,
)
from common import pgvault_for_postgres as pgvault_bin
from physical import balance, pgbench_to_target, show, start_cluster, stop, timed_as_postgres
from wal_archive import pgbackrest_setup

CP_FLOOR = "floor: untar + cp restore_command"
REDO_FLOOR = "floor: untar, WAL pre-placed (redo only)"


def server_dirs(base: Path, name: str) -> tuple[Path, Path]:
    datadir, sock = base / name, base / f"{name}-sock"
    datadir.mkdir(mode=0o700)
    sock.mkdir()
    chown_pg(datadir)
    chown_pg(sock)
    return datadir, sock


def recovery_settings(datadir: Path, sock: Path, port: int, target: str, command: str) -> None:
    with (datadir / "postgresql.auto.conf").open("a") as fh:
        fh.write(
            f"port = {port}\nunix_socket_directories = '{sock}'\narchive_mode = off\n"
            f"restore_command = '{command}'\nrecovery_target_time = '{target}'\n"
            "recovery_target_action = 'promote'\n"
        )
    (datadir / "recovery.signal").write_text("")
    chown_pg(datadir)


def replay_and_check(
    datadir: Path, sock: Path, port: int, t_files: float
) -> tuple[float, float, int]:
    """Start the restored cluster, read its balance, drop it: (total, replay seconds, balance)."""
    t_replay = start_and_wait(datadir, sock, port)
    got = balance(str(sock), port)
    stop(datadir)
    shutil.rmtree(datadir)
    shutil.rmtree(sock)
    return t_files + t_replay, t_replay, got


def floor(
    base: Path, bare: Path, wal_src: Path, target: str, port: int, *, preplace: bool
) -> tuple[float, float, int]:
    """Untar the bare base backup, then replay with `cp` (or with every segment in pg_wal)."""
    name = "r-floor-pre" if preplace else "r-floor-cp"
    datadir, sock = server_dirs(base, name)
    os.sync()
    t0 = time.perf_counter()
    subprocess.run(["tar", "-xf", str(bare / "base.tar"), "-C", str(datadir)], check=True)
    subprocess.run(
        ["tar", "-xf", str(bare / "pg_wal.tar"), "-C", str(datadir / "pg_wal")], check=True
    )
    if preplace:
        for seg in wal_src.iterdir():
            if len(seg.name) == 24:
                shutil.copyfile(seg, datadir / "pg_wal" / seg.name)
    command = "false" if preplace else f"cp {wal_src}/%f %p"
    recovery_settings(datadir, sock, port, target.replace("T", " "), command)
    t_files = time.perf_counter() - t0
    return replay_and_check(datadir, sock, port, t_files)


def pgbackrest_restore(base: Path, conf: Path, target: str, port: int) -> tuple[float, float, int]:
    datadir, sock = server_dirs(base, "r-pgbackrest")
    t_files = timed_as_postgres(
        [
            "pgbackrest",
            f"--config={conf}",
            "--stanza=bench",
            f"--pg1-path={datadir}",
            "--type=time",
            f"--target={target.replace('T', ' ')}",
            "--target-action=promote",
            "restore",
        ]
    )
    with (datadir / "postgresql.auto.conf").open("a") as fh:
        fh.write(f"port = {port}\nunix_socket_directories = '{sock}'\narchive_mode = off\n")
    return replay_and_check(datadir, sock, port, t_files)


def pgvault_restore(
    env: PgvaultEnv, base: Path, target: str, *, hide: bool
) -> tuple[float, float, int]:
    wal_dir = env.spool / "wal"
    if hide:
        wal_dir.rename(env.spool / "wal.hidden")
    target_dir = base / "r-pgvault"
    try:
        res = json.loads(
            env.cli(
                "restore", "pitr", "--to", target, "--target-dir", str(target_dir), "--start",
                "--json", timeout=3600,
            ).stdout
        )  # fmt: skip
        got = balance(res["socket_dir"], res["port"])
        stop(target_dir)
        shutil.rmtree(target_dir)
    finally:
        if hide:
            (env.spool / "wal.hidden").rename(wal_dir)
    return float(res["duration_s"]), float(res["replay_s"]), got


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=int, default=100)
    parser.add_argument("--transactions", type=int, default=50000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    base = workdir("replay")
    (base / "env").mkdir()
    env = PgvaultEnv(
        base / "env", AMQP, {"type": "local", "path": str(base / "store")}, pgvault_bin()
    )
    rest_root = base / "pgbackrest"
    conf = rest_root / "pgbackrest.conf"
    try:
        env.cli("init")
        pg, libpq = start_cluster(env, conf)
        timed_as_postgres(
            [str(PG_BIN / "pgbench"), "-i", "-q", "-s", str(args.scale), "postgres"], libpq
        )
        pgbackrest_setup(base, env, "pgbackrest")
        conf.write_text(
            conf.read_text().replace("[global]\n", "[global]\nprocess-max=2\nstart-fast=y\n")
        )
        env.start_pipeline()
        env.cli("backup", "physical")
        timed_as_postgres(
            ["pgbackrest", f"--config={conf}", "--stanza=bench", "--type=full", "backup"]
        )
        bare = base / "bare"
        bare.mkdir()
        chown_pg(bare)
        timed_as_postgres(
            [
                str(PG_BIN / "pg_basebackup"),
                "-D",
                str(bare),
                "-Ft",
                "-Xstream",
                "--checkpoint=fast",
            ],
            libpq,
        )
        wal_bytes, target, expected = pgbench_to_target(pg, libpq, args.transactions // 2)
        env.wait_for(lambda: all(r["state"] == "verified" for r in env.wal_rows()), 900, "WAL")
        env.stop_pipeline()
        pg.stop()
        # the raw segments the floor's `cp` reads (pgvault's spool holds them uncompressed)
        raw = base / "raw-wal"
        raw.mkdir()
        for seg in (env.spool / "wal").iterdir():
            if len(seg.name) == 24:
                shutil.copyfile(seg, raw / seg.name)
        chown_pg(raw)
        print(f"pgbench -s {args.scale}; WAL to replay: {wal_bytes / 2**20:.0f} MiB", flush=True)
        port = pg.port + 1
        spool_label, store_label = (
            "pgvault restore pitr (WAL from spool)",
            "pgvault restore pitr (WAL from store)",
        )
        runs = [
            (spool_label, lambda: pgvault_restore(env, base, target, hide=False)),
            (store_label, lambda: pgvault_restore(env, base, target, hide=True)),
            ("pgbackrest restore + start", lambda: pgbackrest_restore(base, conf, target, port)),
            (CP_FLOOR, lambda: floor(base, bare, raw, target, port, preplace=False)),
            (REDO_FLOOR, lambda: floor(base, bare, raw, target, port, preplace=True)),
        ]
        for rnd in range(args.rounds):
            print(f"\nround {rnd + 1} (load {os.getloadavg()[0]:.1f}):", flush=True)
            got: dict[str, tuple[float, float, int]] = {}
            for label, fn in runs if rnd % 2 == 0 else list(reversed(runs)):
                got[label] = fn()
                show(label, *got[label][:2], got[label][2], wal_bytes, expected)
            rest = got["pgbackrest restore + start"]
            cp = got[CP_FLOOR]
            for label in (runs[0][0], runs[1][0]):
                total, replay, _ = got[label]
                print(
                    f"  {label}: total / pgbackrest {total / rest[0]:.2f}, replay / pgbackrest "
                    f"{replay / rest[1]:.2f}; total / cp floor {total / cp[0]:.2f}",
                    flush=True,
                )
    finally:
        env.close()
        cleanup(base)


if __name__ == "__main__":
    main()
