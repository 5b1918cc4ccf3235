"""Reminder occasions and their date arithmetic: which expiry dates a day's reminders are about.

An occasion is an offset from the expiry date: calendar months before (``-3m``), days before
(``-15d`` ... ``0d``, the deletion reminder on the day itself) or days after (``+1d``, the
post-expiry notice). Month offsets clamp to the month's end: the ``-1m`` reminder of a
31 March expiry goes on 28 (or 29) February.
"""
from __future__ import annotations

import calendar
import datetime as dt
from dataclasses import dataclass
from typing import Any, Iterable

ONE_DAY = dt.timedelta(days=1)


def add_months(day: dt.date, months: int) -> dt.date:
    """The same day ``months`` calendar months later (or earlier), clamped to the month's last day."""
    index = day.month - 1 + months
    year, month = day.year + index // 12, index % 12 + 1
    return day.replace(year=year, month=month, day=min(day.day, calendar.monthrange(year, month)[1]))


@dataclass(frozen=True)
class Occasion:
    """``months`` or ``days`` before expiry (``days`` negative: after)."""

    months: int = 0
    days: int = 0

    @property
    def label(self) -> str:
        if self.months:
            return f"-{self.months}m"
        return f"+{-self.days}d" if self.days < 0 else (f"-{self.days}d" if self.days else "0d")

    @property
    def after_expiry(self) -> bool:
        return self.days < 0

    def reminder_date(self, expires_on: dt.date) -> dt.date:
        """The day this occasion's reminder is due for a service expiring on ``expires_on``."""
        if self.months:
            return add_months(expires_on, -self.months)
        return expires_on - dt.timedelta(days=self.days)

    def expiry_range(self, first: dt.date, last: dt.date) -> tuple[dt.date, dt.date]:
        """The expiry dates whose reminder falls on a day from ``first`` to ``last`` (lo > hi: none).

        ``reminder_date`` never decreases as the expiry grows, so the answer is one range: the
        sweep asks the index on ``service.expires_on`` for exactly that range.
        """
        if not self.months:
            return first + dt.timedelta(days=self.days), last + dt.timedelta(days=self.days)
        lo = add_months(first, self.months)
        while self.reminder_date(lo - ONE_DAY) >= first:
            lo -= ONE_DAY
        while self.reminder_date(lo) < first:
            lo += ONE_DAY
        hi = add_months(last, self.months)
        while self.reminder_date(hi + ONE_DAY) <= last:
            hi += ONE_DAY
        while self.reminder_date(hi) > last:
            hi -= ONE_DAY
        return lo, hi


def in_cycle(decided_at: dt.datetime, expires_on: dt.date, tz: dt.tzinfo) -> bool:
    """True when a decision was made for this expiry, not the one before (a renewal adds >= 1 year)."""
    return decided_at.astimezone(tz).date() > add_months(expires_on, -12)


def occasions(settings: Any) -> tuple[Occasion, ...]:
    """Every configured occasion, the earliest (furthest from expiry) first."""
    found = [Occasion(months=m) for m in settings.reminder_months if m > 0]
    found += [Occasion(days=d) for d in settings.reminder_days]
    found.append(Occasion(days=-settings.renewal_after_expiry_day))
    return tuple(found)


def due(all_occasions: Iterable[Occasion], expires_on: dt.date, first: dt.date, last: dt.date) -> Occasion | None:
    """The occasion whose reminder is the most recent one due from ``first`` to ``last``.

    After a gap (the sweep did not run for some days) only this one is sent: no burst of stale
    reminders. On a tie the occasion nearer the expiry wins.
    """
    best: tuple[dt.date, int, Occasion] | None = None
    for occ in all_occasions:
        day = occ.reminder_date(expires_on)
        if first <= day <= last:
            # nearer the expiry: fewer days before it (months count as ~30 days)
            key = (day, -(occ.months * 30 + occ.days))
            if best is None or key > best[:2]:
                best = (*key, occ)
    return best[2] if best else None


def phrase(expires_on: dt.date, today: dt.date, occasion: Occasion) -> tuple[int, str]:
    """How soon, as a sort key and words: ``(5, "expire in 5 days")``, ``(-2, "expired 2 days ago")``.

    A month occasion sent on its day reads "in 2 months"; one sent late reads in days.
    """
    days = (expires_on - today).days
    if occasion.months and occasion.reminder_date(expires_on) == today:
        return days, f"expire in {occasion.months} month{'s' if occasion.months > 1 else ''}"
    if days > 1:
        return days, f"expire in {days} days"
    if days == 1:
        return days, "expire tomorrow"
    if days == 0:
        return days, "expire today"
    return days, f"expired {-days} day{'s' if days < -1 else ''} ago"
