"""`renewdesk outbox list|retry|flush` (the real command) show and handle Slack posts beside mail:
channel, method, status, attempts, last error and next try; `retry S1` requeues a failed post."""
from __future__ import annotations

import json

from sqlalchemy import select

from handlers.models import SlackPost
from tests.bot.conftest import CHANNEL
from tests.handlers.billing_helpers import account, load
from tests.support import proc
from tests.support.mailflow import deliver, mail


def _outbox(env, *args):
    done = proc.run("outbox", *args, env=env)
    return done.returncode, done.stdout.decode(), done.stderr.decode()


def _one_failed_one_waiting(services, fake_slack, deliverer):
    """S1 (T-1's card) failed for good; S2 (T-2's card) waits for Slack's Retry-After."""
    load(services, account("acme"))
    deliver(services, mail("dev@acme.test", "Site down", "Down."))
    fake_slack.plan("chat.postMessage", 1, status=200, error="channel_not_found")
    deliverer.deliver_due()
    deliver(services, mail("dev@acme.test", "Mail down", "No mail."))
    fake_slack.plan("chat.postMessage", 1, status=429, retry_after=30)
    deliverer.deliver_due()


def test_outbox_list_shows_slack_posts(services, fake_slack, deliverer, cli_env):
    """Text and JSON, all and --failed: each post with its channel, method, status, attempts, last
    error and next try; mail keeps its own section."""
    _one_failed_one_waiting(services, fake_slack, deliverer)
    code, out, err = _outbox(cli_env, "list")
    assert code == 0, err
    mail_part, slack_part = out.split("Slack posts (2)")
    assert "outgoing mail (2)" in mail_part and "dev@acme.test" in mail_part  # the two acknowledgements
    lines = slack_part.strip().splitlines()
    assert "CHANNEL / METHOD: WHAT" in lines[0]
    assert lines[1].split()[:3] == ["S1", "failed", "1"]
    assert f"{CHANNEL} chat.postMessage: T-1 Site down" in lines[1] and lines[2].strip() == "channel_not_found"
    assert lines[3].split()[:4] == ["S2", "queued", "0", "2026-11-21T09:00:30"]  # Retry-After on our clock
    assert "T-2 Mail down" in lines[3] and lines[4].strip() == "rate limited by Slack: retry after 30s"

    code, out, _ = _outbox(cli_env, "list", "--json")
    posts = [r for r in json.loads(out) if r["kind"] == "slack"]
    assert [(p["ref"], p["status"], p["channel"], p["method"], p["attempts"]) for p in posts] == [
        ("S1", "failed", CHANNEL, "chat.postMessage", 1), ("S2", "queued", CHANNEL, "chat.postMessage", 0)]
    assert posts[0]["last_error"] == "channel_not_found" and posts[1]["next_attempt_at"] == "2026-11-21T09:00:30+00:00"
    assert posts[0]["card"] == "ticket" and posts[0]["ticket"] == 1

    code, out, _ = _outbox(cli_env, "list", "--failed")
    assert "S1" in out and "S2" not in out and "outgoing mail: none" in out


def test_outbox_retry_and_flush_slack_posts(services, fake_slack, deliverer, cli_env):
    """`retry S1` requeues the failed card; a post not failed, or a wrong id, is refused clearly;
    `flush` then posts both cards (and sends the mail)."""
    _one_failed_one_waiting(services, fake_slack, deliverer)
    code, out, err = _outbox(cli_env, "retry", "S1")
    assert code == 0 and "Slack post S1 (chat.postMessage to CSTAFF) is queued again" in out, err
    code, _, err = _outbox(cli_env, "retry", "S2")
    assert code != 0 and "only failed posts can be retried" in err
    code, _, err = _outbox(cli_env, "retry", "X1")
    assert code != 0 and "not an outbox id: 'X1'" in err
    code, _, err = _outbox(cli_env, "retry", "S99")
    assert code != 0 and "no Slack post S99" in err
    assert services.run(lambda tx: [(r.status.value, r.attempts) for r in tx.session.scalars(
        select(SlackPost).order_by(SlackPost.id))], readonly=True) == [("queued", 0), ("queued", 0)]

    code, out, err = _outbox(cli_env, "flush")
    assert code == 0, out + err
    assert "Slack posts: 2 posted" in out
    posted = [c.body["text"] for c in fake_slack.of("chat.postMessage")]
    assert [t.split()[0] for t in posted[-2:]] == ["T-1", "T-2"]  # the first call was the refused one
    assert _outbox(cli_env, "list")[1].strip() == "the outbox is empty"
