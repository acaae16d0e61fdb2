"""deploy/ and first run: units verify, the shipped files match the code, init is
idempotent, doctor finds each misconfiguration it claims to (issue 7)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pgvault.config import load_settings
from tests.conftest import EnvFactory
from tests.env import PGVAULT, write_toml

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def test_systemd_units_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed")
    pgvault = Path(sys.executable).parent / "pgvault"
    units = []
    for unit in sorted((DEPLOY / "systemd").iterdir()):
        text = unit.read_text().replace("/usr/local/bin/pgvault", str(pgvault))
        name = unit.name.replace("@.", "@upload.")  # a template is verified as an instance
        (tmp_path / name).write_text(text)
        units.append(str(tmp_path / name))
    assert len(units) >= 14
    proc = subprocess.run([analyze, "verify", *units], capture_output=True, text=True, check=False)
    problems = [ln for ln in proc.stderr.splitlines() if "pgvault" in ln]
    assert proc.returncode == 0 and not problems, proc.stderr


def test_units_are_hardened_and_notify() -> None:
    for unit in (DEPLOY / "systemd").glob("*.service"):
        text = unit.read_text()
        for line in (
            "User=postgres",
            "ProtectSystem=strict",
            "NoNewPrivileges=yes",
            "PrivateTmp=yes",
            "EnvironmentFile=-/etc/pgvault/pgvault.env",
        ):
            assert line in text, (unit.name, line)
        assert "AWS_SECRET" not in text and "PASSWORD" not in text
        if unit.name in ("pgvault-producer.service", "pgvault-worker@.service"):
            assert "Type=notify" in text and "Restart=on-failure" in text


def test_shipped_files_match_the_code(tmp_path: Path) -> None:
    example = load_settings(DEPLOY / "pgvault.example.toml")
    assert example.postgres.databases == ["medusa_production", "strapi_production"]
    out = subprocess.run(
        [*PGVAULT, "--config", str(DEPLOY / "pgvault.example.toml"), "init", "--definitions"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert json.loads(out) == json.loads((DEPLOY / "rabbitmq" / "definitions.json").read_text())
    for line in (DEPLOY / "cron.d" / "pgvault").read_text().splitlines():
        if line and not line.startswith("#") and "=" not in line.split()[0]:
            fields = line.split(None, 6)
            assert len(fields) == 7 and fields[5] == "postgres" and "pgvault" in fields[6], line


def test_definitions_import_matches_what_init_declares(make_env: EnvFactory) -> None:
    env = make_env("local")
    out = env.cli("init", "--definitions").stdout
    defs = env.base / "defs.json"
    defs.write_text(out)
    proc = subprocess.run(
        ["rabbitmqctl", "-q", "import_definitions", str(defs)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        pytest.skip(f"rabbitmqctl import_definitions unavailable: {proc.stderr.strip()[:200]}")
    # declaring with pgvault's own arguments succeeds only if the imported queues match
    env.cli("init")
    broker = env.broker()
    assert {d.name for d in broker.queue_depths()} == {q.name for q in broker.topology.all_queues()}


def test_init_is_idempotent(make_env: EnvFactory) -> None:
    env = make_env("s3")
    env.use_service_user("postgres")
    first = env.cli("init", "--create-bucket")
    second = env.cli("init", "--create-bucket")
    assert first.returncode == second.returncode == 0
    assert "created bucket" not in second.stdout  # made by the fixture already
    assert [ln.split(":")[0] for ln in first.stdout.splitlines()] == [
        ln.split(":")[0] for ln in second.stdout.splitlines()
    ]
    st = (env.spool / "wal").stat()
    import pwd

    assert pwd.getpwuid(st.st_uid).pw_name == "postgres" and oct(st.st_mode & 0o777) == "0o750"


def doctor(env, *args: str) -> tuple[int, dict[str, dict[str, str]]]:  # type: ignore[no-untyped-def]
    proc = env.cli("doctor", "--json", *args, check=False)
    data = json.loads(proc.stdout)
    return proc.returncode, {f["name"]: f for f in data["findings"]}


@pytest.mark.slow
def test_doctor_finds_each_misconfiguration(make_env: EnvFactory) -> None:
    env = make_env("local")
    env.use_service_user("postgres")  # doctor run as root tests access as postgres
    env.cli("init")
    env.make_pg()
    code, found = doctor(env)
    failing = {n: f for n, f in found.items() if f["status"] == "fail"}
    assert code == 0 and not failing, failing
    assert "reached the spool" in found["archive_command"]["message"]
    assert found["alerts"]["status"] == "warn"  # no channel configured in tests

    # archive_mode off
    pg = env.pg
    assert pg is not None
    pg.sql("ALTER SYSTEM SET archive_mode = off")
    pg.stop()
    pg.start()
    code, found = doctor(env, "--no-switch")
    assert code == 1 and found["archive_mode"]["status"] == "fail"
    assert "archive_mode = on" in found["archive_mode"]["fix"]
    pg.sql("ALTER SYSTEM RESET archive_mode")
    pg.stop()
    pg.start()

    # the spool is not writable by postgres
    os.chown(env.spool / "wal", 0, 0)
    code, found = doctor(env, "--no-switch")
    assert code == 1 and found["spool"]["status"] == "fail" and "chown" in found["spool"]["fix"]
    env.cli("init")  # repairs ownership
    assert doctor(env, "--no-switch")[1]["spool"]["status"] == "ok"

    # wrong broker credentials, then an unreachable broker
    url = env.data["broker"]["url"]
    env.data["broker"]["url"] = url.replace("guest:guest", "guest:wrong")
    env.write_config()
    code, found = doctor(env, "--no-switch")
    assert code == 1 and "refused the credentials" in found["broker"]["message"]
    assert "wrong" not in json.dumps(found)
    env.data["broker"]["url"] = "amqp://guest:guest@127.0.0.1:9/%2F"
    env.write_config()
    code, found = doctor(env, "--no-switch")
    assert code == 1 and "unreachable" in found["broker"]["message"]
    env.data["broker"]["url"] = url

    # a role that does not exist
    env.data["postgres"]["user"] = "nobody_here"
    env.write_config()
    code, found = doctor(env, "--no-switch")
    assert code == 1 and found["postgres"]["status"] == "fail"
    assert "nobody_here" in found["postgres"]["message"]


def test_doctor_reports_a_bad_config_in_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    write_toml(cfg, {"storage": {"type": "tape"}})
    proc = subprocess.run(
        [*PGVAULT, "--config", str(cfg), "doctor"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 2 and proc.stdout.startswith("FAIL config")
    assert "storage.type" in proc.stdout


def test_doctor_warns_about_encryption(tmp_path: Path) -> None:
    from pgvault.config import settings_from_dict
    from pgvault.doctor import Doctor, label
    from pgvault.keys import generate

    remote = settings_from_dict({"storage": {"type": "s3", "bucket": "b"}})
    doc = Doctor(remote)
    doc.encryption()
    assert [(f.name, label(f)) for f in doc.findings] == [("encryption", "warn")]
    identity = tmp_path / "id.txt"
    recipient = generate(identity)
    identity.chmod(0o644)
    keyed = settings_from_dict(
        {
            "storage": {"type": "s3", "bucket": "b"},
            "encryption": {"recipients": [recipient], "identity_file": str(identity)},
        }
    )
    doc = Doctor(keyed)
    doc.encryption()
    assert [(f.name, label(f)) for f in doc.findings] == [
        ("encryption", "ok"),
        ("identity", "warn"),
    ]
    assert "chmod 600" in (doc.findings[1].action or "")
