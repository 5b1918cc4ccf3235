"""`/desk WORDS`: the staff grammar in Slack, answered ephemerally.

The command is acknowledged at once; the work runs after the acknowledgement and the answer
goes to the command's ``response_url``. It runs exactly ``handlers.staff.execute(services,
words, as_user=<Slack user id>)``, the parser and role checks of `renewdesk staff`. A
destructive command (``Command.destructive``) answers first with a preview and Confirm/Cancel
buttons, and runs only when confirmed.
"""
from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from handlers.errors import InvalidInput, RenewdeskError
from handlers.staff import execute, parse, preview
from handlers.staff.grammar import Parsed

from bot import render

log = logging.getLogger("renewdesk.slack")


def answer(services: Any, words: str, user: str) -> dict[str, Any]:
    """What `/desk words` answers for ``user``: a reply, an error, or a confirmation request."""
    words = words.strip()
    try:
        parsed: Parsed | None = parse(words)
    except InvalidInput:
        parsed = None  # execute says it (after telling a stranger they are not on the team)
    if parsed is not None and parsed.command.destructive:
        return ask_first(services, words, user)
    return run(services, words, user)


def run(services: Any, words: str, user: str) -> dict[str, Any]:
    try:
        reply = execute(services, words, as_user=user)
    except RenewdeskError as exc:
        return render.error_message(exc, words)
    except Exception as exc:  # a bug must still answer something; the log has the trace
        log.exception("slack: /desk %s failed", words)
        return render.error_message(exc, words)
    return render.reply_message(reply, words)


def ask_first(services: Any, words: str, user: str) -> dict[str, Any]:
    """Refusals and bad words come now; otherwise the preview and Confirm/Cancel."""
    if render.too_long(words):
        return render.plain("that command is too long to confirm from Slack; shorten the reason or text")
    try:
        shown, problem = preview(services, words, as_user=user), None
    except (InvalidInput, RenewdeskError) as exc:
        if exc.kind in ("invalid_input", "not_allowed", "unavailable"):
            return render.error_message(exc, words)
        shown, problem = None, exc  # a conflict now may be gone when they confirm: let them try
    return render.confirm_message(words, shown, problem)


WORKERS = 4


def register(app: Any, services: Any) -> None:
    # The work after the acknowledgement runs on a few threads of its own: a burst of commands
    # queues there instead of crowding out the acknowledgements of the commands behind it.
    workers = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="desk")

    def work(words: str, user: str, respond: Any) -> None:
        try:
            respond(**answer(services, words, user))
        except Exception:
            log.exception("slack: could not answer /desk %s", words)

    @app.command("/desk")
    def desk(ack: Any, command: dict[str, Any], respond: Any) -> None:
        ack()  # within Slack's 3 seconds, before any database work
        workers.submit(work, command.get("text") or "", command["user_id"], respond)

    @app.action("desk_confirm")
    def confirmed(ack: Any, body: dict[str, Any], action: dict[str, Any], respond: Any) -> None:
        ack()
        words = json.loads(action["value"])["words"]
        respond(replace_original=True, **run(services, words, body["user"]["id"]))

    @app.action("desk_cancel")
    def cancelled(ack: Any, respond: Any) -> None:
        ack()
        respond(**render.plain("cancelled; nothing was changed", replace_original=True))
