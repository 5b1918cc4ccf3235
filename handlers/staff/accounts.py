"""`account show` and `account history`, and how staff name an account (id, owner email, ref, name prefix)."""
from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from handlers.billing.charging import usage_so_far
from handlers.billing.credit import available, owed_after_credit
from handlers.billing.ledger import limit_text
from handlers.errors import InvalidInput, NotFound
from handlers.models import (
    Account,
    Contact,
    Hold,
    Invoice,
    InvoiceStatus,
    LedgerEntry,
    OutboundMail,
    Payment,
    Service,
    ServiceEvent,
    Subscription,
    Suspension,
    Ticket,
    TicketStatus,
)
from handlers.money import decimal_str, fmt
from handlers.staff.commands import Reply, columns, iso, local_time, register, today

if TYPE_CHECKING:
    from handlers.services import Tx

ACCOUNT_HINT = "ACCOUNT is an account id, the owner's email, a ref, or a unique prefix of the name"
SHOW_LIMIT = 100     # services listed by `account show`; more are counted, not listed
HISTORY_LIMIT = 50   # entries of `account history`, newest first
CANDIDATES = 10      # accounts named when a prefix is ambiguous


def _like_prefix(text: str) -> str:
    return text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def resolve_account(session: Session, text: str) -> Account:
    """The one account ``text`` names: id, owner's email, ref, or a unique case-insensitive name prefix."""
    text = (text or "").strip()
    if not text:
        raise InvalidInput("which account?", hint=ACCOUNT_HINT)
    if text.isdigit() and (by_id := session.get(Account, int(text))) is not None:
        return by_id
    if "@" in text:
        owned = session.scalars(select(Account).join(Contact).where(
            Contact.is_owner.is_(True), func.lower(Contact.email) == text.lower())).first()
        if owned is None:
            raise NotFound(f"no account is owned by {text}", hint=ACCOUNT_HINT)
        return owned
    by_ref = session.scalars(select(Account).where(func.lower(Account.ref) == text.lower())).first()
    if by_ref is not None:
        return by_ref
    found = list(session.scalars(select(Account).where(func.lower(Account.name).like(_like_prefix(text), escape="\\"))
                                 .order_by(Account.name, Account.id).limit(CANDIDATES + 1)))
    exact = [a for a in found if a.name.lower() == text.lower()]
    if len(found) == 1 or len(exact) == 1:
        return (exact or found)[0]
    if not found:
        raise NotFound(f"no account matches `{text}`", hint=ACCOUNT_HINT)
    names = ", ".join(f"{a.name} (#{a.id}, {a.ref})" for a in found[:CANDIDATES])
    more = " and more" if len(found) > CANDIDATES else ""
    raise InvalidInput(f"`{text}` matches several accounts: {names}{more}",
                       hint="name it by id, ref or the owner's email")


def balance_minor(session: Session, account_id: int) -> int:
    """The ledger's sum: positive is money in the client's favour, negative is owed."""
    return session.scalar(select(func.coalesce(func.sum(LedgerEntry.amount_minor), 0))
                          .where(LedgerEntry.account_id == account_id)) or 0


def _relative(days: int) -> str:
    if days in (0, 1):
        return ("today", "tomorrow")[days]
    plural = "" if abs(days) == 1 else "s"
    return f"in {days} days" if days > 0 else f"{-days} day{plural} ago"


def _money(minor: int, currency: str) -> dict[str, str]:
    return {"amount": decimal_str(minor, currency), "currency": currency}


def _sign(balance: int) -> str:
    """What the balance's sign means, in words: the ledger counts what the client owes as negative."""
    return "the client owes this" if balance < 0 else "in the client's favour" if balance > 0 else "settled"


@register("account show")
def account_show(tx: "Tx", args: dict[str, Any]) -> Reply:
    """Balance, credit limit, services, due invoices, open tickets, holds and suspensions."""
    s, acc, day = tx.session, resolve_account(tx.session, args["account"]), today(tx)
    cur, owner = acc.currency, acc.owner
    balance = balance_minor(s, acc.id)
    credit, owed = available(tx, acc.id), owed_after_credit(tx, acc.id)
    services = list(s.scalars(select(Service).where(Service.account_id == acc.id)
                              .order_by(Service.expires_on.is_(None), Service.expires_on, Service.id)))
    invoices = list(s.scalars(select(Invoice).where(
        Invoice.account_id == acc.id, Invoice.status.in_([InvoiceStatus.issued, InvoiceStatus.partially_paid]))
        .order_by(Invoice.due_on, Invoice.id)))
    tickets = list(s.scalars(select(Ticket).where(
        Ticket.account_id == acc.id, Ticket.status != TicketStatus.closed, Ticket.archived.is_(False))
        .order_by(Ticket.updated_at.desc(), Ticket.id.desc())))
    holds = list(s.scalars(select(Hold).where(
        Hold.account_id == acc.id, Hold.lifted_at.is_(None), or_(Hold.until.is_(None), Hold.until > tx.now))
        .order_by(Hold.started_at)))
    suspensions = list(s.scalars(select(Suspension).where(
        Suspension.account_id == acc.id, Suspension.lifted_at.is_(None)).order_by(Suspension.started_at)))
    names = {sv.id: sv.name for sv in services}

    data = {
        "account": {"id": acc.id, "ref": acc.ref, "name": acc.name, "status": acc.status.value, "currency": cur,
                    "owner": owner.email if owner else None, "invoicing": acc.invoicing.value,
                    "auto_suspend": acc.auto_suspend, "sales_contact": acc.sales_contact},
        "balance": _money(balance, cur),
        "credit": _money(credit, cur),
        "owed_after_credit": _money(owed, cur),
        "credit_limit": None if acc.credit_limit_minor is None else _money(acc.credit_limit_minor, cur),
        "services": [{"id": sv.id, "ref": sv.ref, "kind": sv.kind, "name": sv.name, "status": sv.status.value,
                      "expires_on": iso(sv.expires_on), "auto_renew": bool(sv.auto_renew),
                      "days_left": None if sv.expires_on is None else (sv.expires_on - day).days}
                     for sv in services[:SHOW_LIMIT]],
        "services_total": len(services),
        "due_invoices": [{"number": inv.number, "status": inv.status.value, "issued_on": iso(inv.issued_on),
                          "due_on": iso(inv.due_on), "total": _money(inv.total_minor, inv.currency),
                          "due": _money(inv.due_minor, inv.currency), "overdue": inv.due_on < day}
                         for inv in invoices],
        "open_tickets": [{"id": t.id, "subject": t.subject, "status": t.status.value, "assignee": t.assignee,
                          "updated_at": iso(t.updated_at)} for t in tickets],
        "holds": [{"id": h.id, "reason": h.reason, "until": iso(h.until), "started_at": iso(h.started_at),
                   "started_by": h.started_by} for h in holds],
        "suspensions": [{"id": x.id, "service": names.get(x.service_id) if x.service_id else None,
                         "reason": x.reason.value, "text": x.text, "started_at": iso(x.started_at),
                         "started_by": x.started_by} for x in suspensions],
        "plan": usage_so_far(tx, acc),
    }

    text = [f"{acc.name} (#{acc.id}, ref {acc.ref}) - {acc.status.value}",
            f"owner: {owner.email if owner else 'none'} · invoicing {acc.invoicing.value} · "
            f"auto-suspend {'on' if acc.auto_suspend else 'off'}",
            f"balance: {fmt(balance, cur)} ({_sign(balance)}) · credit: {fmt(credit, cur)} · "
            f"owed after credit: {fmt(owed, cur)} · "
            f"credit limit: {limit_text(acc.credit_limit_minor, cur)}"]
    text.append(f"services ({len(services)}):" if services else "services: none")
    text += columns([(sv.name, sv.kind, sv.status.value,
                      f"expires {sv.expires_on} ({_relative((sv.expires_on - day).days)})" if sv.expires_on else "",
                      "auto-renew" if sv.auto_renew else "")
                     for sv in services[:SHOW_LIMIT]])
    if len(services) > SHOW_LIMIT:
        text.append(f"  ... and {len(services) - SHOW_LIMIT} more")
    text.append(f"due invoices ({len(invoices)}):" if invoices else "due invoices: none")
    text += columns([(inv.number, f"due {inv.due_on}", f"{fmt(inv.due_minor, inv.currency)} of "
                      f"{fmt(inv.total_minor, inv.currency)}", "OVERDUE" if inv.due_on < day else "")
                     for inv in invoices])
    text.append(f"open tickets ({len(tickets)}):" if tickets else "open tickets: none")
    text += columns([(f"T-{t.id}", t.status.value, t.subject[:60], f"assigned {t.assignee}" if t.assignee else "")
                     for t in tickets])
    text.append(f"holds ({len(holds)}):" if holds else "holds: none")
    text += columns([(f"since {local_time(tx, h.started_at)}", f"until {local_time(tx, h.until)}" if h.until
                      else "no end", h.reason) for h in holds])
    if data["plan"]:
        plan = data["plan"]
        text.append(f"plan: {plan['plan']['name']} since {plan['plan']['since']}"
                    + (f" until {plan['plan']['until']}" if plan["plan"]["until"] else "")
                    + f" · {plan['month']} so far (the month's fees, usage to date): {plan['so_far']['amount']} {cur}")
        text += columns([(ln["text"], f"{ln['so_far']['amount']} {cur}") for ln in plan["lines"]])
    if suspensions:
        text.append(f"suspensions ({len(suspensions)}):")
        text += columns([(names.get(x.service_id, "whole account") if x.service_id else "whole account",
                          x.reason.value, f"since {local_time(tx, x.started_at)}", x.text) for x in suspensions])
    return Reply(title=acc.name, text="\n".join(text), data=data)


@register("account history")
def account_history(tx: "Tx", args: dict[str, Any]) -> Reply:
    """Service status changes, plans, invoices, payments, plan charges and emails sent, newest first."""
    s, acc = tx.session, resolve_account(tx.session, args["account"])
    tz, entries = tx.settings.tz, []

    def add(at: dt.datetime, kind: str, text: str, day: dt.date | None = None, **detail: Any) -> None:
        shown = day.isoformat() if day else local_time(tx, at)
        entries.append((at, {"at": iso(day or at), "kind": kind, "text": text, **detail}, shown))

    for ev, name in s.execute(select(ServiceEvent, Service.name).join(Service).where(Service.account_id == acc.id)
                              .order_by(ServiceEvent.at.desc(), ServiceEvent.id.desc()).limit(HISTORY_LIMIT + 1)):
        change = f"{ev.from_status} -> {ev.to_status}" if ev.from_status else ev.to_status
        add(ev.at, "service", f"{name}: {change}" + (f" ({ev.reason})" if ev.reason else ""),
            service=name, from_status=ev.from_status, to_status=ev.to_status, reason=ev.reason, actor=ev.actor)
    for inv in s.scalars(select(Invoice).where(Invoice.account_id == acc.id)
                         .order_by(Invoice.issued_on.desc(), Invoice.id.desc()).limit(HISTORY_LIMIT + 1)):
        # an invoice has a day, not a moment: sort it at the start of that day in the business's timezone
        start = dt.datetime.combine(inv.issued_on, dt.time(), tz).astimezone(dt.timezone.utc)
        add(start, "invoice", f"invoice {inv.number} {fmt(inv.total_minor, inv.currency)}, due {inv.due_on}, "
            f"{inv.status.value}", day=inv.issued_on,
            number=inv.number, status=inv.status.value, total=_money(inv.total_minor, inv.currency),
            due=_money(inv.due_minor, inv.currency))
    for pay in s.scalars(select(Payment).where(Payment.account_id == acc.id)
                         .order_by(Payment.received_at.desc(), Payment.id.desc()).limit(HISTORY_LIMIT + 1)):
        what = "credit applied" if pay.method == "credit" else f"payment P-{pay.id}"
        add(pay.received_at, "payment", f"{what} {fmt(pay.amount_minor, pay.currency)}"
            + (f" ref {pay.ref}" if pay.ref else "") + (f" ({pay.method})" if pay.method != "credit" else ""),
            amount=_money(pay.amount_minor, pay.currency), ref=pay.ref, method=pay.method, actor=pay.actor)
        if pay.voided_at is not None:
            add(pay.voided_at, "payment_void", f"{what} {fmt(pay.amount_minor, pay.currency)} reversed: "
                f"{pay.void_reason}", amount=_money(pay.amount_minor, pay.currency), reason=pay.void_reason,
                actor=pay.voided_by)
    for entry in s.scalars(select(LedgerEntry).where(LedgerEntry.account_id == acc.id, LedgerEntry.source == "plan")
                           .order_by(LedgerEntry.at.desc(), LedgerEntry.id.desc()).limit(HISTORY_LIMIT + 1)):
        add(entry.at, "plan_charge", f"plan charge {fmt(-entry.amount_minor, entry.currency)}: {entry.text}",
            amount=_money(-entry.amount_minor, entry.currency), ref=entry.ref)
    for sub in s.scalars(select(Subscription).where(Subscription.account_id == acc.id)
                         .order_by(Subscription.starts_on.desc()).limit(HISTORY_LIMIT + 1)):
        start = dt.datetime.combine(sub.starts_on, dt.time(), tz).astimezone(dt.timezone.utc)
        add(start, "plan", f"on plan {sub.plan.name} ({sub.plan.ref})"
            + (f" through {sub.ends_on}" if sub.ends_on else ""), day=sub.starts_on, plan=sub.plan.ref,
            ends_on=iso(sub.ends_on))
    for mail in s.scalars(select(OutboundMail).where(OutboundMail.account_id == acc.id)
                          .order_by(OutboundMail.created_at.desc(), OutboundMail.id.desc()).limit(HISTORY_LIMIT + 1)):
        add(mail.created_at, "email", f"email {mail.intent} to {', '.join(mail.recipients or [])}: "
            f"{mail.subject} [{mail.status.value}]", intent=mail.intent, subject=mail.subject,
            recipients=list(mail.recipients or []), status=mail.status.value, sent_at=iso(mail.sent_at))

    entries.sort(key=lambda e: e[0], reverse=True)
    shown = entries[:HISTORY_LIMIT]
    text = [f"{acc.name} (#{acc.id}): history, newest first" + (f" (last {HISTORY_LIMIT})" if len(entries) >
                                                                   HISTORY_LIMIT else "")]
    text += columns([(when, e["kind"], e["text"]) for _, e, when in shown]) or ["  nothing yet"]
    return Reply(title=f"{acc.name}: history", text="\n".join(text),
                 data={"account": {"id": acc.id, "ref": acc.ref, "name": acc.name},
                       "entries": [e for _, e, _ in shown], "truncated": len(entries) > HISTORY_LIMIT})
