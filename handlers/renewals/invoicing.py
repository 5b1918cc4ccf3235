"""The renewal invoice: the renewals decided together (a reply, a page submit, a code, an automatic
renewal) raise one invoice through billing's own operation, exactly once.

Each renewed service is one line: its name, the period it is renewed for, and its price times the
years. The claim is a ``notice`` row (``renewal_invoice``, the set's first decision): the invoice
and the decisions are written in one transaction, and the row keeps a retried set from being
invoiced twice. ``RENEWDESK_RENEWAL_INVOICES=off`` leaves invoicing to the sales contact.

One renewal, one invoice: each term (service and expiry, :mod:`handlers.renewals.terms`) points at
its one open invoice. A new decision for a term voids the invoice it had (:func:`settle`); the other
renewals on that voided invoice, still wanted, move onto the new one, so nothing goes unbilled.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Sequence

from sqlalchemy import select

from handlers.billing.common import OPEN_STATUSES, claim_notice, today
from handlers.billing import credit as credit_ops
from handlers.billing.invoices import Line, issue, void
from handlers.models import Account, DecisionAction, Invoice, RenewalDecision, RenewalTerm, Service, SlackPost
from handlers.money import fmt
from handlers.outbox import Recipient, queue_email
from handlers.renewals.occasions import add_months
from handlers.renewals.terms import on_invoice

KIND = "renewal_invoice"
PAY_WITHIN_DAYS = 14   # the least time to pay; an early renewal is due the day before the first expiry


def period(service: Service, years: int) -> str:
    """``2027-01-15 to 2029-01-15``: the term a renewal buys (from the current expiry)."""
    if service.expires_on is None:
        return ""
    return f"{service.expires_on.isoformat()} to {add_months(service.expires_on, 12 * years).isoformat()}"


def line_for(service: Service, years: int) -> Line:
    term = period(service, years)
    text = f"Renewal of {service.name} ({service.kind}), {years} year{'s' if years != 1 else ''}" + \
        (f": {term}" if term else "")
    return Line(text, service.price_minor * years, 0, service.id)


def pay_by(tx: Any, services: Sequence[Service]) -> dt.date:
    day = today(tx)
    soonest = min((s.expires_on for s in services if s.expires_on), default=None)
    least = day + dt.timedelta(days=PAY_WITHIN_DAYS)
    return max(least, soonest - dt.timedelta(days=1)) if soonest else least


def raise_invoice(tx: Any, account: Account, decisions: Sequence[RenewalDecision],
                  services: dict[int, Service], *, replacing: Sequence[Invoice] = ()) -> Invoice | None:
    """Issue the invoice for the renewals among ``decisions``; None when there is nothing to invoice,
    invoicing is off, or this set was invoiced already.

    ``replacing``: the invoices just voided whose other renewals this one carries over. The claim
    names them, so renewals carried from a voided invoice are invoiced again (their decision's first
    claim is that voided invoice's)."""
    renewals = [d for d in decisions if d is not None and d.action == DecisionAction.renew and d.period_years]
    if not renewals or not tx.settings.invoice_renewals:
        return None
    billed = [(services[d.service_id], d.period_years) for d in renewals
              if services[d.service_id].currency == account.currency and services[d.service_id].price_minor > 0]
    others = [services[d.service_id].name for d in renewals
              if services[d.service_id].currency != account.currency]
    if others:  # a price in another currency cannot go on this account's invoice: the sales contact bills it
        tx.audit("renewal.invoice_skipped", account_id=account.id, services=others, reason="currency")
    if not billed:
        return None
    occasion = f"renew>{min(inv.id for inv in replacing)}" if replacing else "renew"
    notice = claim_notice(tx, kind=KIND, subject_type="decision", subject_id=renewals[0].id, occasion=occasion[:24],
                          occasion_date=today(tx), account_id=account.id, outcome="raised")
    if notice is None:
        return None
    # credit pays it once its terms hold it (settle), so a renewal paid from credit completes like any other
    invoice = issue(tx, account.id, [line_for(s, years) for s, years in billed], pay_by(tx, [s for s, _ in billed]),
                    origin="renewal", use_credit=False)
    notice.detail = invoice.number
    tx.audit("renewal.invoice", subject=invoice, account_id=account.id, number=invoice.number,
             decisions=[d.id for d in renewals], total=fmt(invoice.total_minor, invoice.currency))
    return invoice


def invoice_of(tx: Any, decisions: Sequence[RenewalDecision]) -> Invoice | None:
    """The open renewal invoice of a set of decisions (through their terms), if any."""
    ids = [d.id for d in decisions]
    if not ids:
        return None
    return tx.session.scalar(select(Invoice).join(RenewalTerm, RenewalTerm.invoice_id == Invoice.id).where(
        RenewalTerm.decision_id.in_(ids)).order_by(Invoice.id.desc()).limit(1))


@dataclass
class Settlement:
    invoice: Invoice | None = None
    voided: list[Invoice] = field(default_factory=list)


def _void_replaced(tx: Any, account: Account, changed: Sequence[RenewalTerm], why: str) -> list[Invoice]:
    """Void the open invoices of the re-decided terms; each other term on them loses its invoice too."""
    voided = []
    for invoice_id in sorted({t.invoice_id for t in changed if t.invoice_id}):
        inv = tx.session.get(Invoice, invoice_id, populate_existing=True)
        if inv is not None and inv.status in OPEN_STATUSES:
            void(tx, inv.number, why)
            voided.append(inv)
            if inv.paid_minor:
                tell_staff(tx, account, f"Renewal invoice {inv.number} of {account.name} ({account.ref}) was "
                           f"voided ({why}); {fmt(inv.paid_minor, inv.currency)} paid on it is now credit on "
                           "the account. Please settle it with the client (refund or keep as credit).",
                           key=f"renewal_void_paid:{inv.id}")
    return voided


def settle(tx: Any, account: Account, changed: Sequence[tuple[RenewalDecision, RenewalTerm]],
           services: dict[int, Service]) -> Settlement:
    """After new decisions: void the invoices they replace, then raise one invoice for the renewals wanted
    now (the new ones, and those carried over from a voided invoice). Completed terms are left alone."""
    terms = [t for _, t in changed]
    why = "replaced by a new renewal decision" if any(d.action == DecisionAction.renew for d, _ in changed) \
        else "renewal declined"
    voided = _void_replaced(tx, account, terms, why)
    carried = []
    for inv in voided:
        for term in on_invoice(tx, inv.id):
            term.invoice_id = None
            if term not in terms and term.years and term.completed_at is None and term.decision_id:
                carried.append(term)
                services.setdefault(term.service_id, tx.session.get(Service, term.service_id))
    for term in terms:
        term.invoice_id = None
    wanted = [d for d, t in changed if t.completed_at is None] + \
        [tx.session.get(RenewalDecision, t.decision_id) for t in carried]
    invoice = raise_invoice(tx, account, wanted, services, replacing=voided)
    if invoice is not None:
        billed = {ln.service_id for ln in invoice.lines}
        for term in [*terms, *carried]:
            if term.service_id in billed and term.years:
                term.invoice_id = invoice.id
        tx.session.flush()
        credit_ops.apply_credit(tx, account, why=f"invoice {invoice.number} issued")
    tx.session.flush()
    return Settlement(invoice, voided)


def tell_staff(tx: Any, account: Account, text: str, *, key: str) -> str:
    """A note for staff: the staff channel, else RENEWDESK_STAFF_EMAIL, else only the audit log."""
    tx.audit("renewal.staff_note", account_id=account.id, text=text)
    if tx.settings.slack_channel:
        tx.session.add(SlackPost(dedupe_key=key, channel=tx.settings.slack_channel, payload={"text": text},
                                 created_at=tx.now, next_attempt_at=tx.now))
        return f"slack:{tx.settings.slack_channel}"
    to = [a.strip() for a in (tx.settings.staff_email or "").split(",") if a.strip()]
    if to:
        queue_email(tx, "renewal_staff", {"account_name": account.name, "account_ref": account.ref, "text": text},
                    to=[Recipient(a) for a in to], account_id=account.id, dedupe_key=key)
        return ", ".join(to)
    return ""


def context(invoice: Invoice | None) -> dict[str, Any] | None:
    """What the confirmation and the sales contact's email show of it."""
    if invoice is None:
        return None
    return {"number": invoice.number, "total": fmt(invoice.total_minor, invoice.currency),
            "due_on": invoice.due_on.isoformat(), "lines": [ln.text for ln in invoice.lines]}
