"""Reading an import document into a checked plan: pure, no database.

:func:`validate` walks the whole document in order and raises :class:`InvalidInput` for the
first wrong field, named by its path (``accounts[2].services[0].expires_on: not a date``).
The format itself is described in :mod:`handlers.importer`.
"""
from __future__ import annotations

import datetime as dt
import difflib
import re
from decimal import Decimal
from typing import Any, Iterator

from handlers import import_plans
from handlers.billing.recurring import normalize_period
from handlers.errors import InvalidInput
from handlers.import_plan import (AccountPlan, ChargePlan, ContactPlan, ImportPlan, InvoicePlan, LinePlan, MessagePlan,
                                  ServicePlan, TicketPlan, charge_ledger_ref)
from handlers.models import PERMISSIONS, SERVICE_KINDS, Invoicing, MessageKind, ServiceStatus, TicketStatus
from handlers.money import check_currency, fmt, to_minor

EMAIL_PREFS = ("renewals", "billing", "tickets")
MAX_MINOR = 10 ** 15  # far beyond any real invoice, well inside a BIGINT

_EMAIL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
                    r"@[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)+")
_STAFF = re.compile(r"staff:[A-Z0-9]{2,31}")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")

ACCOUNT_KEYS = ("ref", "name", "currency", "owner", "contacts", "credit_limit", "auto_suspend", "invoicing",
                "sales_contact", "overdue_notices", "services", "invoices", "charges", "tickets", "plan", "usage")
OWNER_KEYS = ("email", "name", "email_preferences")
CONTACT_KEYS = ("email", "name", "permissions", "email_preferences")
SERVICE_KEYS = ("ref", "kind", "name", "status", "expires_on", "period_years", "price", "auto_renew", "billing_period",
                "next_due_on", "product", "server")
INVOICE_KEYS = ("number", "issued_on", "due_on", "lines", "paid")
LINE_KEYS = ("text", "amount", "tax")
CHARGE_KEYS = ("ref", "on", "amount", "text")
TICKET_KEYS = ("ref", "subject", "status", "archived", "opened_by", "messages")
MESSAGE_KEYS = ("from", "kind", "body", "at")


# -- reading one JSON object -------------------------------------------------------------------

class _Obj:
    """One JSON object of the file: typed getters that name a wrong field by its path."""

    def __init__(self, value: Any, path: str, allowed: tuple[str, ...]):
        if not isinstance(value, dict):
            raise InvalidInput("not an object", path=path)
        self.value, self.path = value, path
        for key in value:
            if key not in allowed:
                raise InvalidInput(_unknown(key, allowed), path=self.at(key))

    def at(self, key: str) -> str:
        """The path of ``key`` inside this object."""
        return f"{self.path}.{key}" if self.path else key

    def raw(self, key: str, required: bool = False) -> Any:
        """The value as written; None when absent; null is refused."""
        if key not in self.value:
            if required:
                raise InvalidInput("required", path=self.at(key))
            return None
        if self.value[key] is None:
            raise InvalidInput("must not be null (leave the field out instead)", path=self.at(key))
        return self.value[key]

    def text(self, key: str, *, required: bool = False, max_len: int | None = None,
             empty_ok: bool = False) -> str | None:
        """A string, stripped; empty only where ``empty_ok``."""
        v = self.raw(key, required)
        if v is None:
            return None
        if not isinstance(v, str):
            raise InvalidInput("not a string", path=self.at(key))
        v = v.strip()
        if not v and not empty_ok:
            raise InvalidInput("must not be empty", path=self.at(key))
        if max_len is not None and len(v) > max_len:
            raise InvalidInput(f"longer than {max_len} characters", path=self.at(key))
        return v

    def boolean(self, key: str) -> bool | None:
        """true or false."""
        v = self.raw(key)
        if v is not None and not isinstance(v, bool):
            raise InvalidInput("not true or false", path=self.at(key))
        return v

    def choice(self, key: str, choices: tuple[str, ...], what: str, required: bool = False) -> str | None:
        """One of ``choices``."""
        v = self.text(key, required=required)
        if v is not None and v not in choices:
            raise InvalidInput(f"not a {what}: {v!r} (one of {', '.join(choices)})", path=self.at(key))
        return v

    def date(self, key: str, required: bool = False) -> dt.date | None:
        """An ISO date, YYYY-MM-DD."""
        v = self.raw(key, required)
        if v is None:
            return None
        try:
            if not isinstance(v, str) or not _DATE.fullmatch(v.strip()):
                raise ValueError
            return dt.date.fromisoformat(v.strip())
        except ValueError:
            raise InvalidInput("not a date", path=self.at(key)) from None

    def moment(self, key: str) -> dt.datetime:
        """An ISO date and time with its zone."""
        v = self.raw(key, required=True)
        try:
            at = dt.datetime.fromisoformat(v.strip()) if isinstance(v, str) else None
        except ValueError:
            at = None
        if at is None or "T" not in v.upper():
            raise InvalidInput("not a date and time", path=self.at(key))
        if at.tzinfo is None:
            raise InvalidInput("no timezone (add Z or +01:00)", path=self.at(key))
        return at.astimezone(dt.timezone.utc)

    def email(self, key: str, required: bool = False) -> str | None:
        """An email address, lower-cased."""
        v = self.text(key, required=required, max_len=320)
        if v is not None and not is_email(v):
            raise InvalidInput(f"not an email address: {v!r}", path=self.at(key))
        return None if v is None else v.lower()

    def amount(self, key: str, currency: str, *, required: bool = False, negative: bool = False) -> int | None:
        """A decimal amount in ``currency``, as minor units."""
        v = self.raw(key, required)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, (str, int, Decimal)):
            raise InvalidInput("not an amount", path=self.at(key))
        minor = to_minor(v, currency, path=self.at(key), allow_negative=negative)
        if abs(minor) >= MAX_MINOR:
            raise InvalidInput("too large", path=self.at(key))
        return minor

    def items(self, key: str) -> Iterator[tuple[Any, str]]:
        """Each element of a list with its path; nothing when absent."""
        v = self.raw(key)
        if v is None:
            return iter(())
        if not isinstance(v, list):
            raise InvalidInput("not a list", path=self.at(key))
        return ((item, f"{self.at(key)}[{i}]") for i, item in enumerate(v))


def is_email(text: str) -> bool:
    """A plain sanity check: local@domain.tld without spaces or stray dots."""
    local = text.partition("@")[0]
    return bool(_EMAIL.fullmatch(text)) and len(local) <= 64 and len(text) <= 320


def _unknown(key: str, allowed: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1)
    if close:
        return f'unknown field (did you mean "{close[0]}"?)'
    return f"unknown field (expected {', '.join(allowed)})"


class _Unique:
    """Remembers where each key was first seen, to name duplicates."""

    def __init__(self) -> None:
        self.seen: dict[str, str] = {}

    def check(self, key: str, path: str) -> None:
        """Refuse ``key`` if an earlier field already used it."""
        if key in self.seen:
            raise InvalidInput(f"duplicate {key!r} (also at {self.seen[key]})", path=path)
        self.seen[key] = path


# -- the document ------------------------------------------------------------------------------

def validate(data: object) -> ImportPlan:
    """Check the whole document and return the plan, or raise for the first wrong field."""
    if not isinstance(data, dict):
        raise InvalidInput('the document must be a JSON object with an "accounts" list')
    doc = _Obj(data, "", ("accounts", "plans"))
    doc.raw("accounts", required="plans" not in data)
    refs, numbers, tickets, plan_refs = _Unique(), _Unique(), _Unique(), _Unique()
    plans = import_plans.plans(doc, plan_refs.check)
    accounts = []
    for value, path in doc.items("accounts"):
        accounts.append(_account(value, path, refs, numbers, tickets))
    return ImportPlan(accounts=tuple(accounts), plans=plans)


def _account(value: Any, path: str, refs: _Unique, numbers: _Unique, tickets: _Unique) -> AccountPlan:
    """One account with everything under it."""
    o = _Obj(value, path, ACCOUNT_KEYS)
    ref = o.text("ref", required=True, max_len=100)
    refs.check(ref, o.at("ref"))
    name = o.text("name", required=True, max_len=200)
    currency = check_currency(o.text("currency", required=True), path=o.at("currency"))
    emails = _Unique()
    owner = _contact(o.raw("owner", required=True), o.at("owner"), emails, owner=True)
    contacts = tuple(_contact(v, p, emails) for v, p in o.items("contacts"))
    credit_limit = o.amount("credit_limit", currency, negative=True)
    auto_suspend = o.boolean("auto_suspend")
    invoicing = o.choice("invoicing", tuple(m.value for m in Invoicing), "way of invoicing")
    sales_contact = "" if o.value.get("sales_contact", 0) is None else o.email("sales_contact")
    overdue_notices = o.boolean("overdue_notices")
    svc_refs, charge_refs = _Unique(), _Unique()
    services = tuple(_service(v, p, currency, svc_refs) for v, p in o.items("services"))
    invoices = tuple(_invoice(v, p, currency, numbers) for v, p in o.items("invoices"))
    charges = tuple(_charge(v, p, ref, currency, charge_refs) for v, p in o.items("charges"))
    people = {owner.email} | {c.email for c in contacts}
    ticket_plans = tuple(_ticket(v, p, people, tickets) for v, p in o.items("tickets"))
    return AccountPlan(
        ref=ref, name=name, currency=currency, owner=owner, contacts=contacts, credit_limit_minor=credit_limit,
        auto_suspend=auto_suspend, invoicing=None if invoicing is None else Invoicing(invoicing),
        sales_contact=sales_contact, overdue_notices=overdue_notices, services=services, invoices=invoices,
        charges=charges, tickets=ticket_plans, path=path, subscription=import_plans.subscription(o),
        usage=import_plans.usage(o))


def _contact(value: Any, path: str, emails: _Unique, owner: bool = False) -> ContactPlan:
    """The owner (every permission) or a sub-account contact."""
    o = _Obj(value, path, OWNER_KEYS if owner else CONTACT_KEYS)
    email = o.email("email", required=True)
    emails.check(email, o.at("email"))
    name = o.text("name", max_len=200, empty_ok=True)
    permissions = None if owner else _permissions(o)
    prefs = _email_prefs(o)
    return ContactPlan(email=email, name=name, permissions=PERMISSIONS if owner else permissions,
                       email_prefs=prefs, is_owner=owner)


def _permissions(o: _Obj) -> tuple[str, ...] | None:
    """A list of permission names, kept in their canonical order."""
    given = set()
    for v, p in o.items("permissions"):
        if v not in PERMISSIONS:
            raise InvalidInput(f"not a permission: {v!r} (one of {', '.join(PERMISSIONS)})", path=p)
        given.add(v)
    return None if "permissions" not in o.value else tuple(p for p in PERMISSIONS if p in given)


def _email_prefs(o: _Obj) -> dict[str, bool] | None:
    """Which kinds of mail the contact wants."""
    if "email_preferences" not in o.value:
        return None
    prefs = _Obj(o.raw("email_preferences"), o.at("email_preferences"), EMAIL_PREFS)
    return {key: prefs.boolean(key) for key in EMAIL_PREFS if key in prefs.value}


def _service(value: Any, path: str, currency: str, refs: _Unique) -> ServicePlan:
    """A domain, hosting plan, VPS, certificate or extra."""
    o = _Obj(value, path, SERVICE_KEYS)
    ref = o.text("ref", required=True, max_len=200)
    refs.check(ref, o.at("ref"))
    kind = o.choice("kind", SERVICE_KINDS, "service kind", required=True)
    name = o.text("name", max_len=255)
    status = o.choice("status", tuple(m.value for m in ServiceStatus), "service status")
    expires_on = o.date("expires_on", required=kind == "domain")
    period = o.raw("period_years")
    if period is not None and (isinstance(period, bool) or not isinstance(period, int) or not 1 <= period <= 10):
        raise InvalidInput("must be a whole number of years from 1 to 10", path=o.at("period_years"))
    billing_period = _billing_period(o)
    if billing_period is not None and kind == "domain":
        raise InvalidInput("a domain renews through its renewal reminders, not a billing period; leave it out",
                           path=o.at("billing_period"))
    if billing_period is not None and not o.amount("price", currency):
        raise InvalidInput("a service billed by period needs a price above zero", path=o.at("price"))
    return ServicePlan(ref=ref, kind=kind, name=name, status=None if status is None else ServiceStatus(status),
                       expires_on=expires_on, period_years=period, price_minor=o.amount("price", currency),
                       auto_renew=o.boolean("auto_renew"), billing_period=billing_period,
                       next_due_on=o.date("next_due_on", required=billing_period is not None),
                       product=o.text("product", max_len=200), server=o.text("server", max_len=200))


def _billing_period(o: _Obj) -> str | None:
    """``"1m"``, ``"3m"``, ``"1y"``...: the price is per this period (recurring invoices)."""
    raw = o.raw("billing_period")
    if raw is None:
        return None
    try:
        return normalize_period(raw) if isinstance(raw, str) else normalize_period("")
    except ValueError as exc:
        raise InvalidInput(str(exc), path=o.at("billing_period")) from None


def _invoice(value: Any, path: str, currency: str, numbers: _Unique) -> InvoicePlan:
    """An invoice with its lines and what has been paid of it."""
    o = _Obj(value, path, INVOICE_KEYS)
    number = o.text("number", required=True, max_len=64)
    numbers.check(number, o.at("number"))
    issued_on = o.date("issued_on", required=True)
    due_on = o.date("due_on", required=True)
    if due_on < issued_on:
        raise InvalidInput("before issued_on", path=o.at("due_on"))
    o.raw("lines", required=True)
    lines = tuple(_line(v, p, currency) for v, p in o.items("lines"))
    if not lines:
        raise InvalidInput("an invoice needs at least one line", path=o.at("lines"))
    plan = InvoicePlan(number=number, issued_on=issued_on, due_on=due_on, lines=lines,
                       paid_minor=o.amount("paid", currency), path=path)
    if plan.total_minor < 0:
        raise InvalidInput("the lines add up to less than zero", path=o.at("lines"))
    if plan.paid_minor is not None and plan.paid_minor > plan.total_minor:
        raise InvalidInput(f"more than the invoice total ({fmt(plan.paid_minor, currency)} > "
                           f"{fmt(plan.total_minor, currency)})", path=o.at("paid"))
    return plan


def _line(value: Any, path: str, currency: str) -> LinePlan:
    """One invoice line: a negative amount is a discount."""
    o = _Obj(value, path, LINE_KEYS)
    text = o.text("text", required=True)
    amount = o.amount("amount", currency, required=True, negative=True)
    tax = o.amount("tax", currency, negative=True)
    return LinePlan(text=text, amount_minor=amount, tax_minor=tax or 0)


def _charge(value: Any, path: str, account_ref: str, currency: str, refs: _Unique) -> ChargePlan:
    """A manual charge on the account's ledger."""
    o = _Obj(value, path, CHARGE_KEYS)
    ref = o.text("ref", required=True, max_len=100)
    refs.check(ref, o.at("ref"))
    ledger_ref = charge_ledger_ref(account_ref, ref)
    if len(ledger_ref) > 200:
        raise InvalidInput("too long together with the account's ref", path=o.at("ref"))
    on = o.date("on", required=True)
    amount = o.amount("amount", currency, required=True)
    if amount == 0:
        raise InvalidInput("must be more than zero", path=o.at("amount"))
    return ChargePlan(ref=ref, ledger_ref=ledger_ref, on=on, amount_minor=amount,
                      text=o.text("text", empty_ok=True), path=path)


def _ticket(value: Any, path: str, people: set[str], refs: _Unique) -> TicketPlan:
    """A ticket with its conversation."""
    o = _Obj(value, path, TICKET_KEYS)
    ref = o.text("ref", required=True, max_len=100)
    refs.check(ref, o.at("ref"))
    subject = o.text("subject", required=True, max_len=998)
    status = o.choice("status", tuple(m.value for m in TicketStatus), "ticket status")
    archived = o.boolean("archived")
    opened_by = o.email("opened_by")
    if opened_by is not None and opened_by not in people:
        raise InvalidInput(f"{opened_by} is not the owner or a contact of this account", path=o.at("opened_by"))
    messages = tuple(_message(v, p) for v, p in o.items("messages"))
    return TicketPlan(ref=ref, subject=subject, status=None if status is None else TicketStatus(status),
                      archived=archived, opened_by=opened_by, messages=messages, path=path)


def _message(value: Any, path: str) -> MessagePlan:
    """A client email, a staff reply or an internal note."""
    o = _Obj(value, path, MESSAGE_KEYS)
    author = o.text("from", required=True, max_len=320)
    kind = MessageKind(o.choice("kind", ("client", "reply", "note"), "message kind", required=True))
    if kind == MessageKind.client and not is_email(author):
        raise InvalidInput(f"a client message comes from an email address, not {author!r}", path=o.at("from"))
    if kind != MessageKind.client and not _STAFF.fullmatch(author):
        raise InvalidInput(f"a {kind.value} comes from staff, like staff:U012AB3CD, not {author!r}",
                           path=o.at("from"))
    body = o.text("body", required=True)
    at = o.moment("at")
    return MessagePlan(author=author.lower() if kind == MessageKind.client else author, kind=kind, body=body, at=at)
