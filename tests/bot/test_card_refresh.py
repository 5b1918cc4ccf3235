"""A ticket's card follows the ticket whatever door changed it: `renewdesk staff` in a shell,
the staff grammar, `/desk`, a button, a client's reply. Each change queues one ``chat.update`` of
the card (through the Slack outbox), and changes made before it goes out fold into one."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import select

from handlers.models import SlackPost
from handlers.staff import execute
from tests.bot.conftest import CHANNEL, shown
from tests.handlers.billing_helpers import account, load
from tests.support import proc
from tests.support.mailflow import deliver, mail

CARD = "1790000000.000001"  # the ts FakeSlack gives the first post: the ticket's card


def _posts(services, method):
    return services.run(lambda tx: [(r.status.value, r.update_ts) for r in tx.session.scalars(
        select(SlackPost).where(SlackPost.method == method).order_by(SlackPost.id))], readonly=True)


def _carded_ticket(services, deliverer):
    load(services, account("acme"))
    deliver(services, mail("dev@acme.test", "Site down", "Down since 9."))
    deliverer.deliver_due()


def test_every_ticket_command_updates_the_card_once(services, team, fake_slack, deliverer):
    """assign, hold, reply, close, archive, unarchive from the grammar (as the shell's operator and
    as a Slack user): each sends exactly one chat.update of the card showing the new state and who."""
    _carded_ticket(services, deliverer)
    steps = [("ticket assign 1 USUP", None, "assigned to <@USUP>", "the operator (renewdesk staff)"),
             ("ticket hold 1", "USUP", "status *on hold*", "put on hold by <@USUP>"),
             ("ticket reply 1 The DNS is fixed.", "USUP", "status *answered*", "replied to the client by <@USUP>"),
             ("ticket close 1", None, "status *closed*", "closed by the operator"),
             ("ticket archive 1", "USUP", "status *archived*", "archived by <@USUP>"),
             ("ticket unarchive 1", "UADMIN", "status *closed*", "unarchived by <@UADMIN>")]
    for n, (words, user, state, who) in enumerate(steps, start=1):
        execute(services, words, as_user=user)
        deliverer.deliver_due()
        updates = fake_slack.of("chat.update")
        assert len(updates) == n, (words, len(updates))
        card = updates[-1].body
        assert (card["channel"], card["ts"]) == (CHANNEL, CARD)
        assert state in shown(card) and who in shown(card), (words, shown(card))
    closed = fake_slack.of("chat.update")[-1].body
    ids = [e["action_id"] for b in closed["blocks"] if b["type"] == "actions" for e in b["elements"]]
    assert ids == ["ticket_reply", "ticket_note"]  # nothing left to take or close
    assert _posts(services, "chat.update") == [("sent", CARD)] * len(steps)


def test_a_note_leaves_the_card_alone_and_a_client_reply_updates_it(services, team, fake_slack, deliverer):
    """A note changes nothing the card shows (it goes into the thread); a client's reply that
    reopens a closed ticket shows on the card."""
    _carded_ticket(services, deliverer)
    execute(services, "ticket note 1 checking", as_user="USUP")
    deliverer.deliver_due()
    assert fake_slack.of("chat.update") == []
    execute(services, "ticket close 1", as_user="USUP")
    deliver(services, mail("dev@acme.test", "Re: [#T-1] Site down", "Down again."))
    deliverer.deliver_due()
    [update] = fake_slack.of("chat.update")  # the close and the reopening folded into one
    assert "status *customer reply*" in shown(update.body) and "the client replied by email" in shown(update.body)


def test_changes_before_delivery_fold_into_one_call(services, team, fake_slack, deliverer):
    """Three changes while Slack is not reached yet: one chat.update with the last state. A change
    before the card itself is posted rewrites the card: no update at all."""
    _carded_ticket(services, deliverer)
    for words in ("ticket assign 1 USUP", "ticket hold 1", "ticket close 1"):
        execute(services, words, as_user="UADMIN")
    deliverer.deliver_due()
    [update] = fake_slack.of("chat.update")
    assert "status *closed*" in shown(update.body) and "assigned to <@USUP>" in shown(update.body)
    assert "closed by <@UADMIN>" in shown(update.body)

    deliver(services, mail("dev@acme.test", "Mail down", "No mail."))  # T-2, its card not posted yet
    execute(services, "ticket close 2", as_user="USUP")
    deliverer.deliver_due()
    card = fake_slack.of("chat.postMessage")[-1].body
    assert "T-2" in shown(card) and "status *closed*" in shown(card) and "closed by <@USUP>" in shown(card)
    assert len(fake_slack.of("chat.update")) == 1


def test_desk_and_buttons_update_the_card_once(services, desk, sender, fake_slack, deliverer):
    """`/desk ticket hold` and the Close button each update the card once: the button adds no
    second update of its own."""
    _carded_ticket(services, deliverer)
    assert "open → on_hold" in shown(desk("ticket hold 1", "USUP"))
    deliverer.deliver_due()
    assert "put on hold by <@USUP>" in shown(fake_slack.wait_for("chat.update")[-1].body)
    before = len(fake_slack.of("response_url"))
    sender.action("USUP", "ticket_close", "1", block_id="card:ticket:1", message_ts=CARD)
    fake_slack.wait_for("response_url", before + 1)
    deliverer.deliver_due()
    updates = fake_slack.of("chat.update")
    assert len(updates) == 2 and "closed by <@USUP>" in shown(updates[-1].body)
    assert len(_posts(services, "chat.update")) == 2


def test_renewdesk_staff_in_a_shell_queues_the_update(services, cli_env, team, fake_slack, deliverer, clock):
    """The real `renewdesk staff ticket close 1` process queues the card's update in the outbox;
    the delivery loop sends it."""
    _carded_ticket(services, deliverer)
    done = proc.run("staff", "ticket", "close", "1", env=cli_env)
    assert done.returncode == 0, done.stderr.decode()
    assert _posts(services, "chat.update") == [("queued", CARD)]
    assert fake_slack.of("chat.update") == []  # the shell only queues; delivery posts
    clock.set(dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=1))  # the shell queued it on the real clock
    deliverer.deliver_due()
    [update] = fake_slack.of("chat.update")
    assert update.body["ts"] == CARD and "closed by the operator (renewdesk staff)" in shown(update.body)
