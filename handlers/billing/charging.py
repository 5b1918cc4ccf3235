"""Month-end charges from charging plans: the ``plan_charges`` rule of the billing sweeps.

On the first sweep on or after the 1st of a month (business timezone) every subscription is
charged for each month that has ended and is not charged yet: its fixed fees (prorated by days
when the plan covers only part of the month) and its metered usage (the month's quantity times
the unit price), each line rounded once, half up, to the minor unit. Each line is a ledger
charge whose ref names the account, month, subscription and line, and the month is closed by a
``plan_month`` notice in the same transaction: a re-run, a second scheduler or a restart
charges nothing twice. After downtime every missed month is charged (charges are owed). A
month's charges (of every plan the account was on) go on one invoice, which takes the ledger
charges over as its own: they are owed once.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from handlers.billing.common import claim_notice, day_start, money, today
from handlers.billing.plans import (MONTH_KIND, closed_months, fee_amount, first_billed_month, label, month_days,
                                    month_of, next_month, price_str, quantity_str, subscriptions, usage_amount)
from handlers.models import Account, LedgerEntry, LedgerKind, PlanLine, PlanLineKind, Subscription, UsageRecord
from handlers.money import fmt

if TYPE_CHECKING:
    from handlers.billing.rules import Action, Key
    from handlers.services import Tx


@dataclass(frozen=True)
class Charge:
    """One line of one month's charges."""

    line: PlanLine
    amount_minor: int
    text: str
    quantity_micros: int | None  # usage lines: the month's quantity


def ledger_ref(sub: Subscription, month: dt.date, line: PlanLine) -> str:
    """Exactly once per (account, month, subscription, line)."""
    return f"plan:{sub.account_id}:{label(month)}:{sub.id}:{line.code}"


def due_months(tx: "Tx", sub: Subscription) -> list[dt.date]:
    """The ended months of ``sub`` not charged yet, oldest first."""
    this_month, month = month_of(today(tx)), first_billed_month(tx, sub)
    closed, out = closed_months(tx, sub.id), []
    while month < this_month and (sub.ends_on is None or month <= sub.ends_on):
        if month not in closed:
            out.append(month)
        month = next_month(month)
    return out


def month_charges(tx: "Tx", sub: Subscription, month: dt.date) -> list[Charge]:
    """What ``sub`` owes for ``month``, line by line (zero amounts included)."""
    plan, cur = sub.plan, sub.plan.currency
    last_of_month = next_month(month) - dt.timedelta(days=1)
    first = max(month, sub.starts_on)
    last = last_of_month if sub.ends_on is None else min(last_of_month, sub.ends_on)
    days, of_days = (last - first).days + 1, month_days(month)
    used = dict(tx.session.execute(
        select(UsageRecord.metric, func.sum(UsageRecord.quantity_micros)).where(
            UsageRecord.account_id == sub.account_id, UsageRecord.at >= day_start(tx, first),
            UsageRecord.at < day_start(tx, last + dt.timedelta(days=1))).group_by(UsageRecord.metric)).all())
    out = []
    for line in plan.lines:
        if line.kind == PlanLineKind.fee:
            part = f" ({days} of {of_days} days, from {first})" if days < of_days and first > month else \
                f" ({days} of {of_days} days, through {last})" if days < of_days else ""
            out.append(Charge(line, fee_amount(line, days, of_days), f"{line.text}, {label(month)}{part}", None))
        else:
            qty = int(used.get(line.code) or 0)
            unit = f" {line.unit}" if line.unit else ""
            out.append(Charge(line, usage_amount(line, qty), f"{line.text}, {label(month)}: {quantity_str(qty)}"
                              f"{unit} at {price_str(line.price_micros, cur)} {cur}", qty))
    return out


def charge_month(tx: "Tx", acc: Account, sub_id: int, month: dt.date) -> list[LedgerEntry] | None:
    """Charge one month of one subscription; None when it was charged already (by this or another worker)."""
    sub = tx.session.get(Subscription, sub_id)
    charges = month_charges(tx, sub, month)
    total = sum(c.amount_minor for c in charges)
    notice = claim_notice(tx, kind=MONTH_KIND, subject_type="subscription", subject_id=sub.id,
                          occasion=label(month), occasion_date=month, account_id=acc.id, outcome="charged",
                          detail=f"{sub.plan.ref}: {fmt(total, acc.currency)}")
    if notice is None:
        return None
    at = min(day_start(tx, next_month(month)), tx.now)  # dated at the month's end, when it was owed
    entries = []
    for c in charges:
        ref = ledger_ref(sub, month, c.line)
        if c.amount_minor <= 0 or tx.session.scalar(select(LedgerEntry.id).where(LedgerEntry.ref == ref)):
            continue
        entry = LedgerEntry(account_id=acc.id, at=at, kind=LedgerKind.charge, amount_minor=-c.amount_minor,
                            currency=acc.currency, text=c.text, source="plan", ref=ref, actor=tx.actor)
        try:
            with tx.session.begin_nested():
                tx.session.add(entry)
        except IntegrityError:
            continue  # charged by another worker between our look and our insert
        entries.append(entry)
    tx.audit("plan.month_charged", subject=sub, account_id=acc.id, plan=sub.plan.ref, month=label(month),
             total=money(sum(-e.amount_minor for e in entries), acc.currency),
             lines=[{"ref": e.ref, "amount": money(-e.amount_minor, acc.currency)} for e in entries])
    return entries


def describe_month(acc: Account, sub: Subscription, month: dt.date, charges: list[Charge]) -> str:
    """One line: the month, the plan, each line that costs something and the total."""
    cur = acc.currency
    lines = [f"{c.text} = {fmt(c.amount_minor, cur)}" for c in charges if c.amount_minor > 0]
    total = sum(c.amount_minor for c in charges)
    what = "; ".join(lines) + f"; total {fmt(total, cur)}" if lines else "nothing to charge"
    return f"{acc.name}: month-end charges for {label(month)} on plan {sub.plan.name}: {what}"


def plan_charges(tx: "Tx", acc: Account, assumed: set["Key"]) -> list["Action"]:
    """The rule: one action per ended month not charged yet, for every subscription it has left to charge."""
    from handlers.billing.rules import Action

    planned = {(k[2], sid) for k in assumed if k[0] == MONTH_KIND for sid in k[3]}
    by_month: dict[dt.date, list[Subscription]] = {}
    for sub in subscriptions(tx, acc.id):
        for month in due_months(tx, sub):
            if (label(month), sub.id) not in planned:
                by_month.setdefault(month, []).append(sub)
    actions = []
    for month, subs in sorted(by_month.items()):
        ids = tuple(sub.id for sub in subs)

        def apply(tx: "Tx", month: dt.date = month, ids: tuple[int, ...] = ids) -> str | None:
            return charge_and_invoice(tx, acc, month, ids)
        text = "; ".join(describe_month(acc, sub, month, month_charges(tx, sub, month)) for sub in subs)
        actions.append(Action("plan_charges", acc, (MONTH_KIND, acc.id, label(month), ids), text, apply))
    return actions


def charge_and_invoice(tx: "Tx", acc: Account, month: dt.date, sub_ids: tuple[int, ...]) -> str | None:
    """Charge the month of each subscription not charged yet, and invoice what was charged on one invoice."""
    from handlers.billing.invoices import PAY_WITHIN_DAYS, Line, issue

    done = [charge_month(tx, acc, sub_id, month) for sub_id in sub_ids]
    if all(entries is None for entries in done):
        return None
    entries = [e for batch in done if batch for e in batch]
    total = fmt(sum(-e.amount_minor for e in entries), acc.currency)
    if not entries:
        return f"charged {total}"
    inv = issue(tx, acc.id, [Line(e.text, -e.amount_minor) for e in entries],
                today(tx) + dt.timedelta(days=PAY_WITHIN_DAYS), origin="plan", charges=entries)
    return f"charged {total} on invoice {inv.number}"


def usage_so_far(tx: "Tx", acc: Account) -> dict[str, Any] | None:
    """The account's plan today and this month's usage and charges so far, for ``account show``."""
    day = today(tx)
    sub = next((s for s in reversed(subscriptions(tx, acc.id))
                if s.starts_on <= day and (s.ends_on is None or day <= s.ends_on)), None)
    if sub is None:
        return None
    month = month_of(day)
    charges = month_charges(tx, sub, month)
    cur = acc.currency
    return {"plan": {"ref": sub.plan.ref, "name": sub.plan.name, "since": sub.starts_on.isoformat(),
                     "until": None if sub.ends_on is None else sub.ends_on.isoformat()},
            "month": label(month),
            "lines": [{"code": c.line.code, "text": c.text, "so_far": money(c.amount_minor, cur),
                       **({"quantity": quantity_str(c.quantity_micros), "unit": c.line.unit}
                          if c.quantity_micros is not None else {})} for c in charges],
            "so_far": money(sum(c.amount_minor for c in charges), cur)}
