"""Readable plain text from the HTML part of a mail.

:func:`html_to_text` turns HTML mail into text a person (and the reply stripper in
:mod:`mail_ingest.strip`) can read:

* block elements end lines, paragraphs, headings, lists, tables and quotes are separated by one
  blank line, ``<br>`` is a newline, whitespace is collapsed (``<pre>`` keeps its own);
* ``<ul>`` items start with ``"- "``, ``<ol>`` items with ``"1. "``, ``"2. "``..., nested lists
  are indented by two spaces per level;
* links become ``text (url)`` when the url says something the text does not (``mailto:``
  links show the bare address); links without text (image links) add nothing;
* table rows become lines, cells of one row are joined with ``" | "``;
* ``<blockquote>`` content is prefixed with ``"> "`` per level, so quoted text looks like it
  does in a plain-text reply; the attribution line that mail clients put right before the
  blockquote (Gmail ``gmail_attr``, Thunderbird ``moz-cite-prefix``) is quoted with it;
* where a client starts the quoted message in a container that is not a blockquote (Outlook
  ``divRplyFwdMsg`` / ``appendonsend`` / ``OLK_SRC_BODY_SECTION``, Hotmail ``hr#stopSpelling``,
  Zimbra ``hr#zwchr``, Yahoo ``yahoo_quoted``) the line :data:`QUOTE_MARKER` is written
  before it. :func:`mail_ingest.strip.strip_reply` cuts there;
* entities are decoded, ``script``/``style``/``head`` and hidden elements are dropped.

It never raises: broken HTML is read the way browsers mostly read it (unclosed elements closed
by their parent, stray end tags ignored), and anything the HTML parser itself rejects falls back
to a cruder tag-stripping pass.
"""
from __future__ import annotations

import re
from urllib.parse import unquote

from mail_ingest.html_tree import DROP, LINE_BLOCKS, PARA_BLOCKS, Node, TreeBuilder, crude_text

__all__ = ["QUOTE_MARKER", "html_to_text"]

#: Line written where a quoted message starts in a container the text alone would not show
#: as quoted. It reads as an ordinary separator; the reply stripper cuts at it.
QUOTE_MARKER = "-------- Quoted message --------"

_WS = re.compile(r"[ \t\n\r\f\v\xa0]+")
_BOUNDARY_IDS = ("divrplyfwdmsg", "appendonsend", "olk_src_body_section")
_BOUNDARY_HR_IDS = ("stopspelling", "zwchr")
_ATTRIBUTION_CLASSES = ("gmail_attr", "moz-cite-prefix")
_HIDDEN_STYLE = re.compile(r"display\s*:\s*none|mso-hide\s*:\s*all", re.I)


class _Writer:
    """Accumulates lines; knows about pending spaces, paragraph breaks and quote prefixes."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.depths: list[int] = []  # quote depth of each finished line
        self.cur: list[str] = []
        self.cur_depth = 0
        self.quote = 0
        self.space = False
        self.blank = False
        self.marker_only = False  # the current line holds only a list marker so far

    def _start_line(self) -> None:
        if self.blank and self.lines:
            depth = min(self.depths[-1], self.quote)
            if self.lines[-1].strip("> ") or self.depths[-1] != depth:
                self._emit(("> " * depth).rstrip(), depth)
        self.blank = False
        self.cur_depth = self.quote

    def _emit(self, line: str, depth: int) -> None:
        self.lines.append(line)
        self.depths.append(depth)

    def raw(self, text: str) -> None:
        """Append text verbatim (list markers, cell separators, preformatted text)."""
        if not text:
            return
        if not self.cur:
            self._start_line()
        elif self.space:
            self.cur.append(" ")
        self.cur.append(text)
        self.space = False

    def text(self, data: str) -> None:
        """Append flowing text: whitespace collapsed, no space at the start of a line."""
        collapsed = _WS.sub(" ", data)
        if not collapsed:
            return
        content = collapsed.strip(" ")
        if collapsed.startswith(" ") and self.cur:
            self.space = True
        if content:
            self.raw(content)
            self.marker_only = False
        if collapsed.endswith(" ") and self.cur:
            self.space = True

    def newline(self) -> None:
        if self.marker_only:
            return
        if self.cur:
            self._emit(("> " * self.cur_depth) + "".join(self.cur).rstrip(), self.cur_depth)
            self.cur = []
        self.space = False

    def paragraph(self) -> None:
        if self.marker_only:
            return
        self.newline()
        self.blank = True

    def line_break(self) -> None:
        if self.marker_only:
            return
        if self.cur:
            self.newline()
        else:
            self._start_line()
            self._emit(("> " * self.quote).rstrip(), self.quote)

    def mark(self) -> tuple[int, int]:
        return len(self.lines), len(self.cur)

    def result(self) -> str:
        self.newline()
        out: list[str] = []
        for line in self.lines:
            line = line.rstrip()
            if out and not out[-1].strip("> ") and not line.strip("> ") and out[-1] == line:
                continue  # one blank (or one empty quoted) line in a row is enough
            out.append(line)
        while out and not out[0].strip():
            out.pop(0)
        while out and not out[-1].strip():
            out.pop()
        return "\n".join(out)


def _classes(node: Node) -> list[str]:
    return node.attrs.get("class", "").lower().split()


def _is_hidden(node: Node) -> bool:
    return "hidden" in node.attrs or bool(_HIDDEN_STYLE.search(node.attrs.get("style", "")))


def _is_boundary(node: Node) -> bool:
    ident = node.attrs.get("id", "").lower()
    if node.tag == "hr":
        return ident in _BOUNDARY_HR_IDS
    if ident and any(ident.endswith(b) for b in _BOUNDARY_IDS):
        return True
    return any(c.endswith("yahoo_quoted") for c in _classes(node))


def _link_target(href: str) -> str:
    href = href.strip()
    lower = href.lower()
    if lower.startswith("mailto:"):
        return unquote(href[7:].split("?", 1)[0]).strip()
    if lower.startswith(("http://", "https://", "ftp://")):
        return href
    return ""  # anchors, cid:, javascript:, relative links say nothing useful in a mail


def _same_target(text: str, target: str) -> bool:
    def norm(value: str) -> str:
        value = value.strip().lower()
        value = re.sub(r"^(?:https?://|ftp://|mailto:)", "", value)
        value = re.sub(r"^www\.", "", value)
        return value.rstrip("/")

    return norm(text) == norm(target)


def _has_nbsp(node: Node) -> bool:
    for child in node.children:
        if isinstance(child, str):
            if "\xa0" in child:
                return True
        elif _has_nbsp(child):
            return True
    return False


class _Renderer:
    def __init__(self) -> None:
        self.w = _Writer()
        self.lists: list[list] = []  # [tag, counter]
        self.pre = 0
        self.last_marker = -1

    def render(self, node: Node) -> None:
        children = node.children
        for index, child in enumerate(children):
            if isinstance(child, str):
                self._data(child)
                continue
            if (
                any(c in _ATTRIBUTION_CLASSES for c in _classes(child))
                and self._next_element(children, index + 1) == "blockquote"
            ):
                self.w.paragraph()
                self.w.quote += 1
                self.element(child)
                self.w.newline()
                self.w.quote -= 1
                continue
            self.element(child)

    @staticmethod
    def _next_element(children: list, start: int) -> str:
        for child in children[start:]:
            if isinstance(child, str):
                if child.strip(" \t\r\n\xa0"):
                    return ""
                continue
            if child.tag == "br":
                continue
            return child.tag
        return ""

    def _data(self, data: str) -> None:
        if not self.pre:
            self.w.text(data)
            return
        parts = data.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        for number, part in enumerate(parts):
            if number:
                self.w.line_break()
            if part:
                self.w.raw(part.replace("\xa0", " "))
                self.w.marker_only = False

    def _after_marker(self) -> bool:
        """True when the last text line written is the quote marker (rules aside)."""
        w = self.w
        if w.cur:
            return False
        for line in reversed(w.lines):
            if line.strip(" -_"):
                return line == QUOTE_MARKER
        return False

    def _marker(self) -> None:
        w = self.w
        if self._after_marker():
            return
        w.paragraph()
        w.raw(QUOTE_MARKER)
        w.newline()

    def element(self, node: Node) -> None:
        tag = node.tag
        w = self.w
        if tag in DROP or _is_hidden(node):
            return
        if _is_boundary(node):
            self._marker()
            if tag == "hr":
                return
        if tag == "br":
            w.line_break()
        elif tag == "hr":
            if self._after_marker():
                return
            w.paragraph()
            w.raw("---")
            w.paragraph()
        elif tag == "img":
            alt = node.attrs.get("alt", "").strip()
            if alt and "emoji" in node.attrs.get("class", "").lower():
                w.text(alt)
        elif tag == "a":
            self._link(node)
        elif tag == "blockquote":
            w.paragraph()
            w.quote += 1
            self.render(node)
            w.newline()
            w.quote -= 1
            w.paragraph()
        elif tag in ("ul", "ol", "menu", "dir"):
            if self.lists:
                w.newline()
            else:
                w.paragraph()
            self.lists.append([tag, 0])
            self.render(node)
            self.lists.pop()
            if self.lists:
                w.newline()
            else:
                w.paragraph()
        elif tag == "li":
            self._item(node)
        elif tag in ("td", "th"):
            if w.cur and not w.marker_only:
                w.space = False
                w.raw(" | ")
                w.space = False
            self.render(node)
        elif tag == "pre":
            w.paragraph()
            self.pre += 1
            self.render(node)
            self.pre -= 1
            w.paragraph()
        elif tag in PARA_BLOCKS or tag in LINE_BLOCKS:
            self._block(node)
        else:
            self.render(node)  # inline and unknown elements (span, b, font, o:p, ...)

    def _block(self, node: Node) -> None:
        w = self.w
        # Outlook writes every line as <p class=MsoNormal> with no margin: lines, not paragraphs
        para = node.tag in PARA_BLOCKS and "msonormal" not in _classes(node)
        if para:
            w.paragraph()
        else:
            w.newline()
        before = w.mark()
        self.render(node)
        if w.mark() == before and node.tag in ("p", "div") and _has_nbsp(node):
            w.line_break()  # <p>&nbsp;</p> is how mail clients write an empty line
        if para:
            w.paragraph()
        else:
            w.newline()

    def _item(self, node: Node) -> None:
        w = self.w
        w.newline()
        if self.lists:
            kind = self.lists[-1]
            kind[1] += 1
            bullet = f"{kind[1]}." if kind[0] == "ol" else "-"
            indent = "  " * (len(self.lists) - 1)
        else:
            bullet, indent = "-", ""
        w.raw(indent + bullet)
        w.space = True
        w.marker_only = True
        self.render(node)
        if w.marker_only:  # an empty item: drop its lone bullet
            w.cur = []
            w.marker_only = False
        w.newline()

    def _link(self, node: Node) -> None:
        w = self.w
        target = _link_target(node.attrs.get("href", ""))
        lines_before, cur_before = w.mark()
        self.render(node)
        if not target:
            return
        if len(w.lines) == lines_before:
            shown = "".join(w.cur[cur_before:]).strip()
        else:
            shown = "".join(w.cur).strip()
        if not shown or _same_target(shown, target):
            return
        w.space = True
        w.raw(f"({target})")


def _convert(html: str) -> str:
    builder = TreeBuilder()
    builder.feed(html)
    builder.close()
    renderer = _Renderer()
    renderer.render(builder.root)
    return renderer.w.result()


def html_to_text(html: str) -> str:
    """Readable plain text from HTML mail (see the module docstring). Never raises."""
    if not html:
        return ""
    try:
        return _convert(html)
    except Exception:  # the stdlib parser rejects a few malformed declarations
        pass
    try:
        cleaned = re.sub(r"(?s)<!--.*?-->", " ", html)
        cleaned = re.sub(r"<![^>]*>?", " ", cleaned)
        return _convert(cleaned)
    except Exception:
        return crude_text(html)
