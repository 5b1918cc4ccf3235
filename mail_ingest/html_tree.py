"""The HTML parse tree behind :mod:`mail_ingest.html_text`: a forgiving builder on ``html.parser``.

Broken HTML is read the way browsers mostly read it: unclosed elements are closed by their
parent, stray end tags are ignored, nesting is bounded.
"""
from __future__ import annotations

import html as _html
import re
from html.parser import HTMLParser

VOID = frozenset(
    "area base br col embed hr img input keygen link meta param source track wbr".split()
)
DROP = frozenset(
    "script style head title template svg math xml object iframe audio video canvas noscript "
    "select button".split()
)
# elements that end the current line (and start a new one) on both sides
LINE_BLOCKS = frozenset(
    "div section article header footer nav aside main center form fieldset figure figcaption "
    "address dl dt dd tr caption details summary legend".split()
)
# elements separated from their neighbours by a blank line
PARA_BLOCKS = frozenset("p h1 h2 h3 h4 h5 h6 table pre".split())
# a new one of these closes an open <p> (as browsers do)
CLOSES_P = LINE_BLOCKS | PARA_BLOCKS | frozenset("ul ol li blockquote hr".split())
MAX_DEPTH = 150

class Node:
    __slots__ = ("tag", "attrs", "children")

    def __init__(self, tag: str, attrs: dict[str, str]):
        self.tag = tag
        self.attrs = attrs
        self.children: list[Node | str] = []


class TreeBuilder(HTMLParser):
    """Builds a forgiving element tree: implied end tags, stray end tags ignored, depth capped."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#root", {})
        self.stack = [self.root]

    # -- helpers
    def _pop_to(self, index: int) -> None:
        del self.stack[index:]

    def _find_open(self, names: frozenset[str] | set[str], stop: frozenset[str]) -> int:
        for index in range(len(self.stack) - 1, 0, -1):
            tag = self.stack[index].tag
            if tag in names:
                return index
            if tag in stop:
                return -1
        return -1

    def _append(self, node: Node) -> None:
        self.stack[-1].children.append(node)

    # -- parser callbacks
    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k.lower(): (v or "") for k, v in attrs if k})
        if tag in CLOSES_P and self.stack[-1].tag == "p":
            self.stack.pop()
        if tag == "li":
            index = self._find_open({"li"}, frozenset({"ul", "ol", "table"}))
            if index > 0:
                self._pop_to(index)
        elif tag in ("dt", "dd"):
            index = self._find_open({"dt", "dd"}, frozenset({"dl", "table"}))
            if index > 0:
                self._pop_to(index)
        elif tag == "tr":
            index = self._find_open({"tr", "td", "th"}, frozenset({"table"}))
            if index > 0:
                self._pop_to(index)
        elif tag in ("td", "th"):
            index = self._find_open({"td", "th"}, frozenset({"tr", "table"}))
            if index > 0:
                self._pop_to(index)
        elif tag == "body":
            index = self._find_open({"head"}, frozenset())
            if index > 0:
                self._pop_to(index)
        self._append(node)
        if tag not in VOID and len(self.stack) < MAX_DEPTH:
            self.stack.append(node)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        depth = len(self.stack)
        self.handle_starttag(tag, attrs)
        if len(self.stack) > depth:  # "<div/>": an empty element, nothing goes inside it
            self.stack.pop()

    def handle_endtag(self, tag: str) -> None:
        if tag == "br":  # "</br>" is read as a line break
            self._append(Node("br", {}))
            return
        table_parts = frozenset({"table", "tr", "td", "th", "tbody", "thead", "tfoot"})
        stop = frozenset() if tag in table_parts else frozenset({"td", "th", "table"})
        index = self._find_open({tag}, stop)
        if index > 0:
            self._pop_to(index)

    def handle_data(self, data: str) -> None:
        children = self.stack[-1].children
        if children and isinstance(children[-1], str):
            children[-1] += data
        else:
            children.append(data)


_WS = re.compile(r"[ \t\n\r\f\v\xa0]+")


def crude_text(html: str) -> str:
    """Tags stripped by pattern: the fallback for markup the HTML parser itself rejects."""
    text = re.sub(r"(?is)<(script|style|head)\b.*?</\1\s*>", " ", html)
    text = re.sub(r"(?is)<!--.*?-->", " ", text)
    text = re.sub(r"(?i)<br\s*/?>", "\n", text)
    text = re.sub(r"(?i)</(p|div|tr|li|h[1-6]|table|blockquote)\s*>", "\n", text)
    text = re.sub(r"(?s)<[^>]*>", " ", text)
    text = _html.unescape(text)
    lines = [_WS.sub(" ", line).strip() for line in text.split("\n")]
    out: list[str] = []
    for line in lines:
        if line or (out and out[-1]):
            out.append(line)
    return "\n".join(out).strip()
