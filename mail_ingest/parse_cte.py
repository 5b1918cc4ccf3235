"""Content-Transfer-Encoding (RFC 2045 6) as mailers really write it, and uuencoded blocks.

Decoded here rather than by the email package, so that the odd values real mailers write
(``7-bit``, ``plain``, empty, ``quoted printable``, ``Quoted-Printable;``) and broken base64 or
uuencode still give their content.
"""
from __future__ import annotations

import binascii
import re
from email.message import Message
from typing import Iterable

from mail_ingest.parse_charset import b64decode_tolerant

_IDENTITY_CTE = frozenset({"", "7bit", "8bit", "binary", "7-bit", "8-bit", "7bits", "8bits", "7 bit", "8 bit"})
_CTE_SEPARATORS = re.compile(r"[\s_]+")
_UU_BEGIN = re.compile(r"^begin +([0-7]{3,4}) +([^\n]+?) *\n", re.MULTILINE)
_UU_END = re.compile(r"^end[ \t\r]*$", re.MULTILINE)
_UU_LINE = re.compile(r"[\x20-\x60]{1,90}")


def payload_bytes(part: Message, cte: str, defects: list[str], encoded: bytes | None = None) -> bytes:
    """The part's body with its Content-Transfer-Encoding undone, tolerating the odd values."""
    data = raw_payload(part) if encoded is None else encoded
    if cte in _IDENTITY_CTE:
        return data
    cte = _CTE_SEPARATORS.sub("-", cte)  # "quoted printable", "quoted_printable"
    if cte in _IDENTITY_CTE:
        return data
    if "base64" in cte:
        return b64decode_tolerant(data)
    if "quoted-printable" in cte or cte in ("qp", "quotedprintable"):
        if b"\r" in data:  # soft line breaks end in CR alone in old Mac mail: "=\r"
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        return binascii.a2b_qp(data)
    if "uue" in cte or "uuencode" in cte:
        found = uudecode_blocks(data.decode("latin-1"))
        return found[0][1] if found else uudecode_lines(data.decode("latin-1").splitlines())
    defects.append(f"unknown Content-Transfer-Encoding {cte[:40]!r} read as 8bit")
    return data


def stored_payload(part: Message) -> object:
    """What the parser stored: a list of parts, or the body as str (8-bit bytes as surrogates).

    Not ``get_payload()``: for a non-multipart part that decodes 8-bit bodies with the declared
    charset, and raises for a charset label it cannot use (one with a NUL, say).
    """
    return getattr(part, "_payload", None)


def raw_payload(part: Message) -> bytes:
    """The body bytes as they were on the wire.

    Read from the stored payload: ``get_payload()`` would already have decoded 8-bit bytes with
    the declared charset (and replaced what does not fit), which is what we must not trust.
    """
    payload = stored_payload(part)
    if payload is None:
        return b""
    if isinstance(payload, bytes):
        return payload
    if not isinstance(payload, str):
        return b""
    try:
        return payload.encode("ascii", "surrogateescape")
    except UnicodeEncodeError:
        return payload.encode("utf-8", "surrogateescape")


def estimate_size(cte: str, data: bytes) -> int:
    """The decoded size of ``data`` without decoding it (exact enough to enforce a limit)."""
    if "base64" in cte:
        return (len(data) - data.count(b"\n") - data.count(b"\r") - data.count(b" ")) * 3 // 4
    return len(data)


def uudecode_lines(lines: Iterable[str]) -> bytes:
    """The bytes of uuencoded lines (without begin/end); a bad line is decoded as far as it goes."""
    out = bytearray()
    for line in lines:
        line = line.rstrip("\r\n")
        if not line or line in ("`", " "):
            continue
        raw = line.encode("latin-1", "replace")
        try:
            out += binascii.a2b_uu(raw)
        except binascii.Error:
            # some encoders pad lines with extra characters: keep what the length byte announces
            count = ((raw[0] - 32) & 63) * 4 // 3 + 1
            try:
                out += binascii.a2b_uu(raw[: count + 1])
            except binascii.Error:
                pass
    return bytes(out)


def uudecode_blocks(text: str) -> list[tuple[str, bytes, int, int]]:
    """Every ``begin MODE NAME`` ... ``end`` block in ``text``: (name, content, start, end offsets).

    Only a block whose every line is a uuencoded line counts: prose that happens to say "begin 644"
    stays prose.
    """
    found = []
    pos = 0
    while True:
        begin = _UU_BEGIN.search(text, pos)
        if not begin:
            return found
        end = _UU_END.search(text, begin.end())
        if not end:
            return found
        lines = [line.rstrip("\r") for line in text[begin.end():end.start()].split("\n")]
        if all(not line or _UU_LINE.fullmatch(line) for line in lines):
            found.append((begin.group(2).strip(), uudecode_lines(lines), begin.start(), end.end()))
            pos = end.end()
        else:
            pos = begin.end()


def clean_text(text: str) -> str:
    """One line-ending convention, no NUL bytes, no byte-order mark."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if "\x00" in text:
        text = text.replace("\x00", "")
    return text[1:] if text.startswith("\ufeff") else text
