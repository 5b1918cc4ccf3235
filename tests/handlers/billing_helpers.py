"""Helpers shared by the billing tests: accounts through the real importer, sweeps at a moment, what was sent."""
from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select

from handlers.billing import dunning
from handlers.importer import import_document
from handlers.jobs import run_sweeps
from handlers.models import Account, Invoice, Notice, OutboundMail, Service, Suspension

UTC = dt.timezone.utc


def account(ref: str, *, invoices=(), services=None, **extra: Any) -> dict[str, Any]:
    """An import-format account: owner, a billing contact, a contact without billing, a hosting service."""
    return {"ref": ref, "name": f"{ref.title()} Ltd", "currency": "EUR",
            "owner": {"email": f"owner@{ref}.test", "name": "Owner"},
            "contacts": [{"email": f"bill@{ref}.test", "name": "Billing", "permissions": ["billing"]},
                         {"email": f"dev@{ref}.test", "name": "Dev", "permissions": ["tickets"]}],
            "credit_limit": "0.00", "invoicing": "electronic",
            "services": services if services is not None else [
                {"ref": "host", "kind": "hosting", "name": f"Hosting {ref}", "status": "active",
                 "expires_on": "2027-06-01", "period_years": 1, "price": "10.00"}],
            "invoices": list(invoices), **extra}


def invoice(number: str, issued: str, due: str, lines, paid: str = "0.00") -> dict[str, Any]:
    return {"number": number, "issued_on": issued, "due_on": due, "paid": paid,
            "lines": [{"text": t, "amount": a, "tax": x} for t, a, x in lines]}


def load(services, *accounts: dict[str, Any]) -> None:
    services.run(import_document, {"accounts": list(accounts)}, actor="test")


def account_id(services, ref: str) -> int:
    return services.run(lambda tx: tx.session.scalar(select(Account.id).where(Account.ref == ref)), readonly=True)


def at(day: str, hour: int = 8) -> dt.datetime:
    return dt.datetime.fromisoformat(day).replace(hour=hour, tzinfo=UTC)


def sweep(services, clock, day: str, *, dry_run: bool = False) -> list[str]:
    """The daily sweeps as the scheduler runs them, on ``day`` at 08:00 UTC."""
    moment = at(day)
    clock.set(moment)
    return run_sweeps(services, moment, dry_run=dry_run)


def billing_sweep(services, clock, day: str, rules=("invoice_notices", "overdue_suspensions", "removals",
                                                     "credit_limits"), account_ids=None) -> list[str]:
    moment = at(day)
    clock.set(moment)
    return dunning.run_rules(services, list(rules), moment, False, account_ids)


def mails(services, intent: str | None = None) -> list[tuple[str, list[str], str]]:
    """(intent, recipients, subject) of every queued mail, oldest first."""
    def op(tx):
        q = select(OutboundMail).order_by(OutboundMail.id)
        if intent:
            q = q.where(OutboundMail.intent == intent)
        return [(m.intent, list(m.recipients), m.subject) for m in tx.session.scalars(q)]
    return services.run(op, readonly=True)


def notices(services, kind: str | None = None) -> list[tuple[str, str, str]]:
    def op(tx):
        q = select(Notice).order_by(Notice.id)
        if kind:
            q = q.where(Notice.kind == kind)
        return [(n.kind, n.occasion, n.outcome) for n in tx.session.scalars(q)]
    return services.run(op, readonly=True)


def state(services, ref: str) -> dict[str, Any]:
    """The account's status, its services' statuses, its invoices and its suspensions."""
    def op(tx):
        acc = tx.session.scalar(select(Account).where(Account.ref == ref))
        return {
            "status": acc.status.value,
            "services": {s.name: s.status.value for s in tx.session.scalars(
                select(Service).where(Service.account_id == acc.id))},
            "invoices": {i.number: (i.status.value, i.paid_minor, i.due_minor) for i in tx.session.scalars(
                select(Invoice).where(Invoice.account_id == acc.id))},
            "suspensions": [(s.reason.value, s.lifted_at is None) for s in tx.session.scalars(
                select(Suspension).where(Suspension.account_id == acc.id).order_by(Suspension.id))],
        }
    return services.run(op, readonly=True)
