"""A multipart boundary matcher for the standard library's MIME parser, without a regex per message.

``email.feedparser`` compiles a regular expression for every multipart boundary it meets::

    (?P<sep>--BOUNDARY)(?P<end>--)?(?P<ws>[ \\t]*)(?P<linesep>\\r\\n|\\r|\\n)?$

Boundaries are unique per message, so ``re``'s cache never helps: the compilation was a third
of parsing a typical client mail (text + HTML, or with an attachment). :func:`install` gives
the feedparser module a stand-in for ``re`` whose ``compile`` recognises exactly that pattern
and returns :class:`Boundary`, which answers the same questions (``match(line)``, then
``group("end")`` and ``group("linesep")``) with string operations. Any other pattern, or one
whose separator does not read back exactly, goes to ``re.compile`` unchanged; if a future
Python writes the pattern differently, nothing matches it and the parser works as before.
``tests/mail_ingest/test_boundary.py`` holds the two to the same answers.
"""
from __future__ import annotations

import email.feedparser
import re
from typing import Any

_HEAD = "(?P<sep>"
_TAIL = r")(?P<end>--)?(?P<ws>[ \t]*)(?P<linesep>\r\n|\r|\n)?$"
_UNESCAPE = re.compile(r"\\(.)", re.DOTALL)
_LINESEPS = ("\r\n", "\r", "\n")


class Found:
    """What the regex's match object told the parser: the closing ``--`` and the line end."""

    __slots__ = ("end", "linesep")

    def __init__(self, end: str | None, linesep: str | None):
        self.end, self.linesep = end, linesep

    def group(self, name: str) -> str | None:
        return getattr(self, name)


class Boundary:
    """``re.compile`` of the boundary pattern for separator ``sep``, as string operations."""

    __slots__ = ("sep", "size")

    def __init__(self, sep: str):
        self.sep, self.size = sep, len(sep)

    def match(self, line: str) -> Found | None:
        if not line.startswith(self.sep):
            return None
        rest = line[self.size:]
        end = None
        if rest.startswith("--"):
            end, rest = "--", rest[2:]
        rest = rest.lstrip(" \t")
        # ``$`` matches at the end, or before a newline that ends the string
        for linesep in _LINESEPS:
            if rest.startswith(linesep) and rest[len(linesep):] in ("", "\n"):
                return Found(end, linesep)
        return Found(end, None) if rest in ("", "\n") else None


def compile_pattern(pattern: Any, flags: int = 0) -> Any:
    """``re.compile``, except for the feedparser's boundary pattern."""
    if not flags and isinstance(pattern, str) and pattern.startswith(_HEAD) and pattern.endswith(_TAIL):
        escaped = pattern[len(_HEAD):-len(_TAIL)]
        sep = _UNESCAPE.sub(r"\1", escaped)
        if re.escape(sep) == escaped:
            return Boundary(sep)
    return re.compile(pattern, flags)


class _FeedparserRe:
    """What ``email.feedparser`` sees as ``re``: the module itself, but for ``compile``."""

    compile = staticmethod(compile_pattern)

    def __getattr__(self, name: str) -> Any:
        return getattr(re, name)


def install() -> None:
    """Give ``email.feedparser`` the boundary matcher (idempotent; the whole process shares it)."""
    if not isinstance(email.feedparser.re, _FeedparserRe):
        email.feedparser.re = _FeedparserRe()  # type: ignore[assignment]


def uninstall() -> None:
    """Put the ``re`` module back (the tests compare both)."""
    email.feedparser.re = re  # type: ignore[assignment]
