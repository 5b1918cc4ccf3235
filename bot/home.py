"""App Home, per staff member: my tickets, open tickets, overdue invoices, tomorrow's forecast and
quarantined mail, read through the same staff commands (and roles) as `/desk`, within Slack's
100 blocks."""
from __future__ import annotations

import logging
from typing import Any

from handlers.errors import RenewdeskError
from handlers.slack_blocks import clip, context, escape, section
from handlers.staff import execute

log = logging.getLogger("renewdesk.slack")
LISTED = 10        # rows per part; the rest are counted
MAX_BLOCKS = 100


def _header(text: str) -> dict[str, Any]:
    return {"type": "header", "text": {"type": "plain_text", "text": clip(text, 150)}}


def _part(title: str, lines: list[str], empty: str, more_hint: str) -> list[dict[str, Any]]:
    if not lines:
        return [_header(title), context(empty)]
    shown = "\n".join(f"• {line}" for line in lines[:LISTED])
    blocks = [_header(title), section(shown)]
    if len(lines) > LISTED:
        blocks.append(context(f"… and {len(lines) - LISTED} more: `{more_hint}`"))
    return blocks


def _data(services: Any, words: str, user: str) -> Any:
    return execute(services, words, as_user=user).data


def home_view(services: Any, user: str) -> dict[str, Any]:
    """The Home tab for one staff member; a stranger is told how to join."""
    try:
        tickets = _data(services, "ticket list", user)
    except RenewdeskError as exc:
        return {"type": "home", "blocks": [_header("renewdesk"), section(escape(exc.message))]}
    blocks: list[dict[str, Any]] = [_header("renewdesk"), context("`/desk help` lists every command")]
    mine = [t for t in tickets if t["assignee"] == user]
    line = lambda t: f"*{t['ref']}* {escape(clip(t['subject'], 80))} · {escape(t['account_name'])} · {t['status']}"  # noqa: E731
    blocks += _part(f"My tickets ({len(mine)})", [line(t) for t in mine], "nothing assigned to you",
                    "/desk ticket list")
    blocks += _part(f"Open tickets ({len(tickets)})", [line(t) for t in tickets], "no open tickets",
                    "/desk ticket list")
    try:
        overdue = _data(services, "invoice list --overdue", user)["invoices"]
        blocks += _part(f"Overdue invoices ({len(overdue)})", [
            f"*{escape(i['number'])}* {escape(i['account']['name'])} · {i['due']['amount']} {i['due']['currency']} "
            f"· pay by {i['due_on']}" for i in overdue], "nothing overdue", "/desk invoice list --overdue")
    except RenewdeskError as exc:
        blocks += [_header("Overdue invoices"), context(escape(exc.message))]
    try:
        days = _data(services, "forecast --days 1", user)["days"]
        actions = [a for d in days for a in d["actions"]]
        blocks += _part(f"Next sweep ({len(actions)})", [
            escape(a["text"]) + (" _(held)_" if a["blocked_by_hold"] else "") for a in actions],
            "the automation has nothing to do", "/desk forecast")
    except RenewdeskError as exc:
        blocks += [_header("Next sweep"), context(escape(exc.message))]
    try:
        quarantined = _data(services, "inbox --quarantined", user)
        blocks += [_header(f"Quarantined mail ({len(quarantined)})"),
                   context("`/desk inbox --quarantined` lists them" if quarantined else "none")]
    except RenewdeskError as exc:
        blocks += [_header("Quarantined mail"), context(escape(exc.message))]
    return {"type": "home", "blocks": blocks[:MAX_BLOCKS]}


def register(app: Any, services: Any) -> None:
    @app.event("app_home_opened")
    def on_home(event: dict[str, Any], client: Any) -> None:
        if event.get("tab", "home") != "home":
            return
        user = event["user"]
        client.views_publish(user_id=user, view=home_view(services, user))
