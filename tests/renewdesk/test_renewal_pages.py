"""The renewal selection page over real HTTP (uvicorn on 127.0.0.1) and in headless Chromium:
what it lists, one submit applying everything or nothing, CSRF, escaping, honest pages for bad links."""
import datetime as dt
import os
import re
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from handlers.models import RenewalDecision, Role, Service, ServiceStatus, StaffMember
from handlers.staff import execute
from tests.support.chromium import Browser
from tests.support.renewals import D, make_account, outbound, reminder_token, text_of
from tests.support.web import serve

TODAY = D("2026-11-21")


@pytest.fixture
def acme(services):
    ids = make_account(services, "acme", {
        "a.test": str(TODAY + dt.timedelta(days=5)),
        "b.test": str(TODAY + dt.timedelta(days=40)),
        "c.test": (str(TODAY - dt.timedelta(days=3)), "expired"),
        "far.test": str(TODAY + dt.timedelta(days=200)),
    }, others={"<b>Bold</b> hosting": str(TODAY + dt.timedelta(days=60))}, sales="sales@reseller.test",
        contacts=[("dev@acme.test", ["renewals"], True)])
    make_account(services, "other", {"other.test": str(TODAY + dt.timedelta(days=5))})
    reminder_token(services, TODAY)  # runs the sweep; acme's link is in the reminder to its contact
    mail = next(m for m in outbound(services, "renewal_reminder") if m.recipients == ["dev@acme.test"])
    ids["token"] = re.search(r"/renew/([a-z2-7]{24})", text_of(mail))[1]
    return ids


@pytest.fixture
def base(services):
    with serve(services) as url:
        yield url


def decisions(services):
    with services.db.transaction(readonly=True) as s:
        return s.execute(select(RenewalDecision.service_id, RenewalDecision.action, RenewalDecision.period_years,
                                RenewalDecision.actor, RenewalDecision.auth_method, RenewalDecision.channel)
                         .order_by(RenewalDecision.id)).all()


def csrf_of(html):
    return re.search(r'name="csrf" value="([^"]+)"', html)[1]


def test_page_lists_the_accounts_renewable_services_escaped(services, acme, base):
    """Next three months and expired-but-renewable ones, days until expiry, periods 1-10; nothing of
    another account, nothing further away; names HTML-escaped; the token never leaks by Referer or cache."""
    r = httpx.get(f"{base}/renew/{acme['token']}")
    assert r.status_code == 200
    html = r.text
    for name, when in (("a.test", "in 5 days"), ("b.test", "in 40 days"), ("c.test", "expired 3 days ago")):
        assert f'<div class="name">{name}' in html and when in html
    assert "far.test" not in html and "other.test" not in html
    assert "&lt;b&gt;Bold&lt;/b&gt; hosting" in html and "<b>Bold</b>" not in html
    assert html.count('<option value="10"') == 4
    assert r.headers["referrer-policy"] == "no-referrer" and r.headers["cache-control"] == "no-store"
    assert "samesite=strict" in r.headers["set-cookie"].lower() and "httponly" in r.headers["set-cookie"].lower()


def test_one_submit_records_every_choice_and_confirms(services, acme, base):
    with httpx.Client() as client:
        html = client.get(f"{base}/renew/{acme['token']}").text
        r = client.post(f"{base}/renew/{acme['token']}", data={
            "csrf": csrf_of(html), f"decision_{acme['a.test']}": "renew", f"years_{acme['a.test']}": "3",
            f"decision_{acme['c.test']}": "decline", f"years_{acme['c.test']}": "1",
            f"decision_{acme['b.test']}": "", f"years_{acme['b.test']}": "1"})
    assert r.status_code == 200
    assert "renewed a.test for 3 years" in r.text and "declined c.test" in r.text
    assert [(d.service_id, d.action.value, d.period_years, d.auth_method, d.channel) for d in decisions(services)] == [
        (acme["a.test"], "renew", 3, "reply_token", "page"), (acme["c.test"], "decline", None, "reply_token", "page")]
    assert decisions(services)[0].actor == f"account:{acme['account']}"
    confirmations = outbound(services, "renewal_confirmation")
    assert sorted(m.recipients[0] for m in confirmations) == ["dev@acme.test", "owner@acme.test"]
    assert [m.recipients for m in outbound(services, "renewal_sales")] == [["sales@reseller.test"]]
    assert "decided: renew 3 years" in r.text  # the page shows the decision now recorded


def test_a_bad_period_applies_nothing(services, acme, base):
    with httpx.Client() as client:
        html = client.get(f"{base}/renew/{acme['token']}").text
        r = client.post(f"{base}/renew/{acme['token']}", data={
            "csrf": csrf_of(html), f"decision_{acme['a.test']}": "renew", f"years_{acme['a.test']}": "11",
            f"decision_{acme['b.test']}": "decline"})
    assert r.status_code == 400 and "a.test: the period must be 1 to 10 years" in r.text
    assert decisions(services) == []


def test_forged_or_missing_form_token_is_refused(services, acme, base):
    """A cross-site POST has neither our cookie nor a matching form token: 403, nothing applied."""
    form = {f"decision_{acme['b.test']}": "decline"}
    no_token = httpx.post(f"{base}/renew/{acme['token']}", data=form)
    with httpx.Client() as client:
        client.get(f"{base}/renew/{acme['token']}")
        forged = client.post(f"{base}/renew/{acme['token']}", data={**form, "csrf": "0" * 32})
    other_cookie = httpx.post(f"{base}/renew/{acme['token']}", data={**form, "csrf": "x"},
                              cookies={"rd_form": "attacker-chosen"})
    assert (no_token.status_code, forged.status_code, other_cookie.status_code) == (403, 403, 403)
    assert "Nothing was changed" in forged.text and decisions(services) == []
    with services.db.transaction(readonly=True) as s:
        assert s.get(Service, acme["b.test"]).status == ServiceStatus.active


def test_unknown_and_expired_links_get_an_honest_page_and_nothing_else(services, acme, base, clock):
    unknown = httpx.get(f"{base}/renew/{'a' * 24}")
    junk = httpx.get(f"{base}/renew/%3Cscript%3E")
    assert (unknown.status_code, junk.status_code) == (404, 404)
    assert "This renewal link is not valid" in unknown.text and "<script>" not in junk.text
    clock.set(dt.datetime(2027, 3, 1, 9, tzinfo=dt.timezone.utc))
    expired = httpx.get(f"{base}/renew/{acme['token']}")
    assert expired.status_code == 410 and "This renewal link has expired" in expired.text
    for page in (unknown.text, expired.text):
        assert "acme" not in page.lower() and "a.test" not in page


def test_staff_link_records_the_staff_member(services, acme, base):
    """`renewal link ACCOUNT` gives an audited link; the page names the staff member to the client (never their
    actor id) and decisions through it carry the staff member."""
    services.run(lambda tx: tx.session.add(StaffMember(slack_user_id="U0BILL", role=Role.billing, name="Bill Smith",
                                                       added_at=tx.now, added_by="test")))
    reply = execute(services, "renewal link acme", as_user="U0BILL")
    url = reply.data["url"]
    assert url.startswith("http://127.0.0.1:8000/renew/") and "record you, Bill Smith" in reply.text
    path = url.removeprefix("http://127.0.0.1:8000")
    with httpx.Client() as client:
        html = client.get(base + path).text
        assert "Opened by Bill Smith of our staff, acting for you" in html and "U0BILL" not in html
        r = client.post(base + path, data={"csrf": csrf_of(html), f"decision_{acme['b.test']}": "renew",
                                           f"years_{acme['b.test']}": "2"})
    assert r.status_code == 200
    assert [(d.actor, d.auth_method, d.channel) for d in decisions(services)] == [("staff:U0BILL", "staff", "page")]


def test_in_headless_chromium_choose_periods_submit_and_see_the_confirmation(services, acme, base, tmp_path):
    """A phone-sized Chromium opens the reminder's link, picks 4 years for a.test and declines b.test with
    the radio buttons and the select, submits once, and reads the confirmation. No horizontal scrolling."""
    with Browser(width=390, height=844) as b:
        b.goto(f"{base}/renew/{acme['token']}")
        assert b.eval("document.title") == "Renewals for Acme Ltd"
        assert b.eval("document.documentElement.scrollWidth") <= 390
        a, bb = acme["a.test"], acme["b.test"]
        b.eval(f"document.querySelector('input[name=decision_{a}][value=renew]').click();"
               f"document.querySelector('select[name=years_{a}]').value = '4';"
               f"document.querySelector('input[name=decision_{bb}][value=decline]').click(); true")
        b.click_and_wait("#submit")
        applied = b.eval("document.getElementById('applied').innerText")
        shot = b.screenshot(Path(os.environ.get("RENEWDESK_ARTEFACTS", tmp_path)) / "renewal_page_confirmation.png")
    assert "renewed a.test for 4 years" in applied and "declined b.test" in applied
    assert shot.stat().st_size > 1000
    assert [(d.service_id, d.action.value, d.period_years) for d in decisions(services)] == [
        (a, "renew", 4), (bb, "decline", None)]
