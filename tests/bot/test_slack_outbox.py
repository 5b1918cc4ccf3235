"""The Slack outbox: cards are queued with their cause, posted in order, paced per channel; a 429
storm delays posts without losing or reordering any; errors retry or fail as Slack means them."""
from __future__ import annotations

from sqlalchemy import select

from bot.delivery import SlackDeliverer
from handlers.delivery import Deliverer
from handlers.inbox import Incoming, store_many
from handlers.models import SlackPost
from handlers.staff import execute
from mail_ingest.process import process_batch
from tests.bot.conftest import CHANNEL, shown
from tests.handlers.billing_helpers import account, billing_sweep, invoice, load
from tests.support.mailflow import deliver, mail


def _rows(services):
    return services.run(lambda tx: [(r.status.value, r.attempts, r.last_error)
                                    for r in tx.session.scalars(select(SlackPost).order_by(SlackPost.id))],
                        readonly=True)


def _tickets(services, n):
    load(services, account("acme"))
    for i in range(n):
        deliver(services, mail("dev@acme.test", f"Problem {i + 1}", f"Details {i + 1}"))


def test_a_429_storm_delays_posts_but_loses_and_reorders_none(services, fake_slack, deliverer, clock):
    """Three 429s in a row: each time the post waits for Retry-After (on our clock) and the channel's
    later posts wait behind it; in the end every card is posted once, in the order queued."""
    _tickets(services, 6)
    fake_slack.plan("chat.postMessage", 3, status=429, retry_after=30)
    start = clock.now()
    rounds = 0
    while any(s != "sent" for s, _, _ in _rows(services)):
        report = deliverer.deliver_due()
        assert report.failed == 0
        if fake_slack.of("chat.postMessage", ok_only=False)[-1].answered == 429:
            assert deliverer.deliver_due().sent == 0  # nothing goes out before Retry-After
        clock.advance(seconds=30)
        rounds += 1
        assert rounds < 10
    posted = [shown(c.body) for c in fake_slack.of("chat.postMessage")]
    assert len(posted) == 6 and all(f"T-{i + 1}" in p for i, p in enumerate(posted))
    assert len(fake_slack.of("chat.postMessage", ok_only=False)) == 9
    assert (clock.now() - start).total_seconds() >= 90
    assert all(attempts == 1 for _, attempts, _ in _rows(services))  # a 429 is not a failed attempt


def test_posts_to_one_channel_are_paced(services, fake_slack):
    """About one post per second per channel (here 0.2 s, to keep the test short)."""
    _tickets(services, 3)
    SlackDeliverer(services, pace_seconds=0.2).deliver_due()
    times = [c.at for c in fake_slack.of("chat.postMessage")]
    assert len(times) == 3 and all(b - a >= 0.18 for a, b in zip(times, times[1:]))


def test_errors_retry_or_fail_as_slack_means_them(services, fake_slack, deliverer, clock):
    """A server error is retried with backoff; `channel_not_found` fails at once and stays listed."""
    _tickets(services, 2)
    fake_slack.plan("chat.postMessage", 1, status=500, error="internal_error")
    fake_slack.plan("chat.postMessage", 1, status=200, error="channel_not_found")
    deliverer.deliver_due()
    rows = _rows(services)
    assert rows[0][0] == "queued" and "internal_error" in rows[0][2]
    assert rows[1] == ("failed", 1, "channel_not_found")
    clock.advance(minutes=2)
    deliverer.deliver_due()
    assert _rows(services)[0][0] == "sent"


def test_quarantine_suspension_failed_delivery_and_digest_cards(services, fake_slack, deliverer, clock, sink):
    """Each of these posts one card to the staff channel, with the buttons staff need."""
    services.run(store_many, [Incoming(b"   \r\n\r\n  ", "smtp", "x@y.test", ("support@desk.example.test",))])
    process_batch(services)
    load(services, account("late", auto_suspend=True, invoices=[invoice("L-1", "2026-11-01", "2026-11-20",
                                                                        [("Hosting", "10.00", "0.00")])]))
    billing_sweep(services, clock, "2026-11-24")
    sink.handler.data_code = "554 5.7.1 refused"
    Deliverer(services).deliver_due()
    sink.handler.data_code = None
    execute(services, "digest", as_user=None)
    deliverer.deliver_due()
    cards = [c.body for c in fake_slack.of("chat.postMessage")]
    assert all(c["channel"] == CHANNEL for c in cards)
    quarantine = next(c for c in cards if "Quarantined mail" in shown(c))
    assert "only whitespace" in shown(quarantine)
    suspension = next(c for c in cards if "suspended automatically" in shown(c))
    ids = [e["action_id"] for b in suspension["blocks"] if b["type"] == "actions" for e in b["elements"]]
    assert ids == ["invoice_paid", "invoice_remind", "invoice_void",
                   "account_unsuspend", "account_hold", "account_suspend", "payment_open"]
    assert any("was not delivered" in shown(c) and "554" in shown(c) for c in cards)
    assert any("Daily digest" in shown(c) for c in cards)


def test_nothing_is_queued_when_slack_is_off(services, settings, clock):
    """Without a bot token or channel the hooks queue nothing (and operations work as before)."""
    services.settings = settings.replace(slack_channel=None)
    _tickets(services, 1)
    execute(services, "digest", as_user=None)
    assert _rows(services) == []
    assert services.run(lambda tx: tx.session.scalar(select(SlackPost.id)), readonly=True) is None
