"""`/desk` through the real web server: signed commands, every grammar command once, refusals,
usage lines, confirmation of destructive commands, and requests Slack would never sign."""
from __future__ import annotations

import json
import time

import pytest
from sqlalchemy import func, select

from handlers.models import Invoice, InvoiceStatus, Payment
from handlers.staff import BY_NAME, COMMANDS, is_available
from tests.bot.conftest import SECRET, shown
from tests.handlers.billing_helpers import account, invoice, load
from tests.support.mailflow import deliver, mail

ACME = [invoice("INV-1", "2026-10-01", "2026-10-15", [("Hosting", "10.00", "2.00")]),
        invoice("INV-2", "2026-11-01", "2026-11-30", [("Domain", "20.00", "0.00")]),
        invoice("INV-3", "2026-11-01", "2026-11-30", [("Extra", "5.00", "0.00")])]

# every grammar command, as staff would type it (an admin runs them all)
EVERY_COMMAND = [
    "help", "help invoice", "account show acme", "account history acme",
    "ticket list --all", "ticket show 1", "ticket reply 1 Fixed it, please check.", "ticket note 1 called them",
    "ticket assign 1 me", "ticket hold 1", "ticket close 1", "ticket archive 1", "ticket unarchive 1",
    "invoice list --all", "invoice show INV-1", "invoice paid INV-1", "invoice remind INV-2",
    "invoice create acme 10.00 extra work --tax 21", "payment list acme",
    "charge add acme 3.00 design work", "credit-limit acme 50", "hold acme --until 2026-12-31 talking to them",
    "unhold acme", "forecast", "renewals due", "renewal link acme", "renewal confirm acme", "renewal auto acme on",
    "renewal done host --expires 2028-06-01", "digest",
    "inbox", "inbox --quarantined", "inbox retry 1", "inbox attach 1 acme",
    "team list", "team add UNEW readonly", "team remove UNEW",
    "unsuspend acme",  # conflict: not suspended (an answer all the same)
]
DESTRUCTIVE = ["invoice void INV-3 wrong amount", "payment record acme 20 --invoices INV-2 --ref BANK-1",
               "suspend acme talking to the bank", "payment void 1 the bank returned it"]


@pytest.fixture
def acme(services):
    load(services, account("acme", invoices=ACME))
    deliver(services, mail("dev@acme.test", "Site down", "Our site is down since 9."))


def test_every_grammar_command_answers_through_desk(desk, acme, fake_slack):
    """Each command of the grammar runs once through /desk and answers ephemerally; commands whose
    operation is not built yet say so."""
    typed = {BY_NAME[" ".join(w.split()[:2])] if " ".join(w.split()[:2]) in BY_NAME else BY_NAME[w.split()[0]]
             for w in EVERY_COMMAND + DESTRUCTIVE}
    assert {c.name for c in COMMANDS} <= {c.name for c in typed}, "a grammar command is not exercised"
    for words in EVERY_COMMAND:
        answer = desk(words)
        assert answer["response_type"] == "ephemeral"
        text = shown(answer)
        name = next(c.name for c in sorted(COMMANDS, key=lambda c: -len(c.words))
                    if words.lower().split()[:len(c.words)] == list(c.words))
        if not is_available(name):
            assert "not available yet" in text, (words, text)
        else:
            assert "something went wrong" not in text, (words, text)
    assert "reply queued" in shown(desk("ticket reply 1 again"))
    assert "INV-1" in shown(desk("invoice show INV-1")) and "paid" in shown(desk("invoice show INV-1"))


def test_destructive_commands_ask_first_and_run_only_when_confirmed(desk, acme, sender, fake_slack, services):
    """`payment record`, `invoice void` and `suspend` answer with a preview and Confirm; nothing
    changes until Confirm is clicked, and Cancel changes nothing."""
    for words in DESTRUCTIVE:
        answer = desk(words, "UBILL")
        buttons = [b for b in answer["blocks"] if b["type"] == "actions"][0]["elements"]
        assert [b["action_id"] for b in buttons] == ["desk_confirm", "desk_cancel"]
        assert "confirm" in buttons[0]  # Slack's own dialog as well
    count = lambda: services.run(lambda tx: (tx.session.scalar(select(func.count()).select_from(Payment)),  # noqa: E731
                                             tx.session.scalar(select(Invoice.status)
                                                               .where(Invoice.number == "INV-3"))),
                                 readonly=True)
    assert count() == (0, InvoiceStatus.issued)
    preview = shown(desk("payment record acme 20 --invoices INV-2 --ref BANK-1", "UBILL"))
    assert "Invoice INV-2" in preview and "left to pay" in preview  # the summary before confirming

    before = len(fake_slack.of("response_url"))
    sender.action("UBILL", "desk_cancel", "cancel", block_id="desk_confirm")
    assert "nothing was changed" in shown(fake_slack.wait_for("response_url", before + 1)[before].body)
    assert count() == (0, InvoiceStatus.issued)

    for words in DESTRUCTIVE[:2]:
        before = len(fake_slack.of("response_url"))
        sender.action("UBILL", "desk_confirm", json.dumps({"words": words}), block_id="desk_confirm")
        done = fake_slack.wait_for("response_url", before + 1)[before].body
        assert done["replace_original"] is True
    assert count() == (1, InvoiceStatus.void)


def test_refusals_name_the_role_and_strangers_are_told_to_ask(desk, acme):
    """A readonly member is refused a change with the role it needs; someone not on the team is
    refused everything, even help; confirming does not bypass the role."""
    assert "needs the admin or billing role; you are readonly" in shown(desk("invoice remind INV-2", "UREAD"))
    assert "needs the admin or billing role" in shown(desk("suspend acme", "UREAD"))  # refused before any confirm
    assert "not on the renewdesk team" in shown(desk("help", "USTRANGER"))
    assert "needs the admin or support role" in shown(desk("ticket close 1", "UBILL"))


def test_bad_words_get_the_usage_line(desk):
    """A misspelt command answers with the usage line of the nearest command."""
    text = shown(desk("invoce show INV-1"))
    assert "did you mean `invoice show`" in text and "usage: invoice show N" in text
    assert "usage: ticket reply T TEXT" in shown(desk("ticket reply"))


def test_requests_slack_did_not_sign_are_refused(sender, desk, fake_slack):
    """A wrong signature and a stale timestamp are refused with 401, and nothing runs."""
    assert sender.command("team list", "UADMIN", secret="not-the-secret").status_code == 401
    assert sender.command("team list", "UADMIN", timestamp=int(time.time()) - 600).status_code == 401
    time.sleep(0.3)
    assert fake_slack.of("response_url") == []
    assert "admin" in shown(desk("team list"))
    assert SECRET  # the right secret does work (above)
