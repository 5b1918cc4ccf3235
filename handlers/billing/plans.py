"""Charging plans, subscriptions and usage: defining a plan, putting an account on it, recording usage.

Prices and quantities are exact: a unit price is kept in millionths of the currency's minor unit
and a quantity in millionths of its unit (:data:`handlers.models.MICROS`), so ``0.0125 EUR`` a GB
times ``1234.567 GB`` is computed without floats and rounded once, when the month is charged
(:mod:`handlers.billing.charging`).
"""
from __future__ import annotations

import calendar
import datetime as dt
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from handlers.billing.common import lock_account
from handlers.errors import Conflict, InvalidInput, NotFound
from handlers.models import MICROS, Account, Notice, Plan, PlanLine, PlanLineKind, Subscription, UsageRecord
from handlers.money import exponent

if TYPE_CHECKING:
    from handlers.services import Tx

MONTH_KIND = "plan_month"  # the notice that closes one subscription's month: its charges were made
MAX_MICROS = 10 ** 18      # well inside a BIGINT


# -- exact numbers ----------------------------------------------------------------------------

def _decimal(text: object, path: str | None) -> Decimal:
    if isinstance(text, bool) or not isinstance(text, (str, int, Decimal)):
        raise InvalidInput("not a number (write it as a string, like \"12.5\")", path=path)
    try:
        value = text if isinstance(text, Decimal) else Decimal(str(text).strip())
    except InvalidOperation:
        raise InvalidInput(f"not a number: {text!r}", path=path) from None
    if not value.is_finite():
        raise InvalidInput(f"not a number: {text!r}", path=path)
    if value < 0:
        raise InvalidInput(f"must not be negative: {text}", path=path)
    return value


def _scaled(value: Decimal, places: int, what: str, text: object, path: str | None) -> int:
    scaled = value.scaleb(places)
    if scaled != scaled.to_integral_value():
        raise InvalidInput(f"{what}: {text}", path=path)
    if scaled >= MAX_MICROS:
        raise InvalidInput("too large", path=path)
    return int(scaled)


def quantity_micros(text: object, path: str | None = None) -> int:
    """``"1234.5678"`` → ``1234567800``: a usage quantity, up to 6 decimals."""
    return _scaled(_decimal(text, path), 6, "more than 6 decimals", text, path)


def price_micros(text: object, currency: str, path: str | None = None) -> int:
    """``"0.0125"`` EUR → ``1250000`` millionths of a cent: up to 6 decimals beyond the minor unit."""
    places = exponent(currency) + 6
    return _scaled(_decimal(text, path), places, f"more than {places} decimals", text, path)


def _plain(value: Decimal) -> str:
    text = f"{value:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def quantity_str(micros: int) -> str:
    """``1234567800`` → ``"1234.5678"``."""
    return _plain(Decimal(micros).scaleb(-6))


def price_str(micros: int, currency: str) -> str:
    """A unit price as written: at least the currency's decimals (``"0.0125"``, ``"19.00"``)."""
    value = Decimal(micros).scaleb(-6 - exponent(currency))
    text = _plain(value)
    decimals = len(text.partition(".")[2])
    return f"{value:.{max(decimals, exponent(currency))}f}"


def round_half_up(numerator: int, denominator: int) -> int:
    """``numerator / denominator`` to the nearest integer, halves up (both non-negative)."""
    return (2 * numerator + denominator) // (2 * denominator)


# -- months -----------------------------------------------------------------------------------

def month_of(day: dt.date) -> dt.date:
    return day.replace(day=1)


def next_month(month: dt.date) -> dt.date:
    return (month.replace(day=28) + dt.timedelta(days=4)).replace(day=1)


def month_days(month: dt.date) -> int:
    return calendar.monthrange(month.year, month.month)[1]


def label(month: dt.date) -> str:
    return f"{month:%Y-%m}"


# -- plans ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LineSpec:
    """A plan line as given: a fee (``code`` is its ref) or a metric's unit price."""

    kind: PlanLineKind
    code: str
    text: str
    unit: str
    price_micros: int


def define_plan(tx: "Tx", ref: str, name: str, currency: str, lines: list[LineSpec]) -> tuple[Plan, str]:
    """Create the plan, or bring its name and lines up to date; ``created``, ``updated`` or ``unchanged``.

    A changed price applies to every month not charged yet. Lines are matched by code and never
    deleted (a plan's history stays explainable); a code cannot switch between fee and metric.
    """
    plan = tx.session.scalar(select(Plan).where(Plan.ref == ref))
    if plan is None:
        plan = Plan(ref=ref, name=name, currency=currency, created_at=tx.now)
        plan.lines = [PlanLine(position=i, kind=ln.kind, code=ln.code, text=ln.text, unit=ln.unit,
                               price_micros=ln.price_micros) for i, ln in enumerate(lines, start=1)]
        tx.session.add(plan)
        tx.session.flush()
        tx.audit("plan.create", subject=plan, ref=ref, lines=[ln.code for ln in lines])
        return plan, "created"
    if plan.currency != currency:
        raise InvalidInput(f"plan {ref} is in {plan.currency}; its currency cannot change")
    changed = ["name"] if plan.name != name else []
    plan.name = name
    by_code = {ln.code: ln for ln in plan.lines}
    for spec in lines:
        line = by_code.get(spec.code)
        if line is None:
            plan.lines.append(PlanLine(position=len(plan.lines) + 1, kind=spec.kind, code=spec.code, text=spec.text,
                                       unit=spec.unit, price_micros=spec.price_micros))
            changed.append(spec.code)
            continue
        if line.kind != spec.kind:
            raise InvalidInput(f"{spec.code} is a {line.kind.value} line of plan {ref}; it cannot become a "
                               f"{spec.kind.value} line")
        if (line.text, line.unit, line.price_micros) != (spec.text, spec.unit, spec.price_micros):
            line.text, line.unit, line.price_micros = spec.text, spec.unit, spec.price_micros
            changed.append(spec.code)
    if not changed:
        return plan, "unchanged"
    tx.session.flush()
    tx.audit("plan.update", subject=plan, ref=ref, changed=changed)
    return plan, "updated"


# -- subscriptions ----------------------------------------------------------------------------

def subscriptions(tx: "Tx", account_id: int) -> list[Subscription]:
    return list(tx.session.scalars(select(Subscription).where(Subscription.account_id == account_id)
                                   .order_by(Subscription.starts_on)))


def closed_months(tx: "Tx", sub_id: int) -> set[dt.date]:
    """The months of a subscription already charged."""
    return set(tx.session.scalars(select(Notice.occasion_date).where(
        Notice.kind == MONTH_KIND, Notice.subject_type == "subscription", Notice.subject_id == sub_id)))


def first_billed_month(tx: "Tx", sub: Subscription) -> dt.date:
    """The first month the sweep charges: months that ended before the plan was assigned here are not."""
    created = sub.created_at.astimezone(tx.settings.tz).date()
    return max(month_of(sub.starts_on), month_of(created))


def _refuse_charged(tx: "Tx", sub: Subscription, last_day: dt.date | None, what: str) -> None:
    """Refuse ending ``sub`` on ``last_day`` when a month after that day was already charged on it."""
    closed = closed_months(tx, sub.id)
    if last_day is not None and any(next_month(m) - dt.timedelta(days=1) > last_day for m in closed):
        raise Conflict(f"{what}: plan {sub.plan.ref} was already charged through {label(max(closed))}; "
                       "give a credit for what should not have been charged")


def subscribe(tx: "Tx", account_id: int, plan_ref: str, starts_on: dt.date,
              ends_on: dt.date | None = None) -> tuple[Subscription, str]:
    """Put the account on the plan from ``starts_on`` (through ``ends_on``); a later plan ends the current one.

    The same plan and start again only updates the end day. Returns the subscription and
    ``created``, ``updated`` or ``unchanged``.
    """
    acc = lock_account(tx, account_id)
    plan = tx.session.scalar(select(Plan).where(Plan.ref == plan_ref))
    if plan is None:
        raise NotFound(f"no plan {plan_ref!r}")
    if plan.currency != acc.currency:
        raise InvalidInput(f"plan {plan_ref} is in {plan.currency}, the account in {acc.currency}")
    if ends_on is not None and ends_on < starts_on:
        raise InvalidInput(f"the plan would end ({ends_on}) before it starts ({starts_on})")
    subs = subscriptions(tx, acc.id)
    current = subs[-1] if subs else None
    if current is not None and current.starts_on == starts_on:
        if current.plan_id != plan.id:
            raise Conflict(f"the account is already on plan {current.plan.ref} from {starts_on}")
        if current.ends_on == ends_on:
            return current, "unchanged"
        _refuse_charged(tx, current, ends_on, "end")
        current.ends_on = ends_on
        tx.audit("plan.subscription_end", subject=current, account_id=acc.id, plan=plan_ref,
                 ends_on=None if ends_on is None else ends_on.isoformat())
        return current, "updated"
    if current is not None and starts_on < current.starts_on:
        raise Conflict(f"the account is on plan {current.plan.ref} from {current.starts_on}; a new plan must "
                       "start after that")
    if current is not None and (current.ends_on is None or current.ends_on >= starts_on):
        _refuse_charged(tx, current, starts_on - dt.timedelta(days=1), "start")
        current.ends_on = starts_on - dt.timedelta(days=1)
    sub = Subscription(account_id=acc.id, plan_id=plan.id, starts_on=starts_on, ends_on=ends_on, created_at=tx.now,
                       actor=tx.actor)
    sub.plan = plan
    tx.session.add(sub)
    tx.session.flush()
    tx.audit("plan.subscribe", subject=sub, account_id=acc.id, plan=plan_ref, starts_on=starts_on.isoformat(),
             ends_on=None if ends_on is None else ends_on.isoformat())
    return sub, "created"


def subscription_on(tx: "Tx", account_id: int, day: dt.date) -> Subscription | None:
    """The subscription covering ``day``, if any."""
    for sub in subscriptions(tx, account_id):
        if sub.starts_on <= day and (sub.ends_on is None or day <= sub.ends_on):
            return sub
    return None


# -- usage ------------------------------------------------------------------------------------

def record_usage(tx: "Tx", account: Account | int, metric: str, quantity: object, at: dt.datetime,
                 ref: str, *, audit: bool = True) -> tuple[UsageRecord, bool]:
    """Record ``quantity`` of ``metric`` used at ``at``; ``ref`` (the meter's id) makes it count once.

    The same ref with the same values is a no-op (returns the first record and False). Refused:
    a ref reused with other values, a metric the account's plan on that day does not price, a
    moment in the future, and a month already charged (the charge was made without it).
    ``audit=False`` leaves the audit event to the caller (the import writes one per account).
    """
    acc = lock_account(tx, account if isinstance(account, int) else account.id)
    ref, metric = (ref or "").strip(), (metric or "").strip()
    if not ref or len(ref) > 200:
        raise InvalidInput("ref: 1 to 200 characters")
    if at.tzinfo is None:
        raise InvalidInput("at: needs a timezone")
    micros = quantity_micros(quantity, "quantity")
    found = tx.session.scalar(select(UsageRecord).where(UsageRecord.account_id == acc.id, UsageRecord.ref == ref))
    if found is not None:
        if (found.metric, found.quantity_micros, found.at) != (metric, micros, at):
            raise Conflict(f"usage {ref} was recorded as {quantity_str(found.quantity_micros)} {found.metric} at "
                           f"{found.at.isoformat()}; recorded usage cannot change")
        return found, False
    if at > tx.now:
        raise InvalidInput(f"at: {at.isoformat()} is in the future")
    day = at.astimezone(tx.settings.tz).date()
    sub = subscription_on(tx, acc.id, day)
    if sub is None:
        raise InvalidInput(f"the account has no charging plan on {day}")
    metrics = [ln.code for ln in sub.plan.lines if ln.kind == PlanLineKind.usage]
    if metric not in metrics:
        raise InvalidInput(f"metric {metric!r} is not priced by plan {sub.plan.ref} (it prices "
                           f"{', '.join(metrics) or 'no usage'})", path="metric")
    month = month_of(day)
    if month < first_billed_month(tx, sub):
        raise InvalidInput(f"at: {label(month)} ended before the account was put on plan {sub.plan.ref} here; "
                           "it is not charged")
    if month in closed_months(tx, sub.id):
        raise Conflict(f"{label(month)} was already charged for plan {sub.plan.ref}; record late usage in the "
                       "current month, or add a charge")
    row = UsageRecord(account_id=acc.id, metric=metric, quantity_micros=micros, at=at, ref=ref,
                      recorded_at=tx.now, actor=tx.actor)
    try:
        with tx.session.begin_nested():
            tx.session.add(row)
    except IntegrityError:  # the same ref recorded at the same moment by another door
        raise Conflict(f"usage {ref} was recorded at the same moment elsewhere; try again") from None
    if audit:
        tx.audit("usage.record", subject=row, account_id=acc.id, metric=metric, quantity=quantity_str(micros),
                 at=at.isoformat(), ref=ref)
    return row, True


def fee_amount(line: PlanLine, days: int, of_days: int) -> int:
    """A monthly fee for ``days`` of a month of ``of_days`` days, in minor units, rounded once."""
    return round_half_up(line.price_micros * days, of_days * MICROS)


def usage_amount(line: PlanLine, quantity: int) -> int:
    """``quantity`` (millionths) times the unit price (millionths of a minor unit), rounded once."""
    return round_half_up(quantity * line.price_micros, MICROS * MICROS)


def line_json(line: PlanLine, currency: str) -> dict[str, object]:
    out: dict[str, object] = {"kind": line.kind.value, "code": line.code, "text": line.text}
    if line.kind == PlanLineKind.fee:
        out["monthly"] = {"amount": price_str(line.price_micros, currency), "currency": currency}
    else:
        out["unit"] = line.unit
        out["unit_price"] = {"amount": price_str(line.price_micros, currency), "currency": currency}
    return out

