"""Applying renewal decisions: record them with how the client was authenticated, update the
service's status history, confirm exactly what was recorded, and hand it to the sales contact."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Sequence

from sqlalchemy import select

from handlers.actors import actor_name, auth_words
from handlers.billing.common import lock_account
from handlers.clock import local_date
from handlers.models import (Account, DecisionAction, Invoice, RenewalDecision, RenewalRequest, RenewalTerm, Service,
                             ServiceEvent, ServiceStatus, SlackPost)
from handlers.money import fmt
from handlers.outbox import Recipient, queue_email
from handlers.renewals.grammar import ALL, MAX_YEARS, MIN_YEARS, ParsedReply
from handlers.renewals.invoicing import context as invoice_context, invoice_of, settle
from handlers.renewals.occasions import in_cycle
from handlers.renewals.terms import term_for


@dataclass(frozen=True)
class Choice:
    service: Service
    action: DecisionAction
    years: int | None = None   # None for a renewal: the service's own period


@dataclass(frozen=True)
class Authority:
    """Who decides and how we know: recorded on every decision."""

    actor: str                  # contact:42, sales_contact, link:7, staff:U123
    auth_method: str            # reply_token | page_link | activation_code | staff
    channel: str                # email | page
    request: RenewalRequest | None = None
    inbound_id: int | None = None


@dataclass
class Resolution:
    """A reply's lines matched against the services it may decide for."""

    choices: list[Choice] = field(default_factory=list)
    understood: list[str] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)   # (line as written, why)


def default_years(service: Service) -> int:
    return min(max(service.period_years or 1, MIN_YEARS), MAX_YEARS)


def resolve(parsed: ParsedReply, scope: Sequence[Service]) -> Resolution:
    """Match each understood line to services of ``scope``; a name outside it or a contradiction is a problem."""
    out = Resolution(problems=[(line.text, line.problem or "not understood") for line in parsed.problems])
    names: dict[str, Service] = {}
    for svc in scope:
        names.setdefault(svc.name.lower(), svc)
        names.setdefault(svc.ref.lower(), svc)
    named: dict[int, tuple[DecisionAction, int | None]] = {}
    general: tuple[DecisionAction, int | None] | None = None
    for line in parsed.decisions:
        want = (line.action, line.years)
        if line.targets == (ALL,):
            if general is not None and general != want:
                out.problems.append((line.text, "contradicts an earlier \"all\" line"))
                continue
            general = want
        else:
            unknown = [n for n in line.targets if n not in names]
            clash = [n for n in line.targets if n in names and named.get(names[n].id, want) != want]
            if unknown:
                out.problems.append((line.text, f"{', '.join(unknown)}: not among the services of this reminder"))
                continue
            if clash:
                out.problems.append((line.text, f"contradicts an earlier line about {', '.join(clash)}"))
                continue
            named.update((names[n].id, want) for n in line.targets)
        out.understood.append(line.describe())
    for svc in scope:
        want = named.get(svc.id) or general
        if want is not None:
            out.choices.append(Choice(svc, *want))
    return out


def describe(decision: RenewalDecision, service: Service) -> str:
    if decision.action == DecisionAction.decline:
        return f"declined {service.name}"
    years = decision.period_years
    return f"renewed {service.name} for {years} year{'s' if years != 1 else ''}"


@dataclass
class Applied:
    """What :func:`apply` did: a decision per choice (the standing one when it was already so) and the changes."""

    decisions: list[RenewalDecision] = field(default_factory=list)
    changed: list[RenewalDecision] = field(default_factory=list)
    invoice: Invoice | None = None
    voided: list[Invoice] = field(default_factory=list)


def _record(tx: Any, account: Account, c: Choice, years: int | None, auth: Authority) -> RenewalDecision:
    """One new decision with its status change and history entry."""
    svc = c.service
    decision = RenewalDecision(
        service_id=svc.id, request_id=auth.request.id if auth.request else None, action=c.action,
        period_years=years, decided_at=tx.now, actor=auth.actor, auth_method=auth.auth_method,
        channel=auth.channel, inbound_mail_id=auth.inbound_id, for_expiry=svc.expires_on,
        note=f"for the expiry on {svc.expires_on.isoformat() if svc.expires_on else 'unknown'}")
    tx.session.add(decision)
    before = svc.status
    if c.action == DecisionAction.decline:
        svc.status = ServiceStatus.cancelled
    elif svc.status == ServiceStatus.cancelled:
        today = local_date(tx.now, tx.settings.tz)
        svc.status = ServiceStatus.expired if svc.expires_on and svc.expires_on < today else ServiceStatus.active
    what = "renewal declined" if years is None else f"renewal requested for {years} year{'s' if years != 1 else ''}"
    tx.session.add(ServiceEvent(service_id=svc.id, at=tx.now, from_status=before.value, to_status=svc.status.value,
                                reason=f"{what} ({auth.auth_method}, by {auth.channel})", actor=auth.actor))
    tx.session.flush()
    tx.audit("renewal.decision", subject=svc, account_id=account.id, decided=c.action.value, years=years,
             auth_method=auth.auth_method, channel=auth.channel, decision=decision.id)
    return decision


def _standing(tx: Any, term: RenewalTerm | None) -> RenewalDecision | None:
    return tx.session.get(RenewalDecision, term.decision_id) if term is not None and term.decision_id else None


def apply(tx: Any, account: Account, choices: Sequence[Choice], auth: Authority) -> Applied:
    """Record each choice, move declined services to ``cancelled`` (a renewal undoes a decline), settle the
    renewal invoice and tell the sales contact what they must do now.

    The account is locked first, so repeated or concurrent submits queue; a choice that is already the
    standing decision for the service's current expiry records nothing (one renewal, one decision, one
    invoice). A new decision for the same expiry replaces the standing one and its invoice."""
    lock_account(tx, account.id)
    out, pending = Applied(), []
    for c in choices:
        tx.session.refresh(c.service)  # as the queue ahead of us left it
        years = (c.years or default_years(c.service)) if c.action == DecisionAction.renew else None
        term = term_for(tx, c.service) if c.service.expires_on else None
        standing = _standing(tx, term)
        if standing is not None and (standing.action, standing.period_years) == (c.action, years):
            out.decisions.append(standing)
            continue
        decision = _record(tx, account, c, years, auth)
        out.decisions.append(decision)
        out.changed.append(decision)
        if term is not None:
            term.decision_id, term.years = decision.id, years
            pending.append((decision, term))
    if not out.changed:
        return out
    if auth.request is not None:
        tx.session.refresh(auth.request)  # counted after the lock: concurrent uses add up
        auth.request.uses += 1
    by_id = {c.service.id: c.service for c in choices}
    settled = settle(tx, account, pending, by_id)
    out.invoice, out.voided = settled.invoice, settled.voided
    now = _for_sales_now(tx, out.changed, [t for _, t in pending])
    if now:
        notify_sales(tx, account, now, by_id, auth, invoice=out.invoice)
    return out


def _for_sales_now(tx: Any, changed: Sequence[RenewalDecision], terms: Sequence[RenewalTerm]) -> list[RenewalDecision]:
    """The decisions the sales contact acts on now: declines, and renewals not waiting for their invoice to be
    paid (billed by hand, or RENEWDESK_RENEW_BEFORE_PAYMENT). The others are asked for when paid."""
    by_decision = {t.decision_id: t for t in terms}
    out = []
    for d in changed:
        term = by_decision.get(d.id)
        waiting = term is not None and term.invoice_id is not None and not tx.settings.sales_before_payment
        if d.action == DecisionAction.decline or not waiting:
            out.append(d)
            if term is not None and d.action == DecisionAction.renew:
                term.sales_told_at = tx.now
    return out


def _lines(decisions: Sequence[RenewalDecision], services: dict[int, Service]) -> list[dict[str, Any]]:
    return [{"name": services[d.service_id].name, "kind": services[d.service_id].kind, "action": d.action.value,
             "years": d.period_years, "text": describe(d, services[d.service_id]),
             "expires_on": services[d.service_id].expires_on.isoformat() if services[d.service_id].expires_on else ""}
            for d in decisions]


def notify_sales(tx: Any, account: Account, decisions: Sequence[RenewalDecision], services: dict[int, Service],
                 auth: Authority, invoice: Invoice | None = None, *, paid: bool = False) -> str:
    """Email the account's sales contact (or ``RENEWDESK_SALES_EMAIL``, else post to the staff channel).

    ``paid``: the renewals' invoice is paid, so they can be renewed at the registry now."""
    lines = _lines(decisions, services)
    key = f"renewal_sales:{'paid:' if paid else ''}{decisions[0].id}"
    to = (account.sales_contact or tx.settings.sales_email or "").strip()
    if to:
        queue_email(tx, "renewal_sales", {"account_name": account.name, "account_ref": account.ref, "lines": lines,
                                          "actor": actor_name(tx, auth.actor),
                                          "auth_method": auth_words(auth.auth_method), "channel": auth.channel,
                                          "recipient_name": "",
                                          "invoice": invoice_context(invoice), "paid": paid},
                    to=[Recipient(to)], account_id=account.id, dedupe_key=key)
        return to
    if tx.settings.slack_channel:
        text = f"Renewal decisions for {account.name} ({account.ref}), by {actor_name(tx, auth.actor)} via " \
            f"{auth.channel}: " + \
            "; ".join(line["text"] for line in lines) + ". Please complete them." + \
            (f" Invoice {invoice.number} is paid." if invoice is not None and paid else
             f" Invoice {invoice.number} was raised." if invoice is not None else "")
        tx.session.add(SlackPost(dedupe_key=key, channel=tx.settings.slack_channel, payload={"text": text},
                                 created_at=tx.now, next_attempt_at=tx.now))
        return f"slack:{tx.settings.slack_channel}"
    tx.audit("renewal.sales_unset", account_id=account.id, decisions=[d.id for d in decisions])
    return ""


def confirm(tx: Any, account: Account, applied: Applied, services: dict[int, Service],
            to: Sequence[Recipient], *, page_url: str | None, in_reply_to: str | None = None,
            subject: str | None = None) -> None:
    """The confirmation: exactly the decisions recorded, their invoice and the invoices they voided, to the
    people who should know; once per change (a repeated submit that changed nothing sends nothing)."""
    if not applied.changed:
        return
    decisions = applied.decisions
    invoice = invoice_context(applied.invoice or invoice_of(tx, decisions))
    voided = [{"number": v.number, "paid": fmt(v.paid_minor, v.currency) if v.paid_minor else ""}
              for v in applied.voided]
    anchor = max(d.id for d in applied.changed)
    for r in to:
        queue_email(tx, "renewal_confirmation", {"recipient_name": r.name, "account_name": account.name,
                                                 "lines": _lines(decisions, services), "page_url": page_url,
                                                 "reply_subject": subject, "invoice": invoice, "voided": voided},
                    to=[r], account_id=account.id, in_reply_to=in_reply_to,
                    references=[in_reply_to] if in_reply_to else (),
                    dedupe_key=f"renewal_confirmation:{anchor}:{r.email.lower()}")


def current(tx: Any, service_ids: Sequence[int]) -> dict[int, RenewalDecision]:
    """The latest decision per service (the page shows it; a later decision replaces it)."""
    latest: dict[int, RenewalDecision] = {}
    if service_ids:
        for d in tx.session.scalars(select(RenewalDecision).where(RenewalDecision.service_id.in_(list(service_ids)))
                                    .order_by(RenewalDecision.id)):
            latest[d.service_id] = d
    return latest


def cycle_decision(decision: RenewalDecision | None, service: Service, tz: dt.tzinfo) -> RenewalDecision | None:
    """``decision`` if it was made for the service's current expiry, else None."""
    if decision is None or service.expires_on is None:
        return None
    if decision.for_expiry is not None:
        return decision if decision.for_expiry == service.expires_on else None
    return decision if in_cycle(decision.decided_at, service.expires_on, tz) else None
