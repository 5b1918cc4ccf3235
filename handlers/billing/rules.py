"""What the billing automation would do for one account at one moment: a list of planned actions.

Each rule reads the account's state and returns :class:`Action`s; the sweeps apply them, a dry
run and the forecast only print them. Every action has a key (its notice or suspension key),
so applying one twice does nothing, and a forecast over several days can assume the earlier
days' actions done. After downtime a rule plans only the most recent missed occasion.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from sqlalchemy import func, select

from handlers.billing import invoices as inv_ops
from handlers.billing import suspensions as sus_ops
from handlers.billing.common import active_hold, billing_recipients, claim_notice, day_start, notified, open_invoices, \
    send, today, why_no_email
from handlers.billing.credit import covered
from handlers.billing.ledger import CreditState, credit_state
from handlers.billing.payments import overdue_key
from handlers.models import Account, Invoice, Notice, Suspension, SuspensionReason
from handlers.money import fmt

if TYPE_CHECKING:
    from handlers.services import Tx

Key = tuple


@dataclass
class Action:
    """One thing a sweep does (or would do) for one account."""

    rule: str
    account: Account
    key: Key
    text: str
    apply: Callable[["Tx"], str | None] | None  # None: shown only (a hold blocks it)


NO_EMAIL = {"paper_invoicing": "no email: paper invoicing, listed in the digest",
            "notices_off": "no email: overdue notices are off, listed in the digest",
            "no_recipient": "no email: no billing contact wants billing mail, listed in the digest"}


def _to(acc: Account, *, dunning: bool) -> str:
    reason = why_no_email(acc, dunning=dunning)
    return NO_EMAIL[reason] if reason else "to " + ", ".join(r.email for r in billing_recipients(acc))


def recipients_text(acc: Account) -> str:
    """Who an account's billing mail (not reminders) goes to, or why none, for a sweep's line."""
    return _to(acc, dunning=False)


# -- invoice reminders and overdue notices ----------------------------------------------------

def occasions(tx: "Tx", inv: Invoice) -> list[tuple[str, str, dt.date]]:
    """(kind, occasion, day) for every configured notice of an invoice, in date order."""
    s = tx.settings
    out = [("invoice_reminder", f"-{d}d" if d else "0d", inv.due_on - dt.timedelta(days=d)) for d in s.reminder_offsets]
    out += [("invoice_overdue", f"+{d}d", inv.due_on + dt.timedelta(days=d)) for d in s.overdue_offsets if d > 0]
    return sorted(out, key=lambda o: o[2])


def _uncovered(tx: "Tx", acc: Account) -> list[tuple[Invoice, int]]:
    """Open invoices with what is left on each once the account's credit is used (credit pays first)."""
    invoices = open_invoices(tx, acc.id)
    credit = covered(tx, acc.id, invoices)
    return [(inv, inv.due_minor - credit.get(inv.id, 0)) for inv in invoices if inv.due_minor > credit.get(inv.id, 0)]


def _due_notice(tx: "Tx", inv: Invoice, day: dt.date, assumed_items: set[Key]) -> Key | None:
    """The invoice's most recent passed notice not sent yet (catch-up sends one, not a backlog), as its key."""
    passed = [o for o in occasions(tx, inv) if inv.issued_on <= o[2] <= day]
    if not passed:
        return None
    kind, occasion, _ = passed[-1]
    key = (kind, "invoice", inv.id, occasion, inv.due_on)
    if key in assumed_items or (occasion, inv.due_on) in notified(tx, kind, "invoice", inv.id):
        return None
    return key


def invoice_notices(tx: "Tx", acc: Account, assumed: set[Key]) -> list[Action]:
    """One action per account: every invoice reminder and overdue notice due today, in one email."""
    day = today(tx)
    assumed_items = {item for k in assumed if k and k[0] == "invoice_notices" for item in k[2]}
    due = [(inv, owed, key) for inv, owed in _uncovered(tx, acc)
           if (key := _due_notice(tx, inv, day, assumed_items)) is not None]
    if not due:
        return []
    listed = "; ".join(f"{'reminder' if key[0] == 'invoice_reminder' else 'overdue notice'} {key[3]} for "
                       f"{inv.number} (pay by {inv.due_on}, {fmt(owed, inv.currency)} due)"
                       for inv, owed, key in due)
    text = f"{acc.name}: {listed}, {_to(acc, dunning=True)}"
    items = tuple(key for _, _, key in due)
    return [Action("invoice_notices", acc, ("invoice_notices", acc.id, items), text,
                   lambda tx: inv_ops.send_notices(tx, acc, items))]


# -- automatic suspension of flagged accounts, removal warning and removal --------------------

def overdue_suspensions(tx: "Tx", acc: Account, assumed: set[Key]) -> list[Action]:
    if not acc.auto_suspend:
        return []
    day, actions, grace = today(tx), [], dt.timedelta(days=tx.settings.suspend_after_days)
    held = active_hold(tx, acc.id)
    for inv, _owed in _uncovered(tx, acc):
        if inv.due_on + grace > day:
            continue
        dedupe = overdue_key(tx, inv.id)
        key = ("suspension", dedupe)
        if key in assumed or tx.session.scalar(select(Suspension.id).where(Suspension.dedupe_key == dedupe)):
            continue
        what = f"{acc.name}: suspend the account, {inv.number} unpaid since {inv.due_on}"
        if held is not None:
            actions.append(Action("overdue_suspensions", acc, key, f"{what} - held, not suspending"
                                  + (f" ({held.reason})" if held.reason else ""), None))
            continue

        def apply(tx: "Tx", inv_id: int = inv.id, dedupe: str = dedupe) -> str | None:
            fresh = tx.session.get(Invoice, inv_id)
            if fresh.due_minor <= 0:
                return None
            sus = sus_ops.suspend(tx, acc, reason=SuspensionReason.overdue, invoice=fresh, dedupe_key=dedupe,
                                  remove_after=sus_ops.removal_moment(tx, tx.now))
            return None if sus is None else f"removal on {sus_ops.removal_day(tx, sus)}"
        actions.append(Action("overdue_suspensions", acc, key, f"{what}, {_to(acc, dunning=False)}", apply))
    return actions


def _warned_until(tx: "Tx", sus: Suspension, assumed: set[Key]) -> dt.date | None:
    """The removal day a warning already announced (moved when it went out late), or None: not warned yet."""
    for key in assumed:
        if key[:3] == ("removal_warning", "suspension", sus.id):
            return key[3]
    if tx.session.scalar(select(Notice.id).where(Notice.kind == "removal_warning", Notice.subject_type == "suspension",
                                                 Notice.subject_id == sus.id).limit(1)) is None:
        return None
    return sus_ops.removal_day(tx, sus)


def _removal_step(tx: "Tx", sus: Suspension, assumed: set[Key]) -> tuple[str, dt.date] | None:
    """("removal_warning", the removal day it announces) or ("removal", the day), when one is due today.

    Never a removal without a warning sent ``removal_warning_days`` before: a warning that goes out
    late (downtime, a hold) moves the removal to that many days after it.
    """
    rday, day, n = sus_ops.removal_day(tx, sus), today(tx), tx.settings.removal_warning_days
    if rday is None:
        return None
    warned = _warned_until(tx, sus, assumed)
    if warned is None:
        return ("removal_warning", max(rday, day + dt.timedelta(days=n))) if day >= rday - dt.timedelta(days=n) \
            else None
    if day < warned or ("removal", "suspension", sus.id, warned) in assumed or \
            notified(tx, "removal", "suspension", sus.id):
        return None
    return "removal", warned


def removals(tx: "Tx", acc: Account, assumed: set[Key]) -> list[Action]:
    actions = []
    held = active_hold(tx, acc.id)
    for sus in sus_ops.open_suspensions(tx, acc.id):
        step = _removal_step(tx, sus, assumed)
        if step is None:
            continue
        kind, rday = step
        key = (kind, "suspension", sus.id, rday)
        if key in assumed:
            continue
        planned = sus_ops.removal_day(tx, sus)
        verb = "remove the services" if kind == "removal" else "warn of removal"
        moved = f", moved from {planned}: the warning goes out late" if kind != "removal" and rday != planned else ""
        what = (f"{acc.name}: {verb} on {rday}{moved} (suspended since "
                f"{sus.started_at.astimezone(tx.settings.tz).date()})")
        if held is not None:
            actions.append(Action("removals", acc, key, f"{what} - held, not acting", None))
            continue
        apply = _remove if kind == "removal" else _warn_of_removal
        actions.append(Action("removals", acc, key, f"{what}, {_to(acc, dunning=False)}",
                              lambda tx, sus_id=sus.id, rday=rday, apply=apply: apply(tx, acc, sus_id, rday)))
    return actions


def _warn_of_removal(tx: "Tx", acc: Account, sus_id: int, remove_on: dt.date) -> str | None:
    """Claim and send the removal warning; a late one moves the suspension's removal to ``remove_on``."""
    fresh = tx.session.get(Suspension, sus_id)
    if fresh.lifted_at is not None or _warned_until(tx, fresh, set()) is not None:
        return None
    planned = sus_ops.removal_day(tx, fresh)
    notice = claim_notice(tx, kind="removal_warning", subject_type="suspension", subject_id=sus_id,
                          occasion=f"-{tx.settings.removal_warning_days}d", occasion_date=planned, account_id=acc.id,
                          outcome=why_no_email(acc, dunning=False) or "sent", detail=f"removal on {remove_on}")
    if notice is None:
        return None
    if remove_on != planned:
        fresh.remove_after = day_start(tx, remove_on)
        tx.audit("suspension.removal_moved", subject=fresh, account_id=acc.id, planned=planned.isoformat(),
                 remove_on=remove_on.isoformat(), why="the removal warning went out late")
    owed = sum(i.due_minor for i in open_invoices(tx, acc.id))
    send(tx, acc, "removal_warning", {"remove_on": remove_on.isoformat(), "owed": fmt(owed, acc.currency),
                                      "services": [s.name for s in acc.services if s.status.value == "suspended"]},
         f"notice:{notice.id}")
    return f"removal on {remove_on}" if remove_on != planned else ""


def _remove(tx: "Tx", acc: Account, sus_id: int, rday: dt.date) -> str | None:
    """Remove the suspended services: only after the warning, on or after the day it announced."""
    fresh = tx.session.get(Suspension, sus_id)
    warned = None if fresh.lifted_at is not None else _warned_until(tx, fresh, set())
    if warned is None or today(tx) < warned:
        return None
    notice = claim_notice(tx, kind="removal", subject_type="suspension", subject_id=sus_id, occasion="0d",
                          occasion_date=warned, account_id=acc.id, outcome=why_no_email(acc, dunning=False) or "sent")
    if notice is None:
        return None
    names = sus_ops.remove(tx, acc, fresh)
    send(tx, acc, "removal_notice", {"services": names, "removed_on": today(tx).isoformat()}, f"notice:{notice.id}")
    return "removed: " + (", ".join(names) or "nothing left to remove")


# -- credit limit: warnings before, suspension on reaching it ---------------------------------

def _episode(tx: "Tx", acc: Account) -> tuple[list[Notice], dt.date | None]:
    """The credit warnings since the last re-arm, and the day the current episode began."""
    rearmed = tx.session.scalar(select(func.max(Notice.id)).where(
        Notice.kind == "credit_rearm", Notice.account_id == acc.id)) or 0
    warnings = list(tx.session.scalars(select(Notice).where(
        Notice.kind == "credit_warning", Notice.account_id == acc.id, Notice.id > rearmed).order_by(Notice.id)))
    return warnings, (warnings[0].occasion_date if warnings else None)


def _credit_suspension_key(tx: "Tx", acc: Account) -> str:
    taken = tx.session.scalar(select(func.count()).select_from(Suspension).where(
        Suspension.account_id == acc.id, Suspension.reason == SuspensionReason.credit_limit)) or 0
    return f"credit_limit:account:{acc.id}:{taken + 1}"


def credit_limits(tx: "Tx", acc: Account, assumed: set[Key]) -> list[Action]:
    """Warnings as the position nears the limit, then a suspension once it is passed.

    No limit, no action. A suspension comes only to accounts with automatic suspension on, and
    when the spending rate allows a forecast, only after a warning of this episode went out: a
    jump past the limit first sends the warning, and the next sweep suspends.
    """
    state: CreditState = credit_state(tx, acc)
    if state.limit is None:
        return []
    cur, day = acc.currency, today(tx)
    where = f"position {fmt(state.position, cur)} against a limit of {fmt(state.limit, cur)}"
    warnings, began = _episode(tx, acc)
    warned = bool(warnings) or any(k[0] == "credit_warning" and k[2] == acc.id for k in assumed)
    if state.reached and acc.auto_suspend and (warned or state.daily <= 0 or not tx.settings.credit_warning_offsets):
        if any(s.reason == SuspensionReason.credit_limit for s in sus_ops.open_suspensions(tx, acc.id)):
            return []
        dedupe = _credit_suspension_key(tx, acc)
        key = ("suspension", f"credit_limit:account:{acc.id}")
        if key in assumed:
            return []
        what = f"{acc.name}: suspend the account, credit limit reached ({where})"
        if (held := active_hold(tx, acc.id)) is not None:
            return [Action("credit_limits", acc, key, f"{what} - held, not suspending"
                           + (f" ({held.reason})" if held.reason else ""), None)]

        def suspend(tx: "Tx") -> str | None:
            if not credit_state(tx, acc).reached:
                return None
            sus = sus_ops.suspend(tx, acc, reason=SuspensionReason.credit_limit, dedupe_key=dedupe)
            return None if sus is None else ""
        return [Action("credit_limits", acc, key, f"{what}, {_to(acc, dunning=False)}", suspend)]
    windows = tx.settings.credit_warning_offsets
    level = min((w for w in windows if state.days_left is not None and state.days_left <= w), default=None)
    if level is None and state.reached:
        return []  # past the limit with no spending to forecast from, and no automatic suspension
    if level is None:
        if not warnings or ("credit_rearm", acc.id) in assumed:
            return []

        def rearm(tx: "Tx") -> str | None:
            row = claim_notice(tx, kind="credit_rearm", subject_type="account", subject_id=acc.id, occasion="ok",
                               occasion_date=day, account_id=acc.id, outcome="recorded")
            return None if row is None else ""
        return [Action("credit_limits", acc, ("credit_rearm", acc.id),
                       f"{acc.name}: back away from the credit limit ({where}); warnings re-armed", rearm)]
    episode_day = began or day
    sent_levels = {int(n.occasion.rstrip("d")) for n in warnings}
    key = ("credit_warning", "account", acc.id, f"{level}d", episode_day)
    if key in assumed or any(lv <= level for lv in sent_levels) or \
            any(k[:3] == key[:3] and int(k[3].rstrip("d")) <= level for k in assumed if k[0] == "credit_warning"):
        return []
    days_text = f"{state.days_left:.1f}" if state.days_left is not None else "?"
    text = (f"{acc.name}: credit warning, limit reached in about {days_text} days at "
            f"{fmt(round(state.daily), cur)} a day ({where}), {_to(acc, dunning=False)}")

    def warn(tx: "Tx") -> str | None:
        notice = claim_notice(tx, kind="credit_warning", subject_type="account", subject_id=acc.id,
                              occasion=f"{level}d", occasion_date=episode_day, account_id=acc.id,
                              outcome=why_no_email(acc, dunning=False) or "sent")
        if notice is None:
            return None
        send(tx, acc, "credit_warning", {
            "days": level, "days_left": days_text, "position": fmt(state.position, cur),
            "limit": fmt(state.limit, cur), "headroom": fmt(state.headroom, cur),
            "over": fmt(-state.headroom, cur) if state.reached else None, "suspends": acc.auto_suspend,
            "daily": fmt(round(state.daily), cur)}, f"notice:{notice.id}")
        return ""
    return [Action("credit_limits", acc, key, text, warn)]


def recurring_invoices(tx: "Tx", acc: Account, assumed: set[Key]) -> list[Action]:
    """Invoices for services billed by period, ahead of their due date (see :mod:`handlers.billing.recurring`)."""
    from handlers.billing.recurring import recurring_invoices as rule
    return rule(tx, acc, assumed)


def plan_charges(tx: "Tx", acc: Account, assumed: set[Key]) -> list[Action]:
    """Month-end charges from the account's charging plan (see :mod:`handlers.billing.charging`)."""
    from handlers.billing.charging import plan_charges as rule
    return rule(tx, acc, assumed)


def renewal_automation(tx: "Tx", acc: Account, assumed: set[Key]) -> list[Action]:
    """Automatic renewal, confirmation requests, removal after expiry (see :mod:`handlers.renewals.automation`)."""
    from handlers.renewals.automation import plan_account
    return plan_account(tx, acc, assumed)


# the order of a sweep: recurring invoices come before the notices about them, month-end charges
# before the credit limit they count against
RULES: dict[str, Callable[["Tx", Account, set[Key]], list[Action]]] = {
    "recurring_invoices": recurring_invoices,
    "invoice_notices": invoice_notices,
    "overdue_suspensions": overdue_suspensions,
    "removals": removals,
    "plan_charges": plan_charges,
    "credit_limits": credit_limits,
    "renewal_automation": renewal_automation,
}
