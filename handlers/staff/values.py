"""The staff grammar's value types: what each metavariable of a usage line (T, AMOUNT, DATE...) accepts.

Each type takes the word as typed and returns the value, or raises ``ValueError`` with the problem
(the grammar adds the metavariable, the word and the usage line).
"""
from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from typing import Any, Callable

from handlers.errors import InvalidInput
from handlers.models import Role
from handlers.money import parse_amount, refusal

ROLES = tuple(r.value for r in Role)

def _pattern(regex: str, problem: str, convert: Callable[[re.Match[str]], Any]) -> Callable[[str], Any]:
    """A value type: the whole word must match ``regex`` (ASCII, any case)."""
    def parse(raw: str) -> Any:
        m = re.fullmatch(regex, raw.strip(), re.I | re.A)
        if m is None:
            raise ValueError(problem)
        return convert(m)
    return parse


_ticket_id = _pattern(r"#?(?:t-?)?0*([1-9]\d{0,11})", "not a ticket id (T-12, #12 or 12)", lambda m: int(m[1]))
_payment_id = _pattern(r"#?(?:p-?)?0*([1-9]\d{0,11})", "not a payment id (P-12, #12 or 12)", lambda m: int(m[1]))
_positive_int = _pattern(r"#?0*([1-9]\d{0,11})", "not a positive whole number", lambda m: int(m[1]))
_date = _pattern(r"\d{4}-\d{2}-\d{2}", "not a date (YYYY-MM-DD)", lambda m: dt.date.fromisoformat(m[0]))
_role = _pattern("|".join(ROLES), f"not a role (one of {', '.join(ROLES)})", lambda m: Role(m[0].lower()))
_invoice_number = _pattern(r"[^\s,]{1,64}", "not an invoice number", lambda m: m[0])
# Slack writes a mention as <@U123|ann>; people type U123 or @U123.
slack_user_id = _pattern(r"<@([a-z0-9]+)(?:\|[^>]*)?>|@?([a-z0-9]+)", "not a Slack user id (U0123ABC)",
                         lambda m: (m[1] or m[2]).upper())


def _amount(raw: str) -> str:
    """The amount as written, checked by the one amount parser; the account's currency scales it later."""
    try:
        parse_amount(raw)
    except InvalidInput:
        raise ValueError(refusal(raw)) from None
    return raw.strip()


def _rate(raw: str) -> Decimal:
    """A tax rate in percent: ``21``, ``7.5`` (a trailing ``%`` is allowed), from 0 to 100."""
    m = re.fullmatch(r"(\d{1,3}(?:\.\d{1,4})?)\s*%?", raw.strip(), re.A)
    value = Decimal(m[1]) if m else Decimal(-1)
    if not 0 <= value <= 100:
        raise ValueError("not a tax rate in percent (21 or 7.5)")
    return value


def _invoice_list(raw: str) -> list[str]:
    return [_invoice_number(part) for part in raw.split(",") if part.strip()] or [_invoice_number("")]


def any_text(raw: str) -> str:
    if not raw.strip():
        raise ValueError("must not be empty")
    return raw


TYPES: dict[str, Callable[[str], Any]] = {
    "T": _ticket_id, "P": _payment_id, "ID": _positive_int, "N": _invoice_number, "AMOUNT": _amount, "DATE": _date,
    "DAYS": _positive_int, "ROLE": _role, "SLACK_USER_ID": slack_user_id,
    "@staff": lambda raw: "me" if raw.strip().lower() == "me" else slack_user_id(raw),
    "N,N,...": _invoice_list, "RATE": _rate,
}
