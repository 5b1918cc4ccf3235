"""Hypothesis strategies for mail, shared by the fuzz tests: random MIME trees, broken headers,
encoded words, and real corpus mail with byte-level edits; and the example-count profiles.

Profiles: ``default`` (150 examples per test); ``fuzz`` (``HYPOTHESIS_PROFILE=fuzz``, ``make fuzz``)
10,000; ``RENEWDESK_FUZZ_EXAMPLES=N`` sets the count. ``DB_EXAMPLES`` (a fifth) is for tests that
cost a database round trip per example, ``SUBPROCESS_EXAMPLES`` (a five-hundredth, at least 3) for
those that start a process per example.
"""
from __future__ import annotations

import base64
import os
import quopri

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

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
                                                    "&nbsp;", "&#0;", "&#x110000;", "<!--", "-->", "<![CDATA[",
                                                    "<a href='", "'>", "<style>", "<table><tr><td>", "text", "\x00",
                                                    "begin 644 x\n", "M86)C\n", "`\nend\n", "> quoted\n", "-- \n",
                                                    "On Mon wrote:\n"]),
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

# a process per example (the pipe as an MTA runs it) costs one to two seconds: a small sample
SUBPROCESS_EXAMPLES = max(3, settings.default.max_examples // 500)
