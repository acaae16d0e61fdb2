"""The alert worker end to end: `check` publishes, `worker alert --once` delivers to a real
HTTP server standing in for Discord and a real SMTP server (aiosmtpd), over the real
RabbitMQ, with dedupe, re-notify, resolve-once, per-channel retries, dead-lettering,
rate-limit digests, STARTTLS/AUTH, and no secret in any log or error."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from pgvault.alerts.channels import build_channels, redact
from pgvault.alerts.discord import DiscordChannel
from pgvault.alerts.mail import MailChannel
from pgvault.alerts.message import from_event
from pgvault.alerts.state import AlertState, Policy
from pgvault.broker.topology import ERROR_HEADER
from pgvault.config import AlertSettings
from pgvault.consumers.alert import AlertStage
from pgvault.errors import ChannelError
from pgvault.schemas import AlertEvent
from tests.alertfakes import (
    WEBHOOK_TOKEN,
    FakeDiscord,
    FakeSMTP,
    discord_fixture,  # noqa: F401 - fixture "discord"
    self_signed,
    smtp_fixture,  # noqa: F401 - fixture "smtp"
    start_smtp,
)
from tests.conftest import EnvFactory
from tests.env import PgvaultEnv
from tests.monhelpers import ago, insert_backup, set_config

RECIPIENTS = ["ops@example.org", "dba@example.org"]


def alert_env(
    make_env: EnvFactory, discord: FakeDiscord, smtp: FakeSMTP, **alerts: Any
) -> PgvaultEnv:
    conf = {
        "discord_webhook_url": discord.url,
        "smtp_host": "127.0.0.1",
        "smtp_port": smtp.port,
        "smtp_starttls": False,
        "email_from": "pgvault@example.org",
        "email_to": RECIPIENTS,
        "max_physical_age_hours": 0,
        "direct_if_no_consumer": False,  # these tests run the alert worker after `check`
        **alerts,
    }
    env = make_env("local", extra={"postgres": {"port": 9, "databases": ["appdb"]}, "alerts": conf})
    env.cli("init")
    return env


def deliver(env: PgvaultEnv, variables: dict[str, str] | None = None) -> dict[str, int]:
    proc = env.cli("worker", "alert", "--once", "--json", env=variables)
    return {k: v for k, v in json.loads(proc.stdout).items() if k != "stage"}


def check_age(env: PgvaultEnv, expect: int) -> None:
    proc = env.cli("check", "--only", "backup_age", check=False)
    assert proc.returncode == expect, proc.stdout + proc.stderr


@pytest.mark.slow
def test_alert_is_delivered_once_then_resolved_once(
    make_env: EnvFactory,
    discord: FakeDiscord,
    smtp: FakeSMTP,
) -> None:
    env = alert_env(make_env, discord, smtp)
    insert_backup(env, finished=ago(hours=30))
    check_age(env, 2)
    assert deliver(env)["acked"] == 2  # the alert, and a resolve for physical (never alerted)
    assert len(discord.posts) == 1 and len(smtp.mails) == 1
    post = discord.posts[0]
    assert discord.paths == [f"/api/webhooks/42/{WEBHOOK_TOKEN}"]
    assert post["content"].startswith("🔴 **[CRITICAL] backup_age logical/appdb on ")
    embed = post["embeds"][0]
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert "last verified dump appdb/" in embed["description"]
    assert fields["Where"] == f"cluster {env.cluster}, logical/appdb"
    assert fields["Value"].endswith("(threshold 25.0 h)") and fields["Value"].startswith("30.")
    assert "pgvault backup logical --db appdb" in fields["What to do"]
    assert post["allowed_mentions"] == {"parse": []}
    mail = smtp.mails[0]
    assert mail.rcpt_tos == RECIPIENTS and mail.mail_from == "pgvault@example.org"
    assert mail.subject == f"[pgvault] [CRITICAL] backup_age logical/appdb on {env.cluster}"
    assert "What to do: " in mail.body and "threshold 25.0 h" in mail.body

    check_age(env, 2)  # same alert again: deduplicated within renotify_minutes
    assert deliver(env)["acked"] == 2
    assert len(discord.posts) == 1 and len(smtp.mails) == 1

    insert_backup(env, finished=ago(hours=1))
    check_age(env, 0)
    deliver(env)
    assert len(discord.posts) == 2 and len(smtp.mails) == 2
    assert discord.posts[1]["content"].startswith("✅ **[RESOLVED] backup_age logical/appdb")
    assert smtp.mails[1].subject.startswith("[pgvault] [RESOLVED] backup_age logical/appdb")

    check_age(env, 0)  # still fine: the resolve is not sent again
    deliver(env)
    assert len(discord.posts) == 2 and len(smtp.mails) == 2


@pytest.mark.slow
def test_renotify_after_the_interval(
    make_env: EnvFactory,
    discord: FakeDiscord,
    smtp: FakeSMTP,
) -> None:
    env = alert_env(make_env, discord, smtp, renotify_minutes=0.05)  # 3 s
    insert_backup(env, finished=ago(hours=30))
    check_age(env, 2)
    check_age(env, 2)
    deliver(env)
    assert len(discord.posts) == 1 and len(smtp.mails) == 1
    time.sleep(3.5)
    check_age(env, 2)
    deliver(env)
    assert len(discord.posts) == 2 and len(smtp.mails) == 2
    assert "[CRITICAL] backup_age" in discord.posts[1]["content"]


@pytest.mark.slow
def test_channel_down_is_retried_without_resending_to_the_other(
    make_env: EnvFactory,
    discord: FakeDiscord,
    smtp: FakeSMTP,
) -> None:
    env = alert_env(make_env, discord, smtp)
    insert_backup(env, finished=ago(hours=30))
    check_age(env, 2)
    discord.fail_next = 1
    counts = deliver(env)
    assert {k: counts[k] for k in ("acked", "retried", "dead")} == {
        "acked": 2,
        "retried": 1,
        "dead": 0,
    }
    assert counts["cluster"] == env.cluster and counts["ok"] is True
    assert len(discord.attempts) == 2 and len(discord.posts) == 1
    assert len(smtp.mails) == 1  # e-mail went out on the first attempt, not again


@pytest.mark.slow
def test_channel_down_for_good_dead_letters_without_leaking_the_webhook(
    make_env: EnvFactory,
    discord: FakeDiscord,
    smtp: FakeSMTP,
) -> None:
    env = alert_env(make_env, discord, smtp)
    insert_backup(env, finished=ago(hours=30))
    check_age(env, 2)
    discord.fail_next = 100
    proc = env.cli("worker", "alert", "--once", "--json")
    assert json.loads(proc.stdout)["dead"] == 1
    assert len(discord.attempts) == 3  # first try + 2 retries (broker.retry_delays [1, 2])
    assert len(smtp.mails) == 1
    assert "discord webhook: HTTP 500" in proc.stderr
    assert WEBHOOK_TOKEN not in proc.stderr and "api/webhooks" not in proc.stderr
    broker = env.broker()
    dead = broker.take(broker.topology.dead_queue("alert"))
    assert len(dead) == 1 and json.loads(dead[0].body)["check"] == "backup_age"
    assert "HTTP 500" in dead[0].headers[ERROR_HEADER]
    assert WEBHOOK_TOKEN not in dead[0].headers[ERROR_HEADER]


@pytest.mark.slow
def test_starttls_and_auth_from_the_environment_and_no_password_in_errors(
    make_env: EnvFactory,
    discord: FakeDiscord,
    tmp_path: Path,
) -> None:
    cert, tls = self_signed(tmp_path)
    relay = start_smtp(password="right-Passw0rd", tls_context=tls)
    try:
        env = alert_env(make_env, discord, relay, smtp_starttls=True, smtp_user="alerts")
        insert_backup(env, finished=ago(hours=30))
        check_age(env, 2)
        good = {"PGVAULT_ALERTS__SMTP_PASSWORD": "right-Passw0rd", "SSL_CERT_FILE": str(cert)}
        assert deliver(env, good)["acked"] == 2
        assert relay.logins == [("alerts", "right-Passw0rd")]
        assert len(relay.mails) == 1 and relay.mails[0].rcpt_tos == RECIPIENTS
        shown = env.cli("config", "show", env=good).stdout
        assert "right-Passw0rd" not in shown

        set_config(env, "alerts", discord_webhook_url="")  # e-mail only from here on
        set_config(env, "alerts", renotify_minutes=0)
        check_age(env, 2)
        bad = {"PGVAULT_ALERTS__SMTP_PASSWORD": "wr0ng-Passw0rd", "SSL_CERT_FILE": str(cert)}
        proc = env.cli("worker", "alert", "--once", "--json", env=bad)
        assert json.loads(proc.stdout)["dead"] == 1
        assert "login as alerts refused (535)" in proc.stderr
        assert "wr0ng-Passw0rd" not in proc.stderr + proc.stdout
        broker = env.broker()
        dead = broker.take(broker.topology.dead_queue("alert"))
        assert "wr0ng-Passw0rd" not in json.dumps(dead[0].headers, default=str)
        assert len(relay.mails) == 1
    finally:
        relay.close()


def test_starttls_is_never_silently_skipped(smtp: FakeSMTP) -> None:
    channel = MailChannel(
        AlertSettings(smtp_host="127.0.0.1", smtp_port=smtp.port, email_to=["a@example.org"])
    )
    event = AlertEvent(cluster="c", severity="warning", check="disk", summary="full")
    with pytest.raises(ChannelError, match="STARTTLS"):
        channel.send(from_event(event))
    assert smtp.mails == []


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_implicit_tls_on_port_465_style_servers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, tls = self_signed(tmp_path)
    relay = start_smtp(password="right-Passw0rd", tls_context=tls, implicit_tls=True)
    try:
        settings = AlertSettings(
            smtp_host="127.0.0.1",
            smtp_port=relay.port,
            smtp_ssl=True,
            smtp_user="alerts",
            smtp_password="right-Passw0rd",
            email_to=["a@example.org"],
        )
        event = AlertEvent(cluster="c", severity="warning", check="disk", summary="full")
        channel = build_channels(settings)[0]
        assert isinstance(channel, MailChannel) and "(TLS)" in channel.describe()
        with pytest.raises(ChannelError, match="CERTIFICATE_VERIFY_FAILED"):
            channel.send(from_event(event))  # an untrusted certificate is never accepted
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        channel.send(from_event(event))
        assert relay.logins == [("alerts", "right-Passw0rd")]
        assert [m.subject for m in relay.mails] == ["[pgvault] [WARNING] disk on c"]
        plain = start_smtp()  # a server that does not speak TLS at all
        try:
            with pytest.raises(ChannelError) as info:
                build_channels(settings.model_copy(update={"smtp_port": plain.port}))[0].send(
                    from_event(event)
                )
            assert "right-Passw0rd" not in str(info.value) and plain.mails == []
        finally:
            plain.close()
    finally:
        relay.close()


def test_unreachable_webhook_error_names_no_secret() -> None:
    url = f"http://127.0.0.1:9/api/webhooks/42/{WEBHOOK_TOKEN}"
    channel = build_channels(AlertSettings(discord_webhook_url=url))[0]
    assert isinstance(channel, DiscordChannel)
    event = AlertEvent(cluster="c", severity="critical", check="store", summary="down")
    with pytest.raises(ChannelError) as info:
        channel.send(from_event(event))
    assert "unreachable" in str(info.value) and WEBHOOK_TOKEN not in str(info.value)
    assert redact(f"POST {url} failed", [url]) == "POST ******** failed"
    assert WEBHOOK_TOKEN not in redact(f"path api/webhooks/42/{WEBHOOK_TOKEN}", [url])


def test_discord_rate_limit_short_wait_is_honoured_long_one_is_left_to_retries(
    discord: FakeDiscord,
) -> None:
    channel = build_channels(AlertSettings(discord_webhook_url=discord.url))[0]
    assert isinstance(channel, DiscordChannel)
    note = from_event(AlertEvent(cluster="c", severity="critical", check="store", summary="down"))
    discord.rate_limits = [0.4]
    started = time.monotonic()
    channel.send(note)  # waited out in place, then accepted
    assert time.monotonic() - started >= 0.4
    assert len(discord.attempts) == 2 and len(discord.posts) == 1
    discord.rate_limits = [0.1, 0.1]
    with pytest.raises(ChannelError, match="rate limited by Discord twice"):
        channel.send(note)
    assert len(discord.attempts) == 4 and len(discord.posts) == 1
    discord.rate_limits = [30]
    started = time.monotonic()
    with pytest.raises(ChannelError, match=r"retry after 30 s") as info:
        channel.send(note)  # too long to block a worker: fails now, the retry policy waits
    assert time.monotonic() - started < 5 and WEBHOOK_TOKEN not in str(info.value)
    assert len(discord.attempts) == 5 and len(discord.posts) == 1


def test_bursts_are_rate_limited_into_a_digest(
    tmp_path: Path,
    discord: FakeDiscord,
    smtp: FakeSMTP,
) -> None:
    settings = AlertSettings(
        discord_webhook_url=discord.url,
        smtp_host="127.0.0.1",
        smtp_port=smtp.port,
        smtp_starttls=False,
        email_to=["ops@example.org"],
    )
    clock = [1_000_000.0]
    state = AlertState(tmp_path / "alerts.sqlite")
    policy = Policy(renotify_s=3600, claim_ttl_s=60, max_per_minute=2)
    stage = AlertStage(state, build_channels(settings), policy, clock=lambda: clock[0])
    events = [
        AlertEvent(
            cluster="c",
            severity="critical",
            check="queues",
            subject=f"q{i}",
            summary=f"queue q{i} is stuck",
        )
        for i in range(5)
    ]
    for event in events:
        stage.handle(event)
    assert len(discord.posts) == 2 and len(smtp.mails) == 2
    assert [e.subject for e in state.held()] == ["q2", "q3", "q4"]
    assert stage.flush() == 0  # still the same minute
    clock[0] += 61
    stage.handle(events[0])  # a repeat: deduplicated, but it lets the digest out
    assert len(discord.posts) == 3 and len(smtp.mails) == 3
    digest = discord.posts[2]
    assert digest["content"].startswith("📋 **[DIGEST] 3 alert(s) on c held back")
    assert all(f"queue q{i} is stuck" in digest["embeds"][0]["description"] for i in (2, 3, 4))
    assert "queue q4 is stuck" in smtp.mails[2].body
    assert state.held() == []
    # a held alert whose fingerprint is resolved before the digest goes out is not reported
    clock[0] += 61
    for name in ("q5", "q6"):  # use up the new minute
        stage.handle(AlertEvent(cluster="c", severity="critical", check="queues", subject=name,
                                summary=f"queue {name} is stuck"))  # fmt: skip
    stage.handle(AlertEvent(cluster="c", severity="warning", check="disk", subject="d",
                            summary="filling up"))  # fmt: skip
    stage.handle(AlertEvent(cluster="c", severity="resolved", check="disk", subject="d",
                            summary="fine again"))  # fmt: skip
    assert len(discord.posts) == 5 and len(state.held()) == 1  # only the resolve is left
    clock[0] += 61
    assert stage.flush() == 1
    assert "RESOLVED" in discord.posts[5]["embeds"][0]["description"]
    assert "filling up" not in discord.posts[5]["embeds"][0]["description"]
    # a second worker sharing the state file sees the same history: nothing is re-sent
    other = AlertStage(AlertState(tmp_path / "alerts.sqlite"), build_channels(settings), policy,
                       clock=lambda: clock[0])  # fmt: skip
    for event in events:
        other.handle(event)
    assert len(discord.posts) == 6
    stats = state.stats()
    assert stats["active"] == {"critical": 7} and stats["counters"]["notified.critical"] == 7


def test_stale_and_redelivered_events_are_not_sent(
    tmp_path: Path,
    discord: FakeDiscord,
) -> None:
    state = AlertState(tmp_path / "alerts.sqlite")
    channels = build_channels(AlertSettings(discord_webhook_url=discord.url))
    stage = AlertStage(state, channels, Policy(3600, 60, 20))
    old = AlertEvent(cluster="c", severity="critical", check="disk", subject="spool",
                     summary="disk full")  # fmt: skip
    resolved = AlertEvent(cluster="c", severity="resolved", check="disk", subject="spool",
                          summary="disk fine")  # fmt: skip
    stage.handle(AlertEvent(cluster="c", severity="resolved", check="disk", summary="never"))
    assert discord.posts == []  # resolve for something never alerted
    stage.handle(old)
    stage.handle(old)  # redelivery of the same message
    stage.handle(resolved)
    stage.handle(old)  # the critical again, but older than the resolve: stale
    assert [p["content"].split()[1] for p in discord.posts] == ["**[CRITICAL]", "**[RESOLVED]"]
