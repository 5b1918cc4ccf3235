"""Dunning under a clock walking day by day: the right mail on the right day, nothing twice, catch-up after
downtime sends only the latest missed notice, paper and notices-off accounts get none, holds stop suspension."""
import datetime as dt

from sqlalchemy import func, select

from handlers.billing import payments
from handlers.models import Notice, OutboundMail, Suspension
from handlers.staff import execute
from tests.support.concurrency import at_once
from tests.handlers.billing_helpers import account, account_id, billing_sweep, invoice, load, mails, notices, state, \
    sweep

LINES = [("Hosting, one month", "10.00", "1.90")]


def _four(services):
    load(services,
         account("plain", invoices=[invoice("N-1", "2026-11-01", "2026-11-20", LINES)]),
         account("late", auto_suspend=True, invoices=[invoice("L-1", "2026-11-01", "2026-11-20", LINES)],
                 services=[{"ref": "h", "kind": "hosting", "name": "Late hosting", "status": "active",
                            "expires_on": "2027-06-01", "period_years": 1, "price": "10.00"},
                           {"ref": "d", "kind": "domain", "name": "late.test", "status": "active",
                            "expires_on": "2027-03-01", "period_years": 1, "price": "12.00"}]),
         account("paper", invoicing="paper", auto_suspend=False,
                 invoices=[invoice("P-1", "2026-11-01", "2026-11-20", LINES)]),
         account("quiet", overdue_notices=False, invoices=[invoice("Q-1", "2026-11-01", "2026-11-20", LINES)]))


def _days(first, last):
    day = dt.date.fromisoformat(first)
    while day <= dt.date.fromisoformat(last):
        yield day.isoformat()
        day += dt.timedelta(days=1)


def _mail_days(services):
    """{(first recipient's domain, intent): [days]} of every queued mail."""
    def op(tx):
        out = {}
        for m in tx.session.scalars(select(OutboundMail).order_by(OutboundMail.id)):
            out.setdefault((m.recipients[0].split("@")[1], m.intent), []).append(m.created_at.date().isoformat())
        return out
    return services.run(op, readonly=True)


def test_walking_the_calendar_sends_each_notice_on_its_day_exactly_once(services, clock):
    """Reminder 5 days before, overdue 1/5/10 days after, suspension of the flagged account 3 days after,
    removal warning 3 days before removal and removal 30 days after suspension; every sweep run twice."""
    _four(services)
    for day in _days("2026-11-10", "2026-12-31"):
        sweep(services, clock, day)
        before = len(mails(services))
        assert all(line.endswith("nothing to do") or line.startswith("staff_digest")
                   for line in sweep(services, clock, day)), day  # the second run that day does nothing
        assert len(mails(services)) == before
    got = _mail_days(services)
    notices_days = ["2026-11-21", "2026-11-25", "2026-11-30"]
    assert got[("plain.test", "invoice_reminder")] == ["2026-11-15"]
    assert got[("plain.test", "invoice_overdue")] == notices_days
    assert got[("late.test", "invoice_overdue")] == notices_days
    assert got[("late.test", "suspension_notice")] == ["2026-11-23"]
    assert got[("late.test", "removal_warning")] == ["2026-12-20"]
    assert got[("late.test", "removal_notice")] == ["2026-12-23"]
    assert not any(domain in ("paper.test", "quiet.test") for domain, _ in got)
    assert {k for k in got if k[0] == "plain.test"} == {("plain.test", "invoice_reminder"),
                                                        ("plain.test", "invoice_overdue")}
    # paper and notices-off accounts: the notices are recorded for the digest, no mail
    recorded = services.run(lambda tx: sorted({(n.occasion, n.outcome) for n in tx.session.scalars(
        select(Notice).where(Notice.outcome.in_(("paper_invoicing", "notices_off"))))}), readonly=True)
    assert recorded == [(o, r) for o in ("+10d", "+1d", "+5d", "-5d") for r in ("notices_off", "paper_invoicing")]
    late = state(services, "late")
    assert late["services"] == {"Late hosting": "removed", "late.test": "removed"}
    assert late["suspensions"] == [("overdue", True)]
    # recipients: owner and the billing contact, never the contact without the billing permission
    assert mails(services, "invoice_reminder")[0][1] == ["owner@plain.test", "bill@plain.test"]


def test_catch_up_after_downtime_sends_only_the_latest_missed_notice(services, clock):
    _four(services)
    sweep(services, clock, "2026-11-28")  # down since before the reminder; +1d and -5d were missed
    assert [(m[0], m[1][0]) for m in mails(services) if "plain" in m[1][0]] == [
        ("invoice_overdue", "owner@plain.test")]
    assert notices(services, "invoice_overdue")[0][1] == "+5d"
    assert [n[1] for n in notices(services) if n[0].startswith("invoice")].count("+1d") == 0
    sweep(services, clock, "2026-11-29")
    sweep(services, clock, "2026-11-30")
    assert sorted(n[1] for n in notices(services, "invoice_overdue") if n[2] == "sent") == [
        "+10d", "+10d", "+5d", "+5d"]  # plain and late


def test_removal_catch_up_warns_first_and_moves_the_removal(services, clock):
    """Down over the warning day and the removal day: the first sweep back warns and moves the removal
    RENEWDESK_REMOVAL_WARNING_DAYS after the warning; nothing is removed before then."""
    _four(services)
    sweep(services, clock, "2026-11-23")
    assert state(services, "late")["status"] == "suspended"
    sweep(services, clock, "2026-12-28")  # down over the warning day and the removal day
    assert len(mails(services, "removal_warning")) == 1 and mails(services, "removal_notice") == []
    assert state(services, "late")["services"]["Late hosting"] == "suspended"
    sweep(services, clock, "2026-12-30")
    assert mails(services, "removal_notice") == []
    sweep(services, clock, "2026-12-31")
    assert len(mails(services, "removal_notice")) == 1
    assert state(services, "late")["services"]["Late hosting"] == "removed"


def test_a_sweep_interrupted_after_some_accounts_finishes_on_the_next_run(services, clock):
    """One transaction per account: what was done stays done, the re-run does only the rest."""
    _four(services)
    first = account_id(services, "plain")
    billing_sweep(services, clock, "2026-11-21", account_ids=[first])
    assert len(mails(services)) == 1
    billing_sweep(services, clock, "2026-11-21")
    assert sorted(m[1][0] for m in mails(services)) == ["owner@late.test", "owner@plain.test"]
    assert len(notices(services, "invoice_overdue")) == 4  # two mailed, paper and quiet recorded


def test_a_hold_stops_suspension_and_removal_until_it_ends_and_forecast_says_so(services, clock):
    _four(services)
    clock.set(dt.datetime(2026, 11, 22, 12, tzinfo=dt.timezone.utc))
    execute(services, "hold late --until 2026-11-25 talking to their bank", as_user=None)
    forecast = execute(services, "forecast --days 5", as_user=None).data["days"]
    late = [(d["day"], a["text"]) for d in forecast for a in d["actions"] if a["rule"] == "overdue_suspensions"]
    assert late[0][0] == "2026-11-23" and "held, not suspending (talking to their bank)" in late[0][1]
    assert late[-1][0] == "2026-11-26" and "held" not in late[-1][1]
    for day in _days("2026-11-23", "2026-11-25"):
        lines = sweep(services, clock, day)
        assert any("held, not suspending" in line for line in lines) or day != "2026-11-23"
    assert state(services, "late")["status"] == "active" and mails(services, "suspension_notice") == []
    sweep(services, clock, "2026-11-26")  # the hold ran out at the end of the 25th
    assert state(services, "late")["status"] == "suspended"
    assert len(mails(services, "suspension_notice")) == 1


def test_payment_lifts_an_overdue_suspension_but_never_a_manual_one(services, clock):
    _four(services)
    sweep(services, clock, "2026-11-23")
    acc = account_id(services, "late")
    execute(services, "suspend late.test domain abuse report", as_user=None)
    services.run(payments.record, acc, 1190, actor="test")
    st = state(services, "late")
    assert st["suspensions"] == [("overdue", False), ("manual", True)]
    assert st["status"] == "active" and st["services"] == {"Late hosting": "active", "late.test": "suspended"}
    unsent = [m for m in mails(services, "unsuspension_notice")]
    assert len(unsent) == 1  # the hosting came back: the client hears so
    execute(services, "unsuspend late.test", as_user=None)
    assert state(services, "late")["services"]["late.test"] == "active"
    # paid in full: no overdue notice, no second suspension later
    for day in _days("2026-11-24", "2026-12-31"):
        sweep(services, clock, day)
    assert len(mails(services, "suspension_notice")) == 2  # the automatic one and the manual one only
    assert [m[0] for m in mails(services) if m[1][0].endswith("late.test")].count("invoice_overdue") == 1


def test_a_manual_suspension_is_not_lifted_by_payment(services, clock):
    _four(services)
    execute(services, "suspend plain disputed charges", as_user=None)
    services.run(payments.record, account_id(services, "plain"), 5000, actor="test")
    assert state(services, "plain")["status"] == "suspended"
    assert state(services, "plain")["suspensions"] == [("manual", True)]


def test_dry_run_and_forecast_change_nothing(services, clock):
    _four(services)
    lines = sweep(services, clock, "2026-11-23", dry_run=True)
    assert any(line.startswith("overdue_suspensions: Late Ltd: suspend the account") for line in lines)
    forecast = execute(services, "forecast --days 40", as_user=None)
    assert "removal" not in forecast.text  # a suspension is forecast, not assumed to start a removal clock
    counts = services.run(lambda tx: (tx.session.scalar(select(func.count()).select_from(OutboundMail)),
                                      tx.session.scalar(select(func.count()).select_from(Notice)),
                                      tx.session.scalar(select(func.count()).select_from(Suspension))), readonly=True)
    assert counts == (0, 0, 0)
    assert state(services, "late")["status"] == "active"


def test_two_schedulers_sweeping_at_once_send_everything_once(services, clock):
    """Two workers run the same day's sweeps at the same moment (PostgreSQL: row locks and unique keys)."""
    from handlers.jobs import run_sweeps
    _four(services)
    services.settings = services.settings.replace(staff_email="desk@reseller.test")
    moment = dt.datetime(2026, 11, 23, 8, tzinfo=dt.timezone.utc)
    clock.set(moment)
    assert at_once(lambda: run_sweeps(services, moment)) == []
    intents = sorted(m[0] for m in mails(services))
    assert intents == ["invoice_overdue", "invoice_overdue", "staff_digest", "suspension_notice"]
    assert state(services, "late")["suspensions"] == [("overdue", True)]
