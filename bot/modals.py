"""Modals: reply to a ticket (emailed), an internal note, suspend with a reason, and one payment
over several invoices (pick invoices, see the summary, then confirm).

Buttons check the role before a modal opens (``authorize``), so nobody types a reply they may
not send; the submission runs the staff words through ``execute`` as that person again.
"""
from __future__ import annotations

import json
import logging
import shlex
from typing import Any

from sqlalchemy import select

from handlers.billing.common import OPEN_STATUSES
from handlers.errors import RenewdeskError
from handlers.models import Account, Invoice
from handlers.money import fmt
from handlers.slack_blocks import clip, context, escape, section
from handlers.staff import authorize, execute, preview

from bot import render
from bot.actions import after_action, card_of

log = logging.getLogger("renewdesk.slack")


def _text(title: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": clip(title, 24)}


def _input(block_id: str, label: str, *, multiline: bool = False, optional: bool = False,
           element: dict[str, Any] | None = None, hint: str | None = None) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "input", "block_id": block_id, "optional": optional,
                             "label": {"type": "plain_text", "text": label},
                             "element": element or {"type": "plain_text_input", "action_id": block_id,
                                                    "multiline": multiline, "max_length": 2900}}
    if hint:
        block["hint"] = {"type": "plain_text", "text": clip(hint, 2000)}
    return block


def modal(callback_id: str, title: str, blocks: list[dict[str, Any]], meta: dict[str, Any],
          submit: str | None = "Send") -> dict[str, Any]:
    view = {"type": "modal", "callback_id": callback_id, "title": _text(title), "close": _text("Cancel"),
            "blocks": blocks[:100], "private_metadata": json.dumps(meta)}
    if submit:
        view["submit"] = _text(submit)
    return view


def _value(view: dict[str, Any], block_id: str) -> Any:
    state = view["state"]["values"].get(block_id, {}).get(block_id, {})
    if "selected_options" in state:
        return [o["value"] for o in state["selected_options"] or []]
    return (state.get("value") or "").strip()


def _where(body: dict[str, Any], action: dict[str, Any]) -> dict[str, Any]:
    card = card_of(body, action)
    return {"card": list(card) if card else None,
            "channel": card[1] if card else (body.get("channel") or {}).get("id")}


# -- opening ----------------------------------------------------------------------------------

def ticket_view(kind: str, ticket_id: int, meta: dict[str, Any]) -> dict[str, Any]:
    if kind == "reply":
        return modal("ticket_reply_modal", f"Reply to T-{ticket_id}", [
            section(f"Emailed to the client on *T-{ticket_id}*, threaded; also shown in the ticket's thread."),
            _input("text", "Your reply", multiline=True)], meta, submit="Send reply")
    return modal("ticket_note_modal", f"Note on T-{ticket_id}", [
        section(f"An internal note on *T-{ticket_id}*; never emailed."),
        _input("text", "Note", multiline=True)], meta, submit="Add note")


def suspend_view(tx: Any, account_id: int, meta: dict[str, Any]) -> dict[str, Any]:
    acc = tx.session.get(Account, account_id)
    return modal("suspend_modal", "Suspend account", [
        section(f"Suspend *{escape(acc.name)}* ({escape(acc.ref)}) and all its services. The client is emailed "
                "the reason; only staff lift it (`unsuspend`)."),
        _input("reason", "Reason (the client sees it)", multiline=True)], meta, submit="Suspend")


def payment_view(tx: Any, account_id: int, meta: dict[str, Any]) -> dict[str, Any]:
    acc = tx.session.get(Account, account_id)
    invoices = list(tx.session.scalars(select(Invoice).where(
        Invoice.account_id == acc.id, Invoice.status.in_(OPEN_STATUSES)).order_by(Invoice.due_on, Invoice.id)
        .limit(100)))
    blocks = [section(f"A payment from *{escape(acc.name)}* ({escape(acc.ref)}), spread over the invoices you pick "
                      "(oldest first when you pick none). You see the summary before anything is recorded."),
              _input("amount", f"Amount ({acc.currency})", element={"type": "plain_text_input", "action_id": "amount",
                                                                     "placeholder": {"type": "plain_text",
                                                                                     "text": "120.00"}})]
    if invoices:
        options = [{"text": {"type": "plain_text", "text": clip(
                        f"{inv.number} · {fmt(inv.due_minor, inv.currency)} · pay by {inv.due_on}", 75)},
                    "value": inv.number[:150]} for inv in invoices]
        blocks.append(_input("invoices", "Invoices", optional=True, element={
            "type": "multi_static_select", "action_id": "invoices", "options": options,
            "placeholder": {"type": "plain_text", "text": "oldest first"}}))
    else:
        blocks.append(context("no open invoice: the whole payment becomes credit"))
    blocks.append(_input("ref", "Reference (bank transfer id)", optional=True,
                         hint="the same reference is never recorded twice"))
    return modal("payment_modal", "Record a payment", blocks, {**meta, "account": acc.id}, submit="Preview")


OPENERS = {"ticket_reply": "ticket reply {v} x", "ticket_note": "ticket note {v} x",
           "account_suspend": "suspend {v}", "payment_open": "payment record {v} 1"}


def open_modal(services: Any, client: Any, body: dict[str, Any], action: dict[str, Any]) -> dict[str, Any] | None:
    """Check the role, then open the modal; returns an ephemeral answer when refused."""
    user, value, action_id = body["user"]["id"], action.get("value", ""), action["action_id"]
    if not value.isdigit():
        return render.plain(f"unexpected button value {value!r}")
    try:
        authorize(services, OPENERS[action_id].format(v=value), as_user=user)
    except RenewdeskError as exc:
        return render.error_message(exc)
    meta = _where(body, action)
    if action_id in ("ticket_reply", "ticket_note"):
        view = ticket_view(action_id.split("_")[1], int(value), {**meta, "ticket": int(value)})
    else:
        build = suspend_view if action_id == "account_suspend" else payment_view
        view = services.run(build, int(value), {**meta, "account": int(value)}, readonly=True)
    client.views_open(trigger_id=body["trigger_id"], view=view)  # trigger_id lives 3 seconds: open first
    return None


# -- submitting -------------------------------------------------------------------------------

def _notify(client: Any, meta: dict[str, Any], user: str, message: dict[str, Any]) -> None:
    if meta.get("channel"):
        message = {k: v for k, v in message.items() if k != "response_type"}
        client.chat_postEphemeral(channel=meta["channel"], user=user, **message)


def _card(services: Any, meta: dict[str, Any], verb: str, user: str) -> None:
    if meta.get("card"):
        block_id, channel, ts = meta["card"]
        after_action(services, {"container": {"channel_id": channel, "message_ts": ts}}, {"block_id": block_id},
                     verb, user)


def submit_words(services: Any, body: dict[str, Any], words: str, field: str, verb: str,
                 ack: Any, client: Any) -> None:
    user, meta = body["user"]["id"], json.loads(body["view"]["private_metadata"] or "{}")
    try:
        reply = execute(services, words, as_user=user)
    except RenewdeskError as exc:
        ack(response_action="errors", errors={field: clip(exc.message + (f" ({exc.hint})" if exc.hint else ""), 150)})
        return
    ack()
    _card(services, meta, verb, user)
    _notify(client, meta, user, render.reply_message(reply))


def register(app: Any, services: Any) -> None:
    def on_open(ack: Any, body: dict[str, Any], action: dict[str, Any], client: Any, respond: Any) -> None:
        ack()
        refused = open_modal(services, client, body, action)
        if refused is not None:
            refused.pop("response_type", None)
            respond(response_type="ephemeral", replace_original=False, **refused)

    for action_id in OPENERS:
        app.action(action_id)(on_open)

    @app.view("ticket_reply_modal")
    def on_reply(ack: Any, body: dict[str, Any], view: dict[str, Any], client: Any) -> None:
        meta = json.loads(view["private_metadata"])
        submit_words(services, body, f"ticket reply {meta['ticket']} {_value(view, 'text')}", "text",
                     "replied to the client", ack, client)

    @app.view("ticket_note_modal")
    def on_note(ack: Any, body: dict[str, Any], view: dict[str, Any], client: Any) -> None:
        meta = json.loads(view["private_metadata"])
        submit_words(services, body, f"ticket note {meta['ticket']} {_value(view, 'text')}", "text",
                     "noted", ack, client)

    @app.view("suspend_modal")
    def on_suspend(ack: Any, body: dict[str, Any], view: dict[str, Any], client: Any) -> None:
        meta = json.loads(view["private_metadata"])
        submit_words(services, body, f"suspend {meta['account']} --tell-client {_value(view, 'reason')}", "reason",
                     "suspended", ack, client)

    @app.view("payment_modal")
    def on_payment(ack: Any, body: dict[str, Any], view: dict[str, Any]) -> None:
        meta, user = json.loads(view["private_metadata"]), body["user"]["id"]
        words = f"payment record {meta['account']} {shlex.quote(_value(view, 'amount') or '0')}"
        picked = _value(view, "invoices") if "invoices" in view["state"]["values"] else []
        if picked:
            words += " --invoices " + ",".join(picked)
        if _value(view, "ref"):
            words += " --ref " + shlex.quote(_value(view, "ref"))
        try:
            shown = preview(services, words, as_user=user)
        except RenewdeskError as exc:
            field = "invoices" if "--invoices" in exc.message and picked else "amount"
            ack(response_action="errors", errors={field: clip(exc.message, 150)})
            return
        blocks = [section("*Summary* (nothing is recorded until you confirm):"), *render._pre(shown.text)[:90]]
        ack(response_action="update", view=modal("payment_confirm_modal", "Confirm the payment", blocks,
                                                 {**meta, "words": words}, submit="Record payment"))

    @app.view("payment_confirm_modal")
    def on_payment_confirmed(ack: Any, body: dict[str, Any], view: dict[str, Any], client: Any) -> None:
        meta, user = json.loads(view["private_metadata"]), body["user"]["id"]
        try:
            reply = execute(services, meta["words"], as_user=user)
            blocks = [section(f"*{escape(reply.title)}*"), *render._pre(reply.text)[:90]]
        except RenewdeskError as exc:
            reply, blocks = None, [section(f":warning: {escape(exc.message)}")]
        ack(response_action="update", view=modal("payment_done", "Payment", blocks, {}, submit=None))
        if reply is not None:
            _card(services, meta, "payment recorded", user)
            _notify(client, meta, user, render.reply_message(reply, meta["words"]))
