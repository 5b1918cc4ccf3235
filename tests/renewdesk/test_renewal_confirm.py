"""Confirmation requests: an emailed activation code entered at /renew/confirm (real HTTP and headless
Chromium): stored hashed, single use, expiring, locked after five wrong tries."""
import datetime as dt
import re

import httpx
import pytest
from sqlalchemy import select

from handlers.models import RenewalDecision, RenewalRequest
from handlers.renewals import confirm, tokens
from tests.support.chromium import Browser
from tests.support.renewals import D, make_account, outbound, text_of
from tests.support.web import serve

TODAY = D("2026-11-21")


@pytest.fixture
def sent(services):
    ids = make_account(services, "acme", {"a.test": str(TODAY + dt.timedelta(days=20)),
                                          "b.test": str(TODAY + dt.timedelta(days=50))},
                       contacts=[("dev@acme.test", ["renewals"], True)])
    code = services.run(confirm.request_confirmation, ids["account"], [ids["a.test"]], actor="staff:U0SUP")
    return ids, code


@pytest.fixture
def base(services):
    with serve(services) as url:
        yield url


def csrf_of(html):
    return re.search(r'name="csrf" value="([^"]+)"', html)[1]


def decisions(services):
    with services.db.transaction(readonly=True) as s:
        return s.execute(select(RenewalDecision.service_id, RenewalDecision.action, RenewalDecision.period_years,
                                RenewalDecision.auth_method, RenewalDecision.channel)).all()


def test_the_code_is_emailed_and_stored_only_hashed(services, sent):
    ids, code = sent
    assert re.fullmatch(r"\d+-[A-Z2-9]{4}-[A-Z2-9]{4}", code)
    mails = outbound(services, "renewal_confirmation_request")
    assert sorted(m.recipients[0] for m in mails) == ["dev@acme.test", "owner@acme.test"]
    text = text_of(mails[0])
    assert code in text and "http://127.0.0.1:8000/renew/confirm" in text and "a.test" in text
    assert "b.test" not in text
    with services.db.transaction(readonly=True) as s:
        (req,) = s.scalars(select(RenewalRequest)).all()
        assert req.secret_hash == tokens.digest(tokens.normal_code(code)) and code not in repr(vars(req))
        assert (req.kind, req.max_uses, req.created_by) == ("activation_code", 1, "staff:U0SUP")


def test_enter_the_code_then_confirm_once(services, sent, base):
    """Lower case and spaces are forgiven; the decision records the code as its authentication; the code
    then reads as used."""
    ids, code = sent
    with httpx.Client() as c:
        form = c.get(f"{base}/renew/confirm")
        assert form.status_code == 200 and 'name="code"' in form.text
        shown = c.post(f"{base}/renew/confirm", data={"csrf": csrf_of(form.text), "step": "check",
                                                      "code": " " + code.lower().replace("-", " - ", 1)})
        assert shown.status_code == 200 and '<div class="name">a.test</div>' in shown.text
        assert "b.test" not in shown.text
        done = c.post(f"{base}/renew/confirm", data={"csrf": csrf_of(shown.text), "step": "decide", "code": code,
                                                     f"decision_{ids['a.test']}": "renew",
                                                     f"years_{ids['a.test']}": "2"})
        assert done.status_code == 200 and "renewed a.test for 2 years" in done.text
        again = c.post(f"{base}/renew/confirm", data={"csrf": csrf_of(form.text), "step": "check", "code": code})
    assert again.status_code == 410 and "already been used" in again.text
    assert decisions(services) == [(ids["a.test"], "renew", 2, "activation_code", "page")]


def test_an_expired_code_is_refused(services, sent, base, clock):
    ids, code = sent
    clock.advance(days=15)
    with httpx.Client() as c:
        form = c.get(f"{base}/renew/confirm")
        r = c.post(f"{base}/renew/confirm", data={"csrf": csrf_of(form.text), "step": "decide", "code": code,
                                                  f"decision_{ids['a.test']}": "decline"})
    assert r.status_code == 410 and "expired" in r.text and decisions(services) == []


def test_without_the_form_token_nothing_is_checked(services, sent, base):
    ids, code = sent
    r = httpx.post(f"{base}/renew/confirm", data={"step": "decide", "code": code,
                                                   f"decision_{ids['a.test']}": "decline"})
    assert r.status_code == 403 and decisions(services) == []


def test_in_headless_chromium_five_wrong_codes_lock_it(services, sent, base, tmp_path):
    """Typed into the real form five times, a wrong secret for the code's id locks the request: the right
    code is refused afterwards, and nothing was decided."""
    ids, code = sent
    wrong = code.split("-")[0] + "-ZZZZ-ZZZZ"
    messages = []
    with Browser() as b:
        for _ in range(6):
            b.goto(f"{base}/renew/confirm")
            b.eval(f"document.getElementById('code').value = {wrong!r}; true")
            b.click_and_wait("#submit")
            messages.append(b.eval("document.getElementById('errors').innerText"))
        b.goto(f"{base}/renew/confirm")
        b.eval(f"document.getElementById('code').value = {code!r}; true")
        b.click_and_wait("#submit")
        final = b.eval("document.getElementById('errors').innerText")
        b.screenshot(tmp_path / "locked.png")
    assert all("not valid" in m for m in messages[:4])
    assert "locked after five wrong tries" in messages[4] and "locked" in messages[5]
    assert "locked after five wrong tries" in final
    assert decisions(services) == []
