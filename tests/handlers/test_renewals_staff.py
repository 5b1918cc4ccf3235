"""`renewals due` and `renewal link`: what staff see, who may ask, and the audit trail."""
import datetime as dt
import re

import pytest
from sqlalchemy import select

from handlers.errors import NotAllowed
from handlers.models import AuditEvent, RenewalDecision, RenewalRequest, Role, StaffMember
from handlers.renewals import pages, tokens
from handlers.staff import execute
from tests.support.renewals import D, make_account, outbound, parsed

TODAY = D("2026-11-21")


@pytest.fixture
def data(services):
    acme = make_account(services, "acme", {"a.test": str(TODAY + dt.timedelta(days=5)),
                                           "late.test": (str(TODAY - dt.timedelta(days=10)), "expired"),
                                           "far.test": str(TODAY + dt.timedelta(days=200))})
    harbour = make_account(services, "harbour", {"h.test": str(TODAY + dt.timedelta(days=40))}, invoicing="paper")
    services.run(lambda tx: [tx.session.add(StaffMember(slack_user_id=u, role=Role(r), added_at=tx.now, added_by="t"))
                             for u, r in (("U0RO", "readonly"), ("U0SUP", "support"))])
    return acme, harbour


def test_renewals_due_lists_the_window_soonest_first_with_paper_accounts_marked(services, data):
    reply = execute(services, "renewals due --days 60", as_user="U0RO")
    assert [r["name"] for r in reply.data] == ["late.test", "a.test", "h.test"]
    assert [r["days_left"] for r in reply.data] == [-10, 5, 40]
    assert reply.data[2]["paper"] is True and "paper: by hand" in reply.text
    assert "undecided" in reply.text and "far.test" not in reply.text
    only = execute(services, "renewals due --account harbour", as_user=None)
    assert [r["name"] for r in only.data] == ["h.test"]


def test_renewal_link_is_audited_scoped_and_refused_to_readonly(services, data):
    with pytest.raises(NotAllowed):
        execute(services, "renewal link acme", as_user="U0RO")
    reply = execute(services, "renewal link acme", as_user="U0SUP")
    token = reply.data["url"].rsplit("/", 1)[1]
    with services.db.transaction(readonly=True) as s:
        (req,) = s.scalars(select(RenewalRequest)).all()
        assert (req.kind, req.created_by, req.secret_hash) == ("page_link", "staff:U0SUP", tokens.digest(token))
        assert req.expires_at == services.clock.now() + dt.timedelta(days=14)
        assert len(req.service_ids) == 2  # a.test and late.test: what the page shows now
        audit = s.scalars(select(AuditEvent).where(AuditEvent.action == "renewal.link")).one()
        assert audit.actor == "staff:U0SUP" and token not in str(audit.detail)
        assert (audit.subject_type, audit.subject_id) == ("renewal_request", str(req.id))


def _links(mail):
    """The page tokens in both parts of an outgoing mail."""
    msg = parsed(mail)
    text = msg.get_body(("plain",)).get_content() + msg.get_body(("html",)).get_content()
    return set(re.findall(r"/renew/([a-z2-7]{24})", text))


def test_a_confirmation_after_a_staff_link_carries_the_clients_own_link_never_the_staff_one(services, data):
    """Decisions made through a staff member's link are confirmed to the client with a link of the client's
    own: the staff token is in no email, and the emailed link opens the page as the client, so decisions
    through it are recorded as the client's (not as staff)."""
    acme, _ = data
    staff = execute(services, "renewal link acme", as_user=None).data["url"].rsplit("/", 1)[1]
    services.run(pages.submit_page, staff, {f"decision_{acme['a.test']}": "renew", f"years_{acme['a.test']}": "2"},
                 actor="web:renewal-page")
    mails = outbound(services, "renewal_confirmation")
    assert [m.recipients for m in mails] == [["owner@acme.test"]]
    assert all(staff.encode() not in m.raw for m in outbound(services))
    (client,) = _links(mails[0])
    assert client != staff
    page = services.run(pages.show_page, client, actor="web:renewal-page", readonly=True)
    assert page.status == "ok" and page.acting_staff is None
    services.run(pages.submit_page, client, {f"decision_{acme['late.test']}": "decline"}, actor="web:renewal-page")
    with services.db.transaction(readonly=True) as s:
        rows = s.execute(select(RenewalDecision.actor, RenewalDecision.auth_method)
                         .order_by(RenewalDecision.id)).all()
    assert rows == [("cli", "staff"), (f"account:{acme['account']}", "reply_token")]
    assert all(staff not in _links(m) for m in outbound(services, "renewal_confirmation"))


def test_the_page_names_the_staff_member_acting_for_the_client_never_an_actor_id(services, data):
    """A page opened from a staff link tells the client who acts for them: the staff member's name, or just
    "our staff" for the command line or a member without a name; never `cli` or a Slack user id. The link's
    answer to staff says whom decisions record in words too."""
    services.run(lambda tx: tx.session.add(StaffMember(slack_user_id="U0ANN", role=Role.billing, name="Ann Staff",
                                                       added_at=tx.now, added_by="t")))
    shown = {}
    for who in (None, "U0SUP", "U0ANN"):
        reply = execute(services, "renewal link acme", as_user=who)
        page = services.run(pages.show_page, reply.data["url"].rsplit("/", 1)[1], actor="web:renewal-page",
                            readonly=True)
        shown[who] = page.acting_staff
        assert "(cli)" not in reply.text and "staff:" not in reply.text
    assert shown == {None: "our staff", "U0SUP": "our staff", "U0ANN": "Ann Staff of our staff"}
