"""The daily staff digest: what needs a person today, emailed to ``RENEWDESK_STAFF_EMAIL``.

Tickets new and open, invoices falling due and overdue, today's and tomorrow's suspensions and
removals, held accounts, notices that went out by no email (paper invoicing, notices off, no
billing contact: a letter or a call), automatic answers held back by the loop cap, quarantined mail
and failed deliveries. The content is
returned as data and text so other front ends (Slack) can post the same thing.
"""
from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, or_, select

from handlers import slack_cards
from handlers.billing.candidates import chunks
from handlers.billing.common import OPEN_STATUSES, SCHEDULER, day_start, today
from handlers.billing.dunning import forecast  # also registers the billing sweeps, which run before the digest
from handlers.jobs import SWEEP_RUN_PREFIX, Sweep, register_sweep
from handlers.models import (Account, AutoAnswer, Hold, InboundMail, InboundStatus, Invoice, JobRun, Notice,
                             OutboundMail, OutboxStatus, Service, Suspension, Ticket, TicketStatus)
from handlers.money import fmt
from handlers.outbox import queue_email

if TYPE_CHECKING:
    from handlers.services import Services, Tx

FALLING_DUE_DAYS = 7
LISTED = 20   # items listed per section; more are counted
TOMORROW_RULES = ("overdue_suspensions", "removals", "credit_limits")  # the forecast's part the digest shows


def build(tx: "Tx") -> dict[str, Any]:
    """The digest's sections as of now."""
    s, day = tx.session, today(tx)
    start, since = day_start(tx, day), tx.now - dt.timedelta(days=1)
    open_tickets = s.scalar(select(func.count()).select_from(Ticket).where(
        Ticket.status != TicketStatus.closed, Ticket.archived.is_(False))) or 0
    new_tickets = list(s.scalars(select(Ticket).where(Ticket.created_at > since).order_by(Ticket.id)))
    invoices = list(s.scalars(select(Invoice).where(
        Invoice.status.in_(OPEN_STATUSES), Invoice.due_on <= day + dt.timedelta(days=FALLING_DUE_DAYS))
        .order_by(Invoice.due_on, Invoice.id)))
    suspended_today = list(s.scalars(select(Suspension).where(Suspension.started_at >= start)
                                     .order_by(Suspension.id)))
    removed_today = list(s.scalars(select(Notice).where(Notice.kind == "removal", Notice.created_at >= start)))
    # suspensions and removals only: a credit warning the same forecast plans is not one
    tomorrow = [a for d in forecast(tx, 1, TOMORROW_RULES) for a in d["actions"] if a["destructive"]]
    held = list(s.scalars(select(Hold).where(Hold.lifted_at.is_(None), Hold.started_at <= tx.now,
                                             or_(Hold.until.is_(None), Hold.until > tx.now)).order_by(Hold.id)))
    by_hand = list(s.scalars(select(Notice).where(
        Notice.created_at > since,
        Notice.outcome.in_(("paper_invoicing", "skipped_paper", "notices_off", "no_recipient")))
        .order_by(Notice.id)))
    held_answers = s.execute(select(AutoAnswer.recipient, func.count(), func.max(AutoAnswer.ticket_id)).where(
        AutoAnswer.sent.is_(False), AutoAnswer.at > since).group_by(AutoAnswer.recipient)
        .order_by(AutoAnswer.recipient)).all()
    quarantined = list(s.scalars(select(InboundMail).where(InboundMail.status == InboundStatus.quarantined)
                                 .order_by(InboundMail.id.desc()).limit(LISTED + 1)))
    failed = list(s.scalars(select(OutboundMail).where(
        OutboundMail.status.in_((OutboxStatus.failed, OutboxStatus.uncertain))).order_by(OutboundMail.id.desc())
        .limit(LISTED + 1)))
    named = {x.account_id for rows in (new_tickets, invoices, suspended_today, removed_today, held, by_hand)
             for x in rows}
    names: dict[int, str] = {}  # only the accounts listed: the names of every account would cost what is kept
    for part in chunks(sorted(a for a in named if a is not None)):
        names.update(s.execute(select(Account.id, Account.name).where(Account.id.in_(part))).all())
    number = {i.id: i.number for i in s.scalars(select(Invoice).where(
        Invoice.id.in_([n.subject_id for n in by_hand if n.subject_type == "invoice"])))} if by_hand else {}
    service = {v.id: v.name for v in s.scalars(select(Service).where(
        Service.id.in_([n.subject_id for n in by_hand if n.subject_type == "service"])))} if by_hand else {}

    failed_sweeps = list(s.scalars(select(JobRun).where(JobRun.name.like(SWEEP_RUN_PREFIX + "%"),
                                                       JobRun.last_outcome == "error").order_by(JobRun.name)))
    sections = [
        ("Sweeps that failed (the others ran; `renewdesk sweep` runs them again)",
         [f"{j.name.removeprefix(SWEEP_RUN_PREFIX)} as of {j.watermark.astimezone(tx.settings.tz):%Y-%m-%d %H:%M}: "
          f"{(j.last_error or '')[:200]}" for j in failed_sweeps]),
        ("Tickets", [f"{open_tickets} open"] + [f"new: T-{t.id} {names.get(t.account_id, '?')}: {t.subject[:80]}"
                                                 for t in new_tickets]),
        ("Invoices falling due and overdue",
         [f"{i.number} {names.get(i.account_id, '?')}: {fmt(i.due_minor, i.currency)} "
          + (f"OVERDUE since {i.due_on}" if i.due_on < day else f"due {i.due_on}") for i in invoices]),
        ("Suspended and removed today",
         [f"{names.get(x.account_id, '?')}: suspended ({x.reason.value}" + (f": {x.text}" if x.text else "") + ")"
          for x in suspended_today] + [f"{names.get(n.account_id, '?')}: services removed" for n in removed_today]),
        ("Tomorrow's suspensions and removals", [a["text"] for a in tomorrow]),
        ("Held accounts", [f"{names.get(h.account_id, '?')}"
                           + (f" until {h.until.astimezone(tx.settings.tz):%Y-%m-%d %H:%M}" if h.until else "")
                           + (f": {h.reason}" if h.reason else "") for h in held]),
        ("Notices to send by hand (letter or call)",
         [f"{names.get(n.account_id, '?')}: {n.kind.replace('_', ' ')} {n.occasion}"
          + (f" for {number.get(n.subject_id, '?')}" if n.subject_type == "invoice" else "")
          + (f" for {service.get(n.subject_id, '?')}" if n.subject_type == "service" else "")
          + f" ({n.outcome.replace('_', ' ')})" for n in by_hand]),
        ("Automatic answers held back (a mail loop?)",
         [f"{who}: {n} held back" + (f", last on T-{t}" if t else "") for who, n, t in held_answers]),
        ("Quarantined mail", [f"#{m.id} from {m.mail_from or '?'}: {m.reason or m.classification or ''}"[:120]
                              for m in quarantined]),
        ("Failed deliveries", [f"#{m.id} {m.intent} to {', '.join(m.recipients or [])}: {m.status.value}"
                               + (f" ({m.last_error[:80]})" if m.last_error else "") for m in failed]),
    ]
    out = [{"title": title, "items": items[:LISTED], "more": max(0, len(items) - LISTED)}
           for title, items in sections]
    out.insert(1, out.pop(0))  # tickets first, then what failed
    counts = {"new_tickets": len(new_tickets), "open_tickets": open_tickets,
              "overdue": sum(1 for i in invoices if i.due_on < day),
              "falling_due": sum(1 for i in invoices if i.due_on >= day),
              "suspended_today": len(suspended_today), "removed_today": len(removed_today),
              "tomorrow": len(tomorrow), "held": len(held), "by_hand": len(by_hand),
              "held_answers": len(held_answers), "quarantined": len(quarantined), "failed": len(failed),
              "failed_sweeps": len(failed_sweeps)}
    title = f"Daily digest {day}: {counts['overdue']} overdue, {counts['tomorrow']} action(s) tomorrow, " \
            f"{counts['new_tickets']} new ticket(s)"
    title += f", {len(failed_sweeps)} FAILED sweep(s)" if failed_sweeps else ""
    text = [title]
    for sec in out:
        if sec["items"]:
            text.append(f"{sec['title']}:")
            text += [f"  {item}" for item in sec["items"]]
            if sec["more"]:
                text.append(f"  ... and {sec['more']} more")
    return {"day": day.isoformat(), "title": title, "sections": out, "counts": counts, "text": "\n".join(text),
            "empty": not any(sec["items"] for sec in out[1:]) and not new_tickets}


def staff_addresses(tx: "Tx") -> list[str]:
    return [a.strip() for a in (tx.settings.staff_email or "").split(",") if a.strip()]


def send_digest(tx: "Tx", *, manual: bool = False) -> dict[str, Any]:
    """Build the digest and email it to the staff address; the daily one once per day."""
    content = build(tx)
    to = staff_addresses(tx)
    content["emailed_to"] = []
    if to and (manual or not content["empty"]):
        queue_email(tx, "staff_digest", {"digest": content}, to=to, from_local="billing",
                    dedupe_key=None if manual else f"digest:{content['day']}")
        content["emailed_to"] = to
    tx.audit("digest.build", manual=manual, counts=content["counts"], emailed_to=to)
    slack_cards.queue_digest(tx, content, manual=manual)  # and in the staff channel
    return content


def _digest_sweep(services: "Services", at: dt.datetime, dry_run: bool) -> list[str]:
    def op(tx: "Tx") -> dict[str, Any]:
        tx.now = at
        return build(tx) if dry_run else send_digest(tx)
    content = services.run(op, actor=SCHEDULER, readonly=dry_run)
    to = [a.strip() for a in (services.settings.staff_email or "").split(",") if a.strip()]
    if content["empty"]:
        where = "nothing to report"
    elif not to:
        where = "RENEWDESK_STAFF_EMAIL is not set: not emailed"
    else:
        where = ("would be emailed to " if dry_run else "emailed to ") + ", ".join(to)
    return [f"{content['title']}; {where}"]


STAFF_DIGEST = register_sweep(Sweep("staff_digest", _digest_sweep, "the daily staff digest"))
