"""A ticket's life in Slack: the card is the thread's parent, the client's mail goes into the
thread, a staff message there is an internal note, "Reply to client" emails the client (threaded)
and shows in the thread as sent, and the client's answer comes back into the thread."""
from __future__ import annotations

import json
import time

from sqlalchemy import select

from handlers.delivery import Deliverer
from handlers.models import MessageKind, SlackPost, Ticket, TicketMessage
from tests.bot.conftest import CHANNEL, shown
from tests.handlers.billing_helpers import account, load
from tests.support.mailflow import deliver, mail


def _ticket(services, ticket_id=1):
    def op(tx):
        t = tx.session.get(Ticket, ticket_id)
        return t.slack_channel, t.slack_ts, [(m.kind, m.body, m.slack_ts) for m in t.messages]
    return services.run(op, readonly=True)


def _wait(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def test_ticket_thread_round_trip(services, team, sender, fake_slack, deliverer, sink):
    """client email → card → client reply in the thread → staff note in the thread (a retried event
    once) → Reply modal → email at the SMTP sink, shown in the thread as sent → client reply → thread."""
    load(services, account("acme"))
    deliver(services, mail("dev@acme.test", "Site down", "Our site <is> down since 9."))
    deliverer.deliver_due()
    [card] = fake_slack.of("chat.postMessage")
    assert card.body["channel"] == CHANNEL and "thread_ts" not in card.body
    assert "T-1" in shown(card.body) and "&lt;is&gt;" in shown(card.body)  # client text escaped
    assert [e["action_id"] for e in card.body["blocks"][-1]["elements"]] == \
        ["ticket_take", "ticket_reply", "ticket_note", "ticket_close"]
    channel, parent, _ = _ticket(services)
    assert (channel, parent) == (CHANNEL, "1790000000.000001")  # the ts Slack gave the card

    # the client writes again: into the thread
    deliver(services, mail("dev@acme.test", "Re: [#T-1] Site down", "Still down."))
    deliverer.deliver_due()
    post = fake_slack.of("chat.postMessage")[-1].body
    assert post["thread_ts"] == parent and "Still down." in shown(post)

    # a staff member writes in the thread: an internal note, once even if Slack retries the event
    event = {"type": "message", "channel": CHANNEL, "user": "USUP", "text": "checking the DNS",
             "ts": "1790000100.000001", "thread_ts": parent, "channel_type": "channel"}
    # (a second delivery is signed anew: a byte-identical copy would be refused as a replay)
    for age in (0, 1):
        assert sender.event(event, "Ev1", timestamp=int(time.time()) - age).status_code == 200
    assert sender.event(event, "Ev1-retry", headers={"X-Slack-Retry-Num": "1"}).status_code == 200
    # our own bot's post in the thread never loops back
    sender.event({**event, "ts": "1790000100.000002", "bot_id": "BBOT", "text": "echo"}, "Ev2")
    _wait(lambda: any(k == MessageKind.note for k, _, _ in _ticket(services)[2]))
    time.sleep(0.3)
    notes = [(b, ts) for k, b, ts in _ticket(services)[2] if k == MessageKind.note]
    assert notes == [("checking the DNS", "1790000100.000001")]
    deliverer.deliver_due()
    assert "checking the DNS" not in shown(fake_slack.of("chat.postMessage")[-1].body)  # not posted back

    # "Reply to client": the modal opens, the reply is emailed and shown in the thread as sent
    sender.action("USUP", "ticket_reply", "1", block_id="card:ticket:1", message_ts=parent)
    [opened] = fake_slack.wait_for("views.open")
    view = opened.body["view"]
    assert view["callback_id"] == "ticket_reply_modal"
    answer = sender.submit("USUP", view, {"text": {"text": "We fixed the DNS record.\nPlease check."}})
    assert answer.status_code == 200 and "errors" not in answer.text
    Deliverer(services).deliver_due()
    [sent] = [m for m in sink.messages if "We fixed the DNS record." in m.message.get_body(("plain",)).get_content()]
    assert "[#T-1]" in sent.message["Subject"] and sent.message["In-Reply-To"]
    deliverer.deliver_due()
    thread = [c.body for c in fake_slack.of("chat.postMessage") if c.body.get("thread_ts") == parent]
    assert "Reply sent to the client" in shown(thread[-1]) and "<@USUP>" in shown(thread[-1])
    updates = fake_slack.of("chat.update")
    assert (updates and updates[-1].body["ts"] == parent
            and "replied to the client by <@USUP>" in shown(updates[-1].body))

    # the client answers our mail: threaded by its Message-ID, posted into the Slack thread
    deliver(services, mail("dev@acme.test", "Re: your answer", "Works now, thanks!",
                           in_reply_to=sent.message["Message-ID"]))
    deliverer.deliver_due()
    last = fake_slack.of("chat.postMessage")[-1].body
    assert last["thread_ts"] == parent and "Works now, thanks!" in shown(last)
    kinds = [k for k, _, _ in _ticket(services)[2]]
    assert kinds == [MessageKind.client, MessageKind.client, MessageKind.note, MessageKind.reply, MessageKind.client]


def test_thread_post_waits_for_its_card(services, team, fake_slack, deliverer, clock):
    """A client reply queued while the card is still waiting (Slack down) is posted after the card,
    into its thread, not as a loose message."""
    load(services, account("acme"))
    fake_slack.plan("chat.postMessage", 1, status=500, error="internal_error")
    deliver(services, mail("dev@acme.test", "Site down", "Down."))
    deliver(services, mail("dev@acme.test", "Re: [#T-1] Site down", "Still down."))
    deliverer.deliver_due()
    assert _ticket(services)[1] is None
    clock.advance(minutes=5)
    deliverer.deliver_due()
    clock.advance(seconds=5)
    deliverer.deliver_due()
    posts = [c.body for c in fake_slack.of("chat.postMessage")]
    assert "thread_ts" not in posts[0] and posts[1]["thread_ts"] == _ticket(services)[1]
    rows = services.run(lambda tx: [r.status.value for r in tx.session.scalars(select(SlackPost))], readonly=True)
    assert rows == ["sent", "sent"]
    assert json.dumps(posts[1]).count("Still down.") >= 1
    assert services.run(lambda tx: tx.session.scalar(select(TicketMessage.slack_ts).where(TicketMessage.id == 2)),
                        readonly=True) is not None
