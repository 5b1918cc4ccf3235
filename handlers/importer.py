"""``renewdesk import FILE.json``: create or update accounts and everything under them.

The format, its extensions and the re-import rules are in docs/import-format.md. Everything
happens in the caller's transaction: an error anywhere changes nothing.
"""
from __future__ import annotations

import contextlib
import copy
import datetime as dt
import json
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Iterator

from sqlalchemy import func, select

from handlers.billing.invoices import status_for
from handlers.billing.plans import define_plan, record_usage, subscribe
from handlers.errors import Conflict, InvalidInput, NotFound
from handlers.import_format import validate
from handlers.money import fmt
from handlers.import_plan import AccountPlan, ChargePlan, ContactPlan, ImportPlan, InvoicePlan, ServicePlan, TicketPlan
from handlers.models import (PERMISSIONS, Account, AccountStatus, Contact, Invoice, InvoiceLine, InvoiceStatus,
                             Invoicing, LedgerEntry, LedgerKind, Payment, PaymentAllocation, Service, ServiceEvent,
                             ServiceStatus, Ticket, TicketMessage, TicketStatus, TicketWatcher)

__all__ = ["ImportPlan", "ImportResult", "Progress", "apply", "import_document", "load_json", "validate"]

Progress = Callable[[int, int], None]
KINDS = ("plans", "accounts", "contacts", "services", "invoices", "payments", "charges", "subscriptions", "usage",
         "tickets", "messages")
STATES = ("created", "updated", "unchanged")
_SINGULAR = {"plans": "plan", "subscriptions": "subscription", "usage": "usage record", "accounts": "account",
             "contacts": "contact", "services": "service", "invoices": "invoice", "payments": "payment",
             "charges": "charge", "tickets": "ticket", "messages": "message"}


@dataclass
class ImportResult:
    """How many of each kind were created, updated or left unchanged."""

    counts: dict[str, dict[str, int]] = field(
        default_factory=lambda: {k: {s: 0 for s in STATES} for k in KINDS})

    def add(self, kind: str, state: str) -> None:
        """Count one ``kind`` row as ``state``."""
        self.counts[kind][state] += 1

    @property
    def changed(self) -> bool:
        return any(c["created"] or c["updated"] for c in self.counts.values())

    def summary(self) -> str:
        """One line: ``3 accounts (2 created, 1 unchanged), 12 services (...)``."""
        parts = []
        for kind in KINDS:
            c = self.counts[kind]
            total = sum(c.values())
            if total:
                noun = kind if total != 1 else _SINGULAR[kind]
                detail = ", ".join(f"{c[s]} {s}" for s in STATES if c[s])
                parts.append(f"{total} {noun} ({detail})")
        return ", ".join(parts) if parts else "nothing to import (0 accounts)"

    def to_json(self) -> dict[str, Any]:
        return {"changed": self.changed, "counts": copy.deepcopy(self.counts), "summary": self.summary()}


def load_json(path: str | Path) -> object:
    """Read an import file; a syntax error names the line and column."""
    try:
        # JSON numbers with a fraction are read as exact decimals, never as floats
        return json.loads(Path(path).read_text(encoding="utf-8"), parse_float=Decimal)
    except FileNotFoundError:
        raise InvalidInput(f"no such file: {path}") from None
    except UnicodeDecodeError:
        raise InvalidInput(f"{path}: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{path}: not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from None


def import_document(tx: Any, data: object, progress: Progress | None = None) -> ImportResult:
    """Validate ``data`` and apply it in ``tx``."""
    return apply(tx, validate(data), progress)


def apply(tx: Any, plan: ImportPlan, progress: Progress | None = None) -> ImportResult:
    """Create or update everything in ``plan`` inside the caller's transaction.

    ``progress(done, total)`` is called after each account, for a terminal's progress line.
    """
    result = ImportResult()
    refs = [a.ref for a in plan.accounts]
    existing = {a.ref: a for a in _in_chunks(tx.session, Account, Account.ref, refs)}
    applier = _Applier(tx, result)
    for spec in plan.plans:
        with _at(spec.path):
            result.add("plans", define_plan(tx, spec.ref, spec.name, spec.currency, list(spec.lines))[1])
    for done, plan_account in enumerate(plan.accounts, start=1):
        applier.account(plan_account, existing.get(plan_account.ref))
        if progress is not None:
            progress(done, len(plan.accounts))
    tx.session.flush()
    return result


@contextlib.contextmanager
def _at(path: str) -> Iterator[None]:
    """Name the file's field in an error an operation raises (``accounts[0].usage[2].metric: ...``)."""
    try:
        yield
    except (InvalidInput, Conflict, NotFound) as exc:
        inner = getattr(exc, "path", None)
        message = exc.message[len(inner) + 2:] if inner else exc.message
        raise InvalidInput(message, path=f"{path}.{inner}" if inner else path) from None


def _in_chunks(session: Any, model: Any, column: Any, values: list[str]) -> list[Any]:
    """Rows whose ``column`` is one of ``values`` (IN lists kept short for every database)."""
    rows: list[Any] = []
    for i in range(0, len(values), 500):
        rows.extend(session.scalars(select(model).where(column.in_(values[i:i + 500]))))
    return rows


def _assign(obj: Any, **values: Any) -> list[str]:
    """Set every given (not None) value that differs; return the names changed."""
    changed = []
    for name, value in values.items():
        if value is not None and getattr(obj, name) != value:
            setattr(obj, name, value)
            changed.append(name)
    return changed


class _Applier:
    """Applies one plan account at a time, counting into ``result``."""

    def __init__(self, tx: Any, result: ImportResult):
        self.tx, self.s, self.result = tx, tx.session, result

    def start_of(self, day: dt.date) -> dt.datetime:
        """Midnight of ``day`` in the business's timezone."""
        return dt.datetime.combine(day, dt.time(0), tzinfo=self.tx.settings.tz)

    def account(self, p: AccountPlan, acc: Account | None) -> None:
        """The account row, then its contacts, services, invoices, charges and tickets."""
        before = copy.deepcopy(self.result.counts)
        if acc is None:
            acc = Account(ref=p.ref, name=p.name, currency=p.currency, created_at=self.tx.now,
                          credit_limit_minor=p.credit_limit_minor, auto_suspend=bool(p.auto_suspend),
                          overdue_notices=p.overdue_notices is not False, sales_contact=p.sales_contact or None,
                          invoicing=p.invoicing or Invoicing.electronic, status=AccountStatus.active)
            self.s.add(acc)
            self.s.flush()
            fields, state = [], "created"
        else:
            if acc.currency != p.currency:
                raise InvalidInput(f"account {p.ref} already uses {acc.currency}; its currency cannot change",
                                   path=f"{p.path}.currency")
            fields = _assign(acc, name=p.name, credit_limit_minor=p.credit_limit_minor, auto_suspend=p.auto_suspend,
                             invoicing=p.invoicing, overdue_notices=p.overdue_notices)
            if p.sales_contact is not None and acc.sales_contact != (p.sales_contact or None):
                acc.sales_contact = p.sales_contact or None
                fields.append("sales_contact")
            state = "updated" if fields else "unchanged"
        self.result.add("accounts", state)
        contacts = self.contacts(acc, p)
        services = {svc.ref: svc for svc in acc.services}
        for sp in p.services:
            self.service(acc, sp, services.get(sp.ref))
        invoices = {i.number: i for i in _in_chunks(self.s, Invoice, Invoice.number, [i.number for i in p.invoices])}
        for ip in p.invoices:
            self.invoice(acc, ip, invoices.get(ip.number))
        self.charges(acc, p.charges)
        if p.subscription is not None:
            sp = p.subscription
            with _at(sp.path):
                self.result.add("subscriptions", subscribe(self.tx, acc.id, sp.plan_ref, sp.starts_on, sp.ends_on)[1])
        for up in p.usage:
            with _at(up.path):
                created = record_usage(self.tx, acc.id, up.metric, up.quantity, up.at, up.ref,
                                       audit=False)[1]
            self.result.add("usage", "created" if created else "unchanged")
        self.tickets(acc, p.tickets, contacts)
        self.audit(acc, state, fields, before)

    def audit(self, acc: Account, state: str, fields: list[str], before: dict[str, dict[str, int]]) -> None:
        """One audit event for an account that was created or changed in any way."""
        changes = {k: {s: self.result.counts[k][s] - before[k][s] for s in ("created", "updated")} for k in KINDS}
        changes = {k: {s: n for s, n in v.items() if n} for k, v in changes.items() if any(v.values())}
        if state == "created" or fields or set(changes) - {"accounts"}:
            action = "import.account_created" if state == "created" else "import.account_updated"
            self.tx.audit(action, subject=acc, account_id=acc.id, ref=acc.ref, fields=fields, changes=changes)

    # -- contacts ------------------------------------------------------------------------------

    def contacts(self, acc: Account, p: AccountPlan) -> dict[str, Contact]:
        """Owner and contacts by email; a previous owner not in the file is demoted."""
        by_email = {c.email: c for c in acc.contacts}
        for cp in (p.owner, *p.contacts):
            self.contact(acc, cp, by_email)
        for c in list(by_email.values()):
            if c.is_owner and c.email != p.owner.email:
                c.is_owner = False
                self.result.add("contacts", "updated")
        self.s.flush()
        return by_email

    def contact(self, acc: Account, cp: ContactPlan, by_email: dict[str, Contact]) -> None:
        """Create or update one contact."""
        perms = list(PERMISSIONS) if cp.is_owner else None if cp.permissions is None else list(cp.permissions)
        c = by_email.get(cp.email)
        if c is None:
            c = Contact(email=cp.email, name=cp.name or "", is_owner=cp.is_owner, permissions=perms or [],
                        email_prefs=dict(cp.email_prefs or {}), subscriptions=[], bounce_count=0,
                        created_at=self.tx.now)
            acc.contacts.append(c)
            self.s.add(c)
            by_email[cp.email] = c
            self.result.add("contacts", "created")
            return
        changed = _assign(c, name=cp.name, is_owner=cp.is_owner, permissions=perms, email_prefs=cp.email_prefs)
        self.result.add("contacts", "updated" if changed else "unchanged")

    # -- services ------------------------------------------------------------------------------

    def service(self, acc: Account, sp: ServicePlan, svc: Service | None) -> None:
        """Create or update one service; every status it takes is kept as an event."""
        if svc is None:
            status = sp.status or ServiceStatus.active
            svc = Service(ref=sp.ref, kind=sp.kind, name=sp.name or sp.ref, status=status, expires_on=sp.expires_on,
                          period_years=sp.period_years or 1, price_minor=sp.price_minor or 0, currency=acc.currency,
                          auto_renew=bool(sp.auto_renew), billing_period=sp.billing_period,
                          next_due_on=sp.next_due_on, due_day=sp.next_due_on.day if sp.next_due_on else None,
                          product=sp.product, server=sp.server, created_at=self.tx.now)
            acc.services.append(svc)
            self.s.add(svc)
            self.event(svc, None, status)
            self.result.add("services", "created")
            return
        old = svc.status
        changed = _assign(svc, kind=sp.kind, name=sp.name, status=sp.status, expires_on=sp.expires_on,
                          period_years=sp.period_years, price_minor=sp.price_minor, auto_renew=sp.auto_renew,
                          billing_period=sp.billing_period, next_due_on=sp.next_due_on,
                          due_day=sp.next_due_on.day if sp.next_due_on else None, product=sp.product, server=sp.server)
        if "status" in changed:
            self.event(svc, old, svc.status)
        self.result.add("services", "updated" if changed else "unchanged")

    def event(self, svc: Service, old: ServiceStatus | None, new: ServiceStatus) -> None:
        """One entry of the service's status history."""
        svc.events.append(ServiceEvent(at=self.tx.now, from_status=None if old is None else old.value,
                                       to_status=new.value, reason="imported", actor=self.tx.actor))

    # -- invoices, payments, charges -----------------------------------------------------------

    def invoice(self, acc: Account, ip: InvoicePlan, inv: Invoice | None) -> None:
        """Create an invoice with its ledger charge, or bring an existing one up to date."""
        if inv is None:
            inv = Invoice(account_id=acc.id, number=ip.number, status=status_for(ip.total_minor, 0),
                          currency=acc.currency, issued_on=ip.issued_on, due_on=ip.due_on,
                          total_minor=ip.total_minor, paid_minor=0, origin="import", created_at=self.tx.now)
            inv.lines = [InvoiceLine(position=i, text=line.text, amount_minor=line.amount_minor,
                                     tax_minor=line.tax_minor) for i, line in enumerate(ip.lines, start=1)]
            self.s.add(inv)
            self.s.flush()
            self.s.add(LedgerEntry(account_id=acc.id, at=self.start_of(ip.issued_on), kind=LedgerKind.charge,
                                   amount_minor=-inv.total_minor, currency=acc.currency, text=f"Invoice {ip.number}",
                                   source="import", invoice_id=inv.id, ref=f"import:invoice:{ip.number}",
                                   actor=self.tx.actor))
            self.pay(acc, inv, ip)
            self.result.add("invoices", "created")
            return
        if inv.account_id != acc.id:
            other = self.s.get(Account, inv.account_id)
            raise InvalidInput(f"invoice {ip.number} belongs to another account ({other.ref})",
                               path=f"{ip.path}.number")
        if inv.status == InvoiceStatus.void:
            if ip.paid_minor is not None and ip.paid_minor != inv.paid_minor:
                raise InvalidInput(f"invoice {ip.number} is void; no payment can be recorded", path=f"{ip.path}.paid")
            self.result.add("invoices", "unchanged")
            return
        lines = [(line.text, line.amount_minor, line.tax_minor) for line in inv.lines]
        if lines != [(line.text, line.amount_minor, line.tax_minor) for line in ip.lines]:
            raise InvalidInput(f"differ from invoice {ip.number} already imported; an invoice's lines cannot "
                               "change (void it and issue a new one)", path=f"{ip.path}.lines")
        changed = _assign(inv, issued_on=ip.issued_on, due_on=ip.due_on)
        if "issued_on" in changed:
            entry = self.s.scalar(select(LedgerEntry).where(LedgerEntry.ref == f"import:invoice:{ip.number}"))
            if entry is not None:
                entry.at = self.start_of(ip.issued_on)
        paid = self.pay(acc, inv, ip)
        self.result.add("invoices", "updated" if changed or paid else "unchanged")

    def pay(self, acc: Account, inv: Invoice, ip: InvoicePlan) -> bool:
        """Record what the file says was paid beyond what is already paid; True if it did."""
        if ip.paid_minor is None or ip.paid_minor == inv.paid_minor:
            return False
        if ip.paid_minor < inv.paid_minor:
            by_money = self.s.scalar(select(func.coalesce(func.sum(PaymentAllocation.amount_minor), 0))
                                     .join(Payment).where(PaymentAllocation.invoice_id == inv.id,
                                                          Payment.method != "credit", Payment.voided_at.is_(None)))
            if ip.paid_minor >= by_money:
                return False  # the account's credit paid the rest since the last import: nothing to record
            raise InvalidInput(f"{fmt(ip.paid_minor, inv.currency)} is less than the "
                               f"{fmt(inv.paid_minor, inv.currency)} already paid on invoice {ip.number}",
                               path=f"{ip.path}.paid")
        amount = ip.paid_minor - inv.paid_minor
        n = 1 + self.s.scalar(select(func.count()).select_from(PaymentAllocation)
                              .where(PaymentAllocation.invoice_id == inv.id))
        while self.s.scalar(select(Payment.id).where(Payment.ref == f"import:invoice:{ip.number}:{n}")):
            n += 1
        payment = Payment(account_id=acc.id, amount_minor=amount, currency=acc.currency, received_at=self.tx.now,
                          method="import", ref=f"import:invoice:{ip.number}:{n}", actor=self.tx.actor)
        payment.allocations.append(PaymentAllocation(invoice_id=inv.id, amount_minor=amount))
        self.s.add(payment)
        self.s.flush()
        self.s.add(LedgerEntry(account_id=acc.id, at=self.tx.now, kind=LedgerKind.payment, amount_minor=amount,
                               currency=acc.currency, text=f"Payment for invoice {ip.number}", source="import",
                               invoice_id=inv.id, payment_id=payment.id, actor=self.tx.actor))
        inv.paid_minor = ip.paid_minor
        inv.status = status_for(inv.total_minor, inv.paid_minor)
        self.result.add("payments", "created")
        return True

    def charges(self, acc: Account, plans: tuple[ChargePlan, ...]) -> None:
        """Manual ledger charges, one entry each, matched by ref."""
        existing = {e.ref: e for e in _in_chunks(self.s, LedgerEntry, LedgerEntry.ref, [c.ledger_ref for c in plans])}
        for cp in plans:
            entry = existing.get(cp.ledger_ref)
            if entry is None:
                self.s.add(LedgerEntry(account_id=acc.id, at=self.start_of(cp.on), kind=LedgerKind.charge,
                                       amount_minor=-cp.amount_minor, currency=acc.currency, text=cp.text or "",
                                       source="import", ref=cp.ledger_ref, actor=self.tx.actor))
                self.result.add("charges", "created")
                continue
            if entry.account_id != acc.id or entry.kind != LedgerKind.charge:
                raise InvalidInput(f"ref {cp.ref} is already used by another ledger entry", path=f"{cp.path}.ref")
            if -entry.amount_minor != cp.amount_minor:
                raise InvalidInput(f"charge {cp.ref} was imported as {fmt(-entry.amount_minor, entry.currency)}; "
                                   "a charge's amount cannot change (add a new charge or a credit)",
                                   path=f"{cp.path}.amount")
            changed = _assign(entry, at=self.start_of(cp.on), text=cp.text)
            self.result.add("charges", "updated" if changed else "unchanged")

    # -- tickets -------------------------------------------------------------------------------

    def tickets(self, acc: Account, plans: tuple[TicketPlan, ...], contacts: dict[str, Contact]) -> None:
        """Tickets by ref, their messages and watchers (the opener and the owner)."""
        existing = {t.ref: t for t in _in_chunks(self.s, Ticket, Ticket.ref, [t.ref for t in plans])}
        owner = acc.owner
        for tp in plans:
            opener = contacts[tp.opened_by] if tp.opened_by else None
            ticket = existing.get(tp.ref)
            if ticket is not None and ticket.account_id != acc.id:
                other = self.s.get(Account, ticket.account_id)
                raise InvalidInput(f"ticket {tp.ref} belongs to another account ({other.ref})", path=f"{tp.path}.ref")
            if ticket is None:
                self.new_ticket(acc, tp, opener or owner, owner)
                continue
            changed = _assign(ticket, subject=tp.subject, status=tp.status, archived=tp.archived,
                              opened_by_contact_id=None if opener is None else opener.id)
            if "status" in changed:
                ticket.closed_at = self.tx.now if ticket.status == TicketStatus.closed else None
            added = self.messages(ticket, tp)
            if changed or added:
                ticket.updated_at = max([self.tx.now if changed else ticket.updated_at, *added])
            self.result.add("tickets", "updated" if changed or added else "unchanged")

    def new_ticket(self, acc: Account, tp: TicketPlan, opener: Contact | None, owner: Contact | None) -> None:
        """A ticket as the file describes it, dated by its messages."""
        times = [m.at for m in tp.messages] or [self.tx.now]
        status = tp.status or TicketStatus.open
        ticket = Ticket(account_id=acc.id, opened_by_contact_id=None if opener is None else opener.id, ref=tp.ref,
                        subject=tp.subject, status=status, archived=bool(tp.archived), created_at=min(times),
                        updated_at=max(times), closed_at=max(times) if status == TicketStatus.closed else None)
        for contact in {c.id: c for c in (opener, owner) if c is not None}.values():
            ticket.watchers.append(TicketWatcher(contact_id=contact.id))
        self.s.add(ticket)
        self.messages(ticket, tp)
        self.result.add("tickets", "created")

    def messages(self, ticket: Ticket, tp: TicketPlan) -> list[dt.datetime]:
        """Add the messages not already on the ticket; return their times."""
        have = Counter((m.kind, m.author, m.body) for m in ticket.messages)
        added = []
        for mp in tp.messages:
            key = (mp.kind, mp.author, mp.body)
            if have[key]:
                have[key] -= 1
                self.result.add("messages", "unchanged")
                continue
            ticket.messages.append(TicketMessage(kind=mp.kind, author=mp.author, body=mp.body, at=mp.at))
            added.append(mp.at)
            self.result.add("messages", "created")
        return added
