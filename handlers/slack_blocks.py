"""Block Kit for the staff channel's cards, as plain JSON (no Slack library here).

A card is rebuilt from the database each time it is posted or updated, so an update always
shows the current state (and who acted last) and never a stale copy. Slack's limits are kept
here: 3000 characters per section, 75 per button label, 50 blocks per message.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import select

from handlers.models import (Account, InboundMail, Invoice, InvoiceStatus, MessageKind, OutboundMail, Suspension,
                             SuspensionReason, Ticket, TicketMessage, TicketStatus)
from handlers.money import fmt

SECTION_CHARS = 3000   # Slack refuses a section text longer than this
EXCERPT_CHARS = 1200   # of a client's message on the ticket card
THREAD_CHARS = 2800    # of a message posted into a ticket's thread
OPEN_INVOICE = (InvoiceStatus.issued, InvoiceStatus.partially_paid)


def escape(text: str) -> str:
    """Slack's mrkdwn escapes: a client cannot write ``<!channel>`` or a fake link into a card."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def clip(text: str, limit: int, more: str = "") -> str:
    text = str(text)
    if len(text) <= limit:
        return text
    tail = f" … ({len(text) - limit} more characters{more})"
    return text[:max(0, limit - len(tail))] + tail


def fallback(text: str, limit: int = 300) -> str:
    """A message's top-level ``text`` (what notifications show): Slack reads it as mrkdwn too, so a
    client's ``<!channel>`` there would notify the whole channel; escaped like the blocks."""
    return escape(clip(text, limit))


def section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": clip(text, SECTION_CHARS) or " "}}


def context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": clip(text, SECTION_CHARS) or " "}]}


def button(label: str, action_id: str, value: str, *, style: str | None = None,
           confirm: dict[str, Any] | None = None) -> dict[str, Any]:
    b: dict[str, Any] = {"type": "button", "text": {"type": "plain_text", "text": label[:75]},
                         "action_id": action_id, "value": value[:2000]}
    if style:
        b["style"] = style
    if confirm:
        b["confirm"] = confirm
    return b


def confirm_dialog(title: str, text: str, yes: str) -> dict[str, Any]:
    """Slack's own confirmation dialog on a destructive button."""
    return {"title": {"type": "plain_text", "text": title[:100]}, "text": {"type": "mrkdwn", "text": clip(text, 300)},
            "confirm": {"type": "plain_text", "text": yes[:30]}, "deny": {"type": "plain_text", "text": "Cancel"},
            "style": "danger"}


def actions(block_id: str, elements: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "actions", "block_id": block_id[:255], "elements": elements[:25]}


def _last(last: str | None) -> list[dict[str, Any]]:
    return [context(last)] if last else []


# -- tickets ----------------------------------------------------------------------------------

def _status(ticket: Ticket) -> str:
    return "archived" if ticket.archived else ticket.status.value.replace("_", " ")


def ticket_card(tx: Any, ticket: Ticket, last: str | None = None) -> dict[str, Any]:
    """The ticket's card: the parent of its thread, with take / reply / note / close."""
    account = tx.session.get(Account, ticket.account_id)
    first = tx.session.scalar(select(TicketMessage).where(TicketMessage.ticket_id == ticket.id)
                              .order_by(TicketMessage.id).limit(1))
    sender = first.author if first is not None and first.kind == MessageKind.client else "staff"
    head = (f"*T-{ticket.id}* · {escape(ticket.subject)}\n"
            f"*{escape(account.name)}* ({escape(account.ref)}) · from {escape(sender)}")
    blocks = [section(head)]
    if first is not None:
        blocks.append(section(">" + escape(clip(first.body, EXCERPT_CHARS, f"; /desk ticket show {ticket.id}"))
                              .replace("\n", "\n>")))
    who = f"<@{ticket.assignee}>" if ticket.assignee else "nobody"
    blocks.append(context(f"status *{_status(ticket)}* · assigned to {who}"
                          + (" · previous ticket T-%d" % ticket.previous_ticket_id
                             if ticket.previous_ticket_id else "")))
    blocks += _last(last)
    closed = ticket.status == TicketStatus.closed or ticket.archived
    buttons = []
    if not ticket.assignee and not closed:
        buttons.append(button("Take", "ticket_take", str(ticket.id), style="primary"))
    buttons += [button("Reply to client", "ticket_reply", str(ticket.id)),
                button("Note", "ticket_note", str(ticket.id))]
    if not closed:
        buttons.append(button("Close", "ticket_close", str(ticket.id)))
    blocks.append(actions(f"card:ticket:{ticket.id}", buttons))
    text = f"T-{ticket.id} {ticket.subject} ({account.name}): {_status(ticket)}"
    return {"text": fallback(text), "blocks": blocks}


def thread_message(message: TicketMessage) -> dict[str, Any]:
    """A client email, a staff reply (marked as sent) or an internal note, as a thread post."""
    body = escape(clip(message.body, THREAD_CHARS, f"; /desk ticket show {message.ticket_id}"))
    who = message.author.removeprefix("staff:")
    who = f"<@{who}>" if message.author.startswith("staff:") else escape(who)
    if message.kind == MessageKind.client:
        head = f":incoming_envelope: *{who}* wrote by email"
    elif message.kind == MessageKind.reply:
        head = f":outbox_tray: *Reply sent to the client* by {who}"
    elif message.kind == MessageKind.note:
        head = f":memo: Internal note by {who} (not emailed)"
    else:
        head = f":robot_face: Automatic mail from {who} (not answered)"
    return {"text": f"{head}: {fallback(message.body, 250)}", "blocks": [section(f"{head}\n{body}")]}


# -- money and accounts -----------------------------------------------------------------------

def invoice_buttons(inv: Invoice) -> list[dict[str, Any]]:
    if inv.status not in OPEN_INVOICE:
        return []
    due = fmt(inv.due_minor, inv.currency)
    return [button(f"Mark {inv.number} paid", "invoice_paid", inv.number,
                   confirm=confirm_dialog("Mark paid?", f"Record {due} for invoice {escape(inv.number)}.",
                                          "Mark paid")),
            button("Remind", "invoice_remind", inv.number),
            button("Void", "invoice_void", inv.number, style="danger",
                   confirm=confirm_dialog("Void the invoice?", f"Invoice {escape(inv.number)} becomes void; "
                                          "what was paid on it becomes credit.", "Void"))]


def account_buttons(account: Account) -> list[dict[str, Any]]:
    ref = str(account.id)
    return [button("Unsuspend", "account_unsuspend", ref, style="primary",
                   confirm=confirm_dialog("Unsuspend?", f"Lift every open suspension of {escape(account.name)}.",
                                          "Unsuspend")),
            button("Hold automation", "account_hold", ref),
            button("Suspend…", "account_suspend", ref, style="danger"),
            button("Record payment…", "payment_open", ref)]


def suspension_card(tx: Any, sus: Suspension, last: str | None = None) -> dict[str, Any]:
    acc = tx.session.get(Account, sus.account_id)
    inv = tx.session.get(Invoice, sus.invoice_id) if sus.invoice_id else None
    why = {SuspensionReason.overdue: "overdue invoice", SuspensionReason.credit_limit: "credit limit reached",
           SuspensionReason.manual: "by staff"}[sus.reason]
    head = f":no_entry: *{escape(acc.name)}* ({escape(acc.ref)}) suspended automatically: {why}"
    if inv is not None:
        head += f"\ninvoice *{escape(inv.number)}*: {fmt(inv.due_minor, inv.currency)} left of " \
                f"{fmt(inv.total_minor, inv.currency)}, pay-by {inv.due_on} ({inv.status.value})"
    lifted = f"lifted by {escape(sus.lifted_by or '?')}" if sus.lifted_at else "open"
    blocks = [section(head), context(f"account *{acc.status.value}* · this suspension is {lifted}"
                                     + (f" · removal on {sus.remove_after:%Y-%m-%d}" if sus.remove_after else ""))]
    blocks += _last(last)
    if inv is not None and invoice_buttons(inv):
        blocks.append(actions(f"card:suspension:{sus.id}:invoice", invoice_buttons(inv)))
    blocks.append(actions(f"card:suspension:{sus.id}", account_buttons(acc)))
    return {"text": fallback(f"{acc.name} suspended automatically: {why}"), "blocks": blocks}


# -- mail -------------------------------------------------------------------------------------

def quarantine_card(tx: Any, row: InboundMail, last: str | None = None) -> dict[str, Any]:
    head = f":warning: *Quarantined mail #{row.id}* from {escape(row.mail_from or '?')} to {escape(row.recipient)}\n" \
           f"{escape(clip(row.reason or row.classification or 'no reason recorded', 1500))}"
    blocks = [section(head), context(f"status *{row.status.value}* · `/desk inbox --quarantined` lists them")]
    blocks += _last(last)
    if row.status.value == "quarantined":
        blocks.append(actions(f"card:inbox:{row.id}", [button("Process again", "inbox_retry", str(row.id))]))
    return {"text": fallback(f"Quarantined mail #{row.id}: {row.reason or ''}"), "blocks": blocks}


def failed_delivery_card(tx: Any, mail: OutboundMail) -> dict[str, Any]:
    acc = tx.session.get(Account, mail.account_id) if mail.account_id else None
    head = f":x: *Mail #{mail.id} was not delivered* ({escape(mail.intent)}) to " \
           f"{escape(', '.join(mail.recipients or []))}\n_{escape(mail.subject)}_\n" \
           f"{escape(clip(mail.last_error or '', 1500))}"
    where = f"account {escape(acc.name)} · " if acc else ""
    return {"text": fallback(f"Mail #{mail.id} to {', '.join(mail.recipients or [])} failed"),
            "blocks": [section(head), context(f"{where}`renewdesk outbox list --failed` · "
                                              "`renewdesk outbox retry ID` sends it again")]}


def digest_message(content: dict[str, Any]) -> dict[str, Any]:
    """The daily digest: one section per non-empty part (at most a dozen blocks)."""
    blocks: list[dict[str, Any]] = [{"type": "header", "text": {"type": "plain_text",
                                                                "text": clip(f"Daily digest {content['day']}", 150)}},
                                    section(escape(content["title"]))]
    for sec in content["sections"]:
        if sec["items"]:
            lines = [f"• {escape(item)}" for item in sec["items"]]
            if sec["more"]:
                lines.append(f"… and {sec['more']} more")
            blocks.append(section(f"*{escape(sec['title'])}*\n" + "\n".join(lines)))
    return {"text": fallback(content["title"]), "blocks": blocks[:50]}
