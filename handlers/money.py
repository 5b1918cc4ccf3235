"""Money as integer minor units with a currency; parsing and formatting without floats."""
from __future__ import annotations

from decimal import Decimal, InvalidOperation

from handlers.errors import InvalidInput

# ISO 4217 minor-unit exponents that are not 2.
_EXPONENT = {"JPY": 0, "KRW": 0, "ISK": 0, "CLP": 0, "VND": 0, "BHD": 3, "KWD": 3, "OMR": 3, "JOD": 3, "TND": 3}


def exponent(currency: str) -> int:
    return _EXPONENT.get(currency.upper(), 2)


def to_minor(text: str | int | Decimal, currency: str, *, path: str | None = None,
             allow_negative: bool = False) -> int:
    """``"12.50"`` in EUR → ``1250``. Refuses more decimals than the currency has."""
    try:
        value = Decimal(str(text).strip().replace(",", "")) if not isinstance(text, Decimal) else text
    except InvalidOperation:
        raise InvalidInput(f"not an amount: {text!r}", path=path) from None
    if not value.is_finite():
        raise InvalidInput(f"not an amount: {text!r}", path=path)
    if value < 0 and not allow_negative:
        raise InvalidInput(f"must not be negative: {text}", path=path)
    scaled = value.scaleb(exponent(currency))
    if scaled != scaled.to_integral_value():
        raise InvalidInput(f"more decimals than {currency.upper()} has: {text}", path=path)
    return int(scaled)


def fmt(minor: int, currency: str) -> str:
    """``1250, "EUR"`` → ``"12.50 EUR"``."""
    exp = exponent(currency)
    sign = "-" if minor < 0 else ""
    whole, frac = divmod(abs(minor), 10 ** exp) if exp else (abs(minor), 0)
    return f"{sign}{whole:,}{'.' + str(frac).zfill(exp) if exp else ''} {currency.upper()}"


def decimal_str(minor: int, currency: str) -> str:
    """``1250, "EUR"`` → ``"12.50"`` (for JSON: exact, no float)."""
    return str(Decimal(minor).scaleb(-exponent(currency)))
