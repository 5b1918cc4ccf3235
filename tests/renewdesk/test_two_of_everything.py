"""Two of everything on PostgreSQL for a simulated month: the same outcome as one, nothing sent twice.

Database M has two workers (each with its own connections: the inbox processor, the daily sweeps
as the scheduler runs them, the outbox delivery) and two SMTP doors. Database S, filled from the
same import document, has one of each. Every simulated day, on both: the sweeps run (on M both
workers at once), the outbox is delivered (on M by both at once, to one SMTP sink), clients mail
in (on M through both doors), answer yesterday's acknowledgements, reply "renew all" to some
renewal reminders, a payment is recorded, the inbox is processed (on M by both at once) and the
outbox delivered again. At the end M and S hold the same notices, suspensions, statuses, tickets,
decisions, invoices and mail, and each sink got every mail exactly once.
"""
import datetime as dt
import re
import smtplib
from collections import Counter

import pytest
from sqlalchemy import select

from handlers import jobs
from handlers.clock import FixedClock
from handlers.delivery import Deliverer
from handlers.importer import import_document
from handlers.models import (Account, Invoice, OutboundMail, OutboxStatus, RenewalDecision, Service, Ticket,
                             TicketMessage)
from handlers.services import Services
from handlers.staff import execute
from mail_ingest.process import process_batch
from mail_ingest.smtp import DoorController
from renewdesk.scheduler import JOBS
from tests.support.concurrency import all_at_once
from tests.support.mailflow import SUPPORT, mail
from tests.support.servers import free_port
from tests.support.smtp_sink import SmtpSink
from tests.support.sweep_world import account_doc, doubled, outcome

DAY0 = dt.date(2026, 11, 21)
DAYS = 30
ACCOUNTS = 10
SWEEPS = next(j for j in JOBS if j.name == "sweeps")
_IDS = re.compile(r"(#T-|INV-)\d+")


class World:
    """One database with ``n`` workers and ``n`` doors, all on one simulated clock."""

    def __init__(self, settings, db_url, sink, n):
        self.clock = FixedClock(f"{DAY0}T08:00:00+00:00")
        self.settings = settings.replace(database_url=db_url, outbound_smtp_url=sink.url)
        self.workers = [Services(self.settings, clock=self.clock) for _ in range(n)]
        self.sink, self.seen = sink, 0
        self.doors = [DoorController(w, host="127.0.0.1", port=free_port()) for w in self.workers]
        self.workers[0].run(import_document, {"accounts": [account_doc(i, DAY0 + dt.timedelta(days=i))
                                                           for i in range(ACCOUNTS)]}, actor="test")
        for door in self.doors:
            door.start()

    def together(self, step):
        errors = all_at_once(*[lambda w=w: step(w) for w in self.workers])
        assert not errors, errors

    def sweep(self):
        self.together(lambda w: jobs.run_job(w, "sweeps", lambda: SWEEPS.run(w)))

    def deliver(self):
        self.together(lambda w: Deliverer(w).deliver_due(limit=1000))

    def process(self):
        def drain(w):
            while process_batch(w):
                pass
        self.together(drain)

    def send(self, k, sender, rcpt, raw):
        door = self.doors[k % len(self.doors)]
        with smtplib.SMTP("127.0.0.1", door.port, timeout=10) as smtp:
            smtp.sendmail(sender, [rcpt], raw)

    def new_mail(self):
        """What the sink got since the last call."""
        got = self.sink.messages[self.seen:]
        self.seen = len(self.sink.messages)
        return got

    def day(self, d):
        """One simulated day: the scheduler's run, then the clients' mail and a payment."""
        self.clock.set(dt.datetime.combine(DAY0 + dt.timedelta(days=d), dt.time(8), tzinfo=dt.timezone.utc))
        self.sweep()
        self.deliver()
        self.clock.advance(hours=2)
        k = 0
        for got in self.new_mail():
            msg = got.message
            owner = msg["To"].addresses[0].addr_spec
            if not owner.startswith("owner@"):
                continue
            if msg["Subject"].startswith("Renewal reminder") and int(owner[len("owner@a"):].split(".")[0]) % 3 == 0:
                k += 1  # the owners of every third account renew all they are reminded of
                self.send(k, owner, msg["Reply-To"].addresses[0].addr_spec,
                          mail(owner, f"Re: {msg['Subject']}", "renew all", to=msg["Reply-To"].addresses[0].addr_spec))
            elif str(msg["Subject"]).startswith("[#T-") and d % 2:
                k += 1  # on odd days clients answer our acknowledgements
                self.send(k, owner, SUPPORT, mail(owner, f"Re: {msg['Subject']}", "Still broken, sorry.",
                                                  in_reply_to=msg["Message-ID"]))
        for i in (d % ACCOUNTS, (d * 7 + 3) % ACCOUNTS):  # two clients write in
            k += 1
            owner = f"owner@a{i:04d}.test"
            self.send(k, owner, SUPPORT, mail(owner, f"Day {d}: question", f"Question from a{i:04d} on day {d}."))
        execute(self.workers[0], f"payment record a{(d * 5) % ACCOUNTS:04d} 11.90 --ref PAY-{d}", as_user=None)
        self.process()
        self.deliver()

    def close(self):
        for door in self.doors:
            door.stop()
        for w in self.workers:
            w.close()


def business(services):
    """Tickets, decisions and invoices by name (ids and numbers depend on who got there first)."""
    def op(tx):
        s = tx.session
        refs = dict(s.execute(select(Account.id, Account.ref)).all())
        names = dict(s.execute(select(Service.id, Service.name)).all())
        tickets = Counter((refs[t.account_id], t.subject, t.status.value, len(t.messages))
                          for t in s.scalars(select(Ticket)))
        decisions = Counter((names[r.service_id], r.action.value, r.period_years, r.channel)
                            for r in s.scalars(select(RenewalDecision)))
        invoices = Counter((refs[i.account_id], _IDS.sub(r"\1n", i.number), i.status.value, i.total_minor,
                            i.paid_minor) for i in s.scalars(select(Invoice)))
        mails = Counter((m.intent, tuple(m.recipients), _IDS.sub(r"\1n", m.subject), m.created_at.date())
                        for m in s.scalars(select(OutboundMail)))
        rows = {m.message_id: (m.intent, tuple(m.recipients), m.dedupe_key or f"{m.subject}@{m.created_at.date()}",
                               m.status) for m in s.scalars(select(OutboundMail))}
        messages = s.scalar(select(TicketMessage.id).order_by(TicketMessage.id.desc()).limit(1))
        return {"tickets": tickets, "decisions": decisions, "invoices": invoices, "mails": mails, "rows": rows,
                "messages": messages}
    return services.run(op, readonly=True)


def _sent_once(world, facts):
    """Every outgoing mail reached the sink once: by Message-ID and by (intent, recipient, dedupe)."""
    ids = Counter(str(got.message["Message-ID"]) for got in world.sink.messages)
    assert not doubled(ids)
    assert set(ids) == set(facts["rows"]), "a mail was lost or one came from nowhere"
    assert all(row[3] == OutboxStatus.sent for row in facts["rows"].values())
    by_intent = Counter((facts["rows"][mid][0], rcpt, facts["rows"][mid][2])
                        for got in world.sink.messages for mid in [str(got.message["Message-ID"])]
                        for rcpt in got.rcpt_tos)
    assert not doubled(by_intent)


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_two_workers_and_two_doors_for_a_month_do_what_one_does(settings, db_url, other_db_url):
    with SmtpSink() as sink_m, SmtpSink() as sink_s:
        many, one = World(settings, db_url, sink_m, 2), World(settings, other_db_url, sink_s, 1)
        try:
            for d in range(DAYS):
                many.day(d)
                one.day(d)
            got_m, got_s = outcome(many.workers[0]), outcome(one.workers[0])
            facts_m, facts_s = business(many.workers[0]), business(one.workers[0])
        finally:
            many.close()
            one.close()
    for part in ("notices", "suspensions", "statuses", "accounts"):
        assert got_m[part] == got_s[part], part
    for part in ("tickets", "decisions", "invoices", "mails"):
        assert facts_m[part] == facts_s[part], part
    # the month did exercise everything
    kinds = {n[0] for n in got_s["notices"]}
    assert {"renewal_reminder", "invoice_reminder", "invoice_overdue", "renewal_auto"} <= kinds
    assert got_s["suspensions"] and facts_s["decisions"] and len(facts_s["tickets"]) >= DAYS
    for world, facts in ((many, facts_m), (one, facts_s)):
        _sent_once(world, facts)
