"""Reading the charging-plan parts of an import document: pure, no database.

The document's ``plans`` list defines plans; an account's ``plan`` puts it on one from a day,
and its ``usage`` lists metered usage records. Each wrong field is named by its path, like the
rest of the format (:mod:`handlers.import_format`).
"""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any, Callable

from handlers.billing.plans import LineSpec, price_micros, quantity_micros
from handlers.errors import InvalidInput
from handlers.models import MICROS, PlanLineKind
from handlers.money import check_currency

PLAN_KEYS = ("ref", "name", "currency", "fees", "usage")
FEE_KEYS = ("ref", "text", "amount")
PRICE_KEYS = ("metric", "text", "unit", "unit_price")
SUBSCRIPTION_KEYS = ("ref", "from", "until")
USAGE_KEYS = ("ref", "metric", "quantity", "at")

_METRIC = re.compile(r"[a-z][a-z0-9_]{0,63}")


@dataclass(frozen=True)
class PlanSpec:
    """A plan as the file defines it, matched by ref."""

    ref: str
    name: str
    currency: str
    lines: tuple[LineSpec, ...]
    path: str


@dataclass(frozen=True)
class SubscriptionSpec:
    """An account's plan from a day (through a day)."""

    plan_ref: str
    starts_on: dt.date
    ends_on: dt.date | None
    path: str


@dataclass(frozen=True)
class UsageSpec:
    """One usage record, matched by (account, ref)."""

    ref: str
    metric: str
    quantity: str
    at: dt.datetime
    path: str


def _obj(value: Any, path: str, keys: tuple[str, ...]) -> Any:
    """One JSON object read the way the rest of the format is read."""
    from handlers.import_format import _Obj  # that module imports this one
    return _Obj(value, path, keys)


def plans(doc: Any, unique: Callable[[str, str], None]) -> tuple[PlanSpec, ...]:
    """The document's ``plans`` list; ``unique(ref, path)`` refuses a ref used twice."""
    out = []
    for value, path in doc.items("plans"):
        o = _obj(value, path, PLAN_KEYS)
        ref = o.text("ref", required=True, max_len=100)
        unique(ref, o.at("ref"))
        name = o.text("name", required=True, max_len=200)
        currency = check_currency(o.text("currency", required=True), path=o.at("currency"))
        codes: dict[str, str] = {}
        lines = [_fee(v, p, currency, codes) for v, p in o.items("fees")]
        lines += [_price(v, p, currency, codes) for v, p in o.items("usage")]
        if not lines:
            raise InvalidInput("a plan needs at least one fee or usage price", path=path)
        out.append(PlanSpec(ref=ref, name=name, currency=currency, lines=tuple(lines), path=path))
    return tuple(out)


def _code(codes: dict[str, str], code: str, path: str) -> None:
    if code in codes:
        raise InvalidInput(f"duplicate {code!r} (also at {codes[code]})", path=path)
    codes[code] = path


def _fee(value: Any, path: str, currency: str, codes: dict[str, str]) -> LineSpec:
    """A fixed monthly fee, in the plan's currency's decimals."""
    o = _obj(value, path, FEE_KEYS)
    ref = o.text("ref", required=True, max_len=64)
    _code(codes, ref, o.at("ref"))
    amount = o.amount("amount", currency, required=True)
    return LineSpec(PlanLineKind.fee, ref, o.text("text", max_len=200) or ref, "", amount * MICROS)


def _price(value: Any, path: str, currency: str, codes: dict[str, str]) -> LineSpec:
    """A metric's price per unit, up to 6 decimals beyond the currency's."""
    o = _obj(value, path, PRICE_KEYS)
    metric = o.text("metric", required=True, max_len=64)
    if not _METRIC.fullmatch(metric):
        raise InvalidInput(f"not a metric name: {metric!r} (lower-case letters, digits and _, like "
                           "bandwidth_gb)", path=o.at("metric"))
    _code(codes, metric, o.at("metric"))
    price = price_micros(o.raw("unit_price", required=True), currency, path=o.at("unit_price"))
    return LineSpec(PlanLineKind.usage, metric, o.text("text", max_len=200) or metric,
                    o.text("unit", max_len=32, empty_ok=True) or "", price)


def subscription(o: Any) -> SubscriptionSpec | None:
    """An account's ``plan``: ``{"ref", "from", "until"}``."""
    if "plan" not in o.value:
        return None
    path = o.at("plan")
    p = _obj(o.raw("plan"), path, SUBSCRIPTION_KEYS)
    ref = p.text("ref", required=True, max_len=100)
    starts_on = p.date("from", required=True)
    ends_on = p.date("until")
    if ends_on is not None and ends_on < starts_on:
        raise InvalidInput("before from", path=p.at("until"))
    return SubscriptionSpec(plan_ref=ref, starts_on=starts_on, ends_on=ends_on, path=path)


def usage(o: Any) -> tuple[UsageSpec, ...]:
    """An account's ``usage`` list."""
    out, seen = [], {}
    for value, path in o.items("usage"):
        u = _obj(value, path, USAGE_KEYS)
        ref = u.text("ref", required=True, max_len=200)
        if ref in seen:
            raise InvalidInput(f"duplicate {ref!r} (also at {seen[ref]})", path=u.at("ref"))
        seen[ref] = u.at("ref")
        metric = u.text("metric", required=True, max_len=64)
        raw = u.raw("quantity", required=True)
        quantity_micros(raw, path=u.at("quantity"))
        out.append(UsageSpec(ref=ref, metric=metric, quantity=str(raw), at=u.moment("at"), path=path))
    return tuple(out)
