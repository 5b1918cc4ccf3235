"""Holds: while one is open, the sweeps neither suspend nor remove anything of that account.

Reminders and notices still go out; staff see the hold in `account show`, forecasts and digests.
"""
from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from sqlalchemy import select

from handlers.billing.common import active_hold, day_start, lock_account, today
from handlers.errors import Conflict, InvalidInput
from handlers.models import Hold

if TYPE_CHECKING:
    from handlers.services import Tx


def hold(tx: "Tx", account_id: int, *, until: dt.date | None = None, reason: str = "") -> Hold:
    """Open a hold, to the end of ``until`` (a business day) or until lifted."""
    acc = lock_account(tx, account_id)
    if until is not None and until < today(tx):
        raise InvalidInput(f"--until: {until} is in the past")
    ends = day_start(tx, until + dt.timedelta(days=1)) if until else None
    found = active_hold(tx, acc.id)
    if found is not None:
        if found.until == ends and (not reason or reason == found.reason):
            raise Conflict(f"{acc.name} is held already" + (f" until {until}" if until else ""))
        # a new end or reason replaces the open hold: one hold per account at a time
        found.lifted_at, found.lifted_by = tx.now, tx.actor
    row = Hold(account_id=acc.id, reason=reason.strip(), started_at=tx.now, until=ends, started_by=tx.actor)
    tx.session.add(row)
    tx.session.flush()
    tx.audit("hold.start", subject=row, account_id=acc.id, until=until.isoformat() if until else None,
             reason=row.reason, replaced=found.id if found else None)
    return row


def unhold(tx: "Tx", account_id: int) -> list[Hold]:
    """Lift every open hold of the account."""
    acc = lock_account(tx, account_id)
    rows = list(tx.session.scalars(select(Hold).where(Hold.account_id == acc.id, Hold.lifted_at.is_(None))))
    live = [h for h in rows if h.until is None or h.until > tx.now]
    if not live:
        raise Conflict(f"{acc.name} has no hold")
    for h in rows:
        h.lifted_at, h.lifted_by = tx.now, tx.actor
        tx.audit("hold.lift", subject=h, account_id=acc.id)
    return live
