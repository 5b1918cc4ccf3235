"""Client mail into tickets, through the real store and processor on both databases: new tickets
on the master account with their acknowledgement, every threading layer, what is refused, and
what is never answered."""
import pytest
from sqlalchemy import func, select

from handlers.models import (Attachment, AuditEvent, Contact, InboundMail, InboundStatus, MessageKind, OutboundMail,
                             Ticket, TicketMessage, TicketStatus)
from handlers.tickets import ops, refs
from tests.support.mailflow import body_text, deliver, mail, make_account, outbound, parsed, ticket


@pytest.fixture
def acme(services):
    """Acme: owner boss@, a developer with the tickets permission, a bookkeeper without it."""
    return make_account(services, "acme", "boss@acme.test", ("dev@acme.test", ["tickets", "services"]),
                        ("books@acme.test", ["billing"]))


def open_ticket(services, sender="dev@acme.test", subject="Site down", body="Our site is down since 8:00."):
    row = deliver(services, mail(sender, subject, body))
    assert row.status == InboundStatus.done and row.ticket_id, row.reason
    return row


def test_a_contacts_mail_opens_a_ticket_on_the_master_account_with_an_acknowledgement(services, acme):
    """The ticket is the master account's; the acknowledgement goes to the contact, copied to the
    owner, tagged, threaded under the client's mail, with the HMAC'd reply address and body marker."""
    row = open_ticket(services)
    t = ticket(services, row.ticket_id)
    assert (t.account_id, t.status, t.subject) == (acme, TicketStatus.open, "Site down")
    assert [(m.kind, m.body, m.inbound_mail_id) for m in t.messages] == [
        (MessageKind.client, "Our site is down since 8:00.", row.id)]
    assert row.rule == "new_ticket" and f"T-{t.id}" in row.reason
    [ack] = outbound(services, "ticket_ack")
    msg = parsed(ack)
    assert msg["Subject"] == f"[#T-{t.id}] Site down"
    assert msg["To"].addresses[0].addr_spec == "dev@acme.test"
    assert [a.addr_spec for a in msg["Cc"].addresses] == ["boss@acme.test"]
    assert msg["In-Reply-To"] == t.messages[0].message_id
    assert msg["Reply-To"].addresses[0].addr_spec.startswith(f"support+t{t.id}.")
    assert msg["Auto-Submitted"] == "auto-generated"
    assert "[ref:T-" in body_text(ack) and "Our site is down since 8:00." in body_text(ack)


def test_the_owner_gets_no_copy_of_their_own_ticket_and_preferences_are_respected(services):
    make_account(services, "bee", "owner@bee.test", ("quiet@bee.test", ["tickets"], {"tickets": False}))
    open_ticket(services, sender="owner@bee.test")
    open_ticket(services, sender="quiet@bee.test", subject="Another")
    first, second = outbound(services, "ticket_ack")
    assert first.recipients == ["owner@bee.test"]
    assert second.recipients == ["owner@bee.test"]   # the quiet contact does not want ticket mail


def reply_to_ack(services, ack, sender="dev@acme.test", **kw):
    msg = parsed(ack)
    return deliver(services, mail(sender, "Re: " + msg["Subject"], "Thanks, it is back.\n\n> quoted ack",
                                  in_reply_to=msg["Message-ID"], references=msg["Message-ID"], **kw))


def test_a_reply_threads_by_message_id_and_marks_the_ticket_customer_reply(services, acme):
    first = open_ticket(services)
    services.run(ops.reply, first.ticket_id, "We restarted the server.", actor="staff:U1")
    [ack] = outbound(services, "ticket_ack")
    row = reply_to_ack(services, ack)
    assert (row.ticket_id, row.rule) == (first.ticket_id, "ticket_reply") and "in-reply-to" in row.reason
    t = ticket(services, first.ticket_id)
    assert t.status == TicketStatus.customer_reply
    assert t.messages[-1].body == "Thanks, it is back."       # the quote is cut; the raw mail is kept
    assert len(outbound(services, "ticket_ack")) == 1          # replies are not acknowledged


@pytest.mark.parametrize("layer", ["address", "body-marker", "subject-tag"])
def test_each_threading_layer_alone_finds_the_ticket(services, acme, layer):
    first = open_ticket(services)
    tid = first.ticket_id
    to, subject, body = "support@desk.example.test", "Something", "More details."
    if layer == "address":
        to = services.run(lambda tx: refs.reply_address(tx, tid))
    elif layer == "body-marker":
        body += "\n\n> " + services.run(lambda tx: refs.body_marker(tx, tid))
    else:
        subject = f"Re: [#T-{tid}] Site down"
    row = deliver(services, mail("dev@acme.test", subject, body, to=to), to=to)
    assert row.ticket_id == tid and layer in row.reason


def test_forged_address_token_and_body_marker_are_not_believed(services, acme):
    tid = open_ticket(services).ticket_id
    forged = f"support+t{tid}.0000000000@desk.example.test"
    row = deliver(services, mail("dev@acme.test", "Other", f"Hi\n[ref:T-{tid}.0123456789]", to=forged), to=forged)
    assert row.ticket_id != tid and row.rule == "new_ticket"


def test_a_stolen_subject_tag_from_another_account_neither_replies_nor_reveals(services, acme):
    """A contact of another account (or a spoofed From) using Acme's tag gets a ticket of their own."""
    tid = open_ticket(services).ticket_id
    make_account(services, "mallory", "m@mallory.test")
    row = deliver(services, mail("m@mallory.test", f"Re: [#T-{tid}] Site down", "Close it please"))
    assert row.ticket_id != tid and row.rule == "new_ticket"
    assert len(ticket(services, tid).messages) == 1
    ack = outbound(services, "ticket_ack")[-1]
    assert ack.recipients == ["m@mallory.test"] and "Our site is down" not in body_text(ack)
    stranger = deliver(services, mail("nobody@else.test", f"Re: [#T-{tid}] Site down", "hi"))
    assert stranger.status == InboundStatus.waiting and stranger.ticket_id is None


def test_a_references_only_match_with_another_subject_starts_a_new_ticket(services, acme):
    tid = open_ticket(services).ticket_id
    [ack] = outbound(services, "ticket_ack")
    row = deliver(services, mail("dev@acme.test", "New question: invoices", "How do I pay?",
                                 references=parsed(ack)["Message-ID"]))
    assert row.ticket_id != tid and row.rule == "new_ticket"
    same_subject = deliver(services, mail("dev@acme.test", "Re: Site down", "Still down",
                                          references=parsed(ack)["Message-ID"]))
    assert same_subject.ticket_id == tid


def test_a_reply_reopens_a_recently_closed_ticket_and_an_old_one_gets_a_linked_new_ticket(services, acme, clock):
    tid = open_ticket(services).ticket_id
    services.run(ops.close, tid)
    clock.advance(days=2)
    row = deliver(services, mail("dev@acme.test", f"Re: [#T-{tid}] Site down", "It is down again"))
    assert row.ticket_id == tid and "reopened" in row.reason
    assert ticket(services, tid).status == TicketStatus.customer_reply
    services.run(ops.archive, tid)
    clock.advance(days=31)
    late = deliver(services, mail("dev@acme.test", f"Re: [#T-{tid}] Site down", "And again"))
    new = ticket(services, late.ticket_id)
    assert late.ticket_id != tid and new.previous_ticket_id == tid and new.status == TicketStatus.open
    assert ticket(services, tid).archived


def test_an_out_of_office_reply_is_stored_on_the_ticket_and_answered_by_nothing(services, acme):
    first = open_ticket(services)
    services.run(ops.reply, first.ticket_id, "Fixed.", actor="staff:U1")
    before = len(outbound(services))
    [ack] = outbound(services, "ticket_ack")
    row = reply_to_ack(services, ack, headers={"Auto-Submitted": "auto-replied"})
    t = ticket(services, first.ticket_id)
    assert row.classification == "auto_reply" and row.ticket_id == first.ticket_id
    assert t.messages[-1].kind == MessageKind.auto and t.status == TicketStatus.answered  # not reopened
    assert len(outbound(services)) == before                                              # nothing sent


def test_automatic_answers_stop_at_the_cap_and_staff_are_told(services, acme):
    """A loop that looks like a human (no auto headers) gets at most 10 acknowledgements in 10 minutes."""
    rows = [open_ticket(services, subject=f"Loop {n}") for n in range(12)]
    acks = outbound(services, "ticket_ack")
    assert len(acks) == 10 and all(len(r.recipients) == 2 for r in acks)
    capped = ticket(services, rows[10].ticket_id)
    assert any(m.kind == MessageKind.note and m.body.startswith("Automatic answers paused") for m in capped.messages)
    with services.db.transaction(readonly=True) as s:
        assert s.scalar(select(AuditEvent).where(AuditEvent.action == "auto_answer.capped")) is not None


def test_a_loop_past_the_cap_logs_one_warning_not_one_per_held_answer(services, acme, caplog):
    """Every held answer is audited, but the log says it once per window: a loop would otherwise
    write a warning for each of its messages."""
    services.settings = services.settings.replace(auto_answer_cap=2)
    with caplog.at_level("DEBUG", logger="renewdesk.tickets"):
        for n in range(6):
            open_ticket(services, subject=f"Loop {n}")
    held = [r for r in caplog.records if "held back" in r.getMessage()]
    assert len(held) == 8                                   # 4 tickets past the cap, each to dev@ and boss@
    assert [r.levelname for r in held].count("WARNING") == 1
    with services.db.transaction(readonly=True) as s:
        assert len(s.scalars(select(AuditEvent.id).where(AuditEvent.action == "auto_answer.capped")).all()) == 8


def test_a_contact_without_the_tickets_permission_is_told_what_they_may_do_and_whom_to_ask(services, acme):
    row = deliver(services, mail("books@acme.test", "Please fix DNS", "Can you change the MX?"))
    assert (row.status, row.rule, row.ticket_id) == (InboundStatus.done, "no_permission", None)
    [answer] = outbound(services, "ticket_permission")
    text = body_text(answer)
    assert answer.recipients == ["books@acme.test"]
    assert "see and pay invoices" in text and "boss@acme.test" in text and "tickets" in text
    deliver(services, mail("books@acme.test", "Again", "Hello?"))
    assert len(outbound(services, "ticket_permission")) == 1    # once a day


def test_unknown_senders_are_held_and_staff_attach_them_to_an_account(services, acme):
    row = deliver(services, mail("newbie@acme.test", "Hello", "I am the new admin."))
    assert (row.status, row.rule) == (InboundStatus.waiting, "unknown_sender") and "inbox attach" in row.reason
    assert outbound(services) == []
    from handlers import inbox
    from mail_ingest.process import process_batch
    services.run(inbox.attach, row.id, acme)
    process_batch(services)
    with services.db.transaction(readonly=True) as s:
        again = s.get(InboundMail, row.id)
        contact = s.scalar(select(Contact).where(Contact.email == "newbie@acme.test"))
        assert again.status == InboundStatus.done and again.ticket_id is not None
        assert contact.account_id == acme and contact.permissions == ["tickets"]


def test_unknown_senders_get_one_polite_answer_a_day_when_so_configured(services):
    services.settings = services.settings.replace(unknown_senders="answer")
    for _ in range(3):
        row = deliver(services, mail("stranger@else.test", "Prices?", "How much is a .test domain?"))
        assert row.status == InboundStatus.done
    [answer] = outbound(services, "unknown_sender")
    assert answer.recipients == ["stranger@else.test"] and "address we have on file" in body_text(answer)


def test_a_throttled_sender_still_gets_a_ticket_but_no_automatic_answer(services, acme):
    services.settings = services.settings.replace(sender_hourly_cap=2)
    rows = [deliver(services, mail("dev@acme.test", f"Flood {n}", "x"), envelope_from="dev@acme.test")
            for n in range(4)]
    assert all(r.ticket_id for r in rows) and [r.throttled for r in rows] == [False, False, True, True]
    assert len(outbound(services, "ticket_ack")) == 2


def test_dmarc_is_required_only_where_the_account_asks_and_only_from_a_trusted_server(services):
    services.settings = services.settings.replace(trusted_authserv_ids="mx.desk.example.test")
    make_account(services, "strict", "ceo@strict.test", require_dmarc=True)
    passing = {"Authentication-Results": "mx.desk.example.test; dkim=pass header.d=strict.test; dmarc=pass"}
    forged = {"Authentication-Results": "evil.test; dmarc=pass"}
    failing = {"Authentication-Results": "mx.desk.example.test; spf=fail; dmarc=fail (p=reject)"}
    ok = deliver(services, mail("ceo@strict.test", "Real", "hi", headers=passing))
    fake = deliver(services, mail("ceo@strict.test", "Fake", "hi", headers=forged))
    bad = deliver(services, mail("ceo@strict.test", "Bad", "hi", headers=failing))
    assert ok.ticket_id and ok.auth_results == {"authserv_id": "mx.desk.example.test", "dkim": "pass",
                                                "dmarc": "pass"}
    assert (fake.status, fake.rule, fake.auth_results) == (InboundStatus.waiting, "dmarc", None)
    assert bad.status == InboundStatus.waiting and "dmarc" in bad.reason.lower()


def test_a_contact_of_two_accounts_is_held_until_staff_choose(services):
    a = make_account(services, "one", "o@one.test", ("shared@dev.test", ["tickets"]))
    make_account(services, "two", "o@two.test", ("shared@dev.test", ["tickets"]))
    row = deliver(services, mail("shared@dev.test", "Which account?", "hi"))
    assert row.status == InboundStatus.waiting and "2 accounts" in row.reason
    from handlers import inbox
    from mail_ingest.process import process_batch
    services.run(inbox.attach, row.id, a)
    process_batch(services)
    with services.db.transaction(readonly=True) as s:
        t = s.get(Ticket, s.get(InboundMail, row.id).ticket_id)
        assert t.account_id == a


def test_attachments_are_kept_and_oversized_ones_recorded_as_dropped(services, acme):
    services.settings = services.settings.replace(max_attachment_bytes=1000)
    raw = ("From: dev@acme.test\r\nTo: support@desk.example.test\r\nSubject: Logs\r\nMessage-ID: <att@c>\r\n"
           "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\n"
           "Content-Type: text/plain\r\n\r\nSee attached.\r\n--B\r\nContent-Type: text/plain; name=small.txt\r\n"
           "Content-Disposition: attachment; filename=small.txt\r\n\r\nsmall log\r\n--B\r\n"
           "Content-Type: application/octet-stream; name=big.bin\r\nContent-Disposition: attachment; "
           f"filename=big.bin\r\nContent-Transfer-Encoding: base64\r\n\r\n{'QUFB' * 1000}\r\n--B--\r\n").encode()
    row = deliver(services, raw)
    with services.db.transaction(readonly=True) as s:
        msg = s.scalar(select(TicketMessage).where(TicketMessage.ticket_id == row.ticket_id))
        files = {a.filename: (a.content, a.dropped_reason is not None) for a in msg.attachments}
    assert files["small.txt"] == (b"small log", False)
    assert files["big.bin"][0] is None and files["big.bin"][1]


def test_a_renewal_address_auto_reply_changes_nothing(services, acme):
    to = "renew+abc@desk.example.test"
    row = deliver(services, mail("dev@acme.test", "Out of office", "away", to=to,
                                 headers={"Auto-Submitted": "auto-replied"}), to=to)
    assert row.status == InboundStatus.done and "no decision" in row.reason and outbound(services) == []


@pytest.mark.parametrize("with_a_file", [False, True], ids=["plain", "file"])
def test_a_message_failing_mid_batch_is_quarantined_and_its_neighbours_are_written_once(services, acme, with_a_file):
    """A batch runs without savepoints; when one message fails after writing (its ticket made),
    the batch is rolled back and run again message by message. The result is what savepoints
    alone would give: the messages before and after it have one ticket and one acknowledgement
    each, the failed one left nothing behind (not its waiting file either) and is quarantined
    with the reason."""
    import mail_ingest.process as process
    from handlers.inbox import Incoming, store_many
    real, calls = process.receive, []

    def fails_after_writing(tx, row, facts, **kw):
        outcome = real(tx, row, facts, **kw)
        calls.append(facts.subject)
        if facts.subject == "Second":
            raise RuntimeError("a bug after the ticket was made")
        return outcome
    monkey = pytest.MonkeyPatch()
    monkey.setattr(process, "receive", fails_after_writing)
    try:
        raws = [mail("dev@acme.test", s, f"About {s}.") for s in ("First", "Second", "Third")]
        if with_a_file:
            raws[1] = with_files("dev@acme.test", "Second", "About Second.", "second.log")
        stored = services.run(store_many, [Incoming(raw, "smtp", "c@client.test", ("support@desk.example.test",))
                                           for raw in raws])
        assert process.process_batch(services) == 3
    finally:
        monkey.undo()
    assert calls.count("First") == 2      # the batch did run twice: the failure rolled back "First" too
    with services.db.transaction(readonly=True) as s:
        rows = [s.get(InboundMail, st[0].id) for st in stored]
        assert [r.status for r in rows] == [InboundStatus.done, InboundStatus.quarantined, InboundStatus.done]
        assert "processing failed: RuntimeError: a bug after the ticket was made" in rows[1].reason
        assert sorted(s.scalars(select(Ticket.subject))) == ["First", "Third"]
        assert s.scalar(select(func.count()).select_from(Attachment)) == 0
    assert sorted(parsed(a)["Subject"].split("] ")[1] for a in outbound(services, "ticket_ack")) == ["First", "Third"]


def _one_batch(services, *raws):
    """Store ``raws`` together and process them as one batch; the rows afterwards, in order."""
    from handlers.inbox import Incoming, store_many
    from mail_ingest.process import process_batch
    stored = services.run(store_many, [Incoming(raw, "smtp", "c@client.test", ("support@desk.example.test",))
                                       for raw in raws])
    assert process_batch(services) == len(raws)
    with services.db.transaction(readonly=True) as s:
        rows = [s.get(InboundMail, st[0].id) for st in stored]
        s.expunge_all()
        return rows


def test_a_batch_writes_every_tickets_watchers_answers_and_audit_once_at_its_end(services, acme):
    """The rows a batch's messages add wait and go out together when the batch ends: every ticket
    of the batch has its two watchers, its two counted automatic answers and its audit events."""
    from handlers.models import AutoAnswer, TicketWatcher
    rows = _one_batch(services, *(mail("dev@acme.test", f"Batch {n}", "hello") for n in range(3)))
    ids = [r.ticket_id for r in rows]
    assert all(ids) and len(set(ids)) == 3
    with services.db.transaction(readonly=True) as s:
        for tid in ids:
            assert sorted(s.scalars(select(Contact.email).join(TicketWatcher, TicketWatcher.contact_id == Contact.id)
                                    .where(TicketWatcher.ticket_id == tid))) == ["boss@acme.test", "dev@acme.test"]
            assert sorted(s.scalars(select(AutoAnswer.recipient).where(AutoAnswer.ticket_id == tid))) == [
                "boss@acme.test", "dev@acme.test"]
            assert s.scalar(select(AuditEvent.id).where(AuditEvent.action == "ticket.open",
                                                        AuditEvent.subject_id == str(tid))) is not None
        # each acknowledgement waited too; its audit event names the outbox row that was written
        acks = dict(s.execute(select(OutboundMail.ticket_id, OutboundMail.id)
                              .where(OutboundMail.intent == "ticket_ack")).all())
        assert sorted(acks) == sorted(ids)
        queued = s.execute(select(AuditEvent.subject_type, AuditEvent.subject_id, AuditEvent.account_id,
                                  AuditEvent.detail).where(AuditEvent.action == "email.queue")).all()
        assert sorted(int(q.subject_id) for q in queued) == sorted(acks.values())
        assert {q.subject_type for q in queued} == {"outbound_mail"} and {q.account_id for q in queued} == {acme}
        assert all(q.detail == {"intent": "ticket_ack", "to": ["dev@acme.test", "boss@acme.test"]} for q in queued)


def test_a_batchs_new_tickets_take_the_next_ids_and_an_operation_aside_gets_its_own(services, acme):
    """On SQLite a batch holds the one write lock, so it numbers its new tickets itself, after the
    highest id, and writes them with its other rows. An operation that steps aside from the batch
    and makes a ticket of its own takes the next id; the batch's next ticket comes after it."""
    from handlers.tickets.batch import Batch
    first = open_ticket(services)
    rows = _one_batch(services, *(mail("dev@acme.test", f"Batch {n}", "hello") for n in range(3)))
    assert [r.ticket_id for r in rows] == [first.ticket_id + 1, first.ticket_id + 2, first.ticket_id + 3]
    values = {"account_id": acme, "subject": "x", "status": TicketStatus.open, "archived": False}

    def run(tx):
        batch = Batch(tx, [])
        waiting = batch.new_ticket({**values, "created_at": tx.now, "updated_at": tx.now})
        with batch.aside(answers_only=True):
            own = Ticket(**values, created_at=tx.now, updated_at=tx.now)
            tx.session.add(own)
            tx.session.flush()
        after = batch.new_ticket({**values, "created_at": tx.now, "updated_at": tx.now})
        batch.write_pending()
        return waiting, own.id, after
    assert services.run(run) == (first.ticket_id + 4, first.ticket_id + 5, first.ticket_id + 6)
    with services.db.transaction(readonly=True) as s:
        assert s.scalar(select(func.count()).select_from(Ticket)) == 7


def test_an_answer_outside_the_batch_counts_what_earlier_messages_of_the_batch_sent(services):
    """The permission answer counts automatic answers in the database itself. In one batch, the
    acknowledgement sent to an address by an earlier message must be counted there: with a cap of
    one, the later answer to the same address is held back, not sent as a second one."""
    services.settings = services.settings.replace(auto_answer_cap=1)
    make_account(services, "ex", "o@ex.test", ("shared@dev.test", ["tickets"]))
    make_account(services, "why", "o@why.test", ("shared@dev.test", ["billing"]))
    theirs = open_ticket(services, sender="o@why.test", subject="Invoice layout")
    new, reply = _one_batch(services, mail("shared@dev.test", "Site down", "It is down."),
                            mail("shared@dev.test", f"Re: {refs.subject_tag(theirs.ticket_id)} Invoice layout",
                                 "Can I see this one?"))
    assert new.rule == "new_ticket" and new.ticket_id
    assert reply.rule == "no_permission" and reply.ticket_id is None
    acks = [a for a in outbound(services, "ticket_ack") if "shared@dev.test" in a.recipients]
    assert len(acks) == 1
    assert outbound(services, "ticket_permission") == []       # the cap of one was reached by the ack


def with_files(sender: str, subject: str, body: str, *names: str) -> bytes:
    """A client message with a text attachment per name (the name is also its content)."""
    parts = "".join(f"--B\r\nContent-Type: text/plain; name={n}\r\nContent-Disposition: attachment; filename={n}"
                    f"\r\n\r\n{n}\r\n" for n in names)
    return (f"From: {sender}\r\nTo: support@desk.example.test\r\nSubject: {subject}\r\n"
            "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n"
            f"--B\r\nContent-Type: text/plain\r\n\r\n{body}\r\n{parts}--B--\r\n").encode()


def test_a_tickets_messages_keep_their_order_and_each_file_its_message_when_all_wait_for_the_batch_end(
        services, acme):
    """Client messages wait for the batch's end with their attachments, which find their message
    once it is written. Replies to one ticket in one batch (a file, none, two files) are shown in
    the order they came, each with its own files; a new ticket's file is on its first message."""
    first = open_ticket(services)
    tag = refs.subject_tag(first.ticket_id)
    a, b, c, new = _one_batch(services, with_files("dev@acme.test", f"Re: {tag} Site down", "One file.", "a.log"),
                              mail("dev@acme.test", f"Re: {tag} Site down", "No file."),
                              with_files("dev@acme.test", f"Re: {tag} Site down", "Two files.", "b.log", "c.png"),
                              with_files("dev@acme.test", "Invoice question", "See the scan.", "scan.pdf"))
    assert a.ticket_id == b.ticket_id == c.ticket_id == first.ticket_id != new.ticket_id
    t = ticket(services, first.ticket_id)
    assert [m.body for m in t.messages] == ["Our site is down since 8:00.", "One file.", "No file.", "Two files."]
    assert [sorted((f.filename, f.content) for f in m.attachments) for m in t.messages] == [
        [], [("a.log", b"a.log")], [], [("b.log", b"b.log"), ("c.png", b"c.png")]]
    assert [m.inbound_mail_id for m in t.messages[1:]] == [a.id, b.id, c.id]
    opened = ticket(services, new.ticket_id)
    assert [[f.filename for f in m.attachments] for m in opened.messages] == [["scan.pdf"]]
    assert t.status == TicketStatus.open and t.updated_at is not None


def test_a_message_with_files_that_cannot_wait_is_written_at_once_after_the_waiting_ones(services, acme):
    """Attachments find a waiting message by its inbound mail; a message that has none (or shares
    it with a waiting one) cannot wait. It is written at once, with its files, and after the
    message that was already waiting for the batch's end."""
    from handlers.mail_facts import FactAttachment, MailFacts
    from handlers.tickets.batch import Batch
    from handlers.tickets.intake import add_client_message
    first = open_ticket(services)

    def facts(inbound_id, text, files=()):
        return MailFacts(inbound_id=inbound_id, recipient="support@desk.example.test", sender="dev@acme.test",
                         sender_name="", subject="Re: Site down", message_id=None, in_reply_to=None, references=(),
                         text=text, reply_text=text, received_at=services.clock.now(),
                         attachments=tuple(FactAttachment(n, "text/plain", 3, b"log") for n in files))

    def run(tx):
        batch = Batch(tx, [])
        row = batch.ticket(first.ticket_id)
        assert add_client_message(tx, batch, row, facts(first.id, "Waits."), MessageKind.client) is None
        shared = add_client_message(tx, batch, row, facts(first.id, "Same inbound mail.", ["y.log"]),
                                    MessageKind.client)
        assert shared and batch.pending["ticket_message"] == []
        at_once = add_client_message(tx, batch, row, facts(None, "No inbound mail.", ["x.log"]), MessageKind.client)
        assert at_once > shared
        batch.write_pending()
    services.run(run)
    t = ticket(services, first.ticket_id)
    assert [(m.body, [f.filename for f in m.attachments]) for m in t.messages] == [
        ("Our site is down since 8:00.", []), ("Waits.", []), ("Same inbound mail.", ["y.log"]),
        ("No inbound mail.", ["x.log"])]


def test_the_cap_note_follows_the_client_message_that_tripped_it_in_one_batch(services, acme):
    """The note staff get when the cap trips is written at once; the client message before it, which
    waits for the batch's end, must still come first on the ticket."""
    services.settings = services.settings.replace(auto_answer_cap=1)
    first = open_ticket(services, subject="Loop 0")
    rows = _one_batch(services, *(mail("dev@acme.test", f"Loop {n}", f"Loop body {n}.") for n in (1, 2)))
    capped = ticket(services, rows[0].ticket_id)
    assert [m.kind for m in capped.messages] == [MessageKind.client, MessageKind.note]
    assert capped.messages[0].body == "Loop body 1." and first.ticket_id != capped.id
