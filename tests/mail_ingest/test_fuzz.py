"""Property tests: random bytes, random MIME structures and mutated real mail never break the pipeline.

What they prove, for every generated input:
- ``parse()`` returns (never raises) and never hides one of its own crashes as "unreadable"
  (its catch-all records an ``internal error`` defect: that is a bug, not bad mail);
- the text helpers (reply stripping, HTML to text) return a string;
- through the real store (``handlers.inbox.store_many``) and the real processor
  (``process_batch``) on SQLite and PostgreSQL: nothing raises, every stored row leaves ``new``,
  a quarantined row always says why, and none is quarantined by the processor's own catch-all
  (classification ``error``: a crash in a later step, not a judgement on the mail).

The strategies and the profiles are in :mod:`tests.support.mail_fuzz`: ``default`` (150 examples)
keeps the whole file under 20 s; ``fuzz`` (``HYPOTHESIS_PROFILE=fuzz``, ``make fuzz``) runs 10,000
examples per test; ``RENEWDESK_FUZZ_EXAMPLES=N`` sets the count. The store-and-process test, which
costs a database round trip per example, runs a fifth of that count (2,000 per database under
``fuzz``). The doors (pipe, SMTP) are fuzzed in ``test_fuzz_doors.py``.
"""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from handlers.inbox import Incoming, store_many
from handlers.models import InboundMail, InboundStatus
from mail_ingest.html_text import html_to_text
from mail_ingest.parse import parse
from mail_ingest.process import process_batch
from mail_ingest.strip import strip_html_reply, strip_reply
from tests.support.mail_fuzz import (DB_EXAMPLES, addresses, any_message, generated_messages, leaf_parts,
                                     mutated_corpus, needs_corpus, text_values)

# --- properties -------------------------------------------------------------------------------


def check_parse(raw: bytes) -> None:
    mail = parse(raw)
    assert not [d for d in mail.defects if d.startswith("internal error")], (mail.unreadable_reason, raw[:300])
    fits_the_database(mail)


def fits_the_database(mail) -> None:  # noqa: ANN001
    """What a ticket stores from a message fits its columns: no NUL (PostgreSQL refuses it in text),
    ids within a header line (998), attachment names and types within 255, and valid UTF-8."""
    for value in (mail.text, mail.subject, mail.from_addr or "", mail.from_name or "", mail.html or ""):
        assert isinstance(value, str) and "\x00" not in value
        value.encode("utf-8")
    for value in [mail.message_id or "", mail.in_reply_to or "", *mail.references]:
        assert len(value) <= 998 and "\x00" not in value
    for att in mail.attachments:
        assert len(att.content_type) <= 255 and not any(c < " " for c in att.content_type), att.content_type
        assert att.filename is None or (len(att.filename) <= 255 and "\x00" not in att.filename)
    for inner in mail.forwarded:
        fits_the_database(inner)


@given(st.binary(max_size=4000))
def test_parse_never_raises_on_random_bytes(raw):
    check_parse(raw)


@given(generated_messages())
def test_parse_never_raises_on_random_mime_structures(raw):
    check_parse(raw)


@needs_corpus
@given(mutated_corpus())
def test_parse_never_raises_on_mutated_real_mail(raw):
    check_parse(raw)


@given(st.one_of(text_values, st.binary(max_size=500).map(lambda b: b.decode("utf-8", "replace")),
                 leaf_parts().map(lambda p: p[1].decode("utf-8", "replace"))))
def test_reply_stripping_and_html_to_text_return_text(text):
    assert isinstance(strip_reply(text), str)
    assert isinstance(strip_reply(text, keep_signature=True), str)
    assert isinstance(strip_html_reply(text), str)
    assert isinstance(html_to_text(text), str)


@settings(max_examples=DB_EXAMPLES)
@given(batch=st.lists(any_message.filter(bool), min_size=1, max_size=4),  # the doors refuse empty input
       sender=st.one_of(st.just(""), st.just("<>"), addresses.map(lambda a: a.split("<")[-1].rstrip(">"))))
def test_every_stored_message_is_settled_with_a_reason(services, batch, sender):
    stored = services.run(store_many, [Incoming(raw, "smtp", sender, ("support@desk.example.test",)) for raw in batch])
    ids = {s.id for per_message in stored for s in per_message}
    while process_batch(services, limit=10):
        pass
    with services.db.transaction(readonly=True) as s:
        rows = list(s.scalars(select(InboundMail).where(InboundMail.id.in_(ids))))
    assert len(rows) == len(ids)
    for row in rows:
        assert row.status != InboundStatus.new, row.id
        if row.status == InboundStatus.quarantined:
            assert row.reason and row.reason.strip()
        assert row.classification != "error", (row.reason, row.raw[:300])


# --- what the properties found, kept as plain regressions ---------------------------------------


def _with_attachment(content_type: bytes) -> bytes:
    return (b"From: a@example.test\r\nSubject: s\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
            b"--b\r\nContent-Type: " + content_type + b"; name=x.bin\r\nContent-Disposition: attachment\r\n\r\n"
            b"data\r\n--b--\r\n")


@pytest.mark.parametrize("content_type", [b"appli\x00cation/pdf", b"application/pd\x01f", b"image/p ng",
                                          b"application/" + b"x" * 300, b"t\xc3\xa9xt/plain"])
def test_an_attachment_type_that_is_not_a_mime_type_reads_as_text_plain(content_type):
    """A mutated real message gave an attachment a content type with a NUL byte in it; stored on
    a ticket, that cannot be written to PostgreSQL (nor can one over the 255 characters of the
    column). Like the standard library for a type without one "/", such a type is text/plain
    (RFC 2045 5.2: a syntactically invalid Content-Type defaults to text/plain)."""
    mail = parse(_with_attachment(content_type))
    assert [a.content_type for a in mail.attachments] == ["text/plain"]
    assert mail.attachments[0].content == b"data"


def test_a_well_formed_attachment_type_is_kept_lower_case():
    """The check above does not touch real types, vendor trees and suffixes included."""
    for given_type, kept in ((b"Application/PDF", "application/pdf"),
                             (b"application/vnd.openxmlformats-officedocument.wordprocessingml.document",
                              "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
                             (b"image/svg+xml", "image/svg+xml")):
        assert [a.content_type for a in parse(_with_attachment(given_type)).attachments] == [kept]


def test_a_message_id_longer_than_a_header_line_is_not_taken():
    """A Message-ID, In-Reply-To or References id longer than the 998 characters of an RFC 5322
    line is no id anyone sent us; kept, it would not fit the ticket message's Message-ID column
    (998) and storing the ticket would fail on PostgreSQL. Ids of ordinary length still count."""
    huge = b"<" + b"x" * 3000 + b"@example.test>"
    mail = parse(b"From: a@example.test\r\nMessage-ID: " + huge + b"\r\nIn-Reply-To: " + huge +
                 b"\r\nReferences: <ok@example.test> " + huge + b"\r\n\r\nbody\r\n")
    assert mail.references == ["<ok@example.test>"]
    for value in (mail.message_id, mail.in_reply_to):
        assert value is None or len(value) <= 998
    normal = parse(b"From: a@example.test\r\nMessage-ID: <" + b"y" * 900 + b"@example.test>\r\n\r\nbody\r\n")
    assert normal.message_id == "<" + "y" * 900 + "@example.test>"
