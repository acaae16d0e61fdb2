"""`make demo`: the pgvault mission end to end on a throw-away PostgreSQL cluster.

1. a PostgreSQL 15 cluster (run as the postgres user) with two databases shaped like the
   first user's, medusa_production and strapi_production; archive_command = pgvault
2. producer + upload/verify/catalog/alert workers in the background (RabbitMQ)
3. a logical backup of both databases and a physical base backup
4. writes across several WAL switches; the exact table state is recorded at a time T
5. `pgvault catalog restorable` and `--at T`
6. a logical restore of medusa_production into a new database, compared with the source
7. a point-in-time restore of the whole cluster to T, compared with the recorded state
8. a logical and a PITR drill (from the store), `pgvault check`, retention dry run
Everything it started is stopped at the end. DEMO_S3=1 uses moto's S3 server instead of
the local store.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.env import PgvaultEnv  # noqa: E402
from tests.logical_data import create_database, fingerprint  # noqa: E402
from tests.pgcluster import PG_BIN, as_postgres, free_port  # noqa: E402
from tests.pgvenv import pgvault_for_postgres  # noqa: E402

AMQP = os.environ.get("PGVAULT_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
RUN_DIR = REPO / "demo-run"
DBS = ("medusa_production", "strapi_production")


class Demo:
    def __init__(self) -> None:
        self.failures: list[str] = []
        self.facts: list[str] = []
        self.moto: subprocess.Popen[bytes] | None = None
        self.env: PgvaultEnv | None = None

    @staticmethod
    def step(text: str) -> None:
        print(f"\n\033[1m==> {text}\033[0m", flush=True)

    def show(self, *args: str, ok: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess[str]:
        assert self.env is not None
        print(f"$ pgvault {' '.join(args)}", flush=True)
        proc = self.env.cli(*args, check=False, timeout=900)
        sys.stdout.write(proc.stdout)
        if proc.returncode not in ok:
            sys.stdout.write(proc.stderr)
            self.failures.append(f"pgvault {' '.join(args)} exited {proc.returncode}")
        return proc

    def expect(self, ok: bool, what: str) -> None:
        print(f"  {'OK  ' if ok else 'FAIL'} {what}", flush=True)
        (self.facts if ok else self.failures).append(what)

    def storage(self) -> dict[str, Any]:
        if os.environ.get("DEMO_S3") != "1":
            return {"type": "local", "path": str(RUN_DIR / "store"), "prefix": "postgres"}
        port = free_port()
        self.moto = subprocess.Popen(
            [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "demo")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "demo")
        time.sleep(2)
        return {
            "type": "s3",
            "endpoint_url": f"http://127.0.0.1:{port}",
            "bucket": "cs-backups",
            "prefix": "postgres",
            "region": "us-east-1",
            "path_style": True,
        }

    def run(self) -> None:
        shutil.rmtree(RUN_DIR, ignore_errors=True)
        RUN_DIR.mkdir()
        os.chmod(RUN_DIR, 0o755)
        storage = self.storage()
        env = self.env = PgvaultEnv(
            RUN_DIR,
            AMQP,
            storage,
            pgvault_for_postgres(),
            extra={"broker": {"retry_delays": [2, 10]}},
        )
        self.step(f"pgvault init (cluster {env.cluster}, store: {storage['type']})")
        self.show("init", "--create-bucket")
        self.step("a throw-away PostgreSQL 15 cluster, archive_command = pgvault wal-archive")
        pg = env.make_pg({"archive_timeout": "60"})
        for i, db in enumerate(DBS):
            create_database(pg, db, k=10 if i == 0 else 4)
        env.data["postgres"].update(databases=list(DBS), archive_timeout=60)
        env.write_config()
        print(f"  port {pg.port}; databases {', '.join(DBS)}")
        self.step("producer and upload / verify / catalog / alert workers in the background")
        env.start_pipeline()
        self.step("backups: logical (both databases) and physical")
        self.show("backup", "logical")
        at_dump = fingerprint(pg, DBS[0])  # nothing writes to it between the dump and here
        self.show("backup", "physical")
        self.step("writes across several WAL switches; the state is recorded at a time T")
        pg.sql(
            "CREATE TABLE public.ticks (id serial PRIMARY KEY, at timestamptz "
            "DEFAULT clock_timestamp(), note text)",
            dbname=DBS[0],
        )
        target, expected = "", []
        for i in range(6):
            pg.sql(
                "INSERT INTO public.ticks(note) SELECT 'batch ' || %s || ' row ' || g "
                "FROM generate_series(1, 500) g",
                (i,),
                dbname=DBS[0],
            )
            print(f"  batch {i}: switched {pg.switch_wal()}")
            if i == 3:
                time.sleep(0.5)
                target = pg.one("SELECT clock_timestamp()").isoformat()
                expected = pg.sql(
                    "SELECT id, at, note FROM public.ticks ORDER BY id", dbname=DBS[0]
                )
                print(f"  T = {target} ({len(expected)} rows in ticks)")
                time.sleep(0.5)
        pg.wait_archived(pg.switch_wal())
        self.step("waiting until every artifact is uploaded, read back and verified")
        env.wait_for(self.all_verified, 180, "all artifacts verified")
        self.show("catalog", "list", "--kind", "logical")
        self.show("catalog", "list", "--kind", "physical")
        self.step("what can I restore to, and how?")
        self.show("catalog", "restorable")
        self.show("catalog", "restorable", "--at", target)
        self.step(f"logical restore of {DBS[0]} into a new database")
        self.show("restore", "logical", "--db", DBS[0], "--target-db", f"{DBS[0]}_restored")
        self.expect(
            fingerprint(pg, f"{DBS[0]}_restored") == at_dump,
            f"{DBS[0]}_restored equals {DBS[0]} as it was dumped: every table's contents, "
            "sequences, indexes, constraints",
        )
        self.step(f"point-in-time restore of the whole cluster to T = {target}")
        target_dir = RUN_DIR / "restored-cluster"
        print(f"$ pgvault restore pitr --to {target} --target-dir {target_dir} --start")
        proc = env.cli(
            "restore",
            "pitr",
            "--to",
            target,
            "--target-dir",
            str(target_dir),
            "--start",
            "--json",
            check=False,
            timeout=900,
        )
        if proc.returncode != 0:
            self.failures.append(f"restore pitr exited {proc.returncode}: {proc.stderr[-500:]}")
        else:
            result = json.loads(proc.stdout)
            print(
                f"  base backup {result['backup_id']} + {result['segments']} WAL segments, "
                f"archive_mode={result['archive_mode']}, last replayed commit "
                f"{result['restored_to']}, {result['duration_s']:.1f}s"
            )
            dsn = f"host={result['socket_dir']} port={result['port']} user=postgres dbname={DBS[0]}"
            with psycopg.connect(dsn) as conn:
                rows = conn.execute("SELECT id, at, note FROM public.ticks ORDER BY id").fetchall()
            self.expect(
                [tuple(r) for r in rows] == [tuple(r) for r in expected],
                f"the restored cluster's ticks table equals the recorded state at T, "
                f"row by row ({len(rows)} rows)",
            )
            as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(target_dir), "-m", "fast", "stop"])
        self.step("restore drills (from the store), health check, retention dry run")
        self.show("drill", "logical")
        self.show("drill", "pitr", "--scratch-dir", str(RUN_DIR))
        self.show("check", ok=(0, 1))
        self.show("retention", "apply", "--dry-run")

    def all_verified(self) -> bool:
        assert self.env is not None
        cat = self.env.catalog()
        try:
            pending = cat.scalar("SELECT COUNT(*) FROM artifacts WHERE state != 'verified'")
            kinds = cat.scalar("SELECT COUNT(DISTINCT kind) FROM artifacts WHERE state='verified'")
        finally:
            cat.close()
        return pending == 0 and kinds >= 3

    def close(self) -> None:
        self.step("stopping everything the demo started")
        if self.env is not None:
            self.env.close()
        if self.moto is not None:
            self.moto.terminate()


def main() -> int:
    started = time.monotonic()
    demo = Demo()
    try:
        demo.run()
    except Exception as exc:  # report, then clean up
        demo.failures.append(f"{type(exc).__name__}: {exc}")
    finally:
        demo.close()
    demo.step(f"summary ({time.monotonic() - started:.0f}s)")
    for fact in demo.facts:
        print(f"  proven: {fact}")
    if demo.failures:
        for failure in demo.failures:
            print(f"  FAILED: {failure}")
        print(f"  logs in {RUN_DIR}")
        return 1
    print(
        "  every WAL segment, dump and base backup was checksummed, uploaded, read back and "
        "catalogued;\n  a database and the whole cluster were restored and matched; drills "
        "passed."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
