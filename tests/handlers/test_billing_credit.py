"""Credit limits: warnings 7 days and 1 day ahead once per episode, re-armed after recovery, suspension on
reaching the limit, lifted by a payment or a higher limit."""
import datetime as dt

import pytest
from sqlalchemy import select

from handlers.billing import ledger, payments
from handlers.models import Account, Notice
from handlers.staff import execute
from tests.handlers.billing_helpers import account, account_id, billing_sweep, load, mails, state

CREDIT = ("credit_limits",)


def _meter(services, limit="100.00", auto_suspend=True):
    """An account charged 2.90 a day for the last 30 days: 87.00 of a 100.00 limit used; automatic
    suspension on unless asked otherwise (a credit-limit suspension respects it like every other)."""
    charges = [{"ref": f"u{i}", "on": (dt.date(2026, 10, 22) + dt.timedelta(days=i)).isoformat(), "amount": "2.90",
                "text": f"usage day {i}"} for i in range(30)]
    load(services, account("meter", credit_limit=limit, charges=charges, auto_suspend=auto_suspend))
    return account_id(services, "meter")


def _day(services, clock, acc, day, amount):
    """Usage charged at 07:00, the sweep at 08:00."""
    if amount:
        clock.set(dt.datetime.fromisoformat(f"{day}T07:00:00+00:00"))
        services.run(ledger.add_charge, acc, amount, "usage", actor="test")
    return billing_sweep(services, clock, day, rules=CREDIT)


def _credit_notices(services):
    return services.run(lambda tx: [(n.kind, n.occasion, n.occasion_date.isoformat(), n.created_at.date().isoformat())
                                    for n in tx.session.scalars(select(Notice).where(
                                        Notice.kind.in_(("credit_warning", "credit_rearm"))).order_by(Notice.id))],
                        readonly=True)


def test_warnings_once_per_episode_then_suspension_then_payment_lifts_and_rearms(services, clock):
    acc = _meter(services)
    day = dt.date(2026, 11, 21)
    for _ in range(8):
        suspended = state(services, "meter")["status"] == "suspended"
        _day(services, clock, acc, day.isoformat(), 0 if suspended else 290)
        _day(services, clock, acc, day.isoformat(), 0)  # a second run the same day adds nothing
        day += dt.timedelta(days=1)
    warnings = _credit_notices(services)
    assert [w[1] for w in warnings] == ["7d", "1d"]
    assert warnings[0][2] == warnings[1][2] == warnings[0][3]  # one episode, dated by its first warning
    assert warnings[0][3] < warnings[1][3]
    st = state(services, "meter")
    assert st["status"] == "suspended" and st["suspensions"] == [("credit_limit", True)]
    # each day's usage charge is invoiced and announced; the credit mails are the same as before
    assert [m[0] for m in mails(services) if m[0] != "invoice_new"] == ["credit_warning", "credit_warning",
                                                                        "suspension_notice"]
    assert "credit limit reached" in mails(services)[-1][2]

    summary = services.run(payments.record, acc, 10000, ref="TOPUP-1", actor="test")
    assert summary["lifted"] == [{"id": summary["lifted"][0]["id"], "reason": "credit_limit"}]
    assert state(services, "meter")["status"] == "active"
    assert mails(services)[-2][0] == "unsuspension_notice" and mails(services)[-1][0] == "payment_summary"

    _day(services, clock, acc, day.isoformat(), 290)  # far from the limit again: warnings re-armed
    assert _credit_notices(services)[-1][0] == "credit_rearm"
    for _ in range(6):  # heavy spending: a new episode gets its own 7-day warning
        day += dt.timedelta(days=1)
        _day(services, clock, acc, day.isoformat(), 1500)
    again = [w for w in _credit_notices(services) if w[0] == "credit_warning"]
    assert [w[1] for w in again][:3] == ["7d", "1d", "7d"]
    assert again[2][2] > again[0][2]


def test_catch_up_sends_the_one_day_warning_without_the_seven_day_one(services, clock):
    acc = _meter(services)
    for day in range(21, 25):  # charged while the scheduler was down
        clock.set(dt.datetime(2026, 11, day, 7, tzinfo=dt.timezone.utc))
        services.run(ledger.add_charge, acc, 290, "usage", actor="test")
    billing_sweep(services, clock, "2026-11-24", rules=CREDIT)
    assert [w[1] for w in _credit_notices(services)] == ["1d"]


def test_a_hold_blocks_the_credit_suspension_and_a_higher_limit_lifts_it(services, clock):
    """Found past the limit with no warning yet: the warning goes out first; the next sweep would suspend,
    but a hold blocks it; unheld, it suspends; a higher limit lifts it."""
    _meter(services, limit="80.00")
    execute(services, "hold meter", as_user=None)  # at 09:00 on the 21st, after that day's sweep
    lines = billing_sweep(services, clock, "2026-11-22", rules=CREDIT)
    assert lines == ["Meter Ltd: credit warning, limit reached in about 0.0 days at 2.71 EUR a day (position "
                     "-87.00 EUR against a limit of 80.00 EUR), to owner@meter.test, bill@meter.test"]
    lines = billing_sweep(services, clock, "2026-11-23", rules=CREDIT)
    assert lines == ["Meter Ltd: suspend the account, credit limit reached (position -87.00 EUR against a limit "
                     "of 80.00 EUR) - held, not suspending"]
    execute(services, "unhold meter", as_user=None)
    billing_sweep(services, clock, "2026-11-23", rules=CREDIT)
    assert state(services, "meter")["status"] == "suspended"
    reply = execute(services, "credit-limit meter 200", as_user=None)
    assert reply.data["limit_reached"] is False and state(services, "meter")["status"] == "active"


def test_negative_limit_means_a_balance_must_be_kept(services, clock):
    """At -50.00 the client must keep 50.00: 49.00 of credit is still past the limit, 50.00 is not."""
    acc = _meter(services)
    reply = execute(services, "credit-limit meter -50", as_user=None)
    assert reply.data["limit"] == {"amount": "-50.00", "currency": "EUR"} and reply.data["limit_reached"]
    summary = services.run(payments.record, acc, 13600, actor="test")
    assert summary["to_credit"]["amount"] == "136.00" and summary["credit_after"]["amount"] == "49.00"
    reached = lambda: services.run(  # noqa: E731
        lambda tx: ledger.credit_state(tx, tx.session.get(Account, acc)).reached, readonly=True)
    assert reached()
    services.run(payments.record, acc, 100, actor="test")
    assert not reached()


def test_charge_add_refuses_bad_amounts_and_reports_the_limit(services, clock):
    from handlers.errors import InvalidInput
    _meter(services)
    with pytest.raises(InvalidInput, match="more decimals than EUR has"):
        execute(services, "charge add meter 12.345 design", as_user=None)
    with pytest.raises(InvalidInput, match="must not be negative"):
        execute(services, "charge add meter -5 design", as_user=None)
    reply = execute(services, "charge add meter 20.00 Design work, 2 hours", as_user=None)
    assert reply.data["text"] == "Design work, 2 hours" and reply.data["limit_reached"] is True
    assert "a later sweep suspends the account" in reply.text
