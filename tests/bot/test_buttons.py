"""Every card button, clicked by a role that may and by one that may not; the card is updated in
place with the new state and who acted; modals for suspend, payment over several invoices, note;
App Home within Slack's limits."""
from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from handlers.models import Account, AccountStatus, Invoice, InvoiceStatus, Suspension, Ticket
from handlers.inbox import Incoming, store_many
from mail_ingest.process import process_batch
from tests.bot.conftest import shown
from tests.handlers.billing_helpers import account, billing_sweep, invoice, load
from tests.support.mailflow import deliver, mail

LINES = [("Hosting", "10.00", "0.00")]
CARD = "1790000000.000001"         # the suspension's card, posted first
TICKET_CARD = "1790000000.000002"  # the ticket's card
INBOX_CARD = "1790000000.000003"   # the quarantined mail's card


@pytest.fixture
def late(services, clock, team, deliverer):
    """An automatically suspended account with an overdue invoice, plus a ticket, both carded."""
    load(services, account("late", auto_suspend=True, invoices=[
        invoice("L-1", "2026-11-01", "2026-11-20", LINES), invoice("L-2", "2026-11-01", "2026-11-30", LINES),
        invoice("L-3", "2026-11-01", "2026-12-10", LINES)]))
    billing_sweep(services, clock, "2026-11-24")
    deliver(services, mail("dev@late.test", "Why suspended?", "Please explain."))
    services.run(store_many, [Incoming(b"  \r\n", "smtp", "x@y.test", ("support@desk.example.test",))])
    process_batch(services)  # quarantined: message 2
    deliverer.deliver_due()
    return services


def card_ts(block_id):
    return TICKET_CARD if block_id.startswith("card:ticket") else INBOX_CARD if "inbox" in block_id else CARD


def click(sender, fake_slack, user, action_id, value, block_id):
    before = len(fake_slack.of("response_url"))
    assert sender.action(user, action_id, value, block_id=block_id, message_ts=card_ts(block_id)).status_code == 200
    return shown(fake_slack.wait_for("response_url", before + 1)[before].body)


def _state(services):
    def op(tx):
        t = tx.session.get(Ticket, 1)
        acc = tx.session.scalar(select(Account).where(Account.ref == "late"))
        inv = {i.number: i.status for i in tx.session.scalars(select(Invoice))}
        return t.assignee, t.status.value, acc.status, inv
    return services.run(op, readonly=True)


BUTTONS = [  # action, value, block, refused role, allowed role, what the allowed click says
    ("ticket_take", "1", "card:ticket:1", "UBILL", "USUP", "assigned to <@USUP>"),
    ("ticket_close", "1", "card:ticket:1", "UREAD", "USUP", "→ closed"),
    ("invoice_remind", "L-2", "card:suspension:1:invoice", "USUP", "UBILL", "queued to"),
    ("account_unsuspend", "1", "card:suspension:1", "UREAD", "UADMIN", "lifted 1 suspension(s) of Late Ltd"),
    ("account_hold", "1", "card:suspension:1", "USUP", "UBILL", "held Late Ltd"),
    ("invoice_void", "L-3", "card:suspension:1:invoice", "UREAD", "UBILL", "is void"),
    ("invoice_paid", "L-1", "card:suspension:1:invoice", "USUP", "UBILL", "Payment 10.00 EUR"),
    ("inbox_retry", "2", "card:inbox:2", "UREAD", "USUP", "will be processed again"),
]


def test_every_button_checks_the_role_and_updates_the_card(late, sender, fake_slack, deliverer):
    """A role that may not is refused with the role it needs and nothing changes; a role that may
    acts, and the card is rebuilt in place saying who did it."""
    for action_id, value, block, refused, allowed, said in BUTTONS:
        before = _state(late)
        answer = click(sender, fake_slack, refused, action_id, value, block)
        assert "role; you are" in answer, (action_id, answer)
        assert _state(late) == before
        answer = click(sender, fake_slack, allowed, action_id, value, block)
        assert said in answer, (action_id, answer)
        deliverer.deliver_due()
        update = fake_slack.of("chat.update")[-1].body
        assert update["ts"] == card_ts(block) and f"by <@{allowed}>" in shown(update), (action_id, shown(update))
    assignee, status, acc_status, invoices = _state(late)
    assert (assignee, status, acc_status) == ("USUP", "closed", AccountStatus.active)
    assert invoices == {"L-1": InvoiceStatus.paid, "L-2": InvoiceStatus.issued, "L-3": InvoiceStatus.void}
    closed_card = fake_slack.of("chat.update")[1].body
    assert "ticket_close" not in json.dumps(closed_card) and "ticket_take" not in json.dumps(closed_card)
    # a second click meets the new state: refused with the reason, nothing changes
    assert "already closed" in click(sender, fake_slack, "USUP", "ticket_close", "1", "card:ticket:1")


def test_modals_check_the_role_before_opening(late, sender, fake_slack):
    """Reply, note, suspend and payment modals open only for a role that may use them."""
    for action_id, value, refused, allowed in (("ticket_reply", "1", "UBILL", "USUP"),
                                               ("ticket_note", "1", "UREAD", "USUP"),
                                               ("account_suspend", "1", "USUP", "UBILL"),
                                               ("payment_open", "1", "USUP", "UBILL")):
        opened = len(fake_slack.of("views.open"))
        assert "role; you are" in click(sender, fake_slack, refused, action_id, value, "card:x:1")
        sender.action(allowed, action_id, value, block_id="card:suspension:1", message_ts=CARD)
        fake_slack.wait_for("views.open", opened + 1)


def test_suspend_modal_needs_a_reason_and_suspends(late, sender, fake_slack, services):
    sender.action("UBILL", "account_suspend", "1", block_id="card:suspension:1", message_ts=CARD)
    view = fake_slack.wait_for("views.open")[-1].body["view"]
    response = sender.submit("UBILL", view, {"reason": {"reason": "fraud check"}})
    assert response.status_code == 200 and "errors" not in response.text
    manual = services.run(lambda tx: tx.session.scalar(select(Suspension.text).where(Suspension.reason == "manual")),
                          readonly=True)
    assert manual == "fraud check"
    response = sender.submit("UBILL", view, {"reason": {"reason": "again"}})
    assert json.loads(response.text)["response_action"] == "errors"  # suspended by staff already


def test_payment_modal_shows_the_summary_before_recording(late, sender, fake_slack, services):
    """Pick invoices, see each one's lines and what is left, then confirm; nothing before that."""
    sender.action("UBILL", "payment_open", "1", block_id="card:suspension:1", message_ts=CARD)
    view = fake_slack.wait_for("views.open")[-1].body["view"]
    options = [o["value"] for b in view["blocks"] if b.get("block_id") == "invoices" for o in b["element"]["options"]]
    assert options == ["L-1", "L-2", "L-3"]
    bad = sender.submit("UBILL", view, {"amount": {"amount": "ten"}, "invoices": {"invoices": []}})
    assert "amount" in json.loads(bad.text)["errors"]
    step = json.loads(sender.submit("UBILL", view, {"amount": {"amount": "15.00"},
                                                    "invoices": {"invoices": ["L-2", "L-3"]},
                                                    "ref": {"ref": "BANK 7"}}).text)
    assert step["response_action"] == "update"
    summary = shown(step["view"])
    assert "Invoice L-2" in summary and "Invoice L-3" in summary and "left to pay: 5.00 EUR" in summary
    assert _state(services)[3]["L-2"] == InvoiceStatus.issued  # nothing recorded yet
    done = json.loads(sender.submit("UBILL", step["view"], {}).text)
    assert done["response_action"] == "update" and "Payment 15.00 EUR" in shown(done["view"])
    assert (_state(services)[3]["L-2"] == InvoiceStatus.paid
            and _state(services)[3]["L-3"] == InvoiceStatus.partially_paid)


def test_app_home_per_staff_member(late, sender, fake_slack):
    """App Home shows my tickets, open tickets, overdue invoices, the next sweep and quarantined
    mail within 100 blocks; someone not on the team is told how to join."""
    sender.action("USUP", "ticket_take", "1", block_id="card:ticket:1", message_ts=CARD)
    fake_slack.wait_for("response_url")
    sender.event({"type": "app_home_opened", "user": "USUP", "tab": "home", "channel": "D1"}, "EvH1")
    home = fake_slack.wait_for("views.publish")[-1].body
    text = shown(home["view"])
    for part in ("My tickets (1)", "Open tickets (1)", "Overdue invoices (1)", "Next sweep", "Quarantined mail (1)"):
        assert part in text, (part, text)
    assert home["user_id"] == "USUP" and len(home["view"]["blocks"]) <= 100
    sender.event({"type": "app_home_opened", "user": "UOTHER", "tab": "home", "channel": "D2"}, "EvH2")
    assert "not on the renewdesk team" in shown(fake_slack.wait_for("views.publish", 2)[-1].body["view"])
