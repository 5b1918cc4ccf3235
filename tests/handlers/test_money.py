"""One amount parser for the grammar, the import and the pages; no input changes an amount by 100.

- ``58,80`` (a comma for decimals) is refused everywhere with the right form shown, where it
  used to become 5,880.00; ``1.234,50`` and ``1,23`` too. ``1,234.50`` is 1234.50.
- Exponents come from the CLDR data (JPY 0, KWD 3, EUR 2); an unknown code is refused.
- A thousands-grouped amount without decimals is refused in a three-decimal currency, where it
  could also be read as ``1.234``.
- For any amount written in any accepted form, the minor units are exactly the decimal times
  10^exponent: the grouped and plain forms agree, and formatting reads back the same number.
"""
from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from handlers.errors import InvalidInput
from handlers.money import check_currency, decimal_str, exponent, fmt, parse_amount, to_minor
from handlers.staff.grammar import parse


@pytest.mark.parametrize("text,currency,minor", [
    ("58.80", "EUR", 5880), ("1,234.50", "EUR", 123450), ("1,234", "EUR", 123400), ("1234", "EUR", 123400),
    ("0.5", "EUR", 50), ("1500", "JPY", 1500), ("1,500", "JPY", 1500), ("1.234", "KWD", 1234),
    ("12,345,678.90", "USD", 1234567890),
])
def test_accepted_forms(text, currency, minor):
    assert to_minor(text, currency) == minor


@pytest.mark.parametrize("text,hint", [
    ("58,80", "did you mean 58.80?"), ("1.234,50", "did you mean 1,234.50?"), ("1,23", "dot for decimals"),
    ("12,3456.00", "dot for decimals"), ("1 234.50", "dot for decimals"), ("12.5.0", "dot for decimals"),
    ("1e3", "dot for decimals"), ("NaN", "dot for decimals"), ("", "dot for decimals"), ("+5", "dot for decimals"),
    ("1_000", "dot for decimals"), (".50", "dot for decimals"), ("٣", "dot for decimals"),
])
def test_comma_decimals_and_other_forms_are_refused_with_the_right_form(text, hint):
    with pytest.raises(InvalidInput) as err:
        to_minor(text, "EUR")
    assert hint in err.value.message


def test_the_grammar_refuses_a_comma_decimal_with_a_usage_line():
    with pytest.raises(InvalidInput) as err:
        parse("invoice paid NW-1003 58,80")
    assert "did you mean 58.80?" in err.value.message
    assert err.value.hint and "invoice paid N [AMOUNT]" in err.value.hint


def test_more_decimals_than_the_currency_has_is_refused():
    with pytest.raises(InvalidInput, match="more decimals than JPY has"):
        to_minor("10.5", "JPY")
    with pytest.raises(InvalidInput, match="more decimals than EUR has"):
        to_minor("10.505", "EUR")


def test_a_grouped_amount_without_decimals_is_ambiguous_in_a_three_decimal_currency():
    with pytest.raises(InvalidInput, match="ambiguous"):
        to_minor("1,234", "KWD")
    assert to_minor("1,234.000", "KWD") == 1234000


def test_exponents_come_from_the_currency_data_and_unknown_codes_are_refused():
    assert (exponent("EUR"), exponent("jpy"), exponent("KWD"), exponent("BHD")) == (2, 0, 3, 3)
    assert check_currency(" eur ") == "EUR"
    for bad in ("ABC", "EURO", "E1R", "", "€"):
        with pytest.raises(InvalidInput, match="not a currency code"):
            check_currency(bad)


def test_floats_are_refused_and_json_decimals_are_exact():
    with pytest.raises(InvalidInput, match="not an exact amount"):
        parse_amount(58.8)
    assert to_minor(Decimal("58.80"), "EUR") == 5880
    with pytest.raises(InvalidInput, match="write it out"):
        to_minor(Decimal("1e3"), "EUR")  # a JSON number 1e3, as the import reads it
    assert to_minor(7, "EUR") == 700


@given(minor=st.integers(min_value=0, max_value=10 ** 15), currency=st.sampled_from(["EUR", "JPY", "KWD", "USD"]))
def test_written_and_read_back_forms_agree(minor, currency):
    plain = decimal_str(minor, currency)
    grouped = fmt(minor, currency).rsplit(" ", 1)[0]
    assert to_minor(plain, currency) == minor
    if exponent(currency) < 3 or "." in grouped:
        assert to_minor(grouped, currency) == minor


def test_the_import_refuses_a_comma_decimal_and_an_unknown_currency_and_reads_json_numbers_exactly(tmp_path):
    """The import used to read "58,80" as 5880.00 and take any three letters as a currency."""
    from handlers.import_format import validate
    from handlers.importer import load_json

    def doc(currency: str, paid: object) -> dict:
        return {"accounts": [{"ref": "acme", "name": "Acme", "currency": currency, "owner": {"email": "a@acme.test"},
                              "invoices": [{"number": "I-1", "issued_on": "2026-11-01", "due_on": "2026-11-15",
                                            "lines": [{"text": "Hosting", "amount": "58.80"}], "paid": paid}]}]}
    with pytest.raises(InvalidInput, match=r"accounts\[0\].invoices\[0\].paid: .*did you mean 58.80\?"):
        validate(doc("EUR", "58,80"))
    with pytest.raises(InvalidInput, match="not a currency code: 'XYZ'"):
        validate(doc("XYZ", "0"))
    path = tmp_path / "doc.json"
    path.write_text('{"accounts": [{"ref": "acme", "name": "Acme", "currency": "EUR",'
                    ' "owner": {"email": "a@acme.test"}, "invoices": [{"number": "I-1",'
                    ' "issued_on": "2026-11-01", "due_on": "2026-11-15",'
                    ' "lines": [{"text": "Hosting", "amount": 58.80}], "paid": 0.1}]}]}')
    plan = validate(load_json(path))
    invoice = plan.accounts[0].invoices[0]
    assert (invoice.lines[0].amount_minor, invoice.paid_minor) == (5880, 10)
