"""The buttons on the staff channel's cards.

Each button becomes staff words run through ``handlers.staff.execute`` as the person who
clicked, so it checks the same role as `/desk`. The outcome is answered ephemerally to that
person, and the card is rebuilt in place (``chat.update`` through the Slack outbox) with the
new state and who acted, so a second click meets the new state instead of repeating the action.
A ticket's card is rebuilt by the ticket's operation (``handlers.slack_cards.ticket_changed``),
the same for `/desk`, `renewdesk staff` and a button; the other cards here.
"""
from __future__ import annotations

import logging
import re
from typing import Any

from handlers.errors import RenewdeskError
from handlers.slack_cards import refresh_card
from handlers.staff import execute

from bot import render

log = logging.getLogger("renewdesk.slack")

# action_id → (staff words, past tense for the card); {v} is the button's value
BUTTONS: dict[str, tuple[str, str]] = {
    "ticket_take": ("ticket assign {v} me", "taken"),
    "ticket_close": ("ticket close {v}", "closed"),
    "invoice_paid": ("invoice paid {v}", "marked paid"),
    "invoice_remind": ("invoice remind {v}", "reminder sent"),
    "invoice_void": ("invoice void {v} voided from Slack", "voided"),
    "account_unsuspend": ("unsuspend {v}", "unsuspended"),
    "account_hold": ("hold {v} held from Slack", "held"),
    "inbox_retry": ("inbox retry {v}", "queued for processing again"),
}
_SAFE_VALUE = re.compile(r"[A-Za-z0-9._/#-]{1,64}")


def words_for(action_id: str, value: str) -> str:
    """The staff words a button stands for; a value that is not one plain word is refused."""
    template, _ = BUTTONS[action_id]
    if not _SAFE_VALUE.fullmatch(value or ""):
        raise ValueError(f"unexpected button value {value!r}")
    return template.format(v=value)


def card_of(body: dict[str, Any], action: dict[str, Any]) -> tuple[str, str, str] | None:
    """(block_id, channel, ts) of the card a button sat on, when it sat on a card."""
    container = body.get("container") or {}
    channel = container.get("channel_id") or (body.get("channel") or {}).get("id")
    ts = container.get("message_ts") or (body.get("message") or {}).get("ts")
    block_id = action.get("block_id") or ""
    if not (channel and ts and block_id.startswith("card:")):
        return None
    return block_id, channel, ts


def after_action(services: Any, body: dict[str, Any], action: dict[str, Any], verb: str, user: str) -> None:
    """Rebuild the card in place with the new state and who acted (a ticket's card is rebuilt by
    the ticket's operation itself, whatever door it came through: nothing more to do for it here)."""
    card = card_of(body, action)
    if card is None:
        return
    block_id, channel, ts = card
    try:
        services.run(refresh_card, block_id, channel, ts, verb, actor=f"staff:{user}")
    except Exception:  # the action is done; a card that lags behind is not worth an error to the user
        log.exception("slack: could not queue the update of card %s", block_id)


def press(services: Any, body: dict[str, Any], action: dict[str, Any]) -> dict[str, Any]:
    """Run one button as the person who clicked it; returns the ephemeral answer."""
    user = body["user"]["id"]
    try:
        words = words_for(action["action_id"], action.get("value", ""))
    except ValueError as exc:
        return render.plain(str(exc))
    try:
        reply = execute(services, words, as_user=user)
    except RenewdeskError as exc:
        return render.error_message(exc, words)
    except Exception as exc:
        log.exception("slack: button %s failed", action["action_id"])
        return render.error_message(exc, words)
    after_action(services, body, action, BUTTONS[action["action_id"]][1], user)
    return render.reply_message(reply, words)


def register(app: Any, services: Any) -> None:
    def on_button(ack: Any, body: dict[str, Any], action: dict[str, Any], respond: Any, client: Any) -> None:
        ack()
        message = press(services, body, action)
        message.pop("response_type", None)
        if body.get("response_url"):
            respond(response_type="ephemeral", replace_original=False, **message)
        else:
            client.chat_postEphemeral(channel=card_of(body, action)[1] if card_of(body, action) else body["user"]["id"],
                                      user=body["user"]["id"], **message)

    for action_id in BUTTONS:
        app.action(action_id)(on_button)
