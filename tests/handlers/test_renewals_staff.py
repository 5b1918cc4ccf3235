"""`renewals due` and `renewal link`: what staff see, who may ask, and the audit trail."""
import datetime as dt

import pytest
from sqlalchemy import select

from handlers.errors import NotAllowed
from handlers.models import AuditEvent, RenewalRequest, Role, StaffMember
from handlers.renewals import tokens
from handlers.staff import execute
from tests.support.renewals import D, make_account

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
