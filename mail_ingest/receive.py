"""The one place every door hands a message to: store it durably, or say "try later"."""
from __future__ import annotations

import logging
from typing import Any, Iterable

from handlers import inbox
from handlers.errors import RenewdeskError, TemporaryFailure

log = logging.getLogger("renewdesk.inbox")


def receive(services: Any, raw: bytes, *, door: str, mail_from: str, recipients: Iterable[str],
            peer: str = "") -> list[inbox.Stored]:
    """Commit ``raw`` to the inbox (one row per recipient) and return what was stored.

    Raises :class:`TemporaryFailure` for anything that kept it from being stored, whatever
    the cause (database down, disk full, a bug): each door turns that into "try again later"
    (451, exit 75, leave it on the IMAP server), so a message is never lost on our side.
    """
    recipients = list(recipients)
    try:
        stored = services.run(inbox.store, raw, door=door, mail_from=mail_from, recipients=recipients,
                              peer=peer, actor=f"door:{door}")
    except TemporaryFailure:
        raise
    except RenewdeskError:
        raise
    except Exception as exc:
        log.exception("could not store a %d-byte message from %s via %s", len(raw), mail_from or "<>", door)
        raise TemporaryFailure(f"could not store the message: {exc.__class__.__name__}") from exc
    services.inbox_wakeup.set()
    new = [s for s in stored if not s.duplicate]
    log.info("%s: %s message from %s for %s (%d bytes)%s", door,
             "stored" if new else "already had", mail_from or "<>", ", ".join(s.recipient or "-" for s in stored),
             len(raw), " [throttled]" if any(s.throttled for s in stored) else "")
    return stored
