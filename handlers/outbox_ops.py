"""The outbox for operators (`renewdesk outbox list` and `retry`): outgoing mail and Slack posts.

Mail rows are named by their number (``12``), Slack posts by ``S`` and theirs (``S12``): the two
are different tables, and an operator copies the name from the list into `outbox retry`.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import select

from handlers import slack_cards
from handlers.errors import Conflict, InvalidInput, NotFound
from handlers.models import OutboundMail, OutboxStatus, SlackPost

PROBLEMS = (OutboxStatus.failed, OutboxStatus.uncertain)
WHAT_CHARS = 70   # of a Slack post's text in the list


def _wanted(failed: bool) -> tuple[OutboxStatus, ...]:
    return PROBLEMS if failed else (OutboxStatus.queued, OutboxStatus.sending, *PROBLEMS)


def _when(value: Any) -> str | None:
    return value.isoformat(timespec="seconds") if value is not None else None


def listing(tx: Any, *, failed: bool = False, limit: int = 200) -> list[dict[str, Any]]:
    """Mail and Slack posts not yet sent (queued, sending) or, with ``failed``, failed and uncertain ones."""
    wanted = _wanted(failed)
    mail = tx.session.scalars(select(OutboundMail).where(OutboundMail.status.in_(wanted))
                              .order_by(OutboundMail.id).limit(limit))
    rows = [{"kind": "email", "id": r.id, "ref": str(r.id), "status": r.status.value, "intent": r.intent,
             "to": list(r.recipients), "subject": r.subject, "attempts": r.attempts,
             "next_attempt_at": _when(r.next_attempt_at), "last_error": r.last_error} for r in mail]
    posts = tx.session.scalars(select(SlackPost).where(SlackPost.status.in_(wanted))
                               .order_by(SlackPost.id).limit(limit))
    return rows + [slack_row(p) for p in posts]


def slack_row(post: SlackPost) -> dict[str, Any]:
    payload = post.payload or {}
    meta = payload.get("meta") or {}
    text = " ".join(str(payload.get("text") or "").split())
    return {"kind": "slack", "id": post.id, "ref": f"S{post.id}", "status": post.status.value,
            "method": post.method, "channel": post.channel, "ticket": post.ticket_id,
            "card": meta.get("card") or ("ticket" if meta.get("card_of_ticket") else None),
            "in_thread": bool(post.thread_ts or meta.get("thread_of_ticket")),
            "text": text[:WHAT_CHARS] + (" …" if len(text) > WHAT_CHARS else ""),
            "attempts": post.attempts, "next_attempt_at": _when(post.next_attempt_at), "last_error": post.last_error}


def listing_text(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "the outbox is empty"
    mail = [r for r in rows if r["kind"] == "email"]
    posts = [r for r in rows if r["kind"] == "slack"]
    head = f"{'STATUS':<10} {'TRIES':>5}  {'NEXT TRY':<20}"
    lines = [f"outgoing mail ({len(mail)})" if mail else "outgoing mail: none"]
    if mail:
        lines.append(f"{'ID':>6}  {head} TO / SUBJECT")
    for r in mail:
        lines.append(f"{r['id']:>6}  {r['status']:<10} {r['attempts']:>5}  {r['next_attempt_at'][:19]:<20} "
                     f"{', '.join(r['to'])}: {r['subject']}")
        if r["last_error"]:
            lines.append(f"{'':>8}{r['last_error']}")
    lines.append(f"Slack posts ({len(posts)})" if posts else "Slack posts: none")
    if posts:
        lines.append(f"{'ID':>6}  {head} CHANNEL / METHOD: WHAT")
    for r in posts:
        where = f"{r['channel']} {r['method']}" + (" (thread)" if r["in_thread"] else "")
        lines.append(f"{r['ref']:>6}  {r['status']:<10} {r['attempts']:>5}  {r['next_attempt_at'][:19]:<20} "
                     f"{where}: {r['text']}")
        if r["last_error"]:
            lines.append(f"{'':>8}{r['last_error']}")
    return "\n".join(lines)


def parse_ref(ref: str) -> tuple[str, int]:
    """``12`` → ("email", 12); ``S12`` → ("slack", 12); anything else is a clear error."""
    raw = (ref or "").strip()
    kind = "slack" if raw[:1] in ("S", "s") else "email"
    digits = raw[1:] if kind == "slack" else raw
    if not digits.isdigit():
        raise InvalidInput(f"not an outbox id: {ref!r} (a mail number like 12, or a Slack post like S12)")
    return kind, int(digits)


def retry_slack(tx: Any, post_id: int) -> SlackPost:
    """Put a failed Slack post back in the queue (staff fixed the channel, the token, ...)."""
    row = tx.session.get(SlackPost, post_id)
    if row is None:
        raise NotFound(f"no Slack post S{post_id}")
    if row.status not in PROBLEMS:
        raise Conflict(f"Slack post S{post_id} is {row.status.value}; only failed posts can be retried")
    row.status, row.next_attempt_at, row.handed_over_at, row.attempts = OutboxStatus.queued, tx.now, None, 0
    tx.audit("slack.retry", subject=row)
    slack_cards.wake_delivery(tx)
    return row
