"""The audit log: every change an operation makes, with who asked and through which door."""
from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from handlers.models import AuditEvent


def record(session: Session, now: Any, actor: str, action: str, *, subject: Any = None,
           account_id: int | None = None, **detail: Any) -> AuditEvent:
    """Add one audit row in the caller's transaction.

    ``actor`` says who: ``staff:U123``, ``contact:42``, ``system:scheduler``, ``cli``.
    ``subject`` is a model instance (its table and id are recorded) or ``(type, id)``.
    """
    subject_type = subject_id = None
    if isinstance(subject, tuple):
        subject_type, subject_id = subject
    elif subject is not None:
        subject_type, subject_id = subject.__tablename__, getattr(subject, "id", None)
    event = AuditEvent(at=now, actor=actor, action=action, subject_type=subject_type,
                       subject_id=None if subject_id is None else str(subject_id),
                       account_id=account_id, detail=_jsonable(detail))
    session.add(event)
    return event


def recent(session: Session, *, account_id: int | None = None, limit: int = 50) -> list[AuditEvent]:
    q = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
    if account_id is not None:
        q = q.where(AuditEvent.account_id == account_id)
    return list(session.scalars(q))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)
