"""The new text of a reply: quoted history and signature cut, conservatively.

:func:`strip_reply` works on plain text, :func:`strip_html_reply` converts HTML first (see
:mod:`mail_ingest.html_text`). Both keep the text whenever they are not sure: a result that would
be empty falls back to the whole message, and every rule below needs a clear shape.

Quoted history, in the order it is looked for on each line:

1. a line that alone starts the history: "-----Original Message-----" and its translations,
   :data:`~mail_ingest.html_text.QUOTE_MARKER` (written by the HTML converter), "reply above
   this line": everything from there is cut;
2. a header block: three or more lines "From:/Sent:/To:/Subject:" (or Date/Cc, in any of the
   languages of :mod:`mail_ingest.strip_patterns`) with a From line among them, possibly after
   a "____" or "-----" rule: cut to the end, unless it is a forward ("Fwd:" subject, or a
   "Forwarded message" line above it) since a forward is the content the customer sends us;
3. an attribution line, "On <date>, <name> <address> wrote:" in many languages, possibly wrapped
   over two or three lines, or any short "<date> ... <address>:" line: if ``>``-quoted lines
   follow, the attribution and that quoted block are removed and what comes after stays (replies
   written below or between quotes); if unquoted text follows, everything from it is cut;
4. ``>``-quoted lines (with the odd unprefixed line a client wrapped in between): removed, the
   text around them kept, so inline answers survive.

Lines inside a fenced code block (```) are never taken for any of these.

Signature (unless ``keep_signature``), the first of these after some text cuts to the end:
``-- `` (or ``--`` with a short tail), "Sent from my iPhone"-style lines and their
translations, a valediction line ("Regards,", "Mit freundlichen Grüßen", ...) followed by at
most six short lines, and a "__" rule followed by a short mailing-list footer.
"""
from __future__ import annotations

from mail_ingest import strip_patterns as P
from mail_ingest.html_text import html_to_text

__all__ = ["is_quote_marker", "strip_html_reply", "strip_reply"]

_MAX_ATTRIBUTION = 400  # characters; longer joined lines are prose, not an attribution


def is_quote_marker(line: str) -> bool:
    """True when ``line`` alone says that quoted history starts here.

    That is an "Original Message" separator (in any of the known languages), the HTML
    converter's :data:`~mail_ingest.html_text.QUOTE_MARKER`, or a "reply above this line" line.
    """
    stripped = line.strip()
    if not stripped or len(stripped) > 120:
        return False
    return (
        stripped == P.MARKER
        or bool(P.SEPARATOR.match(stripped))
        or bool(P.REPLY_ABOVE.search(stripped))
    )


def strip_reply(text: str, *, keep_signature: bool = False) -> str:
    """The new text of a plain-text reply, without quoted history and (by default) signature.

    ``keep_signature=True`` cuts only the quoted history ("Sent from my iPhone" and ``-- ``
    signatures stay) and leaves the kept lines exactly as they were; by default trailing
    spaces are also removed from every line. Either way leading blank lines, trailing rules and
    whitespace go, and runs of blank lines become one. When nothing would be left the whole
    text is returned (tidied the same way).
    """
    if not text:
        return ""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    _join_wrapped_brackets(lines)
    fenced = _fenced(lines)
    kept = _drop_quotations(lines, fenced)
    if not keep_signature:
        kept = _drop_signature(kept, lines, fenced)
    trim = not keep_signature
    result = _tidy([lines[i] for i in kept], trim)
    return result if result.strip() else _tidy(lines, trim)


def strip_html_reply(html: str, *, keep_signature: bool = False) -> str:
    """:func:`strip_reply` on :func:`~mail_ingest.html_text.html_to_text` of ``html``."""
    return strip_reply(html_to_text(html), keep_signature=keep_signature)


# -- preparation ------------------------------------------------------------------------------


def _join_wrapped_brackets(lines: list[str]) -> None:
    """``"... <a@b.c"`` + ``">:"``: a client wrapped the address; glue the ``>:`` back on.

    Left alone, the ``>:`` line would look like a quoted line.
    """
    for i in range(1, len(lines)):
        if lines[i].strip() in (">:", "> :") and lines[i - 1].count("<") > lines[i - 1].count(">"):
            lines[i - 1] = lines[i - 1].rstrip() + ">:"
            lines[i] = ""


def _fenced(lines: list[str]) -> list[bool]:
    inside = False
    marks = []
    for line in lines:
        fence = line.lstrip().startswith("```")
        marks.append(inside or fence)
        if fence:
            inside = not inside
    return marks


def _blank(line: str) -> bool:
    return not line.strip()


def _quoted(line: str) -> bool:
    return line.lstrip().startswith(">")


# -- quoted history ---------------------------------------------------------------------------


def _drop_quotations(lines: list[str], fenced: list[bool]) -> list[int]:
    kept: list[int] = []
    i, n = 0, len(lines)
    while i < n:
        line = lines[i]
        if fenced[i] or _blank(line):
            kept.append(i)
            i += 1
            continue
        if is_quote_marker(line):
            _trim_tail(kept, lines)
            break
        block = _header_block(lines, i, fenced)
        if block is not None:
            end, forward = block
            if not forward and not _forward_above(kept, lines):
                _trim_tail(kept, lines)
                break
            kept.extend(range(i, end))
            i = end
            continue
        start = _attribution_start(lines, i, fenced)
        if start is not None:
            while kept and kept[-1] >= start:
                kept.pop()
            following = _next_nonblank(lines, i + 1)
            if following is not None and _quoted(lines[following]) and not fenced[following]:
                i = _quote_block_end(lines, following, fenced)
                continue
            _trim_tail(kept, lines)
            break
        if _quoted(line):
            i = _quote_block_end(lines, i, fenced)
            continue
        kept.append(i)
        i += 1
    return kept


def _next_nonblank(lines: list[str], start: int) -> int | None:
    for j in range(start, len(lines)):
        if not _blank(lines[j]):
            return j
    return None


def _trim_tail(kept: list[int], lines: list[str]) -> None:
    """Drop blank lines and separator rules left right above a cut."""
    while kept:
        line = lines[kept[-1]]
        if _blank(line) or P.RULE_LINE.match(line) or is_quote_marker(line):
            kept.pop()
        else:
            break


def _forward_above(kept: list[int], lines: list[str]) -> bool:
    for index in reversed(kept[-3:]):
        if P.FORWARD_LINE.search(lines[index]):
            return True
    return False


def _header_block(lines: list[str], i: int, fenced: list[bool]) -> tuple[int, bool] | None:
    """A "From:/Sent:/To:/Subject:" block starting at line ``i``: (end, is a forward)."""
    if not P.HEADER_LINE.match(lines[i]):
        return None
    categories: set[str] = set()
    subject = ""
    loose = 0
    j = i
    while j < len(lines) and j < i + 14:
        line = lines[j]
        if fenced[j] or _blank(line):
            break
        match = P.HEADER_LINE.match(line)
        if match:
            category = next(k for k, v in match.groupdict().items() if v is not None)
            categories.add(category)
            rest = line[match.end():]
            if category == P.SUBJECT and not subject:
                subject = rest.strip()
            for extra in P.INLINE_HEADER.finditer(rest):
                categories.update(k for k, v in extra.groupdict().items() if v is not None)
            loose = 0
        else:
            loose += 1  # a wrapped value ("From: Name\n<address>")
            if loose > 1:
                break
        j += 1
    if P.FROM not in categories or len(categories - {P.FROM}) < 2:
        return None
    return j, bool(P.FORWARD_SUBJECT.match(subject))


def _attribution_start(lines: list[str], i: int, fenced: list[bool]) -> int | None:
    """If line ``i`` ends an attribution ("... wrote:"), the line where it starts."""
    last = lines[i].strip().rstrip("-").rstrip()
    if not last or _quoted(last) or not (last.endswith((":", "：")) or last.endswith("wrote")):
        return None
    following = _next_nonblank(lines, i + 1)
    before_quote = following is not None and _quoted(lines[following])
    matches: list[tuple[int, str]] = []
    for start in range(i, max(i - 3, -1), -1):
        if start < i:
            line = lines[start]
            if fenced[start] or _blank(line) or _quoted(line):
                break
            if line.rstrip().endswith((".", "!", "?")):
                break  # a sentence ends here: the attribution starts below it
        joined = " ".join(part.strip() for part in lines[start:i + 1])
        if len(joined) > _MAX_ATTRIBUTION:
            break
        if _is_attribution(joined, before_quote):
            matches.append((start, joined))
    if not matches:
        return None
    anchored = [start for start, joined in matches if P.ATTRIBUTION_START.match(_bare(joined))]
    if anchored:
        return min(anchored)
    for start, joined in matches:  # shortest first
        if not P.CONTINUATION.match(joined):
            return start
    return None


def _bare(text: str) -> str:
    return text.strip().strip("-").strip()


def _is_attribution(text: str, before_quote: bool) -> bool:
    text = _bare(text)
    if len(text) < 6:
        return False
    has_date = bool(P.DATE.search(text))
    has_email = bool(P.EMAIL.search(text))
    if (has_date or has_email) and any(p.search(text) for p in P.ATTRIBUTIONS):
        return True
    if has_date:
        verb = P.VERB_ATTRIBUTION.search(text)
        if verb and (not verb.group("tail").strip() or P.EMAIL.search(verb.group("tail"))):
            return True
        if text.endswith((":", "：")) and P.BRACKETED_EMAIL.search(text):
            return True
    if before_quote and text.endswith((":", "：")):
        # right above a quoted block the shape may be looser: "Bob wrote:", "<date> <address>:"
        if (has_date and has_email) or P.SHORT_VERB_ATTRIBUTION.match(text):
            return True
        if has_email and P.VERB_ATTRIBUTION.search(text):
            return True
    return False


def _quote_block_end(lines: list[str], i: int, fenced: list[bool]) -> int:
    """Index just past the ``>``-quoted block that starts at line ``i``."""
    j, n = i, len(lines)
    while j < n:
        if fenced[j]:
            break
        if _quoted(lines[j]):
            j += 1
            continue
        if _blank(lines[j]):
            k = _next_nonblank(lines, j)
            if k is not None and _quoted(lines[k]) and not fenced[k]:
                j = k
                continue
            break
        # one or two unprefixed lines between two quoted lines, right after a long quoted line:
        # a client wrapped the quote without re-adding ">" ("... Nullam pharetra d\nignissim")
        k = j
        while k < n and k - j < 2 and not _blank(lines[k]) and not _quoted(lines[k]):
            k += 1
        if k < n and _quoted(lines[k]) and len(lines[j - 1].rstrip()) >= 50:
            j = k
            continue
        break
    return j


# -- signature --------------------------------------------------------------------------------


def _drop_signature(kept: list[int], lines: list[str], fenced: list[bool]) -> list[int]:
    remaining = [0] * (len(kept) + 1)  # non-blank lines after each position
    for position in range(len(kept) - 1, -1, -1):
        remaining[position] = remaining[position + 1] + (not _blank(lines[kept[position]]))
    seen_text = False
    for position, index in enumerate(kept):
        line = lines[index]
        if fenced[index]:
            seen_text = True
            continue
        if _blank(line):
            continue
        if seen_text:
            count = remaining[position + 1]

            def rest(limit: int, _position: int = position) -> list[str]:
                tail = (lines[k] for k in kept[_position + 1:] if not _blank(lines[k]))
                return [next(tail) for _ in range(min(limit, count))]

            if _signature_starts(line, count, rest):
                return kept[:position]
        seen_text = True
    return kept


def _signature_starts(line: str, count: int, rest) -> bool:
    """Does a signature start at ``line``? ``count`` non-blank lines follow; ``rest(n)`` gives
    the first ``n`` of them."""
    if P.SIGNATURE_DASHES.match(line):
        return line.startswith("-- ") or count <= 15
    if P.MOBILE.match(line):
        bare = P.MOBILE_URL.sub("", line).strip().rstrip(".")
        return len(bare) <= 70 and not any(mark in bare for mark in ",.;!?")
    if P.VALEDICTION.match(line):
        return count <= 6 and all(len(r.strip()) <= 70 for r in rest(6))
    if P.FOOTER_RULE.match(line) and count <= 8:
        tail = rest(8)
        if tail and P.HEADER_LINE.match(tail[0]):
            return False  # the rule above a kept forward's headers
        return bool(P.FOOTER_HINT.search("\n".join(tail)))
    return False


# -- output -----------------------------------------------------------------------------------


def _tidy(lines: list[str], trim: bool) -> str:
    out: list[str] = []
    for line in lines:
        if _blank(line):
            if out and out[-1] != "":
                out.append("")
        else:
            out.append(line.rstrip() if trim else line)
    while out and (out[-1] == "" or P.RULE_LINE.match(out[-1])):
        out.pop()
    return "\n".join(out).rstrip()
