"""What became of one inbound message, as the inbox processor records it."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Outcome:
    """``status`` is ``done``, or ``waiting`` when the message is held for staff; ``rule`` is the
    classifier rule that acted; ``reason`` one line for staff."""

    status: str
    rule: str
    reason: str
    ticket_id: int | None = None
