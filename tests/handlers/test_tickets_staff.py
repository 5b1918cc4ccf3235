"""Staff work on tickets through the staff grammar (`renewdesk staff ticket ...`, later `/desk`), and
bounces of ticket mail: who gets replies, statuses, roles, and the contact marked bouncing."""
import pytest
from sqlalchemy import select

from handlers.errors import Conflict, InvalidInput, NotAllowed, NotFound
from handlers.models import Contact, InboundStatus, MessageKind, Role, StaffMember, TicketStatus
from handlers.staff import execute
from tests.support.mailflow import body_text, deliver, mail, make_account, outbound, parsed, ticket


@pytest.fixture
def acme(services):
    acc = make_account(services, "acme", "boss@acme.test", ("dev@acme.test", ["tickets"]),
                       ("ops@acme.test", ["tickets"]))

    def team(tx):
        tx.session.add(StaffMember(slack_user_id="USUP", role=Role.support, added_at=tx.now, added_by="test"))
        tx.session.add(StaffMember(slack_user_id="UREAD", role=Role.readonly, added_at=tx.now, added_by="test"))
    services.run(team)
    return acc


def new_ticket(services, sender="dev@acme.test", subject="Site down"):
    return deliver(services, mail(sender, subject, "It is down.")).ticket_id


def test_a_staff_reply_goes_to_the_opener_and_the_owner_only_threaded_and_marks_answered(services, acme):
    tid = new_ticket(services)
    new_ticket(services, sender="ops@acme.test", subject="Other")
    reply = execute(services, f'ticket reply T-{tid} We restarted it; it is up again.', as_user="USUP")
    assert reply.data["emailed_to"] == ["dev@acme.test", "boss@acme.test"]       # not ops@
    [sent] = outbound(services, "ticket_reply")
    msg = parsed(sent)
    assert msg["Subject"] == f"Re: [#T-{tid}] Site down"
    t = ticket(services, tid)
    assert msg["In-Reply-To"] == t.messages[0].message_id and t.messages[0].message_id in msg["References"]
    assert "We restarted it; it is up again." in body_text(sent)
    assert t.status == TicketStatus.answered and t.messages[-1].author == "staff:USUP"
    assert t.messages[-1].message_id == msg["Message-ID"]      # the client's answer to it threads


def test_notes_are_never_emailed(services, acme):
    tid = new_ticket(services)
    before = len(outbound(services))
    execute(services, f"ticket note {tid} customer is on the old plan", as_user="USUP")
    assert len(outbound(services)) == before
    assert ticket(services, tid).messages[-1].kind == MessageKind.note


def test_list_show_hold_close_archive_unarchive(services, acme):
    tid = new_ticket(services)
    other = new_ticket(services, subject="Second")
    listed = execute(services, "ticket list", as_user="UREAD")
    assert {r["id"] for r in listed.data} == {tid, other}
    assert execute(services, f"ticket hold {tid}", as_user="USUP").data["status"] == "on_hold"
    assert execute(services, f"ticket close #{tid}", as_user="USUP").data["status"] == "closed"
    with pytest.raises(Conflict):
        execute(services, f"ticket close {tid}", as_user="USUP")
    assert execute(services, f"ticket archive {tid}", as_user="USUP").data["status"] == "archived"
    assert [r["id"] for r in execute(services, "ticket list", as_user="USUP").data] == [other]
    assert [r["id"] for r in execute(services, "ticket list --archived", as_user="USUP").data] == [tid]
    assert execute(services, f"ticket unarchive {tid}", as_user="USUP").data["status"] == "closed"
    shown = execute(services, f"ticket show {tid}", as_user="UREAD")
    assert shown.data["watchers"][0]["email"] == "dev@acme.test" and "It is down." in shown.text
    acc_list = execute(services, "ticket list --all --account acme", as_user="UREAD")
    assert len(acc_list.data) == 2


def test_roles_and_bad_input(services, acme):
    tid = new_ticket(services)
    with pytest.raises(NotAllowed, match="support"):
        execute(services, f"ticket reply {tid} hi", as_user="UREAD")
    with pytest.raises(NotFound):
        execute(services, "ticket show 999", as_user="UREAD")
    with pytest.raises(InvalidInput, match="needs T") as bad:
        execute(services, "ticket reply", as_user="USUP")
    assert bad.value.hint == "usage: ticket reply T TEXT"
    with pytest.raises(InvalidInput, match="name the staff member"):
        execute(services, f"ticket assign {tid}", as_user=None)
    assert execute(services, f"ticket assign {tid}", as_user="USUP").data["assignee"] == "USUP"


def test_inbox_lists_held_mail_and_attach_turns_it_into_a_ticket(services, acme):
    row = deliver(services, mail("new@acme.test", "Hi", "new colleague here"))
    listed = execute(services, "inbox", as_user="UREAD")
    assert [r["id"] for r in listed.data] == [row.id] and "not a contact" in listed.text
    with pytest.raises(NotAllowed):
        execute(services, f"inbox attach {row.id} acme", as_user="UREAD")
    done = execute(services, f"inbox attach {row.id} acme", as_user="USUP")
    assert done.data["contact_created"]
    with pytest.raises(Conflict):
        execute(services, f"inbox attach {row.id} acme", as_user="USUP")


def dsn(original_id, recipient, status="5.1.1", action="failed"):
    return (f"From: MAILER-DAEMON@mx.acme.test\r\nTo: bounces@desk.example.test\r\nMessage-ID: <dsn-{status}@mx>\r\n"
            "Subject: Undelivered Mail Returned to Sender\r\nContent-Type: multipart/report; "
            "report-type=delivery-status; boundary=XX\r\n\r\n--XX\r\nContent-Type: text/plain\r\n\r\n"
            "Delivery failed.\r\n--XX\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx\r\n\r\n"
            f"Final-Recipient: rfc822; {recipient}\r\nAction: {action}\r\nStatus: {status}\r\n--XX\r\n"
            f"Content-Type: text/rfc822-headers\r\n\r\nMessage-ID: {original_id}\r\nSubject: x\r\n--XX--\r\n").encode()


def test_a_bounce_marks_the_contact_and_links_our_mail_and_the_ticket(services, acme):
    tid = new_ticket(services)
    [ack] = outbound(services, "ticket_ack")
    row = deliver(services, dsn(ack.message_id, "dev@acme.test"), to="bounces@desk.example.test", envelope_from="")
    assert (row.status, row.classification) == (InboundStatus.done, "bounce")
    assert (row.outbound_mail_id, row.ticket_id) == (ack.id, tid) and "marked bouncing" in row.reason
    with services.db.transaction(readonly=True) as s:
        dev = s.scalar(select(Contact).where(Contact.email == "dev@acme.test"))
        assert dev.bouncing_since is not None and dev.bounce_count == 1
    assert "bounced (5.1.1)" in ticket(services, tid).messages[-1].body
    assert outbound(services, "ticket_ack")[0].last_error.startswith("bounced (5.1.1)")
    assert len(outbound(services)) == 1                # a bounce is never answered


def test_a_delay_notice_marks_nobody(services, acme):
    new_ticket(services)
    [ack] = outbound(services, "ticket_ack")
    row = deliver(services, dsn(ack.message_id, "dev@acme.test", "4.4.1", "delayed"),
                  to="bounces@desk.example.test", envelope_from="")
    assert row.reason.startswith("delay notice")
    with services.db.transaction(readonly=True) as s:
        assert s.scalar(select(Contact).where(Contact.email == "dev@acme.test")).bouncing_since is None
