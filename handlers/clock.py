"""The injected clock: every "now" comes from ``services.clock`` so tests can move time."""
from __future__ import annotations

import datetime as dt
import threading
from typing import Protocol

UTC = dt.timezone.utc


class Clock(Protocol):
    def now(self) -> dt.datetime:
        """The current time, timezone-aware UTC."""


class SystemClock:
    """The real time."""

    def now(self) -> dt.datetime:
        return dt.datetime.now(UTC)


class FixedClock:
    """A clock that stays where it is put; tests move it with :meth:`advance` or :meth:`set`."""

    def __init__(self, at: dt.datetime | str):
        self._lock = threading.Lock()
        self._now = _aware(at)

    def now(self) -> dt.datetime:
        with self._lock:
            return self._now

    def set(self, at: dt.datetime | str) -> None:
        with self._lock:
            self._now = _aware(at)

    def advance(self, **delta: float) -> dt.datetime:
        with self._lock:
            self._now += dt.timedelta(**delta)
            return self._now


def _aware(at: dt.datetime | str) -> dt.datetime:
    if isinstance(at, str):
        at = dt.datetime.fromisoformat(at)
    if at.tzinfo is None:
        raise ValueError("a clock needs a timezone-aware time")
    return at.astimezone(UTC)


def local_date(at: dt.datetime, tz: dt.tzinfo) -> dt.date:
    """The calendar day ``at`` falls on in the business's timezone."""
    return at.astimezone(tz).date()
