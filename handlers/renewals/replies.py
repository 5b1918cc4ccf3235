"""Renewal decisions by email: the inbox processor hands us mail sent to ``renew+<token>@DOMAIN``.

Only the stripped reply is read. Nothing changes unless the token is valid, the sender is a
contact of the token's account with the renewals permission (or, for renewals only, the
account's sales contact), the message is not automatic, and every line is understood. A
decline therefore always needs both the token and the account's own contact. Refusals never
tell a stranger anything: an unknown sender gets no answer at all.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import select

from handlers.mail_facts import MailFacts
from handlers.models import Account, Contact, DecisionAction, RenewalDecision, Service, ServiceStatus
from handlers.outbox import Recipient, our_address, queue_email
from handlers.renewals import tokens
from handlers.renewals.decisions import Authority, apply, confirm, describe, resolve
from handlers.renewals.grammar import parse_reply
from handlers.renewals.people import sections, sender_of, whom_to_ask
from handlers.tickets.refs import base_subject

PREFIX = "renewal reply"


def handle_reply(tx: Any, facts: MailFacts, token: str) -> str:
    """Act on one reply to a renewal reminder; returns the outcome for the inbox row (never raises for bad input)."""
    if facts.automatic:
        tx.audit("renewal.reply_ignored", inbound=facts.inbound_id, reason="automatic reply")
        return f"{PREFIX}: automatic reply, nothing changed and nothing sent"
    request = tokens.find(tx, token, kinds=(tokens.REPLY,))
    why = tokens.problem(tx, request)
    if why is not None:
        return _bad_token(tx, facts, why)
    account = tx.session.get(Account, request.account_id)
    if _forged(facts):
        tx.audit("renewal.reply_refused", account_id=account.id, inbound=facts.inbound_id, sender=facts.sender,
                 reason="DMARC failed")
        return f"{PREFIX} refused: the sender's domain failed DMARC, so From may be forged; nothing changed"
    sender = sender_of(account, facts.sender)
    if sender.contact is None and not sender.is_sales:
        tx.audit("renewal.reply_refused", account_id=account.id, inbound=facts.inbound_id, sender=facts.sender,
                 reason="not a contact of the account")
        return f"{PREFIX} refused: {facts.sender or 'the sender'} is not a contact of the account; nothing changed"
    if not sender.may_renew:
        ask = whom_to_ask(account)
        mine = ", ".join(sections(sender.contact)) or "no section yet"
        _answer(tx, facts, "renewal_reply_refused", {
            "reason": f"your address may not make renewal decisions for {account.name}.",
            "advice": f"You may use: {mine}. {ask} can give you the renewals permission, or decide in your place."})
        tx.audit("renewal.reply_refused", account_id=account.id, inbound=facts.inbound_id, sender=facts.sender,
                 reason="no renewals permission")
        return f"{PREFIX} refused: {facts.sender} lacks the renewals permission; answered, nothing changed"
    if facts.inbound_id and tx.session.scalar(select(RenewalDecision.id).where(
            RenewalDecision.inbound_mail_id == facts.inbound_id).limit(1)) is not None:
        return f"{PREFIX}: already applied (this message was processed before)"

    scope = list(tx.session.scalars(select(Service).where(
        Service.id.in_(request.service_ids or [-1]), Service.account_id == account.id,
        Service.status != ServiceStatus.removed).order_by(Service.expires_on, Service.name)))
    res = resolve(parse_reply(facts.reply_text), scope)
    if not sender.may_decline and any(c.action == DecisionAction.decline for c in res.choices):
        res.problems.append(("decline ...", "a decline must come from the client's own contact with the renewals "
                                            "permission; a reseller's reply can only renew"))
    page = tokens.page_url(tx.settings, token.strip().lower())
    if res.problems or not res.choices:
        _answer(tx, facts, "renewal_reply_unclear", {"problems": res.problems, "understood": res.understood,
                                                     "page_url": page, "example": scope[0].name if scope else
                                                     "example.com"})
        tx.audit("renewal.reply_unclear", account_id=account.id, inbound=facts.inbound_id, sender=facts.sender,
                 understood=res.understood, problems=[p for p, _ in res.problems])
        return (f"{PREFIX} not understood: applied nothing ({len(res.problems)} line(s) not understood, "
                f"{len(res.understood)} understood); answered with the renewal page")
    applied = apply(tx, account, res.choices, Authority(sender.actor, tokens.REPLY, "email", request, facts.inbound_id))
    by_id = {s.id: s for s in scope}
    confirm(tx, account, applied, by_id, [Recipient(facts.sender, facts.sender_name)], page_url=page,
            in_reply_to=facts.message_id, subject=_subject(facts))
    done = "; ".join(describe(d, by_id[d.service_id]) for d in applied.decisions)
    return f"{PREFIX}: {done}" if applied.changed else f"{PREFIX}: nothing new, already recorded: {done}"


def _forged(facts: MailFacts) -> bool:
    return (facts.auth or {}).get("dmarc", "").lower() == "fail"


def _bad_token(tx: Any, facts: MailFacts, why: str) -> str:
    """An unknown or expired token: a known contact is told to use a newer link; anyone else hears nothing."""
    tx.audit("renewal.reply_refused", inbound=facts.inbound_id, sender=facts.sender, reason=f"{why} token")
    known = tx.session.scalar(select(Contact).where(Contact.email == facts.sender).limit(1)) if facts.sender else None
    if known is None or _forged(facts):
        return f"{PREFIX} refused: {why} reply address; nothing changed, no answer to an unknown sender"
    _answer(tx, facts, "renewal_reply_refused", {
        "reason": "the address you replied to is not valid (any more).",
        "advice": "Please use the link or reply address of your latest renewal reminder, or write to "
                  f"{our_address(tx.settings)} and we will help."})
    return f"{PREFIX} refused: {why} reply address; the contact was told to use a newer reminder"


def _subject(facts: MailFacts) -> str:
    """The reply's subject without its "Re:"/"Aw:"/... prefixes: our templates put one "Re:" before it."""
    return base_subject(facts.subject or "", lower=False)


def _answer(tx: Any, facts: MailFacts, intent: str, context: dict[str, Any]) -> None:
    queue_email(tx, intent, {"recipient_name": facts.sender_name, "reply_subject": _subject(facts), **context},
                to=[Recipient(facts.sender, facts.sender_name)], in_reply_to=facts.message_id,
                references=[*facts.references, facts.message_id] if facts.message_id else facts.references,
                dedupe_key=f"{intent}:inbound:{facts.inbound_id}" if facts.inbound_id else None)
