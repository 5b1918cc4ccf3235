"""Month-end charges from charging plans: exact amounts on awkward quantities, each charge once across re-runs,
concurrent sweeps and catch-up, proration, dry runs that change nothing, the credit limit, and the import."""
import datetime as dt

import pytest
from sqlalchemy import func, select

from handlers.billing.plans import record_usage
from handlers.errors import Conflict, InvalidInput
from handlers.importer import import_document
from handlers.jobs import run_sweeps
from handlers.models import LedgerEntry, Notice, UsageRecord
from handlers.staff import execute
from tests.support.concurrency import at_once
from tests.handlers.billing_helpers import account, account_id, at, mails, state, sweep

UTC = dt.timezone.utc

PRO = {"ref": "hosting-pro", "name": "Hosting Pro", "currency": "EUR",
       "fees": [{"ref": "base", "text": "Hosting Pro monthly fee", "amount": "19.99"}],
       "usage": [{"metric": "bandwidth_gb", "text": "Bandwidth", "unit": "GB", "unit_price": "0.0125"},
                 {"metric": "vps_hours", "text": "VPS", "unit": "h", "unit_price": "0.0075"},
                 {"metric": "mailboxes", "text": "Mailboxes", "unit": "mailbox", "unit_price": "1.99"}]}
BIG = {"ref": "business", "name": "Business", "currency": "EUR",
       "fees": [{"ref": "base", "text": "Business monthly fee", "amount": "49.00"}],
       "usage": [{"metric": "backup_gb", "text": "Backup", "unit": "GB", "unit_price": "0.10"}]}
NOVEMBER_USAGE = [
    {"ref": "bw-1", "metric": "bandwidth_gb", "quantity": "1000.000001", "at": "2026-11-12T10:00:00Z"},
    {"ref": "bw-2", "metric": "bandwidth_gb", "quantity": "234.56789", "at": "2026-11-20T23:59:59Z"},
    {"ref": "vps-1", "metric": "vps_hours", "quantity": "0.5", "at": "2026-11-13T00:00:00Z"},
    {"ref": "vps-2", "metric": "vps_hours", "quantity": "1.5", "at": "2026-11-14T00:00:00Z"},
    {"ref": "mb-1", "metric": "mailboxes", "quantity": 3, "at": "2026-11-15T00:00:00Z"},
]
# 19.99 x 21/30 days = 13.993 -> 13.99; 1234.567891 GB x 0.0125 = 15.4320986375 -> 15.43;
# 2 h x 0.0075 = 0.015 -> 0.02 (half up, once for the line: per record it would be 0.00 + 0.01); 3 x 1.99 = 5.97
NOVEMBER = {"base": 1399, "bandwidth_gb": 1543, "vps_hours": 2, "mailboxes": 597}


def _doc(limit="500.00", plan=None, usage=NOVEMBER_USAGE, plans=(PRO,), auto_suspend=False):
    acc = account("meter", credit_limit=limit, plan=plan or {"ref": "hosting-pro", "from": "2026-11-10"},
                  usage=list(usage), auto_suspend=auto_suspend)
    return {"plans": list(plans), "accounts": [acc]}


def _charges(services):
    """(ref's month and line, amount owed, text) of every plan charge, oldest first."""
    def op(tx):
        rows = tx.session.scalars(select(LedgerEntry).where(LedgerEntry.source == "plan").order_by(LedgerEntry.id))
        return [(":".join(e.ref.split(":")[i] for i in (2, 4)), -e.amount_minor, e.text) for e in rows]
    return services.run(op, readonly=True)


def _months(services):
    return services.run(lambda tx: sorted(n.occasion for n in tx.session.scalars(
        select(Notice).where(Notice.kind == "plan_month"))), readonly=True)


def test_exact_amounts_each_line_rounded_once_and_charged_once(services, clock):
    """November's fees (prorated from the 10th) and usage, exact to the cent; re-runs charge nothing more."""
    services.run(import_document, _doc(), actor="test")
    sweep(services, clock, "2026-11-30")
    assert _charges(services) == []  # the month has not ended
    lines = sweep(services, clock, "2026-12-01")
    got = {c[0].split(":")[1]: c[1] for c in _charges(services)}
    assert got == NOVEMBER
    assert [c[0].split(":")[0] for c in _charges(services)] == ["2026-11"] * 4
    texts = [c[2] for c in _charges(services)]
    assert texts[0] == "Hosting Pro monthly fee, 2026-11 (21 of 30 days, from 2026-11-10)"
    assert "Bandwidth, 2026-11: 1234.567891 GB at 0.0125 EUR" in texts
    assert any(line.startswith("plan_charges: Meter Ltd: month-end charges for 2026-11 on plan Hosting Pro:")
               and line.endswith("total 35.41 EUR; charged 35.41 EUR on invoice INV-1001") for line in lines)
    for day in ("2026-12-01", "2026-12-02", "2026-12-31"):
        sweep(services, clock, day)
    assert len(_charges(services)) == 4 and _months(services) == ["2026-11"]
    balance = execute(services, "account show meter", as_user=None).data["balance"]
    assert balance == {"amount": "-35.41", "currency": "EUR"}
    entry_at = services.run(lambda tx: {e.at for e in tx.session.scalars(
        select(LedgerEntry).where(LedgerEntry.source == "plan"))}, readonly=True)
    assert entry_at == {dt.datetime(2026, 12, 1, tzinfo=UTC)}  # dated at the month's end, when owed


def test_catch_up_after_downtime_charges_every_missed_month_once(services, clock):
    """No sweep from November until February: November, December and January are each charged once."""
    services.run(import_document, _doc(), actor="test")
    clock.set(at("2026-12-20"))
    services.run(record_usage, account_id(services, "meter"), "mailboxes", "2", at("2026-12-05"), "mb-dec",
                 actor="test")
    sweep(services, clock, "2027-02-03")
    sweep(services, clock, "2027-02-03")
    assert _months(services) == ["2026-11", "2026-12", "2027-01"]
    got = [(c[0], c[1]) for c in _charges(services)]
    assert got == [(f"2026-11:{k}", v) for k, v in NOVEMBER.items()] + [
        ("2026-12:base", 1999), ("2026-12:mailboxes", 398), ("2027-01:base", 1999)]


def test_proration_for_a_plan_change_and_an_end_mid_month(services, clock):
    """A move to another plan on the 16th splits December's fees by days; an end on the 15th cuts January."""
    services.run(import_document, _doc(usage=[], plans=(PRO, BIG)), actor="test")
    changed = _doc(usage=[], plans=(PRO, BIG), plan={"ref": "business", "from": "2026-12-16", "until": "2027-01-15"})
    result = services.run(import_document, changed, actor="test")
    assert result.counts["subscriptions"] == {"created": 1, "updated": 0, "unchanged": 0}
    acc = account_id(services, "meter")
    clock.set(at("2026-12-20"))
    services.run(record_usage, acc, "backup_gb", "12.345", at("2026-12-18"), "bk-1", actor="test")
    with pytest.raises(InvalidInput, match="'backup_gb' is not priced by plan hosting-pro"):
        services.run(record_usage, acc, "backup_gb", "1", at("2026-12-10"), "bk-0", actor="test")
    sweep(services, clock, "2027-02-01")
    got = [(c[0], c[1]) for c in _charges(services)]
    # Nov 21/30 x 19.99 = 13.993; Dec 15/31 x 19.99 = 9.6725.. ; Dec 16/31 x 49.00 = 25.290..;
    # 12.345 GB x 0.10 = 1.2345 -> 1.23; Jan 15/31 x 49.00 = 23.709..
    assert got == [("2026-11:base", 1399), ("2026-12:base", 967), ("2026-12:base", 2529),
                   ("2026-12:backup_gb", 123), ("2027-01:base", 2371)]
    sweep(services, clock, "2027-03-01")
    assert len(_charges(services)) == 5  # nothing after the plan ended


def test_dry_run_and_forecast_show_the_charges_and_change_nothing(services, clock):
    """The forecast shows November's charges once, on 1 December; a dry run prints each line and writes nothing."""
    services.run(import_document, _doc(), actor="test")
    forecast = execute(services, "forecast --days 12", as_user=None)
    planned = [(d["day"], a["text"]) for d in forecast.data["days"] for a in d["actions"]
               if a["rule"] == "plan_charges"]
    assert len(planned) == 1 and planned[0][0] == "2026-12-01" and planned[0][1].endswith("total 35.41 EUR")
    lines = sweep(services, clock, "2026-12-01", dry_run=True)
    assert any("month-end charges for 2026-11" in line and "Bandwidth, 2026-11: 1234.567891 GB at 0.0125 EUR = "
               "15.43 EUR" in line for line in lines)
    assert _charges(services) == [] and _months(services) == []
    assert [line for line in sweep(services, clock, "2026-12-01") if "charged 35.41 EUR" in line]


def test_month_end_charges_push_the_account_over_its_credit_limit(services, clock):
    """Charged at 08:00 on the 1st past the limit (30.00, owed 35.41): the warning goes out in that run, the
    suspension only the next day, and only because the account has automatic suspension on."""
    services.run(import_document, _doc(limit="30.00", auto_suspend=True), actor="test")
    sweep(services, clock, "2026-11-30")
    assert state(services, "meter")["status"] == "active" and mails(services) == []
    sweep(services, clock, "2026-12-01")
    assert state(services, "meter")["suspensions"] == [] and [m[0] for m in mails(services)] == ["invoice_new",
                                                                                               "credit_warning"]
    sweep(services, clock, "2026-12-02")
    assert state(services, "meter")["suspensions"] == [("credit_limit", True)]
    assert [m[0] for m in mails(services)] == ["invoice_new", "credit_warning", "suspension_notice"]


def test_month_end_charges_never_suspend_an_account_with_automatic_suspension_off(services, clock):
    """The same charges on an account with automatic suspension off: warned, never suspended."""
    services.run(import_document, _doc(limit="30.00"), actor="test")
    for day in ("2026-12-01", "2026-12-02", "2026-12-09"):
        sweep(services, clock, day)
    assert (state(services, "meter")["suspensions"] == []
            and [m[0] for m in mails(services)] == ["invoice_new", "credit_warning"])


def test_month_end_charges_bring_a_credit_warning(services, clock):
    """Limit 40.00: after 35.41 of charges, 4.59 is left at 1.18 a day: the 7-day warning, no suspension."""
    services.run(import_document, _doc(limit="40.00"), actor="test")
    lines = sweep(services, clock, "2026-12-01")
    assert state(services, "meter")["status"] == "active"
    assert [m[0] for m in mails(services)] == ["invoice_new", "credit_warning"]
    assert any("credit warning, limit reached in about 3.9 days at 1.18 EUR a day" in line for line in lines)


def test_two_schedulers_at_month_end_charge_once(services, clock):
    """Two workers sweep the 1st at the same moment (PostgreSQL: the account lock and unique refs)."""
    services.run(import_document, _doc(), actor="test")
    moment = at("2026-12-01")
    clock.set(moment)
    assert at_once(lambda: run_sweeps(services, moment)) == []
    assert {c[0].split(":")[1]: c[1] for c in _charges(services)} == NOVEMBER and len(_charges(services)) == 4
    assert _months(services) == ["2026-11"]


def test_record_usage_once_by_ref_and_refusals(services, clock):
    """A ref counts once; changed values, the future, too many decimals, no plan and a charged month are refused."""
    services.run(import_document, _doc(usage=[]), actor="test")
    acc = account_id(services, "meter")
    run = lambda *a: services.run(record_usage, acc, *a, actor="test")  # noqa: E731
    rec, created = run("bandwidth_gb", "10.5", at("2026-11-20"), "meter-77")
    again, created_again = run("bandwidth_gb", "10.5", at("2026-11-20"), "meter-77")
    assert created and not created_again and again.id == rec.id
    with pytest.raises(Conflict, match="recorded usage cannot change"):
        run("bandwidth_gb", "11", at("2026-11-20"), "meter-77")
    with pytest.raises(InvalidInput, match="in the future"):
        run("bandwidth_gb", "1", at("2026-11-22"), "m-future")
    with pytest.raises(InvalidInput, match="quantity: more than 6 decimals"):
        run("bandwidth_gb", "0.0000001", at("2026-11-20"), "m-tiny")
    with pytest.raises(InvalidInput, match="no charging plan on 2026-11-09"):
        run("bandwidth_gb", "1", at("2026-11-09"), "m-early")
    sweep(services, clock, "2026-12-01")
    with pytest.raises(Conflict, match="2026-11 was already charged"):
        run("bandwidth_gb", "1", at("2026-11-30"), "m-late")
    assert services.run(lambda tx: tx.session.scalar(select(func.count()).select_from(UsageRecord)),
                        readonly=True) == 1


def test_import_is_idempotent_and_names_the_wrong_field(services, clock):
    """Re-importing plans, the plan and usage changes nothing, even after the charge; bad input names its path."""
    first = services.run(import_document, _doc(), actor="test")
    assert first.counts["plans"]["created"] == 1 and first.counts["usage"]["created"] == 5
    again = services.run(import_document, _doc(), actor="test")
    assert not again.changed and again.counts["usage"]["unchanged"] == 5
    assert again.counts["subscriptions"] == {"created": 0, "updated": 0, "unchanged": 1}
    sweep(services, clock, "2026-12-01")
    assert not services.run(import_document, _doc(), actor="test").changed  # charged usage re-imported: no-op
    assert len(_charges(services)) == 4

    def refused(doc, message):
        with pytest.raises(InvalidInput) as exc:
            services.run(import_document, doc, actor="test")
        assert str(exc.value) == message

    changed = [dict(NOVEMBER_USAGE[0], quantity="999")]
    refused(_doc(usage=changed), "accounts[0].usage[0]: usage bw-1 was recorded as 1000.000001 bandwidth_gb at "
                                 "2026-11-12T10:00:00+00:00; recorded usage cannot change")
    refused(_doc(usage=[{"ref": "x", "metric": "disk_gb", "quantity": "1", "at": "2026-11-20T00:00:00Z"}]),
            "accounts[0].usage[0].metric: metric 'disk_gb' is not priced by plan hosting-pro (it prices "
            "bandwidth_gb, vps_hours, mailboxes)")
    refused(_doc(usage=[{"ref": "x", "metric": "vps_hours", "quantity": "-1", "at": "2026-11-20T00:00:00Z"}]),
            "accounts[0].usage[0].quantity: must not be negative: -1")
    refused(_doc(plans=(dict(PRO, usage=[dict(PRO["usage"][0], unit_price="0.000000001")]),)),
            "plans[0].usage[0].unit_price: more than 8 decimals: 0.000000001")
    refused(_doc(plan={"ref": "nope", "from": "2026-11-10"}), "accounts[0].plan: no plan 'nope'")
    refused(_doc(plans=(dict(PRO, currency="GBP"),)), "plans[0]: plan hosting-pro is in EUR; its currency "
                                                      "cannot change")
    refused(_doc(plan={"ref": "hosting-pro", "from": "2026-11-10", "until": "2026-11-20"}),
            "accounts[0].plan: end: plan hosting-pro was already charged through 2026-11; give a credit for what "
            "should not have been charged")


def test_account_show_and_history_show_the_plan(services, clock):
    """`account show` has the plan and the month so far; `account history` the plan and each charge."""
    services.run(import_document, _doc(), actor="test")
    show = execute(services, "account show meter", as_user=None)
    assert show.data["plan"]["plan"] == {"ref": "hosting-pro", "name": "Hosting Pro", "since": "2026-11-10",
                                         "until": None}
    assert show.data["plan"]["so_far"] == {"amount": "35.41", "currency": "EUR"}
    assert ("plan: Hosting Pro since 2026-11-10 · 2026-11 so far (the month's fees, usage to date): "
            "35.41 EUR") in show.text
    sweep(services, clock, "2026-12-01")
    history = execute(services, "account history meter", as_user=None)
    kinds = [e["kind"] for e in history.data["entries"]]
    assert kinds.count("plan_charge") == 4 and kinds.count("plan") == 1
    assert "plan charge 15.43 EUR: Bandwidth, 2026-11: 1234.567891 GB at 0.0125 EUR" in history.text


def test_months_follow_the_business_timezone(services, clock):
    """In Berlin, 23:30 UTC on 30 November is already December: that usage waits for December's charge."""
    services.settings = services.settings.replace(timezone="Europe/Berlin")
    services.run(import_document, _doc(usage=[]), actor="test")
    acc = account_id(services, "meter")
    moment = dt.datetime(2026, 11, 30, 23, 45, tzinfo=UTC)  # 00:45 on 1 December in Berlin
    clock.set(moment)
    services.run(record_usage, acc, "mailboxes", "1", dt.datetime(2026, 11, 30, 22, 30, tzinfo=UTC), "nov",
                 actor="test")
    services.run(record_usage, acc, "mailboxes", "2", dt.datetime(2026, 11, 30, 23, 30, tzinfo=UTC), "dec",
                 actor="test")
    run_sweeps(services, moment)
    assert [(c[0], c[1]) for c in _charges(services)] == [("2026-11:base", 1399), ("2026-11:mailboxes", 199)]
    entry_at = services.run(lambda tx: {e.at for e in tx.session.scalars(select(LedgerEntry))}, readonly=True)
    assert entry_at == {dt.datetime(2026, 11, 30, 23, tzinfo=UTC)}  # midnight in Berlin
    clock.set(dt.datetime(2027, 1, 1, 7, tzinfo=UTC))
    run_sweeps(services, clock.now())
    assert [(c[0], c[1]) for c in _charges(services)][2:] == [("2026-12:base", 1999), ("2026-12:mailboxes", 398)]
