"""Money as integer minor units with a currency; one strict parser for every way an amount comes in.

Amounts are written with a dot for decimals (``58.80``); a comma is accepted only as a
thousands separator in groups of three (``1,234.50``). Anything else (``58,80``, ``1.234,50``,
``1,23``) is refused with the right form shown, so no input can change an amount by a factor
of 100. The staff grammar (shell and Slack), the import and the pages all call
:func:`to_minor`.

The number of decimals of each currency and the list of known codes come from the Unicode
CLDR data that Babel ships (``babel.numbers.get_currency_precision``), not from a table of
our own. An unknown code is refused.
"""
from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from functools import lru_cache

from babel.numbers import get_currency_precision, is_currency

from handlers.errors import InvalidInput

# an optional minus, digits (plain, or in groups of three separated by commas), optional decimals
_AMOUNT = re.compile(r"(?P<sign>-)?(?P<whole>\d{1,3}(?:,\d{3})+|\d+)(?:\.(?P<frac>\d+))?", re.ASCII)
_CURRENCY = re.compile(r"[A-Za-z]{3}")
FORM = "write amounts with a dot for decimals and, if you like, commas between thousands: 1234.50 or 1,234.50"


def known_currency(code: str) -> bool:
    """True for an ISO 4217 code the CLDR data knows (``EUR``, ``JPY``), whatever its case."""
    return bool(_CURRENCY.fullmatch(code or "")) and is_currency(code.upper())


def check_currency(code: str, *, path: str | None = None) -> str:
    """The code upper-cased, or a clear refusal of an unknown one."""
    if not isinstance(code, str) or not known_currency(code.strip()):
        raise InvalidInput(f"not a currency code: {code!r} (an ISO 4217 code, like EUR)", path=path)
    return code.strip().upper()


@lru_cache(maxsize=None)
def exponent(currency: str) -> int:
    """The currency's decimals: 2 for EUR, 0 for JPY, 3 for KWD."""
    return int(get_currency_precision(currency.upper()))


def _suggest(text: str) -> str:
    """The right form of a continental amount (``58,80`` → ``58.80``, ``1.234,50`` → ``1,234.50``)."""
    m = re.fullmatch(r"(-?)(\d{1,3}(?:\.\d{3})+|\d+),(\d+)", text, re.ASCII)
    if not m:
        return ""
    whole = m[2].replace(".", "")
    return f"; did you mean {m[1]}{int(whole):,}.{m[3]}?"


def refusal(raw: str) -> str:
    """Why ``raw`` is not an amount, with the right form (and the likely meaning, when there is one)."""
    return f"not an amount ({FORM}{_suggest(raw.strip())})"


def parse_amount(text: object, *, path: str | None = None) -> Decimal:
    """The exact decimal a person wrote, or a refusal that shows the right form.

    ``int`` and ``Decimal`` (a JSON number read with ``parse_float=Decimal``) are taken as they
    are; a ``float`` is refused, it cannot be exact.
    """
    if isinstance(text, bool) or isinstance(text, float):
        raise InvalidInput(f"not an exact amount: {text!r}; write it as a string, like \"12.50\"", path=path)
    if isinstance(text, int):
        return Decimal(text)
    if isinstance(text, Decimal):
        if not text.is_finite() or "E" in str(text):  # 1e3 in JSON: exponent forms are refused as in text
            raise InvalidInput(f"not an amount: {text}; write it out, like 1000 or 1000.00", path=path)
        return text
    raw = str(text).strip()
    m = _AMOUNT.fullmatch(raw)
    if m is None:
        raise InvalidInput(f"{refusal(raw)}: {raw!r}", path=path)
    try:
        value = Decimal(m["whole"].replace(",", "") + ("." + m["frac"] if m["frac"] is not None else ""))
    except InvalidOperation:  # pragma: no cover - the pattern admits only digits
        raise InvalidInput(f"not an amount: {raw!r}; {FORM}", path=path) from None
    return -value if m["sign"] else value


def to_minor(text: str | int | Decimal, currency: str, *, path: str | None = None,
             allow_negative: bool = False) -> int:
    """``"12.50"`` in EUR → ``1250``. Refuses more decimals than the currency has.

    A thousands-grouped amount with no decimals (``1,234``) is refused in a currency with three
    or more decimals, where it could also be read as ``1.234``.
    """
    value = parse_amount(text, path=path)
    exp = exponent(currency)
    if isinstance(text, str) and "," in text and "." not in text and exp >= 3:
        raise InvalidInput(f"ambiguous amount in {currency.upper()}: {text.strip()!r}; write "
                           f"{text.strip().replace(',', '')} or {text.strip()}.{'0' * exp}", path=path)
    if value < 0 and not allow_negative:
        raise InvalidInput(f"must not be negative: {text}", path=path)
    scaled = value.scaleb(exp)
    if scaled != scaled.to_integral_value():
        raise InvalidInput(f"more decimals than {currency.upper()} has ({exp}): {text}", path=path)
    return int(scaled)


def fmt(minor: int, currency: str) -> str:
    """``1250, "EUR"`` → ``"12.50 EUR"``."""
    exp = exponent(currency)
    sign = "-" if minor < 0 else ""
    whole, frac = divmod(abs(minor), 10 ** exp) if exp else (abs(minor), 0)
    return f"{sign}{whole:,}{'.' + str(frac).zfill(exp) if exp else ''} {currency.upper()}"


def decimal_str(minor: int, currency: str) -> str:
    """``1250, "EUR"`` → ``"12.50"`` (for JSON: exact, no float)."""
    exp = exponent(currency)
    return f"{Decimal(minor).scaleb(-exp):.{exp}f}"
