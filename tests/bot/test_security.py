"""Only the right people act through Slack, and client text cannot speak in the staff channel.

Through the real web server with signed requests (``SlackSender``) on both databases:
- a request without Slack's signature headers, with a timestamp that is not a number, or more than
  six minutes old or ahead (the exact 300/301 s edge: the last test, under an injected clock), is
  refused with 401 and nothing runs (a wrong secret and a ten-minute-old
  request: tests/bot/test_desk.py ``test_requests_slack_did_not_sign_are_refused``);
- a validly signed request sent a second time (a replay inside the five minutes) is refused and acts
  once: a command, a Confirm click, an event;
- a readonly staff member cannot suspend: not by the grammar, not by `/desk`, not by clicking a
  forged Confirm button;
- a client's subject, name and text with ``<!channel>``, ``<@U…>``, links and ``&`` reach the
  staff channel escaped, in the blocks and in the notification text.
"""
from __future__ import annotations

import json
import time
import urllib.parse

import pytest
from sqlalchemy import func, select

from handlers.errors import NotAllowed
from handlers.models import Account, AccountStatus, AuditEvent, LedgerEntry, OutboundMail, Suspension, TicketMessage
from handlers.staff import execute
from tests.bot.conftest import CHANNEL, shown
from tests.handlers.billing_helpers import account, load
from tests.support.mailflow import deliver, mail


@pytest.fixture
def acme(services, team):
    load(services, account("acme"))


def count(services, model, *where) -> int:
    return services.run(lambda tx: tx.session.scalar(select(func.count()).select_from(model).where(*where)),
                        readonly=True)


def charges(services) -> int:
    return count(services, LedgerEntry, LedgerEntry.text.like("replayed%"))


def quiet(fake_slack, seconds: float = 0.4) -> int:
    """How many answers reached Slack after giving a listener time to have run."""
    time.sleep(seconds)
    return len(fake_slack.of("response_url"))


def test_unsigned_garbled_and_stale_requests_are_refused(sender, fake_slack, services, acme):
    form = urllib.parse.urlencode({"command": "/desk", "text": "charge add acme 5.00 replayed", "user_id": "UADMIN",
                                   "response_url": fake_slack.response_url(), "trigger_id": "t"})
    plain = {"Content-Type": "application/x-www-form-urlencoded"}
    assert sender.client.post(sender.url, content=form, headers=plain).status_code == 401
    assert sender.client.post(sender.url, content=form, headers={
        **plain, "X-Slack-Request-Timestamp": "soon", "X-Slack-Signature": "v0=00"}).status_code == 401
    now = int(time.time())
    # a minute beyond the window each way: a loaded machine may take a second or two to read the request
    for stale in (now - 360, now + 360):
        assert sender.command("charge add acme 5.00 replayed", "UADMIN", timestamp=stale).status_code == 401
    assert sender.command("charge add acme 5.00 replayed", "UADMIN", timestamp=now - 240).status_code == 200
    fake_slack.wait_for("response_url", 1)
    assert quiet(fake_slack) == 1 and charges(services) == 1


def replay(sender, response) -> int:
    """Send exactly the request behind ``response`` again: same body, timestamp and signature."""
    req = response.request
    return sender.client.post(str(req.url), content=req.content, headers=dict(req.headers)).status_code


def test_a_replayed_command_acts_once(sender, fake_slack, services, acme):
    first = sender.command("charge add acme 5.00 replayed charge", "UADMIN")
    assert first.status_code == 200
    fake_slack.wait_for("response_url", 1)
    assert replay(sender, first) == 401
    assert replay(sender, first) == 401
    assert quiet(fake_slack) == 1 and charges(services) == 1
    # the same words, newly signed (a second real request), do act
    assert sender.command("charge add acme 5.00 replayed charge", "UADMIN").status_code == 200
    fake_slack.wait_for("response_url", 2)
    assert charges(services) == 2


def test_a_replayed_confirm_click_acts_once(sender, fake_slack, services, acme):
    click = sender.action("UADMIN", "desk_confirm", json.dumps({"words": "charge add acme 7.00 replayed click"}),
                          block_id="desk_confirm")
    assert click.status_code == 200
    fake_slack.wait_for("response_url", 1)
    assert replay(sender, click) == 401
    assert quiet(fake_slack) == 1 and charges(services) == 1


def test_a_replayed_thread_event_is_refused(sender, services, acme, deliverer, fake_slack):
    deliver(services, mail("dev@acme.test", "Site down", "Down since 9."))
    deliverer.deliver_due()
    [card] = fake_slack.of("chat.postMessage")
    event = {"type": "message", "channel": CHANNEL, "user": "USUP", "text": "replayed note",
             "ts": "1790000200.000001", "thread_ts": card.body.get("ts") or "1790000000.000001",
             "channel_type": "channel"}
    first = sender.event(event, "EvReplay")
    assert first.status_code == 200
    assert replay(sender, first) == 401
    time.sleep(0.4)
    assert count(services, TicketMessage, TicketMessage.body == "replayed note") == 1


def suspensions(services) -> int:
    return count(services, Suspension)


def test_readonly_staff_cannot_suspend_by_grammar_desk_or_forged_confirm(desk, sender, fake_slack, services, acme):
    with pytest.raises(NotAllowed, match="needs the admin or billing role; you are readonly"):
        execute(services, "suspend acme late again", as_user="UREAD")
    assert "needs the admin or billing role; you are readonly" in shown(desk("suspend acme late again", "UREAD"))
    before = len(fake_slack.of("response_url"))
    sender.action("UREAD", "desk_confirm", json.dumps({"words": "suspend acme late again"}), block_id="desk_confirm")
    answer = fake_slack.wait_for("response_url", before + 1)[before].body
    assert "needs the admin or billing role" in shown(answer)
    status = services.run(lambda tx: tx.session.scalar(select(Account.status)), readonly=True)
    assert status == AccountStatus.active and suspensions(services) == 0
    assert count(services, OutboundMail, OutboundMail.intent == "suspension_notice") == 0
    assert count(services, AuditEvent, AuditEvent.action.like("%suspend%")) == 0


HOSTILE = "<!channel> <!here|here> <@U0ADMIN> <https://evil.test|your invoice> & <script>x</script>"


def every_text(body: dict) -> str:
    """Everything a post would show or notify with: its text and every text in its blocks."""
    return json.dumps({"text": body.get("text"), "blocks": body.get("blocks")})


def test_client_text_is_escaped_in_cards_threads_and_notifications(services, acme, deliverer, fake_slack):
    deliver(services, mail("dev@acme.test", f"Help {HOSTILE}", f"Body {HOSTILE}\nline two"))
    deliver(services, mail("dev@acme.test", f"Re: [#T-1] Help {HOSTILE}", f"Again {HOSTILE}"))
    deliverer.deliver_due()
    posts = fake_slack.of("chat.postMessage")
    assert len(posts) == 2  # the ticket's card and the reply in its thread
    for post in posts:
        raw = json.dumps(post.body)
        for live in ("<!channel>", "<!here", "<@U0ADMIN>", "<https://evil.test", "<script>"):
            assert live not in raw, (live, post.body)
        assert "&lt;!channel&gt;" in post.body["text"] and "&lt;!channel&gt;" in every_text(post.body)
        assert "&amp;" in post.body["text"]


def test_the_five_minute_window_and_the_replay_memory_to_the_second():
    """The check itself under an injected clock: 300 s either way is accepted, 301 s is not; a signature
    is remembered for ten minutes (a replay within them is refused), then forgotten."""
    from bot.signed import SignedRequests
    from tests.support.slack_api import signature
    clock = [1_800_000_000.0]
    check = SignedRequests("s3cret", now=lambda: clock[0])

    def signed(ts: int, body: bytes = b"x=1") -> tuple[bytes, str, str]:
        return body, str(ts), signature("s3cret", str(ts), body.decode())
    t = int(clock[0])
    assert check.refusal(*signed(t - 300)) is None and check.refusal(*signed(t + 300)) is None
    assert "five minutes" in check.refusal(*signed(t - 301)) and "five minutes" in check.refusal(*signed(t + 301))
    assert "does not match" in check.refusal(b"x=1", str(t), "v0=" + "0" * 64)
    assert "replay" in check.refusal(*signed(t - 300))
    clock[0] += 299  # the replay still within its own window: still remembered
    assert "replay" in check.refusal(*signed(t + 300))
    clock[0] += 10 * 60  # past both windows: the timestamp itself is now refused
    assert "five minutes" in check.refusal(*signed(t + 300))
    fresh = int(clock[0])
    assert check.refusal(*signed(fresh, b"y=2")) is None
