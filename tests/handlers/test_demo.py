"""The demo data set shows every feature, dated from today, and loads idempotently."""
import datetime as dt

from sqlalchemy import func, select

from handlers.demo import REMINDER_DAYS, REMINDER_MONTHS, add_months, demo_document, demo_is_loaded, load_demo
from handlers.importer import validate
from handlers.models import (Account, Contact, Invoice, Invoicing, LedgerEntry, Payment, Service, ServiceEvent,
                             ServiceStatus, Ticket, TicketMessage, TicketStatus)
from handlers.services import Services

TODAY = dt.date(2026, 11, 21)  # the clock fixture's day in UTC
TABLES = (Account, Contact, Service, ServiceEvent, Invoice, Payment, LedgerEntry, Ticket, TicketMessage)


def domains(doc):
    """(account ref, service) for every domain of a demo document."""
    return [(a["ref"], s) for a in doc["accounts"] for s in a.get("services", []) if s["kind"] == "domain"]


def test_add_months_uses_calendar_months():
    """Month offsets are calendar months, clamped to the shorter month's last day."""
    assert add_months(dt.date(2026, 11, 21), 3) == dt.date(2027, 2, 21)
    assert add_months(dt.date(2027, 1, 31), 1) == dt.date(2027, 2, 28)
    assert add_months(dt.date(2026, 12, 31), 2) == dt.date(2027, 2, 28)


def test_demo_covers_every_reminder_offset():
    """Some active domain expires on each reminder day; one expired 3 days ago; some far off."""
    for today in (TODAY, dt.date(2027, 1, 31), dt.date(2028, 2, 29)):
        doc = demo_document(today)
        validate(doc)
        offsets = {(dt.date.fromisoformat(s["expires_on"]) - today).days
                   for _, s in domains(doc) if s["status"] == "active"}
        wanted = set(REMINDER_DAYS) | {(add_months(today, m) - today).days for m in REMINDER_MONTHS}
        assert wanted <= offsets, sorted(wanted - offsets)
        expired = [s for _, s in domains(doc) if s["status"] == "expired"]
        assert [dt.date.fromisoformat(s["expires_on"]) - today for s in expired] == [dt.timedelta(days=-3)]
        assert max(offsets) > 365
        assert all(s["ref"].endswith(".test") for _, s in domains(doc))


def test_demo_has_every_kind_of_account_invoice_and_ticket(services):
    """Loaded, the demo has sub-accounts, a late payer, paper invoicing, a reseller, an account
    near its credit limit, every invoice state, every ticket state and every service kind."""
    services.run(load_demo, actor="cli")

    def check(s):
        accounts = {a.ref: a for a in s.scalars(select(Account))}
        assert len(accounts) >= 4
        for a in accounts.values():
            assert a.owner is not None and a.owner.email.endswith(".test")
        subs = [c for c in s.scalars(select(Contact).where(Contact.is_owner.is_(False)))]
        assert len({tuple(c.permissions) for c in subs}) >= 3
        assert len({tuple(sorted(c.email_prefs.items())) for c in subs}) >= 3
        assert {svc.kind for svc in s.scalars(select(Service))} == {"domain", "hosting", "vps", "ssl", "extra"}

        invoices = list(s.scalars(select(Invoice)))
        unpaid = [i for i in invoices if i.paid_minor < i.total_minor]
        assert any(i.paid_minor == i.total_minor > 0 for i in invoices), "a paid invoice"
        assert any(i.paid_minor == 0 and i.due_on > TODAY for i in unpaid), "a due invoice"
        assert any(0 < i.paid_minor for i in unpaid), "a partially paid invoice"
        assert any(i.due_on < TODAY for i in unpaid), "an overdue invoice"

        late = [a for a in accounts.values() if a.auto_suspend]
        assert len(late) == 1
        assert any(i.account_id == late[0].id and (TODAY - i.due_on).days > 3 for i in unpaid)
        assert any(a.invoicing == Invoicing.paper for a in accounts.values())
        assert any(a.sales_contact and a.sales_contact.endswith(".test") for a in accounts.values())

        balances = dict(s.execute(select(LedgerEntry.account_id, func.sum(LedgerEntry.amount_minor))
                                  .group_by(LedgerEntry.account_id)).all())
        near = [a for a in accounts.values() if a.credit_limit_minor == 10000]
        assert [balances[a.id] for a in near] == [-9200]
        for a in accounts.values():  # nobody else is at their limit on loading
            assert a in near or -balances.get(a.id, 0) < a.credit_limit_minor / 2

        tickets = list(s.scalars(select(Ticket)))
        states = {(t.status, t.archived) for t in tickets}
        assert {(TicketStatus.open, False), (TicketStatus.answered, False), (TicketStatus.closed, False),
                (TicketStatus.closed, True)} <= states
        assert all(t.messages for t in tickets)
        assert {m.kind.value for t in tickets for m in t.messages} == {"client", "reply", "note"}
        assert all(m.at < services.clock.now() for t in tickets for m in t.messages)

        expired = s.scalars(select(Service).where(Service.status == ServiceStatus.expired)).all()
        assert [(svc.expires_on - TODAY).days for svc in expired] == [-3]
    with services.db.transaction(readonly=True) as s:
        check(s)


def row_counts(services):
    """Rows in every table the demo fills."""
    with services.db.transaction(readonly=True) as s:
        return {m.__tablename__: s.scalar(select(func.count()).select_from(m)) for m in TABLES}


def test_demo_loads_twice_without_duplicating(services):
    """A second load on the same day finds everything in place and adds nothing; progress is reported."""
    with services.db.transaction(readonly=True) as s:
        assert not demo_is_loaded(s)
    progress = []
    first = services.run(load_demo, lambda done, total: progress.append((done, total)), actor="cli")
    assert first.counts["accounts"]["created"] == 5 and first.changed
    assert progress == [(n, 5) for n in range(1, 6)]
    with services.db.transaction(readonly=True) as s:
        assert demo_is_loaded(s)
    before = row_counts(services)
    second = services.run(load_demo, actor="cli")
    assert not second.changed, second.summary()
    assert row_counts(services) == before


def test_demo_loaded_again_a_day_later_only_moves_dates(services, clock):
    """Reloading the next day re-dates services and charges but duplicates nothing."""
    services.run(load_demo, actor="cli")
    before = row_counts(services)
    clock.advance(days=1)
    result = services.run(load_demo, actor="cli")
    assert result.counts["services"]["created"] == 0 and result.counts["messages"]["created"] == 0
    assert result.counts["payments"]["created"] == 0 and result.counts["invoices"]["created"] == 0
    assert row_counts(services) == before


def test_demo_is_dated_in_the_business_timezone(settings, clock):
    """Today is the business's day: at 09:00 UTC it is still yesterday in Honolulu."""
    svc = Services(settings.replace(timezone="Pacific/Honolulu"), clock=clock)
    try:
        svc.run(load_demo, actor="cli")
        with svc.db.transaction(readonly=True) as s:
            sale = s.scalar(select(Service).where(Service.ref == "northwind-sale.test"))
            assert sale.expires_on == TODAY - dt.timedelta(days=1)
    finally:
        svc.close()
