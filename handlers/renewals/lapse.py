"""A lapsed service's removal day: due after the grace period, and never sooner than the removal warning's
days after the warning actually went out (a warning sent late, after downtime or a hold, moves it).

The warning's notice (kind ``renewal_removal_warning``) records the day it announced in its ``detail``.
"""
from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from sqlalchemy import select

from handlers.clock import local_date
from handlers.models import Notice

if TYPE_CHECKING:
    from handlers.billing.rules import Key
    from handlers.services import Tx

WARN = "renewal_removal_warning"


def removal_due(tx: "Tx", expires_on: dt.date) -> dt.date:
    """The day an expired service nobody renewed is due for removal: the day after the grace period."""
    return expires_on + dt.timedelta(days=tx.settings.renewal_grace_days + 1)


def removal_on(tx: "Tx", expires_on: dt.date, warned_on: dt.date) -> dt.date:
    """The removal day a warning sent on ``warned_on`` announces: never sooner than the warning days after it."""
    return max(removal_due(tx, expires_on), warned_on + dt.timedelta(days=tx.settings.removal_warning_days))


def announced(tx: "Tx", ids: list[int], assumed: set[Key]) -> dict[tuple[int, dt.date], dt.date]:
    """{(service, expiry): the removal day its warning announced}, from the notices and a forecast's earlier days."""
    out = {}
    for sid, exp, detail, at in tx.session.execute(select(
            Notice.subject_id, Notice.occasion_date, Notice.detail, Notice.created_at).where(
            Notice.kind == WARN, Notice.subject_type == "service", Notice.subject_id.in_(ids))):
        try:
            out[(sid, exp)] = dt.date.fromisoformat((detail or "").removeprefix("removal on "))
        except ValueError:
            out[(sid, exp)] = removal_on(tx, exp, local_date(at, tx.settings.tz))
    for key in assumed:
        if key and key[0] == WARN:
            out.update(((sid, exp), when) for (sid, exp), when in zip(key[3], key[4]))
    return out
