"""The MIME walk behind :func:`mail_ingest.parse.parse`: bodies, attachments, forwarded messages."""
from __future__ import annotations

import mimetypes
import posixpath
import re
from dataclasses import dataclass
from email.message import Message
from email.utils import collapse_rfc2231_value
from typing import Any, Callable, Iterable

from mail_ingest.parse_charset import decode_bytes, decode_words, header_str
from mail_ingest.parse_cte import (clean_text, estimate_size, payload_bytes, raw_payload, stored_payload,
                                   uudecode_blocks)

MAX_MIME_DEPTH = 30       # nested multiparts followed; deeper ones are skipped with a defect
MAX_PARTS = 1000          # leaves looked at per message (a bomb of tiny parts stays cheap)
MAX_FORWARD_DEPTH = 5     # message/rfc822 inside message/rfc822 ...

_HTML_META = re.compile(rb"<meta[^>]{0,300}?charset\s*=\s*[\"']?\s*([A-Za-z0-9_:.\-]+)", re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# type/subtype, each an RFC 2045 token of at most 127 characters (RFC 6838 4.2)
_MIME_TYPE = re.compile(r"[!#$%&'*+\-.^_`{|}~0-9a-z]{1,127}/[!#$%&'*+\-.^_`{|}~0-9a-z]{1,127}")
_COMMENT = re.compile(r"\([^()]*\)")


@dataclass(frozen=True)
class Attachment:
    """One attachment: ``content`` is None when it was dropped, and ``dropped_reason`` says why.

    ``size`` is the decoded size in bytes; for a part dropped before decoding, an estimate from
    its encoded length.
    """

    filename: str | None
    content_type: str
    size: int
    content: bytes | None
    dropped_reason: str | None = None


class Budget:
    """The attachment limits, shared by a message and everything forwarded inside it."""

    def __init__(self, each: int, total: int) -> None:
        self.each, self.total, self.used = max(0, each), max(0, total), 0

    def admit(self, filename: str | None, content_type: str, size: int, content: bytes | None) -> Attachment:
        if size > self.each:
            return Attachment(filename, content_type, size, None, f"larger than the limit of {self.each} bytes")
        if self.used + size > self.total:
            return Attachment(filename, content_type, size, None,
                              f"attachments together over the limit of {self.total} bytes")
        self.used += size
        return Attachment(filename, content_type, size, content)


_MIME_FIELDS = frozenset({"content-type", "content-disposition", "content-transfer-encoding", "content-location"})


class Fields:
    """The MIME fields of one part, read in one pass (``Message.get`` scans every header per call)."""

    __slots__ = ("ctype", "disposition", "cte", "named", "location")

    def __init__(self, part: Message) -> None:
        first: dict[str, str] = {}
        for name, value in part.raw_items():
            key = name.lower()
            if key in _MIME_FIELDS and key not in first:
                first[key] = value if isinstance(value, str) else str(value)
        raw_type = first.get("content-type")
        if raw_type is None:
            self.ctype = part.get_default_type()  # text/plain, or message/rfc822 in a digest
        else:
            ctype = _COMMENT.sub("", raw_type.split(";", 1)[0]).strip().lower().replace(" /", "/").replace("/ ", "/")
            # not type/subtype (control characters, spaces, 8-bit, no "/"): text/plain, as RFC 2045 5.2
            # says; a NUL or an overlong type would not even fit the database's column
            self.ctype = ctype if _MIME_TYPE.fullmatch(ctype) else "text/plain"
        raw_disposition = first.get("content-disposition", "")
        self.disposition = raw_disposition.split(";", 1)[0].strip().lower() or None
        self.cte = first.get("content-transfer-encoding", "").strip().strip("\"'").lower().split(";", 1)[0].strip()
        self.named = "name" in raw_disposition.lower() or (raw_type is not None and "name" in raw_type.lower())
        self.location = first.get("content-location")


def filename_of(part: Message, fields: Fields, hints: Iterable[str], defects: list[str]) -> str | None:
    """The attachment's name: RFC 2231 or RFC 2047 encoded, raw 8-bit, or from Content-Location."""
    value: Any = None
    if fields.named:
        try:
            source = _param_source(part, hints, defects)
            value = source.get_param("filename", None, "content-disposition")
            if value is None:
                value = source.get_param("name", None, "content-type")
        except Exception as exc:
            defects.append(f"unreadable filename parameter: {type(exc).__name__}")
    name: str | None = None
    if isinstance(value, tuple):  # RFC 2231: (charset, language, percent-decoded latin-1 text)
        charset, _lang, text = (value + (None, None, None))[:3]
        data = str(text or "").encode("latin-1", "replace")
        name = decode_bytes(data, charset or None, hints, defects, where="filename")
    elif value is not None:
        name = collapse_rfc2231_value(value) if not isinstance(value, str) else value
        name = name.strip().strip('"')
    if not name:
        location = fields.location
        if location:
            name = posixpath.basename(location.strip().strip("<>\"'").split("?", 1)[0])
    if not name:
        return None
    name = decode_words(header_str(name, hints, defects), hints, defects)
    name = name.replace("\\", "/").rsplit("/", 1)[-1]  # a name, never a path
    name = _CONTROL.sub("", name).strip()[:255]
    return name or None


def _param_source(part: Message, hints: Iterable[str], defects: list[str]) -> Message:
    """``part`` itself, or for raw 8-bit parameter values a stand-in holding them decoded.

    compat32 would hand those values back with U+FFFD in place of every 8-bit byte.
    """
    fields = [(name, value) for name, value in part.raw_items()
              if name.lower() in ("content-disposition", "content-type")]
    if all(isinstance(value, str) and value.isascii() for _, value in fields):
        return part
    stand_in = Message()
    for name, value in fields:
        stand_in[name] = header_str(value, hints, defects)
    return stand_in


def charset_of(part: Message) -> str | None:
    try:
        return part.get_content_charset(None)
    except Exception:
        return None


class Walker:
    """One pass over a message tree, collecting body segments, attachments and forwarded messages.

    ``build_forward(sub_message, depth)`` turns an already-parsed message/rfc822 part into a
    ParsedMail (the parse module passes it in, so the tree is never parsed twice).
    """

    def __init__(self, budget: Budget, hints: Iterable[str], defects: list[str],
                 build_forward: Callable[[Message, int], Any], forward_depth: int) -> None:
        self.budget, self.hints, self.defects = budget, hints, defects
        self.build_forward, self.forward_depth = build_forward, forward_depth
        self.attachments: list[Attachment] = []
        self.forwarded: list[Any] = []
        self.html: str | None = None
        self.leaves = 0
        self.body_found = False
        self.top_ctype: str | None = None

    # a segment is ("plain", text) or ("html", markup); the caller turns them into one text
    def walk(self, part: Message, depth: int = 0) -> list[tuple[str, str]]:
        for defect in getattr(part, "defects", ()) or ():
            self.defects.append(type(defect).__name__)
        fields = Fields(part)
        ctype = fields.ctype
        if depth == 0 and self.top_ctype is None:
            self.top_ctype = ctype
        payload = stored_payload(part)
        if ctype.startswith("message/") and isinstance(payload, list):
            self._message_part(part, fields, payload)
            return []
        if isinstance(payload, list):
            if depth >= MAX_MIME_DEPTH:
                self.defects.append(f"MIME nesting deeper than {MAX_MIME_DEPTH}: inner parts skipped")
                return []
            children = [c for c in payload if isinstance(c, Message)]
            if ctype == "multipart/alternative":
                return self._alternative(children, depth)
            segments: list[tuple[str, str]] = []
            for child in children:
                segments += self.walk(child, depth + 1)
            return segments
        self.leaves += 1
        if self.leaves > MAX_PARTS:
            if self.leaves == MAX_PARTS + 1:
                self.defects.append(f"more than {MAX_PARTS} MIME parts: the rest skipped")
            return []
        return self._leaf(part, fields)

    def _alternative(self, children: list[Message], depth: int) -> list[tuple[str, str]]:
        """RFC 2046 5.1.4: one of the children; here the plain-text one when it has any text."""
        results = [self.walk(child, depth + 1) for child in children]
        for kind in ("plain", "html"):
            for segments in reversed(results):
                if any(k == kind and text.strip() for k, text in segments):
                    return segments
        return results[-1] if results else []

    def _message_part(self, part: Message, fields: Fields, payload: list) -> None:
        if fields.ctype in ("message/rfc822", "message/global", "message/news") and payload:
            sub = payload[0]
            if "base64" in fields.cte or "quoted" in fields.cte:  # not allowed (RFC 2046 5.2.1), yet sent
                sub = self._reparse(payload_bytes(part, fields.cte, self.defects, _as_bytes(sub)))
            self._forward(sub)
            return
        # message/delivery-status and friends: field blocks, kept as bytes for the classifier
        data = b"\n".join(_as_bytes(block) for block in payload if isinstance(block, Message))
        self.attachments.append(self.budget.admit(None, fields.ctype, len(data), data))

    @staticmethod
    def _reparse(data: bytes) -> Message:
        from email import message_from_bytes
        from email.policy import compat32
        return message_from_bytes(data, policy=compat32)

    def _forward(self, sub: Message) -> None:
        if self.forward_depth >= MAX_FORWARD_DEPTH:
            self.defects.append(f"forwarded messages nested deeper than {MAX_FORWARD_DEPTH}: inner ones skipped")
            return
        self.forwarded.append(self.build_forward(sub, self.forward_depth + 1))

    def _leaf(self, part: Message, fields: Fields) -> list[tuple[str, str]]:
        ctype = fields.ctype
        filename = filename_of(part, fields, self.hints, self.defects) if (fields.named or fields.location) else None
        if ctype in ("text/plain", "text/html") and fields.disposition != "attachment" and (
                not filename or not self.body_found):
            # a named text part not marked as an attachment is shown inline by mail clients: it is
            # the body when nothing before it was (bounces often name their explanation "x.txt")
            return self._body(part, fields, ctype)
        if ctype.startswith("multipart/"):  # a multipart whose boundary never came: read it as text
            return self._body(part, fields, "text/plain")
        if ctype == "text/rfc822-headers":  # RFC 6522: the headers of the message a report is about
            self._forward(self._reparse(payload_bytes(part, fields.cte, self.defects)))
            return []
        data = raw_payload(part)
        estimate = estimate_size(fields.cte, data)
        if estimate > self.budget.each:
            attachment = Attachment(filename, ctype, estimate, None,
                                    f"larger than the limit of {self.budget.each} bytes")
        else:
            content = payload_bytes(part, fields.cte, self.defects, data)
            attachment = self.budget.admit(filename, ctype, len(content), content)
        if ctype == "application/ms-tnef" or (filename or "").lower() == "winmail.dat":
            self.defects.append(f"note: TNEF attachment {filename or 'winmail.dat'!r} kept undecoded")
        self.attachments.append(attachment)
        return []

    def _body(self, part: Message, fields: Fields, ctype: str) -> list[tuple[str, str]]:
        data = payload_bytes(part, fields.cte, self.defects)
        charset = charset_of(part)
        if ctype == "text/html" and not charset:
            meta = _HTML_META.search(data, 0, 4096)
            charset = meta.group(1).decode("ascii") if meta else None
        text = clean_text(decode_bytes(data, charset, self.hints, self.defects, where=ctype))
        self.body_found = self.body_found or bool(text.strip())
        if ctype == "text/html":
            if self.html is None:
                self.html = text
            return [("html", text)]
        if "begin " in text:
            text = self._uuencoded(text)
        return [("plain", text)]

    def _uuencoded(self, text: str) -> str:
        """Uuencoded files inside a plain body become attachments and leave the text."""
        blocks = uudecode_blocks(text)
        if not blocks:
            return text
        kept, pos = [], 0
        for name, content, start, stop in blocks:
            kept.append(text[pos:start])
            pos = stop
            name = _CONTROL.sub("", name.replace("\\", "/").rsplit("/", 1)[-1])[:255] or None
            ctype = (mimetypes.guess_type(name)[0] if name else None) or "application/octet-stream"
            self.attachments.append(self.budget.admit(name, ctype, len(content), content))
        kept.append(text[pos:])
        return "".join(kept)


def _as_bytes(message: Message) -> bytes:
    try:
        return message.as_bytes()
    except Exception:
        return b""
