"""The boundary matcher gives the MIME parser exactly the answers its own regex gave.

- For any separator and any line (hypothesis: boundary-like text, the characters ``re.escape``
  escapes, spaces, tabs, dashes and every kind of line end), ``Boundary(sep).match(line)`` and
  the feedparser's compiled pattern agree on whether the line matches, and on the ``end`` and
  ``linesep`` groups.
- Every message of the shared corpus parses to the same tree (types, preambles, epilogues,
  payloads, defects) with the matcher installed as with the ``re`` module back in place.
- Other patterns reach ``re.compile`` unchanged.
"""
from __future__ import annotations

import email
import email.feedparser
import re
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mail_ingest import boundary
from tests.support.corpus import CORPUS


def _stdlib(sep: str) -> re.Pattern:
    """The feedparser's own pattern for ``sep`` (as written in email/feedparser.py)."""
    return re.compile("(?P<sep>" + re.escape(sep) + r")(?P<end>--)?(?P<ws>[ \t]*)(?P<linesep>\r\n|\r|\n)?$")


_pieces = st.sampled_from(["-", "--", " ", "\t", "\r", "\n", "\r\n", "=", "_", ".", "+", "(", ")", "?", "*",
                           "\\", "$", "^", "[", "]", "{", "}", "|", "#", "&", "~", "a", "Z", "0", "é", "\x00",
                           "\x0b", "\x0c"])
_text = st.lists(_pieces, max_size=8).map("".join)


@given(sep=st.text(min_size=1, max_size=12).map(lambda b: "--" + b) | _text.map(lambda b: "--" + b),
       tail=_text, prefix=st.booleans())
def test_the_matcher_agrees_with_the_feedparsers_regex_on_every_line(sep, tail, prefix):
    line = (sep + tail) if prefix else tail
    want = _stdlib(sep).match(line)
    got = boundary.compile_pattern(_stdlib(sep).pattern)
    assert isinstance(got, boundary.Boundary) and got.sep == sep
    found = got.match(line)
    assert (found is None) == (want is None), (sep, line)
    if want is not None:
        assert (found.group("end"), found.group("linesep")) == (want.group("end"), want.group("linesep"))


def test_other_patterns_and_flags_are_compiled_by_re():
    assert isinstance(boundary.compile_pattern(r"(\r\n|\r|\n)"), re.Pattern)
    pattern = _stdlib("--abc").pattern
    assert isinstance(boundary.compile_pattern(pattern, re.IGNORECASE), re.Pattern)
    # a separator that does not read back exactly (not re.escape's output) is left to re
    assert isinstance(boundary.compile_pattern(pattern.replace(r"\-\-abc", r"--a\bc")), re.Pattern)


def _tree(raw: bytes) -> list:
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    return [(p.get_content_type(), p.preamble, p.epilogue, None if p.is_multipart() else p.get_payload(),
             [type(d).__name__ for d in p.defects]) for p in msg.walk()]


def _corpus() -> list:
    files = [p for p in CORPUS.rglob("*") if p.is_file() and p.name != "SOURCE.md" and p.suffix != ".json"]
    return sorted(files)


@pytest.mark.skipif(not CORPUS.exists(), reason=f"the mail corpus is not at {CORPUS} (set RENEWDESK_CORPUS)")
def test_every_corpus_message_parses_to_the_same_tree_with_the_matcher_as_with_re():
    files = _corpus()
    assert len(files) > 500, f"the mail corpus at {CORPUS} holds only {len(files)} messages"
    boundary.install()
    try:
        ours = [_tree(p.read_bytes()) for p in files]
        boundary.uninstall()
        theirs = [_tree(p.read_bytes()) for p in files]
    finally:
        boundary.install()
    different = [str(p) for p, a, b in zip(files, ours, theirs) if a != b]
    assert different == []
    assert sum(len(t) > 1 for t in ours) > 100  # and plenty of them are multipart


def test_importing_the_parser_installs_the_matcher():
    import mail_ingest.parse  # noqa: F401
    assert isinstance(email.feedparser.re, boundary._FeedparserRe)
    assert isinstance(email.feedparser.re.compile(r"\d"), re.Pattern) and email.feedparser.re.escape("-") == r"\-"
