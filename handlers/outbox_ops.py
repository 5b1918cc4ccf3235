"""Read-only views of the outbox for operators (`renewdesk outbox list`)."""
from __future__ import annotations

from typing import Any

from sqlalchemy import select

from handlers.models import OutboundMail, OutboxStatus

PROBLEMS = (OutboxStatus.failed, OutboxStatus.uncertain)


def listing(tx: Any, *, failed: bool = False, limit: int = 200) -> list[dict[str, Any]]:
    """Mail not yet sent (queued, sending) or, with ``failed``, failed and uncertain mail."""
    wanted = PROBLEMS if failed else (OutboxStatus.queued, OutboxStatus.sending, *PROBLEMS)
    rows = tx.session.scalars(select(OutboundMail).where(OutboundMail.status.in_(wanted))
                              .order_by(OutboundMail.id).limit(limit))
    return [{"id": r.id, "status": r.status.value, "intent": r.intent, "to": list(r.recipients),
             "subject": r.subject, "attempts": r.attempts,
             "next_attempt_at": r.next_attempt_at.isoformat(timespec="seconds"),
             "last_error": r.last_error} for r in rows]


def listing_text(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "the outbox is empty"
    lines = [f"{'ID':>6}  {'STATUS':<10} {'TRIES':>5}  {'NEXT TRY':<20} TO / SUBJECT"]
    for r in rows:
        lines.append(f"{r['id']:>6}  {r['status']:<10} {r['attempts']:>5}  {r['next_attempt_at'][:19]:<20} "
                     f"{', '.join(r['to'])}: {r['subject']}")
        if r["last_error"]:
            lines.append(f"{'':>8}{r['last_error']}")
    return "\n".join(lines)
