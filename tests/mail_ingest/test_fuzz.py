"""Property tests: random bytes, random MIME structures and mutated real mail never break the pipeline.

What they prove, for every generated input:
- ``parse()`` returns (never raises) and never hides one of its own crashes as "unreadable"
  (its catch-all records an ``internal error`` defect: that is a bug, not bad mail);
- the text helpers (reply stripping, HTML to text) return a string;
- through the real store (``handlers.inbox.store_many``) and the real processor
  (``process_batch``) on SQLite and PostgreSQL: nothing raises, every stored row leaves ``new``,
  a quarantined row always says why, and none is quarantined by the processor's own catch-all
  (classification ``error``: a crash in a later step, not a judgement on the mail).

Profiles: ``default`` (150 examples) keeps the whole file under 20 s; ``fuzz``
(``HYPOTHESIS_PROFILE=fuzz``, ``make fuzz``, about 5 minutes) runs 10,000 examples per test;
``RENEWDESK_FUZZ_EXAMPLES=N`` sets the count. The store-and-process test, which costs a database
round trip per example, runs a fifth of that count (2,000 per database under ``fuzz``).
"""
from __future__ import annotations

import base64
import os
import quopri

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from handlers.inbox import Incoming, store_many
from handlers.models import InboundMail, InboundStatus
from mail_ingest.html_text import html_to_text
from mail_ingest.parse import parse
from mail_ingest.process import process_batch
from mail_ingest.strip import strip_html_reply, strip_reply
from tests.support.corpus import CORPUS

_COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                      HealthCheck.function_scoped_fixture])
settings.register_profile("default", max_examples=150, **_COMMON)
settings.register_profile("fuzz", max_examples=10_000, **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
_EXAMPLES = os.environ.get("RENEWDESK_FUZZ_EXAMPLES")
if _EXAMPLES:
    settings.register_profile("env", max_examples=int(_EXAMPLES), **_COMMON)
    settings.load_profile("env")
# the database round trip costs more per example: a fraction of the parse tests' count
DB_EXAMPLES = max(20, settings.default.max_examples // 5)

SKIP_NAMES = {"LICENSE", "MIT-LICENSE", "SOURCE.md", "expected.json", ".gitattributes"}
CORPUS_FILES = sorted(p for folder in ("ruby-mail", "sisimai-set-of-emails", "talon")
                      for p in (CORPUS / folder).rglob("*") if p.is_file() and p.name not in SKIP_NAMES
                      and p.stat().st_size < 200_000) if CORPUS.exists() else []
needs_corpus = pytest.mark.skipif(not CORPUS_FILES, reason=f"the mail corpus is not at {CORPUS} (set RENEWDESK_CORPUS)")

# --- strategies -------------------------------------------------------------------------------

CHARSETS = ["utf-8", "utf8", "us-ascii", "iso-8859-1", "windows-1252", "ks_c_5601-1987", "iso-2022-jp",
            "ISO-2022-JP-2", "x-unknown", "gb2312", "koi8-r", "utf-16", "utf-7", "bogus-8", "", "\"utf-8\""]
ENCODINGS = ["7bit", "8bit", "binary", "base64", "quoted-printable", "x-uuencode", "uuencode", "BASE64 ", "bogus"]
LEAF_TYPES = ["text/plain", "text/html", "text/enriched", "application/octet-stream", "application/ms-tnef",
              "image/png", "message/delivery-status", "message/rfc822", "text/rfc822-headers", "", "text"]
MULTI_TYPES = ["multipart/mixed", "multipart/alternative", "multipart/related", "multipart/report",
               "multipart/signed", "multipart/digest"]
HEADER_NAMES = ["From", "To", "Cc", "Reply-To", "Sender", "Return-Path", "Subject", "Date", "Message-ID",
                "In-Reply-To", "References", "Auto-Submitted", "Precedence", "X-Autoreply", "X-Loop",
                "List-Id", "List-Unsubscribe", "X-Auto-Response-Suppress", "X-Failed-Recipients",
                "Authentication-Results", "Content-Disposition", "X-Renewdesk-Loop", "Received"]

text_values = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=80)
tokens = st.text("abcdefghijklmnopqrstuvwxyz0123456789.-_+=/", min_size=0, max_size=20)


@st.composite
def encoded_words(draw) -> str:
    charset = draw(st.sampled_from(CHARSETS + ["*", "utf-8*en"]))
    raw = draw(st.binary(max_size=40))
    kind = draw(st.sampled_from("BbQqX"))
    payload = base64.b64encode(raw).decode() if kind in "Bb" else quopri.encodestring(raw, header=True).decode()
    if draw(st.booleans()):
        payload = payload[: draw(st.integers(0, len(payload)))]  # cut: bad padding, half an escape
    return f"=?{charset}?{kind}?{payload}?="


addresses = st.builds(lambda name, local, dom: f"{name} <{local}@{dom}>" if name else f"{local}@{dom}",
                      st.one_of(st.just(""), text_values, encoded_words()), tokens, tokens)
msg_ids = st.one_of(st.builds(lambda a, b: f"<{a}@{b}>", tokens, st.one_of(tokens, st.just("desk.example.test"))),
                    st.integers(990, 1100).map(lambda n: f"<{'i' * n}@example.test>"))  # around a line's length
header_values = st.one_of(text_values, encoded_words(), addresses, msg_ids,
                          st.lists(st.one_of(msg_ids, encoded_words(), tokens), max_size=4).map(" ".join),
                          st.binary(max_size=60).map(lambda b: b.decode("latin-1")))


def _content_type(kind: str, charset: str, extra: str) -> str:
    return f"{kind}; charset={charset}{extra}" if charset else f"{kind}{extra}"


@st.composite
def leaf_parts(draw) -> tuple[list[tuple[str, str]], bytes]:
    kind = draw(st.one_of(st.sampled_from(LEAF_TYPES), st.sampled_from(LEAF_TYPES).map(lambda t: t + "\x00"),
                          header_values))  # real types, and whatever a broken mailer writes there
    charset = draw(st.sampled_from(CHARSETS))
    cte = draw(st.sampled_from(ENCODINGS))
    body = draw(st.one_of(st.binary(max_size=300), text_values.map(lambda t: t.encode("utf-8")),
                          st.lists(st.sampled_from(["<p>", "</p>", "<br>", "<blockquote>", "</blockquote>", "<div>",
                                                    "&nbsp;", "&#0;", "&#x110000;", "<!--", "-->", "<![CDATA[", "<a href='",
                                                    "'>", "<style>", "<table><tr><td>", "text", "\x00", "begin 644 x\n",
                                                    "M86)C\n", "`\nend\n", "> quoted\n", "-- \n", "On Mon wrote:\n"]),
                                   max_size=30).map(lambda xs: "".join(xs).encode("utf-8"))))
    if cte.strip().lower() == "base64" and draw(st.booleans()):
        body = base64.encodebytes(body)
    elif cte == "quoted-printable" and draw(st.booleans()):
        body = quopri.encodestring(body)
    headers = [("Content-Type", _content_type(kind, charset, draw(st.sampled_from(
        ["", "; name=\"a.txt\"", "; name*=utf-8''%E2%9C%93.txt", "; name*0*=utf-8''a; name*1=b",
         "; report-type=delivery-status", "; format=flowed; delsp=yes", ";;;", "; name=\"unterminated"]))))]
    if draw(st.booleans()):
        headers.append(("Content-Transfer-Encoding", cte))
    if draw(st.booleans()):
        headers.append(("Content-Disposition", draw(st.sampled_from(
            ["attachment", "inline", "attachment; filename=\"x.dat\"", "attachment; filename*=''", "bogus;"]))))
    return headers, body


def _multipart(children) -> st.SearchStrategy:
    @st.composite
    def build(draw) -> tuple[list[tuple[str, str]], bytes]:
        kind = draw(st.sampled_from(MULTI_TYPES))
        boundary = draw(st.sampled_from(["b1", "=_x", "", "a b", "--", "b1\"", "very" * 30]))
        parts = draw(st.lists(children, max_size=4))
        out = b""
        for headers, body in parts:
            out += f"--{boundary}\n".encode() + _headers_bytes(headers) + b"\n" + body + b"\n"
        if draw(st.booleans()):  # the closing delimiter is often missing in broken mail
            out += f"--{boundary}--\n".encode()
        param = draw(st.sampled_from([f'; boundary="{boundary}"', f"; boundary={boundary}", ""]))
        return [("Content-Type", kind + param + draw(st.sampled_from(["", "; report-type=delivery-status"])))], out
    return build()


def _headers_bytes(headers: list[tuple[str, str]]) -> bytes:
    return b"".join(f"{name}: {value}\n".encode("utf-8", "surrogateescape") for name, value in headers)


mime_trees = st.recursive(leaf_parts(), _multipart, max_leaves=8)


@st.composite
def generated_messages(draw) -> bytes:
    top = draw(st.lists(st.tuples(st.one_of(st.sampled_from(HEADER_NAMES), tokens), header_values), max_size=10))
    content_headers, body = draw(mime_trees)
    head = _headers_bytes(top + content_headers)
    if draw(st.booleans()):
        head = b"MIME-Version: 1.0\n" + head
    raw = head + b"\n" + body
    return raw.replace(b"\n", b"\r\n") if draw(st.booleans()) else raw


@st.composite
def mutated_corpus(draw) -> bytes:
    """A real message with a few byte-level edits: cuts, insertions, flips, swaps, duplicated spans."""
    raw = bytearray(draw(st.sampled_from(CORPUS_FILES)).read_bytes())
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["truncate", "insert", "flip", "delete", "duplicate", "replace"]))
        at = draw(st.integers(0, len(raw)))
        if op == "truncate":
            del raw[at:]
        elif op == "insert":
            raw[at:at] = draw(st.one_of(st.binary(max_size=20), st.sampled_from(
                [b"\x00", b"\r", b"\n\n", b"--", b"=?utf-8?B?", b"Content-Type: multipart/mixed; boundary=x\n",
                 b"Content-Transfer-Encoding: base64\n", b"charset=ks_c_5601-1987", b"begin 644 f\n"]).map(bytes)))
        elif op == "flip" and at < len(raw):
            raw[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "delete":
            del raw[at:at + draw(st.integers(1, 200))]
        elif op == "duplicate":
            raw[at:at] = raw[at:at + draw(st.integers(1, 400))]
        elif op == "replace":
            for old, new in ((b"utf-8", b"x-unknown"), (b"base64", b"quoted-printable"), (b"7bit", b"base64"),
                             (b"text/plain", b"text/html"), (b"multipart", b"multiparts")):
                if old in raw and draw(st.booleans()):
                    raw = bytearray(bytes(raw).replace(old, new, 1))
    return bytes(raw)


any_message = st.one_of(st.binary(min_size=1, max_size=2000), generated_messages(),
                        *([mutated_corpus()] if CORPUS_FILES else []))

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
