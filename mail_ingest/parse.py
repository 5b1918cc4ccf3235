"""Raw message bytes to a :class:`ParsedMail`: decoded headers, the best plain text, attachments.

:func:`parse` never raises. What it had to work around is listed in ``ParsedMail.defects``;
only an input with nothing in it to read (no header field and no body) gets an
``unreadable_reason``, so the processor can quarantine it with that reason.

The stdlib parser runs once with the compat32 policy (the most forgiving one, and the fastest),
with multipart boundaries matched by :mod:`mail_ingest.boundary` rather than a regex compiled per
message; charsets, transfer encodings and RFC 2047/2231 are decoded here (parse_charset, parse_cte,
parse_parts), so that mislabelled and malformed mail still reads as text rather than mojibake.
"""
from __future__ import annotations

import datetime as dt
import email
import email.parser
import re
from dataclasses import dataclass, field
from email.message import Message
from email.policy import compat32
from email.utils import getaddresses, parsedate_tz
from typing import Iterator

from mail_ingest import boundary
from mail_ingest.parse_charset import decode_words, header_str
from mail_ingest.parse_cte import clean_text, stored_payload
from mail_ingest.parse_parts import Attachment, Budget, Walker, charset_of

__all__ = ["Attachment", "Headers", "ParsedMail", "parse"]

boundary.install()

MAX_ATTACHMENT_BYTES = 10 * 1024 * 1024
MAX_TOTAL_ATTACHMENTS = 25 * 1024 * 1024

_HEADER_END = re.compile(rb"\r?\n\r?\n")
_OBS_COLON = re.compile(rb"^([!-9;-~]+)[ \t]+:", re.MULTILINE)
# an id is at most a header line (998 characters, RFC 5322 2.1.1): the ticket's Message-ID column
_MSG_ID = re.compile(r"<[^<>\s]{1,996}>")
_ADDRESS = re.compile(r"[^\s<>\"'(),;:\[\]]+@[^\s<>\"'(),;:\[\]]+")
_MAILBOX = re.compile(r"[^@\s<>\",;]+@[^@\s<>\",;]+")
_ADDR_SPEC = r"[^<>\s@,;:\"()\[\]\\]+@[^<>\s@,;:\"()\[\]\\]+"
# Name <addr>, "Quoted, Name" <addr>, or a bare addr: RFC 5322 3.4 name-addr / addr-spec, common cases
_SIMPLE_ADDRESS = re.compile(
    rf"\s*(?:([^\"<>,;:()\\@]*?)\s*<({_ADDR_SPEC})>|\"((?:[^\"\\]|\\.)*)\"\s*<({_ADDR_SPEC})>|({_ADDR_SPEC}))\s*")
_SPACES = re.compile(r"\s*[\r\n]+\s*|\t")


class Headers:
    """The header fields in order, looked up case-insensitively.

    Values are raw (RFC 2047 words not decoded) but unfolded and as text: a raw 8-bit value is
    decoded like a body without a charset. :meth:`get_decoded` also decodes the encoded-words.
    """

    __slots__ = ("_items", "_index")

    def __init__(self, items: list[tuple[str, str]]) -> None:
        self._items = tuple(items)
        index: dict[str, list[str]] = {}
        for name, value in self._items:
            index.setdefault(name.lower(), []).append(value)
        self._index = index

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first field of that name, or ``default``."""
        values = self._index.get(name.lower())
        return values[0] if values else default

    def get_all(self, name: str) -> list[str]:
        """Every field of that name, in order (empty list when there is none)."""
        return list(self._index.get(name.lower(), ()))

    def get_decoded(self, name: str, default: str | None = None) -> str | None:
        """The first field of that name with its RFC 2047 encoded-words decoded."""
        value = self.get(name)
        return default if value is None else decode_words(value)

    def items(self) -> list[tuple[str, str]]:
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._index

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Headers({len(self._items)} fields)"


@dataclass(frozen=True)
class ParsedMail:
    """One message as the classifier sees it. Addresses are as written (not lower-cased)."""

    message_id: str | None = None          # "<id@host>" with its brackets, as stored on the inbox row
    in_reply_to: str | None = None
    references: list[str] = field(default_factory=list)
    subject: str = ""
    from_addr: str | None = None
    from_name: str | None = None
    reply_to: str | None = None
    to: list[str] = field(default_factory=list)
    cc: list[str] = field(default_factory=list)
    date: dt.datetime | None = None
    headers: Headers = field(default_factory=lambda: Headers([]))
    text: str = ""
    html: str | None = None
    attachments: list[Attachment] = field(default_factory=list)
    forwarded: list["ParsedMail"] = field(default_factory=list)
    content_type: str = "text/plain"
    is_multipart_report: bool = False
    report_type: str | None = None
    defects: list[str] = field(default_factory=list)
    unreadable_reason: str | None = None


def parse(raw: bytes, *, max_attachment_bytes: int = MAX_ATTACHMENT_BYTES,
          max_total_attachments: int = MAX_TOTAL_ATTACHMENTS) -> ParsedMail:
    """Parse one message from its raw bytes; never raises (see the module docstring)."""
    if isinstance(raw, (bytearray, memoryview)):
        raw = bytes(raw)
    elif isinstance(raw, str):  # a caller's mistake; the bytes are what the door stored
        raw = raw.encode("utf-8", "surrogateescape")
    elif not isinstance(raw, bytes):
        return ParsedMail(unreadable_reason=f"not a message: {type(raw).__name__}")
    if not raw.strip():
        return ParsedMail(unreadable_reason="empty message" if not raw else "message is only whitespace")
    budget = Budget(max_attachment_bytes, max_total_attachments)
    early: list[str] = []
    raw = _obsolete_names(raw, early)
    try:
        msg = email.message_from_bytes(raw, policy=compat32)
    except Exception as exc:  # RecursionError on absurd nesting, or a parser bug: keep headers + raw body
        early.append(f"MIME structure unreadable ({type(exc).__name__}); body kept as text")
        try:
            msg = email.parser.BytesParser(policy=compat32).parsebytes(raw, headersonly=True)
        except Exception as exc2:
            return ParsedMail(unreadable_reason=f"parser error: {type(exc2).__name__}: {exc2}"[:300],
                              text=clean_text(raw.decode("utf-8", "replace")), defects=early)
    try:
        return _build(msg, budget, 0, early)
    except Exception as exc:  # our own bug: quarantine with the reason rather than half-understand it
        return ParsedMail(unreadable_reason=f"parser error: {type(exc).__name__}: {exc}"[:300],
                          text=clean_text(raw.decode("utf-8", "replace")),
                          defects=early + [f"internal error: {type(exc).__name__}"])


def _obsolete_names(raw: bytes, defects: list[str]) -> bytes:
    """``Subject   : x`` (RFC 5322 4.5.3 obs-optional: space before the colon) becomes ``Subject: x``.

    The stdlib parser would otherwise end the header block at the first such field.
    """
    end = _HEADER_END.search(raw, 0, 1 << 20)
    stop = end.start() if end else len(raw)
    if _OBS_COLON.search(raw, 0, stop) is None:
        return raw
    defects.append("obsolete header syntax (space before the colon) normalised")
    return _OBS_COLON.sub(rb"\1:", raw[:stop]) + raw[stop:]


class _Hints:
    """The charsets a message declares anywhere, computed only when some bytes need a guess."""

    def __init__(self, msg: Message) -> None:
        self._msg = msg
        self._found: list[str] | None = None

    def __iter__(self) -> Iterator[str]:
        if self._found is None:
            found: list[str] = []
            stack, seen = [self._msg], 0
            while stack and seen < 200:
                part, seen = stack.pop(), seen + 1
                charset = charset_of(part)
                if charset and charset not in found and charset not in ("us-ascii", "utf-8"):
                    found.append(charset)
                payload = stored_payload(part)
                if isinstance(payload, list):
                    stack.extend(reversed([p for p in payload if isinstance(p, Message)]))
            self._found = found
        return iter(self._found)


def _build(msg: Message, budget: Budget, depth: int, early: list[str] | None = None) -> ParsedMail:
    defects: list[str] = list(early or ())
    hints = _Hints(msg)
    headers = Headers([(str(name), header_str(value, hints, defects)) for name, value in msg.raw_items()])

    def words(value: str | None) -> str:
        return _one_line(decode_words(value, hints, defects)) if value else ""

    senders = _addresses(headers.get_all("from"), words, defects)
    if len(headers.get_all("from")) > 1 or len(senders) > 1:
        defects.append("more than one From address: the first is the sender")
    from_name, from_addr = senders[0] if senders else (None, None)
    if from_addr is None and "from" in headers:
        if (headers.get("from") or "").strip().endswith("<>"):
            defects.append("From is the null sender <>")
        else:
            defects.append("From header without a readable address")
    reply_to = _mailboxes(headers.get_all("reply-to"), words, defects)

    walker = Walker(budget, hints, defects, lambda sub, d: _build(sub, budget, d), depth)
    segments = walker.walk(msg)
    text = _text(segments, defects)
    ctype = walker.top_ctype or "text/plain"
    report_type = None
    if ctype == "multipart/report":
        try:
            report_type = (msg.get_param("report-type") or None)
            report_type = str(report_type).strip().lower() if report_type else None
        except Exception:
            report_type = None
    unreadable = None
    if not len(headers) and not text.strip() and not walker.attachments and not walker.forwarded:
        unreadable = "no header fields and no body"
    return ParsedMail(
        message_id=_first_id(headers.get("message-id")),
        in_reply_to=_first_id(headers.get("in-reply-to")),
        references=_ids(" ".join(headers.get_all("references"))),
        subject=words(headers.get("subject")),
        from_addr=from_addr or None, from_name=from_name or None,
        reply_to=reply_to[0] if reply_to else None,
        to=_mailboxes(headers.get_all("to"), words, defects),
        cc=_mailboxes(headers.get_all("cc"), words, defects),
        date=_date(headers.get("date"), defects),
        headers=headers, text=text, html=walker.html,
        attachments=walker.attachments, forwarded=walker.forwarded,
        content_type=ctype, is_multipart_report=ctype == "multipart/report", report_type=report_type,
        defects=list(dict.fromkeys(defects)), unreadable_reason=unreadable,
    )


def _text(segments: list[tuple[str, str]], defects: list[str]) -> str:
    """The segments as one text: plain parts as they are, HTML parts (with no plain twin) converted."""
    pieces = []
    for kind, body in segments:
        if kind == "html":
            body = _html_text(body, defects)
        if body:
            pieces.append(body)
    if len(pieces) == 1:
        return pieces[0]
    return "".join(p if p.endswith("\n") or i == len(pieces) - 1 else p + "\n" for i, p in enumerate(pieces))


def _html_text(markup: str, defects: list[str]) -> str:
    if not markup.strip():
        return ""
    try:
        from mail_ingest.html_text import html_to_text
    except ImportError:
        defects.append("HTML-only body not converted: mail_ingest.html_text is missing")
        return ""
    try:
        return clean_text(html_to_text(markup))
    except Exception as exc:
        defects.append(f"HTML body not converted: {type(exc).__name__}")
        return ""


def _one_line(text: str) -> str:
    return _SPACES.sub(" ", text).replace("\x00", "").strip()


def _addresses(values: list[str], words, defects: list[str]) -> list[tuple[str, str]]:
    """(decoded display name, address) pairs; a value the address parser cannot read is scanned for addresses."""
    if not values:
        return []
    simple = [_SIMPLE_ADDRESS.fullmatch(value) if len(value) < 1000 else None for value in values]
    if all(simple):  # the common one-mailbox forms, without the stdlib's slower general parser
        return [(words(_unquote(m.group(1) or m.group(3) or "")), m.group(2) or m.group(4) or m.group(5))
                for m in simple]
    try:
        pairs = getaddresses(values)
    except Exception:
        pairs = []
    good = [(words(name), addr.strip()) for name, addr in pairs if _MAILBOX.fullmatch(addr.strip())]
    if good:
        return good
    scanned = [("", m.group(0)) for value in values for m in _ADDRESS.finditer(value)]
    if scanned:
        defects.append("address header not parsable: addresses taken by pattern")
        return scanned
    # a bare local part ("MAILER-DAEMON") is still worth knowing for a From
    return [(words(name), addr.strip()) for name, addr in pairs if addr.strip() and " " not in addr.strip()]


def _unquote(name: str) -> str:
    return re.sub(r"\\(.)", r"\1", name) if "\\" in name else name


def _mailboxes(values: list[str], words, defects: list[str]) -> list[str]:
    """The addresses of a recipient-like header; group names and local-only leftovers left out."""
    return [addr for _, addr in _addresses(values, words, defects) if _MAILBOX.fullmatch(addr)]


def _first_id(value: str | None) -> str | None:
    if not value:
        return None
    match = _MSG_ID.search(value)
    if match:
        return match.group(0)
    value = value.strip()
    return value[:500] if value and " " not in value and len(value) <= 998 else None


def _ids(value: str) -> list[str]:
    return list(dict.fromkeys(_MSG_ID.findall(value)))


def _date(value: str | None, defects: list[str]) -> dt.datetime | None:
    """The Date header as an aware datetime (RFC 5322 3.3); a date without a zone is read as UTC."""
    if not value:
        return None
    try:
        parts = parsedate_tz(value)
        if parts is None:
            raise ValueError(value)
        year, month, day, hour, minute, second = parts[:6]
        offset = parts[9]
        if offset is None or abs(offset) >= 86400:
            defects.append("Date without a usable zone: read as UTC")
            offset = 0
        return dt.datetime(year, month, day, hour, minute, min(second, 59),
                           tzinfo=dt.timezone(dt.timedelta(seconds=offset)))
    except Exception:
        defects.append(f"unreadable Date {value[:60]!r}")
        return None
