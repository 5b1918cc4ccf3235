"""Health of every part, read from the database: `/healthz` and `renewdesk status` show it."""
from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import func, select

from handlers.errors import TemporaryFailure
from handlers.models import InboundMail, InboundStatus, JobRun, OutboundMail, OutboxStatus, SlackPost

HEARTBEAT_JOB = "heartbeat"
HEARTBEAT_SECONDS = 60


def _counts(session: Any, model: Any) -> dict[str, int]:
    rows = session.execute(select(model.status, func.count()).group_by(model.status)).all()
    return {str(status): n for status, n in rows}


def report(tx: Any) -> dict[str, Any]:
    """A JSON-able picture of the database, inbox, outbox and scheduler (one read-only operation)."""
    s, now = tx.session, tx.now
    inbox = _counts(s, InboundMail)
    oldest_new = s.scalar(select(func.min(InboundMail.received_at)).where(InboundMail.status == InboundStatus.new))
    outbox = _counts(s, OutboundMail)
    last_error = s.execute(
        select(OutboundMail.id, OutboundMail.last_error).where(OutboundMail.last_error.is_not(None))
        .order_by(OutboundMail.id.desc()).limit(1)).first()
    oldest_due = s.scalar(select(func.min(OutboundMail.next_attempt_at)).where(
        OutboundMail.status == OutboxStatus.queued, OutboundMail.next_attempt_at <= now))
    jobs = {j.name: {"last_started_at": _iso(j.last_started_at), "last_finished_at": _iso(j.last_finished_at),
                     "last_outcome": j.last_outcome, "last_error": j.last_error, "runs": j.runs}
            for j in s.scalars(select(JobRun).order_by(JobRun.name))}
    beat = s.get(JobRun, HEARTBEAT_JOB)
    alive = beat is not None and beat.last_finished_at is not None and \
        now - beat.last_finished_at <= dt.timedelta(seconds=3 * HEARTBEAT_SECONDS)
    return {
        "database": {"ok": True, "backend": s.get_bind().dialect.name},
        "inbox": {"counts": inbox, "backlog": inbox.get("new", 0) + inbox.get("processing", 0),
                  "quarantined": inbox.get("quarantined", 0),
                  "oldest_new_age_seconds": _age(now, oldest_new)},
        "outbox": {"counts": outbox, "slack_posts": _counts(s, SlackPost),
                   "due": s.scalar(select(func.count()).select_from(OutboundMail).where(
                       OutboundMail.status == OutboxStatus.queued, OutboundMail.next_attempt_at <= now)),
                   "oldest_due_age_seconds": _age(now, oldest_due),
                   "failed": outbox.get("failed", 0) + outbox.get("uncertain", 0),
                   "last_error": {"id": last_error[0], "error": last_error[1]} if last_error else None},
        "scheduler": {"alive": alive, "last_heartbeat": _iso(beat.last_finished_at) if beat else None,
                      "jobs": jobs},
        # jobs whose last run failed: a monitor reads this (and `renewdesk status` exits 1 while it is not empty)
        "failing": sorted(name for name, job in jobs.items() if job["last_outcome"] == "error"),
    }


def safe_report(services: Any) -> tuple[bool, dict[str, Any]]:
    """(database reachable, report); never raises for a database that is down."""
    try:
        return True, services.run(report, readonly=True)
    except TemporaryFailure as exc:
        return False, {"database": {"ok": False, "error": exc.message}}


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value else None


def _age(now: dt.datetime, then: dt.datetime | None) -> int | None:
    return None if then is None else max(int((now - then).total_seconds()), 0)


def text(data: dict[str, Any]) -> str:
    """The report as a few readable lines for a terminal."""
    db = data["database"]
    if not db["ok"]:
        return f"database   DOWN: {db['error']}"
    inbox, outbox, sched = data["inbox"], data["outbox"], data["scheduler"]
    lines = [
        f"database   ok ({db['backend']})",
        f"inbox      {inbox['backlog']} waiting, {inbox['quarantined']} quarantined"
        + (f", oldest {inbox['oldest_new_age_seconds']}s" if inbox["oldest_new_age_seconds"] is not None else ""),
        f"outbox     {outbox['due']} due, {outbox['counts'].get('queued', 0)} queued, "
        f"{outbox['counts'].get('sent', 0)} sent, {outbox['failed']} failed or uncertain",
    ]
    if outbox["last_error"]:
        lines.append(f"           last delivery error (mail {outbox['last_error']['id']}): "
                     f"{outbox['last_error']['error']}")
    beat = sched["last_heartbeat"] or "never"
    lines.append(f"scheduler  {'running' if sched['alive'] else 'NOT RUNNING'} (last heartbeat {beat})")
    for name, job in sched["jobs"].items():
        if name == HEARTBEAT_JOB:
            continue
        err = f": {job['last_error']}" if job["last_error"] else ""
        outcome = "FAILED" if job["last_outcome"] == "error" else (job["last_outcome"] or "")
        lines.append(f"  {name:<16} last run {job['last_finished_at'] or 'never'} {outcome}{err}")
    failed = [name for name, job in sched["jobs"].items() if job["last_outcome"] == "error"]
    if failed:
        lines.append(f"FAILING    {', '.join(failed)}: see the errors above; `renewdesk sweep` runs the sweeps again")
    return "\n".join(lines)
