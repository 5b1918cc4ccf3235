"""The reply grammar: what a client may write in a reply to a renewal reminder.

One decision per line, in any case, anywhere above the quoted reminder::

    renew example.com               (the period on the reminder)
    renew example.com 3 years       (1 to 10)
    decline example.org
    renew all 2 years
    decline all

Several names may share a line, separated by commas. Blank lines, bullets ("- ", "* ") and a
greeting ("Hi,", "Dear support,") are ignored; a closing line ("Thanks,", "Regards, Ann") ends
the decisions, so a signature below it is never read. Any other line is not understood, and a
reply with one line not understood applies nothing: the client is answered with what was
understood.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from handlers.models import DecisionAction

MIN_YEARS, MAX_YEARS = 1, 10
ALL = "*"

_DECISION = re.compile(
    r"(?P<verb>renew|decline)\s*:?\s+(?P<targets>.+?)"
    r"(?:\s+(?:for\s+)?(?P<years>\d+)\s*(?:years?|yrs?|y))?\s*[.!]?", re.I)
_BULLET = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])\s+")
_GREETING = re.compile(r"(?:hi|hello|hey|dear|good\s+(?:morning|afternoon|evening))(?:[,\s]+[\w .'-]{0,40})?[,.!:]*",
                       re.I)
# a closing line ends the decisions: what follows is a signature the stripper may have left
_CLOSING = re.compile(r"(?:thanks?(?:\s+you)?(?:\s+(?:very|so)\s+much)?|many\s+thanks|thank\s+you|regards|"
                      r"best(?:\s+(?:regards|wishes))?|kind\s+regards|cheers|sincerely)(?:[,\s]+[\w .'-]{0,40})?[,.!]*",
                      re.I)


@dataclass(frozen=True)
class Line:
    """One line of the reply: a decision, or why it was not understood."""

    number: int
    text: str
    action: DecisionAction | None = None
    targets: tuple[str, ...] = ()      # service names as written (lower-case), or (ALL,)
    years: int | None = None           # None: the period on the reminder
    problem: str | None = None

    @property
    def understood(self) -> bool:
        return self.action is not None and self.problem is None

    def describe(self) -> str:
        names = "all" if self.targets == (ALL,) else ", ".join(self.targets)
        period = f" for {self.years} year{'s' if self.years != 1 else ''}" if self.years else ""
        return f"{self.action.value} {names}{period}" if self.action else self.text


@dataclass(frozen=True)
class ParsedReply:
    lines: tuple[Line, ...]

    @property
    def decisions(self) -> list[Line]:
        return [line for line in self.lines if line.understood]

    @property
    def problems(self) -> list[Line]:
        return [line for line in self.lines if not line.understood]


def parse_line(number: int, raw: str) -> Line | None:
    """A decision, a line not understood, or None for a line that says nothing (blank, greeting)."""
    text = _BULLET.sub("", raw).strip()
    if not text or _GREETING.fullmatch(text):
        return None
    m = _DECISION.fullmatch(text)
    if m is None:
        return Line(number, text, problem="not a decision (write \"renew NAME\", \"renew NAME 2 years\" or "
                                          "\"decline NAME\")")
    action = DecisionAction(m["verb"].lower())
    targets = tuple(t.strip().lower().rstrip(".") for t in m["targets"].split(",") if t.strip())
    if not targets:
        return Line(number, text, problem="which service?")
    if "all" in targets:
        if len(targets) > 1:
            return Line(number, text, problem="\"all\" goes alone on its line")
        targets = (ALL,)
    years = int(m["years"]) if m["years"] else None
    if years is not None and action == DecisionAction.decline:
        return Line(number, text, problem="a decline takes no period")
    if years is not None and not MIN_YEARS <= years <= MAX_YEARS:
        return Line(number, text, problem=f"the period must be {MIN_YEARS} to {MAX_YEARS} years")
    if any(re.search(r"\s\d+$", t) for t in targets):
        return Line(number, text, problem="write the period as \"2 years\"")
    return Line(number, text, action, targets, years)


def parse_reply(text: str) -> ParsedReply:
    """Every meaningful line of the stripped reply, understood or not, in order."""
    lines = []
    for number, raw in enumerate((text or "").splitlines(), start=1):
        if _CLOSING.fullmatch(_BULLET.sub("", raw).strip()):
            break
        line = parse_line(number, raw)
        if line is not None:
            lines.append(line)
    return ParsedReply(tuple(lines))
