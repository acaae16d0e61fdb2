"""One service user (issue 15 §5) and prompt re-announcement (§4): the pieces that do
not need a cluster. The end-to-end proofs are in tests/test_faults.py."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
from pathlib import Path

import pytest

from pgvault.cli import command_words
from pgvault.config import settings_from_dict
from pgvault.identity import keeps_root, probe_as_service_user
from pgvault.producers.watcher import Producer


def test_command_words_skip_global_options() -> None:
    assert command_words(["--config", "/x.toml", "-v", "backup", "logical", "--db", "a"]) == (
        "backup",
        "logical",
    )
    assert command_words(["-c", "/x", "init"]) == ("init",)
    assert command_words(["restore", "pitr", "--at", "T"]) == ("restore", "pitr")


def test_only_init_restores_and_drills_keep_root() -> None:
    for words in [("init",), ("restore", "pitr"), ("restore", "logical"), ("drill", "pitr")]:
        assert keeps_root(words), words
    for words in [
        ("backup", "logical"),
        ("backup", "physical"),
        ("producer",),
        ("worker", "upload"),
        ("retention", "apply"),
        ("catalog", "rebuild"),
        ("catalog", "verify"),
        ("keys", "rotate-hmac"),
        ("check",),
        ("doctor",),
    ]:
        assert not keeps_root(words), words


def test_service_defaults() -> None:
    s = settings_from_dict({"cluster": "abc"})
    assert s.service.user == "postgres"
    assert s.work_dir == Path("/var/tmp/pgvault-abc")
    assert not s.work_dir.is_relative_to(s.spool_dir)


def test_reannounce_backoff_starts_in_seconds_and_is_capped(tmp_path: Path) -> None:
    s = settings_from_dict({"cluster": "abc", "spool_dir": str(tmp_path)})
    prod = Producer(s, broker=None, catalog=None)  # type: ignore[arg-type]
    key = ("wal", "000000010000000000000001")
    waits = []
    for attempt in range(1, 10):
        prod.attempts[key] = attempt
        waits.append(prod.backoff(key, None))
    assert waits[:4] == [5.0, 10.0, 20.0, 40.0]
    assert max(waits) == 300.0
    prod.attempts[("logical", "db/x")] = 1
    assert prod.backoff(("logical", "db/x"), None) == 60.0
    assert prod.backoff(key, "stored") == 1800.0


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to probe as postgres")
def test_probe_runs_as_the_service_user(workdir: Path) -> None:
    tmp_path = workdir
    mine = tmp_path / "root-only"
    mine.mkdir(mode=0o700)
    theirs = tmp_path / "pg"
    theirs.mkdir()
    pw = pwd.getpwnam("postgres")
    os.chown(theirs, pw.pw_uid, pw.pw_gid)
    os.chmod(tmp_path, 0o755)
    assert probe_as_service_user("postgres", [theirs], []) is None
    problem = probe_as_service_user("postgres", [theirs, mine], [])
    assert problem is not None and str(mine) in problem and "ermission" in problem


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch users")
def test_a_command_started_as_root_writes_as_the_service_user(workdir: Path) -> None:
    tmp_path = workdir
    os.chmod(tmp_path, 0o755)
    cfg = tmp_path / "pgvault.toml"
    cfg.write_text(
        f'cluster = "svc"\nspool_dir = "{tmp_path}/spool"\n'
        f'catalog_path = "{tmp_path}/var/catalog.sqlite"\n'
        f'[service]\nuser = "postgres"\nwork_dir = "{tmp_path}/work"\n'
        f'[storage]\ntype = "local"\npath = "{tmp_path}/store"\n'
        '[broker]\nurl = "amqp://guest:guest@127.0.0.1:9/%2F"\ncall_timeout = 2\n'
        "connect_timeout = 2\n"
    )
    os.chmod(cfg, 0o644)
    run = [sys.executable, "-m", "pgvault", "--config", str(cfg)]
    init = subprocess.run([*run, "init"], capture_output=True, text=True, check=False)
    assert init.returncode == 1  # the broker step fails (port 9), the others ran
    for path in ("spool", "spool/wal", "var", "var/catalog.sqlite", "work", "store"):
        st = (tmp_path / path).lstat()
        assert pwd.getpwuid(st.st_uid).pw_name == "postgres", (path, init.stdout)
    # a catalog command as root now writes (e.g. -wal/-shm) as postgres
    subprocess.run([*run, "catalog", "list"], capture_output=True, text=True, check=True)
    for path in (tmp_path / "var").iterdir():
        assert pwd.getpwuid(path.lstat().st_uid).pw_name == "postgres", path
