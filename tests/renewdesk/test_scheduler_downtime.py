"""A scheduler that was down for three days catches up by the documented rule, compared with one that
ran every day.

The rule (docs/renewals.md "Catching up", docs/billing.md "Reminders and overdue notices" and
"Flagged late payers"): the first sweep after downtime covers every missed day, but of the
reminders and notices that fell due while it was down it sends each service, invoice and
suspension only the most recent one: one renewal reminder per service, one invoice notice per
invoice. A removal whose warning day was missed is never done without it: the warning goes out
late and moves the removal RENEWDESK_REMOVAL_WARNING_DAYS after it. Everything else that fell
due is done, late: suspensions, automatic renewals, post-expiry notices. Nothing is doubled.

Two databases get the same accounts. On A the scheduler's daily job runs every day; on B it runs
on day 0, is down on days 1 to 3, and runs again on day 4. B must then hold exactly A's notices
minus those a later one superseded during the outage, the same suspensions and service states,
and after both run on for four more days still nothing twice.
"""
import datetime as dt
from collections import Counter

from handlers import jobs
from handlers.clock import FixedClock
from handlers.services import Services
from renewdesk.scheduler import JOBS
from tests.handlers.billing_helpers import account, invoice, load
from tests.support.mailflow import outbound
from tests.support.renewals import text_of
from tests.support.sweep_world import doubled, outcome

D0 = dt.date(2026, 11, 21)
LINES = [("Hosting, one month", "10.00", "1.90")]
# a reminder or notice superseded by a later one of the same family, for the same subject, is not sent late
FAMILY = {"renewal_reminder": "renewal_reminder", "invoice_reminder": "invoice", "invoice_overdue": "invoice"}
REMOVALS = ("removal_warning", "removal")  # compared on their own: a late warning moves the removal


def _but_removals(notices: Counter) -> Counter:
    return Counter({n: c for n, c in notices.items() if n[0] not in REMOVALS})


def _removals(notices: Counter) -> list[tuple]:
    return sorted(n[:4] for n in notices.elements() if n[0] in REMOVALS)


def day(n: int) -> str:
    return (D0 + dt.timedelta(days=n)).isoformat()


def _accounts():
    def domain(ref, days, **extra):
        return {"ref": ref, "kind": "domain", "name": f"{ref}.test", "status": "active", "expires_on": day(days),
                "period_years": 1, "price": "12.00", **extra}
    return [
        account("dom", services=[domain("six", 6), domain("two", 2), domain("eighteen", 18),
                                 domain("auto", 92, auto_renew=True)]),   # -3m falls on day 1
        account("bill", invoices=[invoice("B-1", day(-30), day(0), LINES), invoice("B-2", day(-30), day(-4), LINES),
                                  invoice("B-3", day(-20), day(7), LINES), invoice("B-4", day(-30), day(-2), LINES)]),
        account("late", auto_suspend=True, invoices=[invoice("L-1", day(-60), day(-29), LINES)]),  # removal on day 4
        account("slow", auto_suspend=True, invoices=[invoice("S-1", day(-30), day(-1), LINES)]),   # suspended day 2
        account("paper", invoicing="paper", services=[domain("paper", 3)],
                invoices=[invoice("P-1", day(-30), day(0), LINES)]),
    ]


def _daily(services: Services, n: int) -> None:
    """The scheduler's own daily job, as APScheduler fires it, at 08:00 on day ``n``."""
    services.clock.set(dt.datetime.combine(D0 + dt.timedelta(days=n), dt.time(8), tzinfo=dt.timezone.utc))
    sweeps = next(j for j in JOBS if j.name == "sweeps")
    jobs.run_job(services, "sweeps", lambda: sweeps.run(services))


def _new(before: Counter, after: Counter) -> Counter:
    return after - before


def test_three_days_down_sends_only_the_latest_missed_occasion_and_misses_nothing(settings, other_db_url):
    start = f"{day(-26)}T08:00:00+00:00"
    a = Services(settings, clock=FixedClock(start))
    b = Services(settings.replace(database_url=other_db_url), clock=FixedClock(start))
    try:
        for svc in (a, b):
            load(svc, *_accounts())
            _daily(svc, -26)   # the first run ever: suspends "late" (removal day 4, warning day 1)
            _daily(svc, 0)
        base = outcome(a)["notices"]
        assert base == outcome(b)["notices"]

        added = {}           # day -> the notices A's run that day added
        for n in (1, 2, 3, 4):
            before = outcome(a)["notices"]
            _daily(a, n)
            added[n] = _new(before, outcome(a)["notices"])
        _daily(b, 4)         # B was down on days 1, 2 and 3

        latest, everything = {}, Counter()
        for n in (1, 2, 3, 4):
            for notice in added[n].elements():
                kind, subject = notice[0], notice[1]
                if kind in FAMILY:
                    latest[(FAMILY[kind], subject)] = notice   # a later day's notice supersedes
                else:
                    everything[notice] += 1
        expected = base + everything + Counter(latest.values())
        superseded = sum(added.values(), Counter()) - Counter(latest.values()) - everything
        got_a, got_b = outcome(a), outcome(b)
        assert _but_removals(got_b["notices"]) == _but_removals(expected)
        assert _removals(got_a["notices"]) == [("removal", "late/overdue:L-1", "0d", day(4)),
                                               ("removal_warning", "late/overdue:L-1", "-3d", day(4))]
        # B missed the warning day: it warns on day 4 and removes three days later, on day 7
        assert _removals(got_b["notices"]) == [("removal_warning", "late/overdue:L-1", "-3d", day(4))]
        assert {(k, s, o) for k, s, o, *_ in superseded} == {
            ("renewal_reminder", "dom/six.test", "-5d"), ("renewal_reminder", "dom/six.test", "-4d"),
            ("renewal_reminder", "dom/six.test", "-3d"), ("renewal_reminder", "dom/two.test", "-1d"),
            ("renewal_reminder", "dom/two.test", "0d"), ("renewal_reminder", "paper/paper.test", "-2d"),
            ("renewal_reminder", "paper/paper.test", "-1d"), ("renewal_reminder", "paper/paper.test", "0d")}, superseded
        # what is done, not just said, is all done: suspensions, removals, automatic renewals, statuses
        for part in ("suspensions", "accounts"):
            assert got_b[part] == got_a[part], part
        assert {k: v for k, v in got_b["statuses"].items() if k != "late/Hosting late"} == \
            {k: v for k, v in got_a["statuses"].items() if k != "late/Hosting late"}
        assert ("renewal_auto", "dom/auto.test") in {n[:2] for n in got_b["notices"]}
        assert got_b["statuses"]["late/Hosting late"] == "suspended"   # warned today, removed on day 7
        assert len(outbound(b, "removal_warning")) == 1 and not outbound(b, "removal_notice")

        # the one reminder after the outage is worded by the days actually left or gone
        text = text_of(outbound(b, "renewal_reminder")[-1])
        assert "expire in 2 days: six.test" in text and "expire in 14 days: eighteen.test" in text
        assert "expired 2 days ago: two.test" in text

        # run on: both keep sending each occasion once; B stays A minus what the outage superseded
        for n in (5, 6, 7, 8):
            _daily(a, n)
            _daily(b, n)
        got_a, got_b = outcome(a), outcome(b)
        for got in (got_a, got_b):
            assert not doubled(got["notices"]) and not doubled(got["suspensions"]) and not doubled(got["mails"])
        assert _but_removals(got_b["notices"]) == _but_removals(got_a["notices"]) - superseded
        assert _removals(got_b["notices"]) == [("removal", "late/overdue:L-1", "0d", day(7)),
                                               ("removal_warning", "late/overdue:L-1", "-3d", day(4))]
        assert len(outbound(b, "removal_notice")) == 1
        assert got_b["statuses"] == got_a["statuses"] and got_b["suspensions"] == got_a["suspensions"]
    finally:
        a.close()
        b.close()
