"""The renewal reminder sweep: the right services on the right days, grouped, exactly once, caught up
after downtime, in the business's timezone; paper-invoicing accounts left to staff."""
import datetime as dt
import threading

import pytest

from handlers.clock import FixedClock
from handlers.delivery import Deliverer
from handlers.models import Notice, OutboundMail, RenewalRequest
from handlers.renewals import reminders, tokens
from handlers.renewals.occasions import Occasion, add_months
from handlers.services import Services
from tests.support.renewals import D, count, make_account, notices, outbound, parsed, text_of
from tests.support.smtp_sink import SmtpSink

UTC = dt.timezone.utc
TODAY = D("2026-11-21")  # the clock fixture's day


def at(day, hour=8):
    return dt.datetime.combine(day, dt.time(hour), tzinfo=UTC)


def sweep(services, day, hour=8):
    services.clock.set(at(day, hour))
    return reminders.sweep(services, at(day, hour))


def test_every_occasion_in_one_email_grouped_by_bucket(services):
    """Domains on each default occasion are listed in one email per recipient, by how soon they expire."""
    days = {f"d{n}.test": str(TODAY + dt.timedelta(days=n)) for n in (0, 1, 2, 5, 15)}
    months = {"m2.test": str(add_months(TODAY, 2)), "m2b.test": str(add_months(TODAY, 2))}
    far = {"far.test": "2027-06-01", "d7.test": str(TODAY + dt.timedelta(days=7))}
    past = {"gone.test": str(TODAY - dt.timedelta(days=1))}
    ids = make_account(services, "acme", {**days, **months, **far, **past}, sales="sales@reseller.test",
                       contacts=[("dev@acme.test", ["renewals"], True), ("web@acme.test", ["tickets"], True),
                                 ("quiet@acme.test", ["renewals"], False)])
    lines = sweep(services, TODAY)
    assert lines[0] == "2026-11-21: 8 service(s) of 1 account(s) due"
    mails = outbound(services, "renewal_reminder")
    # owner and dev have the permission and want the mail; the sales contact too; web lacks it, quiet opted out
    assert sorted(m.recipients[0] for m in mails) == ["dev@acme.test", "owner@acme.test", "sales@reseller.test"]
    text = text_of(mails[0])
    assert "The following domain name(s) expired 1 day ago: gone.test" in text
    assert "The following domain name(s) expire today: d0.test" in text
    assert "The following domain name(s) expire tomorrow: d1.test" in text
    assert "The following domain name(s) expire in 5 days: d5.test" in text
    assert "The following domain name(s) expire in 2 months: m2.test, m2b.test" in text
    assert (text.index("expired 1 day ago") < text.index("expire today") < text.index("in 15 days")
            < text.index("2 months"))
    assert "far.test" not in text and "d7.test" not in text
    assert {n.occasion for n in notices(services)} == {"+1d", "0d", "-1d", "-2d", "-5d", "-15d", "-2m"}
    assert ids["far.test"] not in {n.subject_id for n in notices(services)}


def test_reminder_carries_reply_address_page_link_and_grammar(services):
    """Reply-To renew+<token>@DOMAIN whose token is stored only hashed, scoped to the listed services,
    expiring after the last listed expiry plus the grace period; the page link and two grammar lines."""
    ids = make_account(services, "acme", {"a.test": str(TODAY + dt.timedelta(days=5)), "b.test": str(TODAY)})
    sweep(services, TODAY)
    (mail,) = outbound(services, "renewal_reminder")
    msg = parsed(mail)
    reply_to = msg["Reply-To"].addresses[0].addr_spec
    local, domain = reply_to.split("@")
    token = local.removeprefix("renew+")
    assert domain == "desk.example.test" and len(token) == 24
    text = text_of(mail)
    assert f"http://127.0.0.1:8000/renew/{token}" in text
    assert 'To decide by email, reply with one line per decision' in text and '"renew all"' in text
    with services.db.transaction(readonly=True) as s:
        (req,) = s.query(RenewalRequest).all()
        assert req.secret_hash == tokens.digest(token) and token not in repr(vars(req))
        assert sorted(req.service_ids) == sorted([ids["a.test"], ids["b.test"]])
        assert req.kind == "reply_token" and req.created_by == "system:scheduler"
        # valid until the end of the last expiry's grace period (30 days) in the business's timezone
        assert req.expires_at == at(TODAY + dt.timedelta(days=36), 0)


def test_rerun_and_redelivery_send_nothing_twice(services):
    """A second sweep the same day (and the next day, when nothing new is due) adds no mail; the relay
    receives each reminder once."""
    make_account(services, "acme", {"a.test": str(TODAY + dt.timedelta(days=5))},
                 contacts=[("dev@acme.test", ["renewals"], True)])
    sweep(services, TODAY)
    sweep(services, TODAY, hour=15)
    with SmtpSink() as sink:
        services.settings = services.settings.replace(outbound_smtp_url=sink.url)
        Deliverer(services).deliver_due()
        reminders.sweep(services, at(TODAY, 20))
        Deliverer(services).deliver_due()
        assert sorted(m.rcpt_tos[0] for m in sink.messages) == ["dev@acme.test", "owner@acme.test"]
    assert count(services, Notice) == 1 and count(services, OutboundMail) == 2


def test_two_schedulers_at_once_send_each_reminder_once(services, settings, clock):
    """Two sweeps racing in two threads (two Services, as two processes would have) claim each notice once."""
    for n in range(6):
        make_account(services, f"acc{n}", {f"x{n}.test": str(TODAY + dt.timedelta(days=1)),
                                           f"y{n}.test": str(add_months(TODAY, 1))})
    other = Services(settings, clock=FixedClock(at(TODAY)))
    errors = []

    def run(svc):
        try:
            reminders.sweep(svc, at(TODAY))
        except Exception as exc:  # surfaced below
            errors.append(exc)
    threads = [threading.Thread(target=run, args=(svc,)) for svc in (services, other)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    other.close()
    assert not errors
    assert count(services, Notice) == 12
    assert len(outbound(services, "renewal_reminder")) == 6  # one per account (one recipient each)


def test_catch_up_after_three_days_down_sends_only_the_latest_missed_occasion(services):
    """Down on days 1-3: each service gets its most recent occasion once, late ones worded by days left."""
    day0 = TODAY
    make_account(services, "acme", {
        "a.test": str(day0 + dt.timedelta(days=6)),    # -5d day1, -4d day2, -3d day3, -2d day4 (today)
        "b.test": str(day0 + dt.timedelta(days=18)),   # -15d on day3 (missed)
        "d.test": str(day0 + dt.timedelta(days=2)),    # expired on day2, post-expiry notice day3 (missed)
    })
    sweep(services, day0)  # a: 6 days (no occasion), b: 18, d: 2 -> d's -2d
    assert [(n.occasion) for n in notices(services)] == ["-2d"]
    lines = sweep(services, day0 + dt.timedelta(days=4))
    assert lines[0] == "2026-11-22 to 2026-11-25: 3 service(s) of 1 account(s) due"
    got = {(n.occasion, n.occasion_date) for n in notices(services)[1:]}
    assert got == {("-2d", D("2026-11-27")), ("-15d", D("2026-12-09")), ("+1d", D("2026-11-23"))}
    text = text_of(outbound(services, "renewal_reminder")[-1])
    assert "expire in 14 days: b.test" in text and "expire in 2 days: a.test" in text
    assert "expired 2 days ago: d.test" in text
    assert len(outbound(services, "renewal_reminder")) == 2
    sweep(services, day0 + dt.timedelta(days=4), hour=18)  # a re-run adds nothing
    assert len(notices(services)) == 4


def test_a_year_of_days_sends_each_occasion_once(services):
    """A clock walking every day from 4 months before to 2 weeks after expiry: 11 notices, on their days."""
    expiry = D("2027-03-31")  # month offsets clamp: -1m is 28 February
    make_account(services, "acme", {"a.test": str(expiry)})
    day, sent = expiry - dt.timedelta(days=125), {}
    while day <= expiry + dt.timedelta(days=14):
        before = len(notices(services))
        sweep(services, day)
        for n in notices(services)[before:]:
            sent[n.occasion] = day
        day += dt.timedelta(days=1)
    assert sent == {"-3m": D("2026-12-31"), "-2m": D("2027-01-31"), "-1m": D("2027-02-28"),
                    "-15d": D("2027-03-16"), "-5d": D("2027-03-26"), "-4d": D("2027-03-27"),
                    "-3d": D("2027-03-28"), "-2d": D("2027-03-29"), "-1d": D("2027-03-30"), "0d": expiry,
                    "+1d": D("2027-04-01")}
    assert len(outbound(services, "renewal_reminder")) == 11


@pytest.mark.parametrize("zone, expected", [("Pacific/Auckland", ["-5d"]), ("Pacific/Honolulu", [])])
def test_the_day_is_the_business_day(services, zone, expected):
    """At 12:00 UTC on 21 Nov it is already 22 Nov in Auckland (UTC+13) and still 21 Nov in Honolulu
    (UTC-10): a domain expiring 27 Nov is 5 days away only in Auckland."""
    services.settings = services.settings.replace(timezone=zone)
    make_account(services, "acme", {"a.test": "2026-11-27"})
    sweep(services, TODAY, hour=12)
    assert [n.occasion for n in notices(services)] == expected


def test_paper_invoicing_gets_no_email_and_is_listed_for_staff(services):
    make_account(services, "harbour", {"h.test": str(TODAY + dt.timedelta(days=2))}, invoicing="paper")
    lines = sweep(services, TODAY)
    assert "Harbour Ltd: paper invoicing, for staff to handle by hand: h.test" in lines
    assert outbound(services) == []
    assert [n.outcome for n in notices(services)] == ["skipped_paper"]


def test_declined_and_removed_services_get_no_reminder(services):
    make_account(services, "acme", {"a.test": (str(TODAY + dt.timedelta(days=5)), "cancelled"),
                                    "b.test": (str(TODAY + dt.timedelta(days=5)), "removed")})
    sweep(services, TODAY)
    assert notices(services) == [] and outbound(services) == []


def test_dry_run_writes_nothing(services):
    make_account(services, "acme", {"a.test": str(TODAY + dt.timedelta(days=5))})
    assert reminders.sweep(services, at(TODAY), dry_run=True) == [
        "2026-11-21: would remind about 1 service(s) of 1 account(s)"]
    assert notices(services) == [] and outbound(services) == []


def test_occasion_expiry_range_matches_reminder_dates():
    """For every day of two years, the range query for a month occasion holds exactly the expiries
    whose reminder falls on that day (clamping at month ends included)."""
    for months in (1, 2, 3):
        occ = Occasion(months=months)
        day = D("2027-01-01")
        while day < D("2029-01-01"):
            lo, hi = occ.expiry_range(day, day)
            want = [day + dt.timedelta(days=k) for k in range(25, 100)
                    if occ.reminder_date(day + dt.timedelta(days=k)) == day]
            got = [] if lo > hi else [lo + dt.timedelta(days=k) for k in range((hi - lo).days + 1)]
            assert got == want, (months, day)
            day += dt.timedelta(days=1)
