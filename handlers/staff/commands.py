"""Staff command handlers by name: the registry, `help`, and what every handler shares."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

from handlers.clock import local_date
from handlers.errors import InvalidInput, Unavailable
from handlers.staff.grammar import AREAS, BY_NAME, COMMANDS, Command, nearest

if TYPE_CHECKING:
    from handlers.services import Tx


@dataclass
class Reply:
    """A command's answer: a title, plain text for a shell or Slack, and JSON-able data."""

    title: str
    text: str
    data: Any = None


Handler = Callable[["Tx", dict[str, Any]], Reply]
_HANDLERS: dict[str, Handler] = {}


def register(name: str) -> Callable[[Handler], Handler]:
    """Decorator: ``@register("invoice paid")`` makes that grammar command available."""
    if name not in BY_NAME:
        raise KeyError(f"no command {name!r} in the staff grammar")

    def add(fn: Handler) -> Handler:
        _HANDLERS[name] = fn
        return fn
    return add


def is_available(name: str) -> bool:
    return name in _HANDLERS


def handler_for(name: str) -> Handler:
    """The handler registered for a command, or one that says it is not built yet."""
    if name in _HANDLERS:
        return _HANDLERS[name]

    def unavailable(tx: "Tx", args: dict[str, Any]) -> Reply:
        raise Unavailable(f"`{name}` is part of the grammar but not available yet")
    return unavailable


# -- shared by handlers -----------------------------------------------------------------------

def today(tx: "Tx") -> dt.date:
    """The calendar day it is now in the business's timezone."""
    return local_date(tx.now, tx.settings.tz)


def local_time(tx: "Tx", at: dt.datetime | None) -> str:
    return "" if at is None else at.astimezone(tx.settings.tz).strftime("%Y-%m-%d %H:%M")


def iso(value: dt.date | dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def caller(tx: "Tx") -> str | None:
    """The Slack user id of the staff member running the command (None from a shell)."""
    return tx.actor.removeprefix("staff:") if tx.actor.startswith("staff:") else None


def columns(rows: Sequence[Sequence[Any]], indent: str = "  ") -> list[str]:
    """Rows of cells as left-aligned text columns."""
    cells = [[str(c) for c in row] for row in rows]
    if not cells:
        return []
    widths = [max(len(r[i]) for r in cells if i < len(r)) for i in range(max(map(len, cells)))]
    return [indent + "  ".join(c.ljust(widths[i]) for i, c in enumerate(r)).rstrip() for r in cells]


# -- help -------------------------------------------------------------------------------------

def describe(command: Command) -> dict[str, Any]:
    return {"command": command.name, "usage": command.usage, "summary": command.summary,
            "area": command.area, "roles": list(command.roles), "changes": command.writes,
            "destructive": command.destructive, "available": is_available(command.name)}


def _lines(commands: Sequence[Command], width: int) -> list[str]:
    lines = []
    for c in commands:
        note = "" if is_available(c.name) else " (not available yet)"
        if len(c.usage) > width:
            lines += [f"  {c.usage}", f"  {'':<{width}}  {c.summary}{note}"]
        else:
            lines.append(f"  {c.usage:<{width}}  {c.summary}{note}")
    return lines


def _overview(commands: Sequence[Command], title: str) -> Reply:
    areas, text = [], []
    width = min(max(len(c.usage) for c in commands), 40)
    for area, heading in AREAS:
        members = [c for c in commands if c.area == area]
        if members:
            areas.append({"area": area, "title": heading, "commands": [describe(c) for c in members]})
            text += [heading, *_lines(members, width)]
    return Reply(title=title, text="\n".join(text), data={"areas": areas})


def _one(command: Command) -> Reply:
    text = [f"usage: {command.usage}", command.summary, f"roles: {', '.join(command.roles)}"]
    if command.destructive:
        text.append("asks for confirmation in Slack")
    if not is_available(command.name):
        text.append("not available yet")
    return Reply(title=f"help {command.name}", text="\n".join(text), data=describe(command))


@register("help")
def help_command(tx: "Tx", args: dict[str, Any]) -> Reply:
    """Every command grouped by area, every command of one group, or one command."""
    topic = (args.get("command") or "").lower().split()
    if not topic:
        return _overview(COMMANDS, "help")
    if " ".join(topic) in BY_NAME:
        return _one(BY_NAME[" ".join(topic)])
    group = [c for c in COMMANDS if list(c.words[:len(topic)]) == topic]
    if group:
        return _overview(group, f"help {' '.join(topic)}")
    guess, _ = nearest(topic)
    raise InvalidInput(f"no command `{' '.join(topic)}`; did you mean `{guess.name}`?", hint=guess.hint())
