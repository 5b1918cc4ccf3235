"""Renewal automation under a fixed clock: automatic renewal with its invoice, the renewal invoice of a
client's decisions, confirmation requests by the sweep and by staff, removal of declined and lapsed
services (holds respected), each once, caught up after downtime, and shown by dry-run and forecast."""
import datetime as dt
import re

import pytest
from sqlalchemy import select

from handlers.billing import holds
from handlers.errors import Conflict, InvalidInput, NotAllowed, NotFound
from handlers.jobs import run_sweeps
from handlers.models import (AuditEvent, Invoice, InvoiceLine, Notice, RenewalDecision, RenewalRequest, Role, Service,
                             ServiceEvent, StaffMember)
from handlers.renewals import confirm
from handlers.renewals.invoicing import raise_invoice
from handlers.renewals.occasions import add_months
from handlers.staff import execute
from tests.support.renewals import D, count, make_account, outbound, text_of

UTC = dt.timezone.utc
TODAY = D("2026-11-21")  # the clock fixture's day


def at(day, hour=8):
    return dt.datetime.combine(day, dt.time(hour), tzinfo=UTC)


def sweep(services, day, hour=8, dry_run=False):
    """Every registered sweep, as the scheduler runs them, on ``day``."""
    services.clock.set(at(day, hour))
    return run_sweeps(services, at(day, hour), dry_run=dry_run)


def auto_renew(services, *ids):
    def op(tx):
        for sid in ids:
            tx.session.get(Service, sid).auto_renew = True
    services.run(op)


def decide(services, account_id, choices):
    """Decisions through an activation code, as a client at /renew/confirm: {service_id: "renew" | "decline"}."""
    code = services.run(confirm.request_confirmation, account_id, list(choices), actor="staff:U0SUP")
    form = {f"decision_{sid}": what for sid, what in choices.items()}
    form |= {f"years_{sid}": "2" for sid, what in choices.items() if what == "renew"}
    return services.run(confirm.decide, code, form, actor="web")


def rows(services, model, *where):
    with services.db.transaction(readonly=True) as s:
        found = list(s.scalars(select(model).where(*where).order_by(model.id)))
        for r in found:
            s.expunge(r)
    return found


def status_of(services, sid):
    return rows(services, Service, Service.id == sid)[0].status.value


def test_auto_renew_raises_one_invoice_at_the_first_occasion_instead_of_asking(services):
    """At the three-month occasion the auto-renew services are renewed (decision, history, sales contact),
    one invoice lists them, the contacts get one email; the other service is asked as usual; no later
    occasion asks or invoices again."""
    expiry = add_months(TODAY, 3)
    ids = make_account(services, "acme", {"a.test": str(expiry), "b.test": str(expiry), "c.test": str(expiry)},
                       sales="sales@reseller.test")
    auto_renew(services, ids["a.test"], ids["b.test"])
    lines = sweep(services, TODAY)
    assert any("renewal_automation: Acme Ltd: renew automatically a.test" in line for line in lines)
    made = rows(services, RenewalDecision)
    assert [(d.service_id, d.action.value, d.period_years, d.auth_method, d.channel, d.actor) for d in made] == [
        (ids["a.test"], "renew", 1, "auto_renew", "automation", "system:scheduler"),
        (ids["b.test"], "renew", 1, "auto_renew", "automation", "system:scheduler")]
    (inv,) = rows(services, Invoice)
    lines_ = rows(services, InvoiceLine)
    assert [(ln.text, ln.amount_minor, ln.service_id) for ln in lines_] == [
        (f"Renewal of a.test (domain), 1 year: {expiry} to {add_months(expiry, 12)}", 1200, ids["a.test"]),
        (f"Renewal of b.test (domain), 1 year: {expiry} to {add_months(expiry, 12)}", 1200, ids["b.test"])]
    assert (inv.total_minor, inv.due_on, inv.issued_on) == (2400, expiry - dt.timedelta(days=1), TODAY)
    (auto,) = outbound(services, "renewal_auto")
    assert auto.recipients == ["owner@acme.test"]
    assert "a.test (expires 2027-02-21), renewed for 1 year" in text_of(auto) and inv.number in text_of(auto)
    reminders = outbound(services, "renewal_reminder")
    assert sorted(m.recipients[0] for m in reminders) == ["owner@acme.test", "sales@reseller.test"]
    assert all("c.test" in text_of(m) and "a.test" not in text_of(m) for m in reminders)
    assert outbound(services, "renewal_sales") == []  # asked to renew at the registry once the invoice is paid
    history = rows(services, ServiceEvent, ServiceEvent.service_id == ids["a.test"])
    assert history[-1].reason == "renewal requested for 1 year (auto_renew, by automation)"
    # every later occasion up to the post-expiry notice: c.test is reminded, a and b never again
    for day in sorted({add_months(expiry, -2), add_months(expiry, -1), *(expiry - dt.timedelta(days=n)
                       for n in (15, 5, 4, 3, 2, 1, 0, -1))}):
        sweep(services, day)
        sweep(services, day, hour=17)
    assert count(services, Invoice) == 1 and len(outbound(services, "renewal_auto")) == 1
    assert count(services, RenewalDecision) == 2
    assert all("a.test" not in text_of(m) for m in outbound(services, "renewal_reminder"))
    assert len(outbound(services, "renewal_reminder")) == 2 * 11  # c.test's occasions, to two recipients


def test_with_invoices_off_an_automatic_renewal_is_recorded_without_an_invoice(services):
    """RENEWDESK_RENEWAL_INVOICES=off: the decision, the sales contact's email and the client's email, no invoice."""
    services.settings = services.settings.replace(renewal_invoices="off")
    ids = make_account(services, "acme", {"a.test": str(add_months(TODAY, 3))}, sales="sales@reseller.test")
    auto_renew(services, ids["a.test"])
    sweep(services, TODAY)
    assert count(services, RenewalDecision) == 1 and count(services, Invoice) == 0
    assert len(outbound(services, "renewal_sales")) == 1
    assert "Invoice" not in text_of(outbound(services, "renewal_auto")[0])


def test_a_client_confirmation_raises_one_invoice_for_the_renewals_only_once(services):
    """Renew two (2 years each) and decline one in one submit: one invoice with a line per renewal at price
    times years; the confirmation names it; the same decisions never raise a second invoice."""
    ids = make_account(services, "acme", {"a.test": str(TODAY + dt.timedelta(days=20)),
                                          "b.test": str(TODAY + dt.timedelta(days=40)),
                                          "c.test": str(TODAY + dt.timedelta(days=50))})
    result = decide(services, ids["account"], {ids["a.test"]: "renew", ids["b.test"]: "renew",
                                               ids["c.test"]: "decline"})
    assert result.status == "applied"
    (inv,) = rows(services, Invoice)
    assert [(ln.service_id, ln.amount_minor) for ln in rows(services, InvoiceLine)] == [
        (ids["a.test"], 2400), (ids["b.test"], 2400)]
    assert inv.due_on == TODAY + dt.timedelta(days=19)  # the day before the first expiry, 14 days at least
    (confirmation,) = outbound(services, "renewal_confirmation")
    assert f"Invoice {inv.number} for 48.00 EUR" in text_of(confirmation)

    def again(tx):
        made = list(tx.session.scalars(select(RenewalDecision).order_by(RenewalDecision.id)))
        acc = tx.session.get(Service, ids["a.test"]).account
        return raise_invoice(tx, acc, made, {s.id: s for s in acc.services})
    assert services.run(again) is None and count(services, Invoice) == 1
    (notice,) = rows(services, Notice, Notice.kind == "renewal_invoice")
    assert notice.detail == inv.number
    audit = rows(services, AuditEvent, AuditEvent.action == "renewal.invoice")[0]
    assert len(audit.detail["decisions"]) == 2


def test_declined_services_are_removed_on_expiry_day_unless_the_account_is_held(services):
    """A declined domain is removed on its expiry day with its history entry and one email; while the account
    is held, dry-run and forecast say it is held and nothing is removed; after unhold the next sweep removes it."""
    ids = make_account(services, "acme", {"x.test": str(TODAY + dt.timedelta(days=2)),
                                          "y.test": str(TODAY + dt.timedelta(days=3))},
                       contacts=[("dev@acme.test", ["renewals"], True)])
    other = make_account(services, "beta", {"z.test": str(TODAY + dt.timedelta(days=2))})
    decide(services, ids["account"], {ids["x.test"]: "decline", ids["y.test"]: "decline"})
    decide(services, other["account"], {other["z.test"]: "decline"})
    services.run(holds.hold, ids["account"], reason="talking to the client", actor="staff:U1")
    sweep(services, TODAY + dt.timedelta(days=1))
    assert status_of(services, ids["x.test"]) == "cancelled"
    services.clock.set(at(TODAY + dt.timedelta(days=1), 9))
    forecast = execute(services, "forecast --days 2", as_user=None).data["days"]
    texts = [(d["day"], a["text"], a["blocked_by_hold"]) for d in forecast for a in d["actions"]
             if a["rule"] == "renewal_automation"]
    assert (str(TODAY + dt.timedelta(days=2)), "Acme Ltd: remove on expiry, renewal declined: x.test (2026-11-23) "
            "- held, not removing (talking to the client)", True) in texts
    assert any(t.startswith("Beta Ltd: remove on expiry") and not held for _, t, held in texts)
    dry = sweep(services, TODAY + dt.timedelta(days=2), dry_run=True)
    assert any("x.test" in line and "held, not removing" in line for line in dry)
    assert status_of(services, other["z.test"]) == "cancelled"  # the dry run changed nothing
    sweep(services, TODAY + dt.timedelta(days=2))
    assert status_of(services, ids["x.test"]) == "cancelled" and status_of(services, other["z.test"]) == "removed"
    services.run(holds.unhold, ids["account"], actor="staff:U1")
    sweep(services, TODAY + dt.timedelta(days=4))
    sweep(services, TODAY + dt.timedelta(days=4), hour=18)
    assert status_of(services, ids["x.test"]) == "removed" and status_of(services, ids["y.test"]) == "removed"
    history = rows(services, ServiceEvent, ServiceEvent.service_id == ids["x.test"])
    assert history[-1].to_status == "removed" and history[-1].actor == "system:scheduler"
    assert re.fullmatch(r"removed on expiry \(2026-11-23\): renewal declined by the client with an activation code "
                        r"\(activation_code\) "
                        r"on 2026-11-21", history[-1].reason)
    mails = outbound(services, "renewal_removed_declined")
    assert sorted(m.recipients[0] for m in mails) == ["dev@acme.test", "owner@acme.test", "owner@beta.test"]
    acme_mail = next(m for m in mails if m.recipients == ["owner@acme.test"])
    assert "x.test (expired 2026-11-23)" in text_of(acme_mail) and "y.test" in text_of(acme_mail)
    assert len(rows(services, Notice, Notice.kind == "renewal_removal")) == 3


def test_lapsed_services_are_removed_after_the_grace_period_and_caught_up_after_downtime(services):
    """Undecided and expired past RENEWDESK_RENEWAL_GRACE_DAYS: removed once, even when the sweep was down on
    the day; a service the client asked to renew, or on auto-renew, is kept."""
    gone = TODAY - dt.timedelta(days=25)
    ids = make_account(services, "acme", {"l.test": (str(gone), "expired"), "r.test": (str(gone), "expired"),
                                          "auto.test": (str(gone), "expired")})
    auto_renew(services, ids["auto.test"])
    decide(services, ids["account"], {ids["r.test"]: "renew"})
    sweep(services, TODAY)
    assert status_of(services, ids["l.test"]) == "expired"
    # down for nine days over the warning (TODAY + 3) and removal (TODAY + 6) days: the first sweep back warns
    # and moves the removal three days after the warning
    lines = sweep(services, TODAY + dt.timedelta(days=10))
    assert any("warn of removal, expired and not renewed: l.test (expired 2026-10-27, removal on 2026-12-04, "
               "moved from 2026-11-27" in line for line in lines), lines
    (warning,) = outbound(services, "renewal_removal_warning")
    assert "l.test (expired 2026-10-27): removal on 2026-12-04" in text_of(warning)
    assert status_of(services, ids["l.test"]) == "expired"
    lines = sweep(services, TODAY + dt.timedelta(days=13))
    assert any("remove, expired and not renewed within 30 days: l.test (2026-10-27)" in line for line in lines)
    assert [status_of(services, ids[n]) for n in ("l.test", "r.test", "auto.test")] == ["removed", "expired",
                                                                                         "expired"]
    (event,) = [e for e in rows(services, ServiceEvent, ServiceEvent.service_id == ids["l.test"])
                if e.to_status == "removed"]
    assert event.reason == "removed: expired on 2026-10-27 and not renewed within 30 days"
    (mail,) = outbound(services, "renewal_removed_lapsed")
    assert "not renewed within 30 days" in text_of(mail) and "l.test" in text_of(mail)
    sweep(services, TODAY + dt.timedelta(days=14))
    assert len(outbound(services, "renewal_removed_lapsed")) == 1


def test_the_sweep_sends_a_confirmation_request_once_per_domain_and_expiry(services):
    """RENEWDESK_RENEWAL_CONFIRM_DAYS=10: undecided domains expiring in 10 days get one activation code per
    account (besides the reminder); hosting, decided and auto-renew services do not; a missed day is caught up;
    re-runs send nothing more. Off by default."""
    ids = make_account(services, "acme", {"d.test": str(TODAY + dt.timedelta(days=10)),
                                          "e.test": str(TODAY + dt.timedelta(days=10)),
                                          "f.test": str(TODAY + dt.timedelta(days=10)),
                                          "g.test": str(TODAY + dt.timedelta(days=12)),
                                          "k.test": str(TODAY + dt.timedelta(days=10))},
                       others={"web": str(TODAY + dt.timedelta(days=10))})
    auto_renew(services, ids["k.test"])
    decide(services, ids["account"], {ids["f.test"]: "renew"})
    sweep(services, TODAY)
    assert len(rows(services, RenewalRequest, RenewalRequest.created_by == "system:scheduler")) == 0  # off by default
    services.settings = services.settings.replace(renewal_confirm_days="10")
    sweep(services, TODAY, hour=17)
    (mail,) = outbound(services, "renewal_confirmation_request")[1:]
    assert "d.test" in text_of(mail) and "e.test" in text_of(mail)
    assert not any(n in text_of(mail) for n in ("f.test", "g.test", "k.test", "web"))
    # TODAY is covered already; down on TODAY+1 and +2 (g.test's day): caught up on TODAY+3
    sweep(services, TODAY + dt.timedelta(days=3))
    sweep(services, TODAY + dt.timedelta(days=3), hour=18)
    requests = outbound(services, "renewal_confirmation_request")[1:]
    assert len(requests) == 2 and "g.test" in text_of(requests[1]) and "d.test" not in text_of(requests[1])
    got = rows(services, RenewalRequest, RenewalRequest.kind == "activation_code",
               RenewalRequest.created_by == "system:scheduler")
    assert [sorted(r.service_ids) for r in got] == [sorted([ids["d.test"], ids["e.test"]]), [ids["g.test"]]]
    assert {(n.subject_id, n.occasion) for n in rows(services, Notice, Notice.kind == "renewal_confirm")} == {
        (ids["d.test"], "code"), (ids["e.test"], "code"), (ids["g.test"], "code")}


def test_forecast_and_dry_run_show_an_automatic_renewal_and_change_nothing(services):
    """Tomorrow's first occasion of an auto-renew service is in the forecast once over several days; a dry
    run on that day lists it and records nothing."""
    tomorrow = TODAY + dt.timedelta(days=1)
    ids = make_account(services, "acme", {"a.test": str(add_months(tomorrow, 3))})
    auto_renew(services, ids["a.test"])
    days = execute(services, "forecast --days 3", as_user=None).data["days"]  # 09:00: today's sweep is past
    found = [(d["day"], a["text"]) for d in days for a in d["actions"] if a["rule"] == "renewal_automation"]
    assert found == [(str(tomorrow), "Acme Ltd: renew automatically a.test (2027-02-22), raising the invoice, "
                                     "to owner@acme.test")]
    lines = sweep(services, tomorrow, dry_run=True)
    assert "renewal_automation: Acme Ltd: renew automatically a.test (2027-02-22), raising the invoice, " \
           "to owner@acme.test" in lines
    assert count(services, RenewalDecision) == count(services, Invoice) == count(services, Notice) == 0


@pytest.fixture
def staff(services):
    services.run(lambda tx: [tx.session.add(StaffMember(slack_user_id=u, role=Role(r), added_at=tx.now, added_by="t"))
                             for u, r in (("U0RO", "readonly"), ("U0SUP", "support"))])


def test_staff_send_a_confirmation_request_for_a_service_or_an_account(services, staff):
    """`renewal confirm SERVICE` codes one service, `renewal confirm ACCOUNT` what its renewal page lists;
    readonly staff may not; the code is never shown to staff; a removed service or an empty account refuses."""
    ids = make_account(services, "acme", {"a.test": str(TODAY + dt.timedelta(days=20)),
                                          "b.test": str(TODAY + dt.timedelta(days=50)),
                                          "far.test": str(TODAY + dt.timedelta(days=300))},
                       contacts=[("dev@acme.test", ["renewals"], True)])
    make_account(services, "beta", {"later.test": str(TODAY + dt.timedelta(days=300))})
    with pytest.raises(NotAllowed):
        execute(services, "renewal confirm a.test", as_user="U0RO")
    one = execute(services, "renewal confirm a.test", as_user="U0SUP")
    assert one.data["services"] == ["a.test"] and one.data["to"] == ["owner@acme.test", "dev@acme.test"]
    every = execute(services, "renewal confirm acme", as_user="U0SUP")
    assert every.data["services"] == ["a.test", "b.test"]
    codes = [re.search(r"activation code: (\S+)", text_of(m))[1]
             for m in outbound(services, "renewal_confirmation_request")]
    assert len(codes) == 4 and not any(c in one.text + every.text for c in codes)
    sent = rows(services, AuditEvent, AuditEvent.action == "renewal.code_sent")
    assert [a.actor for a in sent] == ["staff:U0SUP", "staff:U0SUP"]
    with pytest.raises(Conflict):
        execute(services, "renewal confirm beta", as_user="U0SUP")  # nothing within three months
    decide(services, ids["account"], {ids["a.test"]: "decline"})
    sweep(services, TODAY + dt.timedelta(days=20))  # removed on its expiry day
    with pytest.raises(NotFound):
        execute(services, "renewal confirm acme/a.test", as_user="U0SUP")


def test_staff_switch_auto_renew_for_an_account_or_one_service_and_the_sweep_follows(services, staff):
    """`renewal auto ACCOUNT on` switches every service that still gets reminders (not a declined or
    removed one), audited; support and readonly staff may not; a word other than on/off is refused with the usage;
    `renewal auto SERVICE off` takes one back. At the three-month occasion the sweep then renews and
    invoices the one left on and asks about the other as usual."""
    services.run(lambda tx: tx.session.add(StaffMember(slack_user_id="U0BIL", role=Role("billing"),
                                                       added_at=tx.now, added_by="t")))
    expiry = add_months(TODAY, 3)
    ids = make_account(services, "acme", {"a.test": str(expiry), "b.test": str(expiry),
                                          "gone.test": (str(TODAY - dt.timedelta(days=400)), "removed"),
                                          "no.test": (str(expiry), "cancelled")})
    for user in ("U0RO", "U0SUP"):
        with pytest.raises(NotAllowed):
            execute(services, "renewal auto acme on", as_user=user)
    with pytest.raises(InvalidInput) as bad:
        execute(services, "renewal auto acme yes", as_user="U0BIL")
    assert "on|off" in str(bad.value)
    on = execute(services, "renewal auto acme on", as_user="U0BIL")
    assert on.data["changed"] == ["a.test", "b.test"] and "gone.test" not in on.text and "no.test" not in on.text
    again = execute(services, "renewal auto acme on", as_user="U0BIL")
    assert again.data["changed"] == [] and "already on" in again.text
    off = execute(services, "renewal auto acme/b.test off", as_user="U0BIL")
    assert off.data["changed"] == ["b.test"]
    assert [s.auto_renew for s in rows(services, Service, Service.account_id == ids["account"])] == [
        True, False, False, False]
    shown = execute(services, "account show acme", as_user="U0RO")
    assert {sv["name"]: sv["auto_renew"] for sv in shown.data["services"]} == {
        "a.test": True, "b.test": False, "no.test": False, "gone.test": False}
    assert "auto-renew" in next(line for line in shown.text.splitlines() if "a.test" in line)
    audit = rows(services, AuditEvent, AuditEvent.action == "renewal.auto")
    assert [(a.actor, a.detail["on"]) for a in audit] == [("staff:U0BIL", True), ("staff:U0BIL", False)]
    with pytest.raises(Conflict):  # declined: the decision stands
        execute(services, "renewal auto acme/no.test on", as_user="U0BIL")
    with pytest.raises(NotFound):
        execute(services, "renewal auto acme/gone.test on", as_user="U0BIL")
    sweep(services, TODAY)
    made = rows(services, RenewalDecision)
    assert [(d.service_id, d.auth_method) for d in made] == [(ids["a.test"], "auto_renew")]
    (line,) = rows(services, InvoiceLine)
    assert line.service_id == ids["a.test"]
    assert "b.test" in text_of(outbound(services, "renewal_reminder")[0])
