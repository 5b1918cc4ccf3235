"""The pipe door (`renewdesk pipe`): one message on standard input from an MTA.

Exit codes follow sysexits(3), which MTAs understand: 0 stored; 75 (EX_TEMPFAIL) could not
store, the MTA keeps the message and retries; 65 (EX_DATAERR) refused for good: too big, or
addressed to a domain that is not ours. Anything unexpected is a 75: a bug must never make
the MTA bounce a client's mail.
"""
from __future__ import annotations

import email.parser
import email.policy
import logging
from typing import Any, BinaryIO, Callable

from handlers.errors import InvalidInput, TemporaryFailure
from handlers.inbox import is_ours
from mail_ingest.receive import receive

log = logging.getLogger("renewdesk.pipe")
EX_OK, EX_DATAERR, EX_TEMPFAIL = 0, 65, 75


def _return_path(raw: bytes) -> str:
    head = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(raw[:65536], headersonly=True)
    return str(head.get("Return-Path", "")).strip().strip("<>")


def pipe(settings: Any, open_services: Callable[[], Any], stdin: BinaryIO, *, recipient: str | None,
         sender: str | None, err: Callable[[str], None]) -> int:
    """Read one message from ``stdin`` and store it; returns the exit code for the MTA."""
    raw = stdin.read(settings.max_message_bytes + 1)
    if len(raw) > settings.max_message_bytes:
        err(f"renewdesk: message refused: larger than {settings.max_message_bytes} bytes")
        return EX_DATAERR
    if recipient and not is_ours(settings, recipient):
        err(f"renewdesk: message refused: {recipient} is not an address of {', '.join(settings.mail_domains)}")
        return EX_DATAERR
    if not raw.strip():
        err("renewdesk: message refused: standard input was empty")
        return EX_DATAERR
    try:
        services = open_services()
        try:
            stored = receive(services, raw, door="pipe", mail_from=sender or _return_path(raw),
                             recipients=[recipient] if recipient else [], peer="pipe")
        finally:
            services.close()
    except InvalidInput as exc:
        err(f"renewdesk: message refused: {exc.message}")
        return EX_DATAERR
    except TemporaryFailure as exc:
        err(f"renewdesk: try again later: {exc.message}")
        return EX_TEMPFAIL
    except Exception as exc:  # never bounce a client's mail because of us
        log.exception("pipe: unexpected error")
        err(f"renewdesk: try again later: {exc.__class__.__name__}: {exc}")
        return EX_TEMPFAIL
    err(f"renewdesk: stored as {', '.join(str(s.id) for s in stored)}")
    return EX_OK
