"""Sweep safety: nothing destructive without a warning, sweeps that fail alone and loudly, mail a person
would send. Each test is a scenario a user met on the code before; its docstring says what it proves."""
import datetime as dt
import json
from pathlib import Path

import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import select

from handlers import jobs
from handlers.errors import Conflict
from handlers.models import SlackPost
from handlers.status import report, text
from tests.handlers.billing_helpers import account, invoice, load, mails, state, sweep
from tests.support.proc import env_for, run

LINES = [("Hosting, one month", "10.00", "1.90")]
UTC = dt.timezone.utc


def _late(services, **extra):
    """An account flagged for automatic suspension, one invoice due 2026-11-20, a hosting and a domain."""
    load(services, account("late", auto_suspend=True, invoices=[invoice("L-1", "2026-11-01", "2026-11-20", LINES)],
                           services=[{"ref": "h", "kind": "hosting", "name": "Late hosting", "status": "active",
                                      "expires_on": "2027-06-01", "period_years": 1, "price": "10.00"}], **extra))


def _broken_templates(tmp_path: Path, *intents: str) -> str:
    """An operator's template folder where the text part of each intent has a syntax error."""
    folder = tmp_path / "tpl"
    (folder / "email").mkdir(parents=True)
    for intent in intents:
        (folder / "email" / f"{intent}.txt.j2").write_text("Hello {% if %}\n")
    return str(folder)


# -- sweeps fail alone and loudly -----------------------------------------------------------------

def test_a_broken_template_fails_its_sweep_alone_and_staff_hear_of_it(services, clock, tmp_path):
    """A renewal reminder template with a syntax error fails the renewal reminders, and only them: the
    invoice notices, the suspension and the digest still go out; status, the digest and Slack name it."""
    services.settings = services.settings.replace(
        templates_dir=_broken_templates(tmp_path, "renewal_reminder"), staff_email="desk@reseller.test",
        slack_bot_token="xoxb-test", slack_channel="C-STAFF")
    _late(services)
    load(services, account("dom", services=[{"ref": "d", "kind": "domain", "name": "dom.test", "status": "active",
                                             "expires_on": "2026-12-08", "period_years": 1, "price": "12.00"}]))
    lines = sweep(services, clock, "2026-11-23")
    assert any(line.startswith("renewal_reminders: FAILED: account #") and "TemplateSyntaxError" in line
               for line in lines), lines
    assert sorted(m[0] for m in mails(services)) == ["invoice_overdue", "staff_digest", "suspension_notice"]
    assert state(services, "late")["status"] == "suspended"
    data = services.run(report, readonly=True)
    assert data["scheduler"]["jobs"]["sweep:renewal_reminders"]["last_outcome"] == "error"
    assert data["scheduler"]["jobs"]["sweep:invoice_notices"]["last_outcome"] == "ok"
    assert "FAILING    sweep:renewal_reminders" in text(data)
    digest = mails(services, "staff_digest")[0][2]
    assert digest.endswith("1 FAILED sweep(s)")
    posts = services.run(lambda tx: [p.payload.get("text", "") for p in tx.session.scalars(select(SlackPost))],
                         readonly=True)
    assert any("renewal_reminders: account #" in p for p in posts), posts
    # the template is mended: the next run sends the reminder it could not send
    services.settings = services.settings.replace(templates_dir=None)
    assert any(line.startswith("renewal_reminders: ") and "reminded" in line for line in sweep(services, clock,
                                                                                                "2026-11-23"))
    assert services.run(report, readonly=True)["scheduler"]["jobs"]["sweep:renewal_reminders"]["last_outcome"] == "ok"


def test_the_sweep_command_exits_non_zero_naming_the_failed_sweep_and_refuses_an_earlier_moment(
        services, settings, tmp_path):
    """`renewdesk sweep` with a broken overdue-notice template: the others are done, exit 1 naming
    invoice_notices. Then a sweep as of an earlier moment is refused with one line saying why."""
    if not settings.is_sqlite:
        pytest.skip("one database is enough for the command line")
    _late(services)
    env = env_for(DATABASE_URL=settings.database_url, RENEWDESK_SECRET_KEY="x",
                  RENEWDESK_TEMPLATES_DIR=_broken_templates(tmp_path, "invoice_overdue"))
    out = run("sweep", "--at", "2026-11-23T08:00:00+00:00", env=env)
    assert out.returncode == 1, out.stderr.decode()
    err = out.stderr.decode()
    assert "the sweep failed: invoice_notices (account Late Ltd" in err and "TemplateSyntaxError" in err
    assert "invoice_overdue.txt.j2, line" in err  # the operator's broken file is named on that line
    assert "overdue_suspensions: Late Ltd: suspend the account" in out.stdout.decode()
    assert state(services, "late")["status"] == "suspended"
    status = run("status", env=env)
    assert "sweep:invoice_notices" in status.stdout.decode() and "FAILED" in status.stdout.decode()
    assert status.returncode == 1  # a monitor sees it by the exit status too (it used to be 0)
    assert "sweep:invoice_notices" in json.loads(run("status", "--json", env=env).stdout)["failing"]
    earlier = run("sweep", "--at", "2026-11-22T08:00:00+00:00", env=env)
    assert earlier.returncode == Conflict.exit_code
    first = earlier.stderr.decode().splitlines()[0]
    assert first.startswith("renewdesk: refusing to sweep as of 2026-11-22T08:00+00:00: ")
    assert "already swept as of 2026-11-23T08:00+00:00" in first
    assert earlier.stdout == b""


def test_a_sweep_earlier_than_the_last_one_sends_no_stale_notice(services, clock):
    """Swept as of 30 November (+10d notice), a sweep as of 22 November is refused: no +1d after the +10d."""
    _late(services)
    sweep(services, clock, "2026-11-30")
    before = mails(services)
    with pytest.raises(Conflict) as refused:
        sweep(services, clock, "2026-11-22")
    assert "was already swept as of 2026-11-30T08:00" in refused.value.message
    assert mails(services) == before
    assert sweep(services, clock, "2026-11-22", dry_run=True)  # a dry run may look back: it sends nothing


def _sweeps_job_next_run(services) -> dt.datetime:
    from renewdesk.scheduler import add_jobs
    scheduler = BackgroundScheduler(timezone=services.settings.tz)
    add_jobs(scheduler, services)
    scheduler.start(paused=True)
    try:
        return scheduler.get_job("sweeps").next_run_time
    finally:
        scheduler.shutdown(wait=False)


def test_a_worker_started_after_the_daily_hour_runs_that_days_sweep_at_once(services, clock):
    """Started at 09:00 with today's 08:00 sweep not done: the sweep job is due now, not tomorrow at 08:00;
    once today's sweep is recorded, a restart waits for tomorrow's."""
    clock.set(dt.datetime(2026, 11, 21, 9, tzinfo=UTC))
    real_now = dt.datetime.now(UTC)
    assert _sweeps_job_next_run(services) <= real_now + dt.timedelta(minutes=1)
    jobs.run_sweeps(services, clock.now())
    later = _sweeps_job_next_run(services).astimezone(UTC)
    assert later > real_now and (later.hour, later.minute) == (8, 0)


# -- never destructive without warning -------------------------------------------------------------

def _removal_mails(services):
    return [(m[0], m[2]) for m in mails(services) if m[0] in ("removal_warning", "removal_notice")]


def test_an_outage_over_the_warning_day_sends_the_warning_and_moves_the_removal(services, clock):
    """Suspended 23 Nov, removal due 23 Dec, warning due 20 Dec. Down from 19 Dec to 22 Dec: the sweep on
    22 Dec warns, and the removal moves to 25 Dec (3 days after the warning), recorded on the suspension."""
    from handlers.models import Suspension
    _late(services)
    sweep(services, clock, "2026-11-23")
    sweep(services, clock, "2026-12-18")
    lines = sweep(services, clock, "2026-12-22")
    assert any("warn of removal on 2026-12-25, moved from 2026-12-23" in line for line in lines), lines
    assert [m[0] for m in _removal_mails(services)] == ["removal_warning"]
    remove_after = services.run(lambda tx: tx.session.scalar(select(Suspension.remove_after)), readonly=True)
    assert remove_after.date() == dt.date(2026, 12, 25)
    for day in ("2026-12-23", "2026-12-24"):
        sweep(services, clock, day)
        assert state(services, "late")["services"]["Late hosting"] == "suspended", day
    sweep(services, clock, "2026-12-25")
    assert [m[0] for m in _removal_mails(services)] == ["removal_warning", "removal_notice"]
    assert state(services, "late")["services"]["Late hosting"] == "removed"


def test_the_first_sweep_after_unhold_warns_before_it_removes(services, clock):
    """A hold over the warning and removal days, then `unhold`: the next sweep sends the warning and
    removes nothing; the removal comes RENEWDESK_REMOVAL_WARNING_DAYS later."""
    from handlers.staff import execute
    _late(services)
    sweep(services, clock, "2026-11-23")
    clock.set(dt.datetime(2026, 12, 15, 12, tzinfo=UTC))
    execute(services, "hold late waiting for the bank", as_user=None)
    for day in ("2026-12-20", "2026-12-23", "2026-12-26"):
        assert any("held, not acting" in line for line in sweep(services, clock, day)), day
    clock.set(dt.datetime(2026, 12, 27, 7, tzinfo=UTC))
    execute(services, "unhold late", as_user=None)
    sweep(services, clock, "2026-12-27")
    assert [m[0] for m in _removal_mails(services)] == ["removal_warning"]
    assert state(services, "late")["services"]["Late hosting"] == "suspended"
    sweep(services, clock, "2026-12-30")
    assert state(services, "late")["services"]["Late hosting"] == "removed"


def test_the_forecast_shows_a_late_warning_and_the_removal_it_moved(services, clock):
    """After downtime the forecast says what the sweeps will do: warn first, remove three days later."""
    from handlers.staff import execute
    _late(services)
    sweep(services, clock, "2026-11-23")
    clock.set(dt.datetime(2026, 12, 27, 7, tzinfo=UTC))
    days = execute(services, "forecast --days 4", as_user=None).data["days"]
    got = [(d["day"], a["text"].split(":")[1].strip()) for d in days for a in d["actions"] if a["rule"] == "removals"]
    assert got == [("2026-12-27", "warn of removal on 2026-12-30, moved from 2026-12-23"),
                   ("2026-12-30", "remove the services on 2026-12-30 (suspended since 2026-11-23), to owner@late.test, "
                                  "bill@late.test")]


def test_a_lapsed_domain_after_a_69_day_outage_is_warned_not_removed_in_the_first_run(services, clock):
    """A domain expired 2026-11-01, nobody renewed it (removal due 2 Dec after the 30-day grace). The
    next run is 69 days after the last one, on 10 Jan: it warns, naming the removal day 13 Jan, and removes
    nothing; the removal comes on 13 Jan. The post-expiry notice named the removal day too."""
    from tests.support.renewals import make_account, outbound, text_of
    ids = make_account(services, "acme", {"gone.test": ("2026-11-01", "expired")})
    sweep(services, clock, "2026-11-02")
    (notice,) = outbound(services, "renewal_reminder")
    assert "gone.test (removed on 2026-12-02 unless renewed)" in text_of(notice)
    lines = sweep(services, clock, "2027-01-10")
    assert any("warn of removal, expired and not renewed: gone.test (expired 2026-11-01, removal on 2027-01-13"
               in line for line in lines), lines
    assert not any("remove, expired" in line for line in lines)
    (warning,) = outbound(services, "renewal_removal_warning")
    assert "gone.test (expired 2026-11-01): removal on 2027-01-13" in text_of(warning)
    assert _status(services, ids["gone.test"]) == "expired"
    sweep(services, clock, "2027-01-12")
    assert _status(services, ids["gone.test"]) == "expired"
    sweep(services, clock, "2027-01-13")
    assert _status(services, ids["gone.test"]) == "removed"
    assert len(outbound(services, "renewal_removed_lapsed")) == 1


def _status(services, sid):
    from handlers.models import Service
    return services.run(lambda tx: tx.session.get(Service, sid).status.value, readonly=True)


# -- mail a person would send -------------------------------------------------------------------------

def test_two_invoices_due_for_one_recipient_on_one_day_go_in_one_email(services, clock):
    """Two invoices reach their notices on the same day (one overdue +1d, one reminder -5d): the billing
    contacts get one email naming both, and each invoice's notice is claimed once; a re-run sends nothing."""
    from handlers.models import OutboundMail
    from tests.handlers.billing_helpers import notices
    load(services, account("two", invoices=[invoice("T-1", "2026-11-01", "2026-11-20", LINES),
                                            invoice("T-2", "2026-11-10", "2026-11-26", LINES)]))
    sweep(services, clock, "2026-11-21")
    sweep(services, clock, "2026-11-21")
    sent = [m for m in mails(services) if m[0].startswith("invoice_")]
    assert sent == [("invoice_overdue", ["owner@two.test", "bill@two.test"],
                     "Overdue: invoice T-1; 23.80 EUR to pay on 2 invoices")]
    body = services.run(lambda tx: tx.session.scalar(select(OutboundMail.raw)).decode(), readonly=True)
    assert "Invoice T-1 was due on 2026-11-20" in body and "Invoice T-2 is due in 5 days" in body
    assert sorted(n[:2] for n in notices(services)) == [("invoice_overdue", "+1d"), ("invoice_reminder", "-5d")]


def test_the_forecast_lists_renewal_reminders(services, clock):
    """Renewal reminders are most of the mail: the forecast shows them, one line per account and day,
    each service once, with its recipients."""
    from handlers.staff import execute
    from tests.support.renewals import make_account
    make_account(services, "acme", {"soon.test": "2026-11-27", "later.test": "2026-11-28"})
    clock.set(dt.datetime(2026, 11, 21, 7, tzinfo=UTC))
    days = execute(services, "forecast --days 3", as_user=None).data["days"]
    got = [(d["day"], a["text"]) for d in days for a in d["actions"] if a["rule"] == "renewal_reminders"]
    assert [day for day, _ in got] == ["2026-11-22", "2026-11-23"]
    assert got[0][1].startswith("Acme Ltd: renewal reminder for soon.test (-5d, expires 2026-11-27), to ")
    assert "later.test (-5d, expires 2026-11-28)" in got[1][1]
    assert "renewal reminder for" in execute(services, "forecast --days 3", as_user=None).text


def _texts(services):
    from handlers.models import OutboundMail, SlackPost, ServiceEvent
    def op(tx):
        return ([m.raw.decode(errors="replace") for m in tx.session.scalars(select(OutboundMail))]
                + [str(p.payload) for p in tx.session.scalars(select(SlackPost))]
                + [e.reason for e in tx.session.scalars(select(ServiceEvent))])
    return services.run(op, readonly=True)


def test_a_suspension_keeps_staffs_reason_internal_unless_they_tell_the_client(services, clock):
    """`suspend ACCOUNT REASON` emails the client without staff's note; `--tell-client` shows it."""
    from handlers.staff import execute
    load(services, account("acme"), account("beta"))
    execute(services, "suspend acme fraud suspected, card charged back", as_user=None)
    execute(services, "suspend beta --tell-client the mail server sends spam", as_user=None)
    bodies = [t for t in _texts(services) if "suspended" in t]
    acme = next(t for t in bodies if "owner@acme.test" in t)
    beta = next(t for t in bodies if "owner@beta.test" in t)
    assert "fraud" not in acme and "card charged back" not in acme
    assert "the mail server sends spam" in beta


def test_texts_name_people_never_contact_ids(services, clock):
    """A client's renewal decision by email reaches the sales contact and the service history with the
    person's name and address ("Owner <owner@acme.test>"), never "contact:N"."""
    from handlers.renewals import decisions
    from handlers.models import Contact, DecisionAction, Service
    from tests.support.renewals import make_account
    ids = make_account(services, "acme", {"a.test": "2026-12-21"}, sales="sales@reseller.test")

    def decide(tx):
        acc_svc = tx.session.get(Service, ids["a.test"])
        owner = tx.session.scalar(select(Contact).where(Contact.email == "owner@acme.test"))
        from handlers.models import Account
        acc = tx.session.get(Account, acc_svc.account_id)
        decisions.apply(tx, acc, [decisions.Choice(acc_svc, DecisionAction.renew)],
                        decisions.Authority(f"contact:{owner.id}", "reply_token", "email"))
    services.run(decide, actor="test")
    # the sales contact is asked to renew at the registry once the renewal invoice is paid
    from handlers.billing import payments
    from handlers.models import Invoice
    inv = services.run(lambda tx: tx.session.scalar(select(Invoice.number)), readonly=True)
    acc_id = services.run(lambda tx: tx.session.get(Service, ids["a.test"]).account_id, readonly=True)
    services.run(payments.record, acc_id, 100000, invoices=[inv], actor="test")
    texts = _texts(services)
    assert not [t for t in texts if "contact:" in t]
    sales = next(t for t in texts if "sales@reseller.test" in t)
    assert "Decided by Owner <owner@acme.test>" in sales
    import email
    import email.policy
    body = email.message_from_string(sales, policy=email.policy.default).get_body(("plain",)).get_content()
    assert "authenticated by the signed link or address of our email" in " ".join(body.split())
    assert "reply_token" not in body


def test_a_failure_from_a_database_outage_is_one_line_and_any_other_keeps_its_traceback(caplog):
    """A sweep or account meeting an outage logs one line (the outage is nobody's fault, and the worker's
    log stays readable); any other failure logs its traceback."""
    import logging

    from handlers.errors import TemporaryFailure
    logger = logging.getLogger("renewdesk.test")
    for exc in (TemporaryFailure("database unavailable: gone"), ValueError("a bug")):
        try:
            raise exc
        except Exception as caught:  # noqa: BLE001 - both kinds, as the sweeps catch them
            jobs.log_failure(logger, caught, "sweep %s failed", "credit_limits")
    outage, bug = caplog.records[-2:]
    assert outage.getMessage() == "sweep credit_limits failed: database unavailable: gone" and not outage.exc_info
    assert bug.getMessage() == "sweep credit_limits failed" and bug.exc_info
