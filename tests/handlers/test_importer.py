"""The import format: a valid file creates everything, re-imports are idempotent, bad input
names its field and changes nothing (on SQLite and PostgreSQL)."""
import copy
import datetime as dt
import json

import pytest
from sqlalchemy import func, select

from handlers.errors import InvalidInput
from handlers.importer import import_document, load_json, validate
from handlers.models import (PERMISSIONS, Account, AuditEvent, Contact, Invoice, InvoiceLine, InvoiceStatus,
                             LedgerEntry, LedgerKind, Payment, PaymentAllocation, Service, ServiceEvent,
                             ServiceStatus, Ticket, TicketMessage, TicketStatus, TicketWatcher)

TABLES = (Account, Contact, Service, ServiceEvent, Invoice, InvoiceLine, Payment, PaymentAllocation, LedgerEntry,
          Ticket, TicketMessage, TicketWatcher, AuditEvent)


def document():
    """Two accounts using every part of the format, EUR and JPY."""
    return {"accounts": [
        {"ref": "acme", "name": "Acme Ltd", "currency": "eur",
         "owner": {"email": "Ann@Acme.test", "name": "Ann Owner"},
         "contacts": [{"email": "dev@acme.test", "name": "Dev", "permissions": ["services", "tickets"],
                       "email_preferences": {"billing": False}}],
         "credit_limit": "-25.50", "auto_suspend": True, "invoicing": "paper",
         "sales_contact": "Sales@Reseller.test", "overdue_notices": False,
         "services": [
             {"ref": "acme.test", "kind": "domain", "name": "acme.test", "status": "active",
              "expires_on": "2027-01-15", "period_years": 2, "price": "12.00", "auto_renew": True},
             {"ref": "acme-hosting", "kind": "hosting", "name": "Hosting Basic", "price": "10"}],
         "invoices": [
             {"number": "INV-1001", "issued_on": "2026-11-01", "due_on": "2026-11-15",
              "lines": [{"text": "Hosting Basic, Dec 2026", "amount": "10.00", "tax": "1.90"}], "paid": "0.00"},
             {"number": "INV-1002", "issued_on": "2026-11-02", "due_on": "2026-11-30",
              "lines": [{"text": "Design", "amount": "100.00", "tax": "20.00"},
                        {"text": "Discount", "amount": "-10.00", "tax": "-2.00"}], "paid": "50.25"}],
         "charges": [{"ref": "setup", "on": "2026-11-03", "amount": "7.50", "text": "Setup fee"}],
         "tickets": [{"ref": "T-1", "subject": "Help", "status": "answered", "opened_by": "dev@acme.test",
                      "messages": [
                          {"from": "Dev@acme.test", "kind": "client", "body": "It broke.",
                           "at": "2026-11-20T10:00:00+01:00"},
                          {"from": "staff:U123ABC", "kind": "reply", "body": "Fixed.",
                           "at": "2026-11-20T11:00:00Z"}]}]},
        {"ref": "tokyo", "name": "Tokyo KK", "currency": "JPY", "owner": {"email": "ken@tokyo.test"},
         "services": [{"ref": "tokyo.test", "kind": "domain", "expires_on": "2027-03-01", "price": "1500"}],
         "invoices": [{"number": "JP-1", "issued_on": "2026-11-01", "due_on": "2026-11-10",
                       "lines": [{"text": "Domain", "amount": "1500", "tax": "150"}], "paid": "1650"}]},
    ]}


def run_import(services, data):
    """Import ``data`` in one transaction, as the CLI would."""
    return services.run(import_document, data, actor="cli")


def row_counts(services):
    """How many rows every table touched by an import has."""
    with services.db.transaction(readonly=True) as s:
        return {m.__tablename__: s.scalar(select(func.count()).select_from(m)) for m in TABLES}


def query(services, fn):
    """Run ``fn(session)`` in a read-only transaction."""
    with services.db.transaction(readonly=True) as s:
        return fn(s)


def test_valid_file_creates_everything_in_minor_units(services):
    """Every part of a valid file lands with amounts in minor units and emails lower-cased."""
    result = run_import(services, document())
    assert result.counts["accounts"]["created"] == 2
    assert result.summary().startswith("2 accounts (2 created), 3 contacts (3 created), 3 services (3 created)")

    def check(s):
        acme = s.scalar(select(Account).where(Account.ref == "acme"))
        assert (acme.currency, acme.credit_limit_minor, acme.auto_suspend, acme.invoicing.value) == (
            "EUR", -2550, True, "paper")
        assert acme.sales_contact == "sales@reseller.test" and acme.overdue_notices is False
        owner, dev = acme.contacts
        assert (owner.email, owner.is_owner, owner.permissions) == ("ann@acme.test", True, list(PERMISSIONS))
        assert (dev.is_owner, dev.permissions, dev.email_prefs) == (False, ["tickets", "services"], {"billing": False})
        domain, hosting = acme.services
        assert (domain.expires_on, domain.period_years, domain.price_minor, domain.auto_renew) == (
            dt.date(2027, 1, 15), 2, 1200, True)
        assert (hosting.price_minor, hosting.status, hosting.expires_on) == (1000, ServiceStatus.active, None)
        assert [(e.from_status, e.to_status, e.reason, e.actor) for e in domain.events] == [
            (None, "active", "imported", "cli")]
        inv1, inv2 = s.scalars(select(Invoice).where(Invoice.account_id == acme.id).order_by(Invoice.number))
        assert (inv1.total_minor, inv1.paid_minor, inv1.status) == (1190, 0, InvoiceStatus.issued)
        assert [(ln.amount_minor, ln.tax_minor) for ln in inv2.lines] == [(10000, 2000), (-1000, -200)]
        assert (inv2.total_minor, inv2.paid_minor, inv2.status) == (10800, 5025, InvoiceStatus.partially_paid)
        payment = s.scalar(select(Payment).where(Payment.account_id == acme.id))
        assert (payment.amount_minor, payment.method, payment.ref) == (5025, "import", "import:invoice:INV-1002:1")
        assert [(a.invoice_id, a.amount_minor) for a in payment.allocations] == [(inv2.id, 5025)]
        ledger = {(e.kind, e.amount_minor, e.ref) for e in s.scalars(
            select(LedgerEntry).where(LedgerEntry.account_id == acme.id))}
        assert ledger == {(LedgerKind.charge, -1190, "import:invoice:INV-1001"),
                          (LedgerKind.charge, -10800, "import:invoice:INV-1002"),
                          (LedgerKind.payment, 5025, None),
                          (LedgerKind.charge, -750, "import:charge:acme:setup")}
        ticket = s.scalar(select(Ticket).where(Ticket.ref == "T-1"))
        assert (ticket.status, ticket.opened_by_contact_id) == (TicketStatus.answered, dev.id)
        assert [(m.author, m.kind.value) for m in ticket.messages] == [("dev@acme.test", "client"),
                                                                        ("staff:U123ABC", "reply")]
        assert ticket.created_at == dt.datetime(2026, 11, 20, 9, 0, tzinfo=dt.timezone.utc)
        assert {w.contact_id for w in ticket.watchers} == {owner.id, dev.id}
        jp = s.scalar(select(Invoice).where(Invoice.number == "JP-1"))
        assert (jp.total_minor, jp.paid_minor, jp.status, jp.currency) == (1650, 1650, InvoiceStatus.paid, "JPY")
        assert s.scalar(select(Service.price_minor).where(Service.ref == "tokyo.test")) == 1500
        actions = s.scalars(select(AuditEvent.action).where(AuditEvent.actor == "cli")).all()
        assert actions == ["import.account_created", "import.account_created"]
    query(services, check)


def test_reimport_is_a_no_op(services):
    """Importing the same file again creates, updates and records nothing."""
    run_import(services, document())
    before = row_counts(services)
    again = run_import(services, document())
    assert not again.changed
    assert all(c["created"] == c["updated"] == 0 for c in again.counts.values())
    assert again.counts["services"]["unchanged"] == 3 and again.counts["messages"]["unchanged"] == 2
    assert again.summary().startswith("2 accounts (2 unchanged), 3 contacts (3 unchanged)")
    assert json.loads(json.dumps(again.to_json()))["counts"]["invoices"] == {"created": 0, "updated": 0,
                                                                              "unchanged": 3}
    assert row_counts(services) == before


def test_changed_service_status_is_an_update_with_history(services, clock):
    """A new status on re-import updates the service and adds one history event."""
    run_import(services, document())
    clock.advance(days=1)
    data = document()
    data["accounts"][0]["services"][0]["status"] = "suspended"
    result = run_import(services, data)
    assert result.counts["services"] == {"created": 0, "updated": 1, "unchanged": 2}
    assert result.counts["accounts"] == {"created": 0, "updated": 0, "unchanged": 2}

    def check(s):
        svc = s.scalar(select(Service).where(Service.ref == "acme.test"))
        assert svc.status == ServiceStatus.suspended
        assert [(e.from_status, e.to_status) for e in svc.events] == [(None, "active"), ("active", "suspended")]
        assert svc.events[1].at == clock.now() and svc.events[1].reason == "imported"
        audit = s.scalars(select(AuditEvent).where(AuditEvent.action == "import.account_updated")).all()
        assert [(a.detail["ref"], a.detail["changes"]) for a in audit] == [("acme", {"services": {"updated": 1}})]
    query(services, check)


def test_more_paid_on_reimport_records_the_difference(services):
    """A higher paid amount becomes a second payment for the difference and settles the invoice."""
    run_import(services, document())
    data = document()
    data["accounts"][0]["invoices"][1]["paid"] = "108.00"
    result = run_import(services, data)
    assert result.counts["payments"]["created"] == 1 and result.counts["invoices"]["updated"] == 1

    def check(s):
        inv = s.scalar(select(Invoice).where(Invoice.number == "INV-1002"))
        assert (inv.paid_minor, inv.status) == (10800, InvoiceStatus.paid)
        payments = s.scalars(select(Payment).where(Payment.ref.like("import:invoice:INV-1002:%")).order_by(Payment.id))
        assert [(p.ref, p.amount_minor) for p in payments] == [("import:invoice:INV-1002:1", 5025),
                                                                ("import:invoice:INV-1002:2", 5775)]
    query(services, check)


def test_reimport_updates_fields_owner_and_adds_new_ticket_messages(services):
    """Changed fields are updated, a new owner takes over, and only new messages are added."""
    run_import(services, document())
    data = document()
    acme = data["accounts"][0]
    acme["name"] = "Acme Group"
    acme["owner"] = {"email": "dev@acme.test", "name": "Dev Boss"}
    acme["contacts"] = [{"email": "ann@acme.test", "permissions": ["billing"]}]
    acme["tickets"][0]["messages"].append(
        {"from": "dev@acme.test", "kind": "client", "body": "Thanks!", "at": "2026-11-21T08:00:00Z"})
    result = run_import(services, data)
    assert result.counts["accounts"]["updated"] == 1
    assert result.counts["contacts"] == {"created": 0, "updated": 2, "unchanged": 1}  # ken of tokyo
    assert result.counts["messages"] == {"created": 1, "updated": 0, "unchanged": 2}

    def check(s):
        account = s.scalar(select(Account).where(Account.ref == "acme"))
        assert account.name == "Acme Group" and account.owner.email == "dev@acme.test"
        ann = next(c for c in account.contacts if c.email == "ann@acme.test")
        assert (ann.is_owner, ann.permissions) == (False, ["billing"])
        ticket = s.scalar(select(Ticket).where(Ticket.ref == "T-1"))
        assert [m.body for m in ticket.messages] == ["It broke.", "Fixed.", "Thanks!"]
        assert ticket.updated_at == dt.datetime(2026, 11, 21, 8, 0, tzinfo=dt.timezone.utc)
    query(services, check)
    assert not run_import(services, data).changed


def _set(path, value):
    """A change to the sample document: set ``value`` at the dotted ``path`` (None deletes)."""
    def change(data):
        *parents, last = path.split(".")
        node = data
        for key in parents:
            node = node[int(key)] if key.isdigit() else node[key]
        if value is None:
            del node[int(last) if last.isdigit() else last]
        else:
            node[int(last) if last.isdigit() else last] = value
    return change


BAD = [
    (_set("accounts.0.ref", None), "accounts[0].ref: required"),
    (_set("accounts.0.name", "  "), "accounts[0].name: must not be empty"),
    (_set("accounts.0.currency", "EURO"), "accounts[0].currency: not a currency code"),
    (_set("accounts.0.owner.email", None), "accounts[0].owner.email: required"),
    (_set("accounts.0.owner.permissions", ["billing"]), 'accounts[0].owner.permissions: unknown field'),
    (_set("accounts.0.contacts.0.email", "dev at acme"), "accounts[0].contacts[0].email: not an email address"),
    (_set("accounts.0.contacts.0.email", "ann@acme.test"), "accounts[0].contacts[0].email: duplicate"),
    (_set("accounts.0.contacts.0.permissions", ["tickets", "admin"]), "accounts[0].contacts[0].permissions[1]: "
                                                                       "not a permission"),
    (_set("accounts.0.contacts.0.email_preferences", {"digest": True}),
     "accounts[0].contacts[0].email_preferences.digest: unknown field"),
    (_set("accounts.0.credit_limit", "ten"), "accounts[0].credit_limit: not an amount"),
    (_set("accounts.0.auto_suspend", "yes"), "accounts[0].auto_suspend: not true or false"),
    (_set("accounts.0.invoicing", "fax"), "accounts[0].invoicing: not a way of invoicing"),
    (_set("accounts.0.services.0.kind", "mailbox"), "accounts[0].services[0].kind: not a service kind"),
    (_set("accounts.0.services.0.status", "frozen"), "accounts[0].services[0].status: not a service status"),
    (_set("accounts.0.services.0.expires_on", "15/01/2027"), "accounts[0].services[0].expires_on: not a date"),
    (_set("accounts.0.services.0.expires_on", None), "accounts[0].services[0].expires_on: required"),
    (_set("accounts.0.services.0.expires", "2027-01-15"),
     'accounts[0].services[0].expires: unknown field (did you mean "expires_on"?)'),
    (_set("accounts.0.services.0.price", "12.001"), "accounts[0].services[0].price: more decimals than EUR"),
    (_set("accounts.0.services.0.price", "-1.00"), "accounts[0].services[0].price: must not be negative"),
    (_set("accounts.0.services.0.period_years", 11), "accounts[0].services[0].period_years: must be a whole"),
    (_set("accounts.0.services.0.auto_renew", None), None),  # deleting an optional field is fine
    (_set("accounts.0.services.1.ref", "acme.test"), "accounts[0].services[1].ref: duplicate"),
    (_set("accounts.0.invoices.0.due_on", "2026-10-01"), "accounts[0].invoices[0].due_on: before issued_on"),
    (_set("accounts.0.invoices.0.paid", "11.91"), "accounts[0].invoices[0].paid: more than the invoice total"),
    (_set("accounts.0.invoices.0.lines", []), "accounts[0].invoices[0].lines: an invoice needs at least one line"),
    (_set("accounts.1.invoices.0.number", "INV-1001"), "accounts[1].invoices[0].number: duplicate"),
    (_set("accounts.1.invoices.0.lines.0.amount", "15.5"), "accounts[1].invoices[0].lines[0].amount: more decimals"),
    (_set("accounts.1.ref", "acme"), "accounts[1].ref: duplicate"),
    (_set("accounts.0.charges.0.on", None), "accounts[0].charges[0].on: required"),
    (_set("accounts.0.tickets.0.status", "pending"), "accounts[0].tickets[0].status: not a ticket status"),
    (_set("accounts.0.tickets.0.opened_by", "eve@evil.test"), "accounts[0].tickets[0].opened_by: eve@evil.test is "
                                                              "not the owner or a contact"),
    (_set("accounts.0.tickets.0.messages.0.at", "2026-11-20T10:00:00"),
     "accounts[0].tickets[0].messages[0].at: no timezone"),
    (_set("accounts.0.tickets.0.messages.1.from", "ann@acme.test"),
     "accounts[0].tickets[0].messages[1].from: a reply comes from staff"),
    (_set("accounts.0.sales_contact", 5), "accounts[0].sales_contact: not a string"),
    (_set("accounts.0.name", None), "accounts[0].name: required"),
    (_set("accounts", {"ref": "acme"}), "accounts: not a list"),
]


@pytest.mark.parametrize("change,message", BAD, ids=[m or "ok" for _, m in BAD])
def test_bad_input_names_the_field_and_changes_nothing(services, change, message):
    """Each kind of wrong field is reported by its path, and the database is left as it was."""
    data = document()
    change(data)
    if message is None:
        validate(data)
        return
    before = row_counts(services)
    with pytest.raises(InvalidInput) as err:
        run_import(services, data)
    assert str(err.value).startswith(message), str(err.value)
    assert err.value.path == message.split(":")[0]
    assert row_counts(services) == before


def test_null_and_non_object_documents_are_refused(services):
    """null is never taken for "leave out", and a document must be an object with accounts."""
    data = document()
    data["accounts"][0]["credit_limit"] = None
    with pytest.raises(InvalidInput, match=r"^accounts\[0\]\.credit_limit: must not be null"):
        validate(data)
    for doc in ([], "x", {"account": []}):
        with pytest.raises(InvalidInput):
            validate(doc)
    assert run_import(services, {"accounts": []}).summary() == "nothing to import (0 accounts)"


def test_error_only_in_the_last_account_changes_nothing(services):
    """A wrong date in the third account is found before anything is written."""
    data = document()
    data["accounts"].append(copy.deepcopy(data["accounts"][1]))
    data["accounts"][2].update(ref="third", invoices=[])
    data["accounts"][2]["services"][0]["expires_on"] = "2027-02-30"
    with pytest.raises(InvalidInput, match=r"^accounts\[2\]\.services\[0\]\.expires_on: not a date$"):
        run_import(services, data)
    assert all(n == 0 for n in row_counts(services).values())


def test_database_conflict_in_the_last_account_rolls_back_the_rest(services):
    """An invoice number owned by another account, found while applying the last account,
    names its path and leaves the earlier accounts of the file uncreated."""
    run_import(services, {"accounts": [document()["accounts"][1]]})
    before = row_counts(services)
    data = document()
    data["accounts"][1]["ref"] = "tokyo-2"
    data["accounts"][1]["owner"]["email"] = "ken@tokyo2.test"
    with pytest.raises(InvalidInput) as err:
        run_import(services, data)
    assert str(err.value) == "accounts[1].invoices[0].number: invoice JP-1 belongs to another account (tokyo)"
    assert row_counts(services) == before
    assert query(services, lambda s: s.scalar(select(Account).where(Account.ref == "acme"))) is None


@pytest.mark.parametrize("path,value,message", [
    ("accounts.0.invoices.1.paid", "10.00", "accounts[0].invoices[1].paid: 10.00 EUR is less than the 50.25 EUR"),
    ("accounts.0.invoices.0.lines.0.amount", "11.00", "accounts[0].invoices[0].lines: differ from invoice INV-1001"),
    ("accounts.0.charges.0.amount", "8.00", "accounts[0].charges[0].amount: charge setup was imported as 7.50 EUR"),
    ("accounts.0.currency", "USD", "accounts[0].currency: account acme already uses EUR"),
])
def test_reimport_refuses_what_cannot_change(services, path, value, message):
    """Paid lower than already paid, changed lines or charge amounts, and a new currency are
    refused with their path, and nothing of the re-import is applied."""
    run_import(services, document())
    before = row_counts(services)
    data = document()
    _set(path, value)(data)
    data["accounts"][1]["name"] = "Tokyo Renamed"  # would be applied if the import were not all-or-nothing
    with pytest.raises(InvalidInput) as err:
        run_import(services, data)
    assert str(err.value).startswith(message), str(err.value)
    assert row_counts(services) == before
    assert query(services, lambda s: s.scalar(select(Account.name).where(Account.ref == "tokyo"))) == "Tokyo KK"
    assert query(services, lambda s: s.scalar(
        select(Invoice.paid_minor).where(Invoice.number == "INV-1002"))) == 5025


def test_result_json_and_file_loading(tmp_path):
    """The result serialises, and a broken file names its line and column."""
    good = tmp_path / "good.json"
    good.write_text(json.dumps(document()))
    assert validate(load_json(good)).accounts[1].currency == "JPY"
    bad = tmp_path / "bad.json"
    bad.write_text('{"accounts": [\n  {"ref": "x",}\n]}')
    with pytest.raises(InvalidInput, match="line 2, column"):
        load_json(bad)
    with pytest.raises(InvalidInput, match="no such file"):
        load_json(tmp_path / "missing.json")
