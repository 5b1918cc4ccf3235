"""Staff answers as ephemeral Block Kit: a command's Reply, an error with its usage line, a confirmation."""
from __future__ import annotations

import json
from typing import Any

from handlers.errors import NotAllowed, RenewdeskError, Unavailable
from handlers.slack_blocks import button, clip, confirm_dialog, context, escape, section
from handlers.staff import Reply

MAX_BLOCKS = 50          # per message
CHUNK = 2900             # characters of preformatted text per section (Slack's limit is 3000)
MAX_CHUNKS = 12          # longer answers are cut, with a pointer to the shell's --json
VALUE_CHARS = 1900       # a button's value holds at most 2000 characters


def _pre(text: str) -> list[dict[str, Any]]:
    """Text as preformatted sections, split on line ends where possible."""
    chunks, current = [], ""
    for line in escape(text).splitlines() or [""]:
        while len(line) > CHUNK:
            if current:
                chunks.append(current)
                current = ""
            chunks.append(line[:CHUNK])
            line = line[CHUNK:]
        if len(current) + len(line) + 1 > CHUNK:
            chunks.append(current)
            current = ""
        current = f"{current}\n{line}" if current else line
    if current or not chunks:
        chunks.append(current)
    cut = len(chunks) > MAX_CHUNKS
    blocks = [section(f"```{c or ' '}```") for c in chunks[:MAX_CHUNKS]]
    if cut:
        blocks.append(context(f"… {len(chunks) - MAX_CHUNKS} more part(s) not shown: "
                              "narrow the command, or run it with `renewdesk staff --json`"))
    return blocks


def reply_message(reply: Reply, words: str = "") -> dict[str, Any]:
    """A command's answer: its title in bold, its text preformatted, what was typed underneath."""
    blocks = [section(f"*{escape(reply.title)}*"), *_pre(reply.text or "done")]
    if words:
        blocks.append(context(f"`/desk {escape(clip(words, 200))}`"))
    return {"response_type": "ephemeral", "text": clip(f"{reply.title}: {reply.text}", 3000),
            "blocks": blocks[:MAX_BLOCKS]}


def error_message(error: BaseException, words: str = "") -> dict[str, Any]:
    """Bad words get the usage line; a refusal names the role needed; anything else says what failed."""
    if isinstance(error, NotAllowed):
        icon = ":no_entry:"
    elif isinstance(error, Unavailable):
        icon = ":construction:"
    else:
        icon = ":warning:"
    message = error.message if isinstance(error, RenewdeskError) else "something went wrong; the log has the details"
    blocks = [section(f"{icon} {escape(message)}")]
    hint = getattr(error, "hint", None)
    if hint:
        blocks.append(section(f"`{escape(hint)}`" if hint.startswith("usage:") else escape(hint)))
    if words:
        blocks.append(context(f"`/desk {escape(clip(words, 200))}`"))
    return {"response_type": "ephemeral", "text": clip(message + (f" ({hint})" if hint else ""), 3000),
            "blocks": blocks}


def confirm_message(words: str, preview: Reply | None, problem: BaseException | None) -> dict[str, Any]:
    """Ask before a destructive command: what it would do, then Confirm or Cancel."""
    blocks = [section(f":raised_hand: *Confirm* `/desk {escape(clip(words, 500))}`")]
    if preview is not None:
        blocks += [context("What it would do (nothing has changed yet):"), *_pre(preview.text)[:MAX_BLOCKS - 4]]
    elif problem is not None:
        blocks.append(context(f"it cannot be previewed: {escape(getattr(problem, 'message', str(problem)))}"))
    value = json.dumps({"words": words})
    blocks.append({"type": "actions", "block_id": "desk_confirm", "elements": [
        button("Confirm", "desk_confirm", value, style="danger",
               confirm=confirm_dialog("Are you sure?", f"`/desk {escape(clip(words, 200))}`", "Do it")),
        button("Cancel", "desk_cancel", "cancel")]})
    return {"response_type": "ephemeral", "text": clip(f"Confirm /desk {words}", 3000), "blocks": blocks}


def too_long(words: str) -> bool:
    return len(json.dumps({"words": words})) > VALUE_CHARS


def plain(text: str, **extra: Any) -> dict[str, Any]:
    return {"response_type": "ephemeral", "text": clip(text, 3000), "blocks": [section(escape(text))], **extra}
