"""Bytes to text for mail: charset labels as mailers write them, detection when they lie, RFC 2047 words.

Used by :mod:`mail_ingest.parse`; nothing here raises for bad input: every problem becomes a
string appended to the ``defects`` list the caller passes in.
"""
from __future__ import annotations

import binascii
import codecs
import re
from functools import lru_cache
from typing import Iterable

# labels Python does not know, or knows as a smaller charset than mailers actually use
_ALIASES = {
    "ks_c_5601-1987": "cp949", "ks_c_5601-1989": "cp949", "ks_c_5601": "cp949", "ksc5601": "cp949",
    "ksc_5601": "cp949", "euc-kr": "cp949", "x-euc-kr": "cp949", "x-windows-949": "cp949",
    "windows-874": "cp874", "x-windows-874": "cp874",
    "x-gbk": "gb18030", "gbk": "gb18030", "gb2312": "gb18030", "x-gb2312": "gb18030", "euc-cn": "gb18030",
    "x-euc-cn": "gb18030", "cn-gb": "gb18030", "chinese": "gb18030",
    "x-euc-jp": "euc_jp", "x-sjis": "cp932", "sjis": "cp932", "shift_jis": "cp932", "shift-jis": "cp932",
    "x-shift_jis": "cp932", "ms_kanji": "cp932", "windows-31j": "cp932", "ms932": "cp932", "csshiftjis": "cp932",
    "iso-8859-8-i": "iso8859-8", "iso-8859-8-e": "iso8859-8", "iso-8859-6-i": "iso8859-6", "iso-8859-6-e": "iso8859-6",
    "x-mac-roman": "mac-roman", "x-mac-cyrillic": "mac-cyrillic", "x-mac-greek": "mac-greek",
    "x-mac-turkish": "mac-turkish", "x-mac-ce": "mac-latin2", "x-mac-icelandic": "mac-iceland",
    "utf8": "utf-8", "x-utf8": "utf-8", "x-utf-8": "utf-8", "unicode-1-1-utf-8": "utf-8", "x-unicode20utf8": "utf-8",
    "iso-ir-111": "koi8-r", "x-cp1250": "cp1250", "x-cp1251": "cp1251", "x-cp1252": "cp1252",
}
# labels that say "we do not know": detect instead (RFC 1428 unknown-8bit, and what mailers invent)
_UNKNOWN = frozenset({"x-unknown", "unknown-8bit", "unknown", "x-user-defined", "none", "default", "charset",
                      "8bit", "7bit", "binary", "text", "x-binaryenc", "unicode", "ansi", "windows", ""})
# Python codecs that are not charsets (they turn any bytes into something plausible-looking)
_NOT_CHARSETS = frozenset({"idna", "punycode", "unicode-escape", "raw-unicode-escape", "undefined",
                           "unicode-internal", "mbcs", "oem"})
# what a declared codec really means in mail: the superset Windows and mobile mailers write
_SUPERSETS = {
    "iso8859-1": ("cp1252", "latin-1"), "ascii": ("ascii",),
    "iso8859-9": ("cp1254", "iso8859-9"), "tis-620": ("cp874", "tis-620"), "iso8859-11": ("cp874", "iso8859-11"),
    "euc_kr": ("cp949",), "gb2312": ("gb18030",), "gbk": ("gb18030",),
    "big5": ("cp950", "big5hkscs"), "big5hkscs": ("big5hkscs", "cp950"),
    "shift_jis": ("cp932", "shift_jis_2004"), "cp932": ("cp932", "shift_jis_2004"),
    "euc_jp": ("euc_jp", "euc_jis_2004"),
}
# RFC 1468 and its extensions: try the richer members of the family when the declared one fails
_ISO2022_JP = ("iso2022_jp", "iso2022_jp_2", "iso2022_jp_ext", "iso2022_jp_3", "iso2022_jp_2004", "iso2022_jp_1")
_SINGLE_BYTE = re.compile(r"^(cp12[0-9]{2}|iso8859-[0-9]+|latin-1|koi8-[a-z]|mac-[a-z]+|cp8[0-9]{2}|tis-620)$")
_LABEL = re.compile(r"[A-Za-z0-9_.:+\-]+")

# detection candidates: the charsets mail really comes in; the order breaks ties between equally
# plausible readings of short text (Western first: a four-byte "Café" fits a dozen code pages)
_DETECT_ORDER = ("utf_8", "cp1252", "euc_jp", "cp949", "gb18030", "big5", "cp932", "cp1250", "cp1251",
                 "koi8_r", "cp1253", "cp1254", "cp1255", "cp1256", "cp1257", "cp874", "iso2022_jp",
                 "iso8859_15", "mac_roman", "cp850")
_DETECT_SAMPLE = 64 * 1024
_UTF8_SEQUENCE = re.compile(rb"[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|[\xf0-\xf4][\x80-\xbf]{3}")


@lru_cache(maxsize=512)
def codec_chain(label: str | None) -> tuple[str, ...] | None:
    """The Python codecs to try, in order, for a declared charset label; None when the label means "unknown"."""
    if not label:
        return None
    match = _LABEL.search(label.strip().strip("\"'").lower())
    if not match:
        return None
    name = match.group(0)
    if name in _UNKNOWN:
        return None
    name = _ALIASES.get(name, name)
    info = _lookup(name)
    if info is None and name.startswith("x-"):
        info = _lookup(name[2:])
    if info is None and name.startswith(("windows-", "cp-")):
        info = _lookup("cp" + name.rsplit("-", 1)[1])
    if info is None:
        return None
    canonical = info.name
    if canonical.startswith("iso2022_jp"):
        return (canonical,) + tuple(c for c in _ISO2022_JP if c != canonical)
    return _SUPERSETS.get(canonical, (canonical,))


def _lookup(name: str) -> codecs.CodecInfo | None:
    try:
        info = codecs.lookup(name)
    except (LookupError, ValueError):
        return None
    if info.name in _NOT_CHARSETS or getattr(info, "_is_text_encoding", True) is False:
        return None
    return info


def decode_bytes(data: bytes, declared: str | None = None, hints: Iterable[str] = (),
                 defects: list[str] | None = None, where: str = "body") -> str:
    """Text from ``data``: the declared charset when it fits, else UTF-8, the message's other charsets, detection.

    The last resort is UTF-8 with U+FFFD for what cannot be read, never an exception.
    """
    if not data:
        return ""
    chain = codec_chain(declared) if declared else None
    if declared and chain is None and defects is not None:
        defects.append(f"{where}: unknown charset {declared[:40]!r}, detected instead")
    if chain:
        # a single-byte label on valid multi-byte UTF-8 is a mislabel (the reverse almost never parses)
        if not data.isascii() and _SINGLE_BYTE.match(chain[0]) and _utf8(data) is not None:
            if defects is not None:
                defects.append(f"{where}: declared {declared[:40]!r} but the bytes are UTF-8")
            return data.decode("utf-8")
        for codec in chain:
            try:
                return data.decode(codec)
            except (UnicodeDecodeError, LookupError):
                continue
        text = _mostly(data, chain[0]) if chain[0] != "ascii" else None
        if text is not None:
            if defects is not None:
                defects.append(f"{where}: a few bytes are not valid {declared[:40]!r}; replaced")
            return text
        if defects is not None:
            defects.append(f"{where}: bytes are not valid {declared[:40]!r}, detected instead")
    if data.isascii():
        return data.decode("ascii")
    text = _utf8(data)
    if text is not None:
        return text
    for hint in hints:
        chain = tuple(c for c in codec_chain(hint) or () if c not in ("ascii", "utf-8"))
        for codec in chain:
            try:
                return data.decode(codec)
            except (UnicodeDecodeError, LookupError):
                continue
        text = _mostly(data, chain[0]) if chain else None
        if text is not None:
            return text
    # UTF-8 with a stray or cut sequence, when there is real UTF-8 in it (else it is a legacy charset)
    text = _mostly(data, "utf-8") if _UTF8_SEQUENCE.search(data) else None
    if text is not None:
        return text
    codec = detect(data)
    if codec:
        return data.decode(codec, "replace")
    if defects is not None:
        defects.append(f"{where}: charset could not be detected; decoded as UTF-8 with replacements")
    return data.decode("utf-8", "replace")


def _mostly(data: bytes, codec: str) -> str | None:
    """``data`` in ``codec`` when only a few bytes (a cut sequence, a stray byte) do not fit it.

    Better a U+FFFD or two in the right charset than a whole text read in a wrong one.
    """
    try:
        text = data.decode(codec, "replace")
    except LookupError:
        return None
    bad = text.count("\ufffd") - data.count(b"\xef\xbf\xbd")
    return text if bad * 50 <= len(text) or (bad == 1 and len(text) >= 10) else None


def _utf8(data: bytes) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def detect(data: bytes) -> str | None:
    """The most plausible mail charset of ``data`` (charset-normalizer), or None when it is not installed."""
    try:
        from charset_normalizer import from_bytes
    except ImportError:  # pragma: no cover - the dependency is declared; degrade rather than fail
        return None
    try:
        matches = list(from_bytes(data[:_DETECT_SAMPLE], cp_isolation=list(_DETECT_ORDER)))
    except Exception:  # the detector is third-party code: never let it take a message down
        return None
    if not matches:
        return None
    best = min(m.chaos for m in matches)
    close = [m for m in matches if m.chaos <= best + 0.02]
    top = max(m.coherence for m in close)
    close = [m for m in close if m.coherence >= top - 0.1]

    def rank(match) -> int:
        names = [match.encoding, *getattr(match, "could_be_from_charset", ())]
        return min((_DETECT_ORDER.index(n) for n in names if n in _DETECT_ORDER), default=len(_DETECT_ORDER))
    chosen = min(close, key=rank)
    names = [chosen.encoding, *getattr(chosen, "could_be_from_charset", ())]
    return min((n for n in names if n in _DETECT_ORDER), key=_DETECT_ORDER.index, default=chosen.encoding)


# --- headers -------------------------------------------------------------------------------------

# RFC 2047 encoded-word; tolerant: no length limit enforced, spaces allowed in the text, found anywhere
_WORD = re.compile(r"=\?([^?\s]{1,80})\?([bBqQ])\?([^?]*)\?=")
_GAP = re.compile(r"[ \t\r\n]*")


def header_str(value: object, hints: Iterable[str] = (), defects: list[str] | None = None) -> str:
    """A raw header value as parsed from bytes (8-bit bytes kept as surrogates) turned into clean text.

    Non-compliant raw 8-bit headers (RFC 6532 UTF-8, or a local charset) are decoded like a body
    with no declared charset; folding line breaks are removed (RFC 5322 2.2.3).
    """
    text = value if isinstance(value, str) else str(value)
    if not text.isascii():
        try:
            data = text.encode("ascii", "surrogateescape")
        except UnicodeEncodeError:
            data = None
        if data is not None:
            text = decode_bytes(data, None, hints, defects, where="header")
    if "\r" in text or "\n" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "")
    return text.replace("\x00", "")


def decode_words(text: str, hints: Iterable[str] = (), defects: list[str] | None = None) -> str:
    """``text`` with its RFC 2047 encoded-words decoded; whitespace between adjacent words dropped (6.2)."""
    if "=?" not in text:
        return text
    out: list[str] = []
    pending: list[tuple[str, bytes]] = []  # adjacent words, joined per charset before decoding
    pos = 0
    for match in _WORD.finditer(text):
        gap = text[pos:match.start()]
        if not (pending and _GAP.fullmatch(gap)):
            if pending:
                out.append(_flush(pending, hints, defects))
                pending = []
            out.append(gap)
        charset, kind, payload = match.groups()
        charset = charset.split("*", 1)[0]  # RFC 2231 section 5 language suffix
        data = _b64(payload) if kind in "bB" else binascii.a2b_qp(payload.encode("utf-8", "replace"), header=True)
        if pending and pending[-1][0].lower() == charset.lower():
            pending[-1] = (pending[-1][0], pending[-1][1] + data)
        else:
            pending.append((charset, data))
        pos = match.end()
    if pending:
        out.append(_flush(pending, hints, defects))
    out.append(text[pos:])
    return "".join(out)


def _flush(pending: list[tuple[str, bytes]], hints: Iterable[str], defects: list[str] | None) -> str:
    return "".join(decode_bytes(data, charset, hints, defects, where="encoded-word") for charset, data in pending)


_B64_JUNK = re.compile(rb"[^A-Za-z0-9+/]")


def _b64(text: str | bytes) -> bytes:
    """Base64 that tolerates missing or wrong padding and stray characters."""
    data = text.encode("ascii", "ignore") if isinstance(text, str) else text
    try:
        return binascii.a2b_base64(data)
    except binascii.Error:
        pass
    data = _B64_JUNK.sub(b"", data)
    data = data[: len(data) - len(data) % 4] if len(data) % 4 == 1 else data + b"=" * (-len(data) % 4)
    try:
        return binascii.a2b_base64(data)
    except binascii.Error:
        return b""


b64decode_tolerant = _b64
