"""The inbound store's operations: one row per message and recipient, derived ids, flood control, retry."""
import pytest
from sqlalchemy import select

from handlers import inbox
from handlers.errors import Conflict, InvalidInput, NotFound
from handlers.models import InboundMail, InboundStatus
from mail_ingest.process import process_batch

RAW = b"From: a@x.test\r\nSubject: Hello\r\nMessage-ID: <one@x.test>\r\n\r\nbody\r\n"


def store(services, raw=RAW, recipients=("support@desk.example.test",), sender="a@x.test", door="smtp"):
    return services.run(inbox.store_many, [inbox.Incoming(raw, door, sender, tuple(recipients))])[0]


def test_same_message_through_two_doors_is_one_row(services):
    """An SMTP delivery and an IMAP copy of the same message for the same address are one row."""
    first = store(services)
    again = store(services, door="imap")
    assert first[0].id == again[0].id and again[0].duplicate and not first[0].duplicate


def test_same_message_id_with_different_content_is_kept(services):
    """A reused Message-ID with other bytes is another message: both are kept."""
    a = store(services)
    b = store(services, raw=RAW.replace(b"body", b"other body"))
    assert a[0].id != b[0].id


def test_missing_message_id_is_derived_from_content(services):
    raw = b"From: a@x.test\r\nSubject: no id\r\n\r\nbody\r\n"
    [s] = store(services, raw=raw)
    [again] = store(services, raw=raw)
    with services.db.transaction(readonly=True) as session:
        row = session.get(InboundMail, s.id)
    assert row.message_id == f"<{inbox.digest(raw)[:40]}@derived.renewdesk.invalid>" and again.duplicate


def test_unparseable_headers_are_still_stored(services):
    """Garbage is kept (to be quarantined by processing), never refused at the door."""
    raw = b"\x00\xff\xfe not a header at all\r\n\r\n\x00"
    [s] = store(services, raw=raw)
    assert not s.duplicate


def test_empty_message_is_refused(services):
    with pytest.raises(InvalidInput):
        store(services, raw=b"")


def _throttled(services):
    with services.db.transaction(readonly=True) as s:
        return [r.throttled for r in s.scalars(select(InboundMail).order_by(InboundMail.id))]


def test_flood_cap_counts_distinct_messages_in_the_last_hour(services, clock):
    """The cap counts a sender's other messages in the hour before each one; older mail no longer counts."""
    services.settings = services.settings.replace(sender_hourly_cap=2)
    for n in range(3):
        store(services, raw=RAW.replace(b"<one@", f"<{n}@".encode()))
    # one message to two of our addresses is one message, not two
    store(services, raw=RAW.replace(b"<one@", b"<dual@"), recipients=("a@desk.example.test", "b@desk.example.test"))
    clock.advance(hours=1, seconds=1)
    store(services, raw=RAW.replace(b"<one@", b"<late@"))
    process_batch(services)
    assert _throttled(services) == [False, False, True, True, True, False]


def test_flood_judgement_does_not_depend_on_processing_order(services):
    """Processing later (or in several batches) gives the same verdicts as processing at once."""
    services.settings = services.settings.replace(sender_hourly_cap=1)
    for n in range(3):
        store(services, raw=RAW.replace(b"<one@", f"<{n}@".encode()))
    for _ in range(3):
        process_batch(services, limit=1)
    assert _throttled(services) == [False, True, True]


def test_flood_statement_is_padded_to_few_shapes_and_its_padding_counts_nothing(services, monkeypatch):
    """A batch of 13 is judged with the 16-row statement (so SQLAlchemy compiles one per
    FLOOD_ROWS_STEP sizes, not one per batch size), and the 3 padding rows change no verdict."""
    from mail_ingest import process
    sizes = []
    built = process._flood_statement
    monkeypatch.setattr(process, "_flood_statement", lambda size: sizes.append(size) or built(size))
    services.settings = services.settings.replace(sender_hourly_cap=5)
    for n in range(11):
        store(services, raw=RAW.replace(b"<one@", f"<{n}@".encode()))
    for n in range(2):
        store(services, raw=RAW.replace(b"<one@", f"<b{n}@".encode()).replace(b"a@x.test", b"b@x.test"),
              sender="b@x.test")
    assert process_batch(services) == 13
    assert sizes == [16] and process.FLOOD_ROWS_STEP == 8
    assert _throttled(services) == [False] * 5 + [True] * 6 + [False, False]


def test_mail_stored_while_a_batch_is_parsed_is_parsed_before_the_write_transaction(services, monkeypatch):
    """A door stores a message while the processor parses its batch: the processor reads the new
    row too before it opens the batch's write transaction (where the doors would wait on it),
    and the batch takes both."""
    from mail_ingest import process
    events = []
    read, take = process._read, process._take

    def reading(settings, row):
        events.append(("read", row.id))
        if len(events) == 1:
            events.append(("stored", store(services, raw=RAW.replace(b"<one@", b"<later@"))[0].id))
        return read(settings, row)

    def taking(tx, *args, **kwargs):
        events.append(("write transaction", None))
        return take(tx, *args, **kwargs)
    monkeypatch.setattr(process, "_read", reading)
    monkeypatch.setattr(process, "_take", taking)
    [first] = store(services)
    assert process_batch(services) == 2
    later = events[1][1]
    assert events == [("read", first.id), ("stored", later), ("read", later), ("write transaction", None)]


def test_recipient_check(settings):
    s = settings.replace(mail_aliases="help.test")
    assert inbox.is_ours(s, "Support@Desk.Example.Test") and inbox.is_ours(s, "<renew+tok@desk.example.test>")
    assert inbox.is_ours(s, "x@help.test")
    assert not inbox.is_ours(s, "x@evil.test") and not inbox.is_ours(s, "@desk.example.test")
    assert not inbox.is_ours(s, "x@desk.example.test@evil.test")


def test_processor_takes_each_message_exactly_once(services):
    """Batches never take a message twice; mail from an unknown address is held for staff."""
    ids = [store(services, raw=RAW.replace(b"<one@", f"<{n}@".encode()))[0].id for n in range(3)]
    assert process_batch(services, limit=2) == 2
    assert process_batch(services) == 1
    assert process_batch(services) == 0
    with services.db.transaction(readonly=True) as s:
        got = {r.id: (r.status, r.rule, r.attempts) for r in s.scalars(select(InboundMail))}
        reasons = [r.reason for r in s.scalars(select(InboundMail))]
    assert got == {i: (InboundStatus.waiting, "unknown_sender", 1) for i in ids}
    assert all("a@x.test is not a contact of any account" in r for r in reasons)


def test_listing_show_and_retry(services):
    [s] = store(services)
    with services.db.transaction() as session:
        session.get(InboundMail, s.id).status = InboundStatus.quarantined
        session.get(InboundMail, s.id).reason = "no text part"
    listed = services.run(inbox.listing, quarantined=True, readonly=True)
    assert [(r["id"], r["subject"], r["reason"]) for r in listed] == [(s.id, "Hello", "no text part")]
    shown = services.run(inbox.show, s.id, readonly=True)
    assert shown["headers"].startswith("From: a@x.test") and shown["size"] == len(RAW)
    assert services.run(inbox.retry, None) == [s.id]
    assert services.run(inbox.listing, quarantined=True, readonly=True) == []
    with pytest.raises(Conflict):
        services.run(inbox.retry, s.id)
    with pytest.raises(NotFound):
        services.run(inbox.show, 999)


def test_unreadable_mail_is_quarantined_with_its_reason_and_can_be_retried(services):
    """Promise 2: what cannot be read is kept, shown with why, and can be processed again."""
    [blank] = store(services, raw=b" \r\n \r\n")
    [fine] = store(services)
    process_batch(services)
    with services.db.transaction(readonly=True) as s:
        rows = {r.id: r for r in s.scalars(select(InboundMail))}
    assert (rows[blank.id].status, rows[blank.id].classification) == (InboundStatus.quarantined, "unreadable")
    assert rows[blank.id].reason and rows[blank.id].raw == b" \r\n \r\n"
    assert rows[fine.id].status == InboundStatus.waiting
    listed = services.run(inbox.listing, quarantined=True, readonly=True)
    assert [(r["id"], r["reason"]) for r in listed] == [(blank.id, rows[blank.id].reason)]
    assert services.run(inbox.retry, None) == [blank.id]


def test_processing_records_the_verdict_and_finishes_our_own_mail(services):
    """Our own mail coming back is done with no action; a bounce is done (its action is tested
    with the bounce tests); unknown mail is held."""
    own = RAW.replace(b"<one@x.test>", b"<rd.1@desk.example.test>")
    bounce = (b"From: MAILER-DAEMON@mx.example.test\r\nTo: bounces@desk.example.test\r\nMessage-ID: <b1@mx>\r\n"
              b"Subject: Undelivered Mail Returned to Sender\r\nContent-Type: multipart/report; "
              b"report-type=delivery-status; boundary=XX\r\n\r\n--XX\r\nContent-Type: text/plain\r\n\r\n"
              b"Delivery failed.\r\n--XX\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx\r\n\r\n"
              b"Final-Recipient: rfc822; gone@acme.test\r\nAction: failed\r\nStatus: 5.1.1\r\n--XX--\r\n")
    ids = [store(services, raw=raw, sender=sender)[0].id
           for raw, sender in ((own, "bounces@desk.example.test"), (bounce, ""), (RAW, "a@x.test"))]
    process_batch(services)
    with services.db.transaction(readonly=True) as s:
        got = [(r.status, r.classification) for r in (s.get(InboundMail, i) for i in ids)]
    assert got == [(InboundStatus.done, "own"), (InboundStatus.done, "bounce"),
                   (InboundStatus.waiting, "unclassified")]


def test_a_message_whose_processing_fails_is_quarantined_not_retried_forever(services, monkeypatch):
    """A bug on one message quarantines that message with the reason; the others go on."""
    import mail_ingest.process as process
    real = process.classify

    def picky(mail, envelope, settings):
        if "boom" in mail.subject:
            raise RuntimeError("a bug")
        return real(mail, envelope, settings)
    monkeypatch.setattr(process, "classify", picky)
    [bad] = store(services, raw=RAW.replace(b"Hello", b"boom"))
    [good] = store(services, raw=RAW.replace(b"<one@", b"<two@"))
    process_batch(services)
    with services.db.transaction(readonly=True) as s:
        assert s.get(InboundMail, bad.id).status == InboundStatus.quarantined
        assert "processing failed: RuntimeError: a bug" in s.get(InboundMail, bad.id).reason
        assert s.get(InboundMail, good.id).status == InboundStatus.waiting


def test_the_doors_sqlite_insert_stores_what_sqlalchemys_own_insert_stores(services, clock):
    """On SQLite the doors send their own multi-row INSERT (on PostgreSQL, SQLAlchemy's): every
    column it writes holds exactly what SQLAlchemy's insert of the same values holds (times, the
    status by name, booleans), and a batch bigger than one statement's parameter budget is
    stored whole."""
    from sqlalchemy import insert, text
    mine = store(services, recipients=("support@desk.example.test", "billing@desk.example.test"))
    with services.db.core_transaction() as conn:
        theirs = conn.execute(insert(InboundMail.__table__).returning(InboundMail.__table__.c.id), [{
            "received_at": clock.now(), "door": "smtp", "peer": "", "mail_from": "a@x.test",
            "recipient": "other@desk.example.test", "message_id": "<one@x.test>", "digest": inbox.digest(RAW),
            "size": len(RAW), "raw": RAW, "status": InboundStatus.new, "throttled": False, "attempts": 0}]).scalar()
        columns = ", ".join(c for c in inbox._COLUMNS if c != "recipient")
        a, b = (conn.execute(text(f"SELECT {columns} FROM inbound_mail WHERE id = :i"), {"i": i}).one()
                for i in (mine[0].id, theirs))
    assert tuple(a) == tuple(b)
    many = [inbox.Incoming(RAW.replace(b"one@", f"m{n}@".encode()), "smtp", "a@x.test", ("support@desk.example.test",))
            for n in range(inbox._ROWS_PER_INSERT + 7)]
    with services.db.core_transaction() as conn:
        stored = inbox.insert_many(conn, many, clock.now())
    assert len({s[0].id for s in stored}) == len(many) and not any(s[0].duplicate for s in stored)


@pytest.mark.parametrize("raw, expected", [
    (b"Message-ID: <a@x.test>\r\n\r\nbody", "<a@x.test>"),
    (b"Subject: s\nmessage-id:<b@x.test>\n\nbody", "<b@x.test>"),                      # any case, LF only
    (b"X-Message-ID: <no@x.test>\r\nMessage-Id:\r\n <folded@x.test>\r\n\r\n", "<folded@x.test>"),
    (b"Subject: message-id: <no@x.test>\r\nMessage-ID: <c@x.test>\r\n\r\n", "<c@x.test>"),
    (b"Message-ID: <first@x.test>\r\nMessage-ID: <second@x.test>\r\n\r\n", "<first@x.test>"),
    (b"Subject: s\r\n\r\nMessage-ID: <in-the-body@x.test>\r\n", None),               # not a header
    (b"From: a@x.test\r\nSubject: none\r\n\r\n", None),
    (b"X: " + b"a" * 70000 + b"\r\nMessage-ID: <past-64k@x.test>\r\n\r\n", None),    # only the first 64 KiB
])
def test_message_id_comes_from_the_header_block_only(raw, expected):
    """The first Message-ID field of the header block, folded lines joined, any case; none in the
    block (or only in the body, or past 64 KiB) gives one derived from the content."""
    derived = f"<{inbox.digest(raw)[:40]}@derived.renewdesk.invalid>"
    assert inbox.message_id_of(raw, inbox.digest(raw)) == (expected or derived)
