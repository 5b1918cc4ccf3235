"""Reply tokens, page links and activation codes: random secrets stored only as their SHA-256.

A token names one account and the services it may decide for, and expires. Reply tokens are
lower-case base32 because mail systems may lower-case an address's local part
(``renew+<token>@DOMAIN``). Activation codes read ``<id>-XXXX-XXXX``: the id finds the request,
so five wrong secrets for it lock that request (wrong tries are counted in the audit log).
"""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import re
import secrets
from typing import Any, Iterable

from sqlalchemy import func, insert, select

from handlers.models import AuditEvent, RenewalRequest

REPLY = "reply_token"        # a reminder's Reply-To and page link
LINK = "page_link"           # a staff member's link, acting for the client
CODE = "activation_code"     # a confirmation request's code, entered at /renew/confirm

CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: codes are typed by people
CODE_TRIES = 5
_TOKEN = re.compile(r"[a-z2-7]{24}")
_CODE = re.compile(r"\s*(\d{1,12})\s*-\s*([A-Za-z0-9][A-Za-z0-9 \-]{6,20})\s*")


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_token() -> str:
    """120 random bits as 24 lower-case base32 characters."""
    return base64.b32encode(secrets.token_bytes(15)).decode().lower()


def end_of_day(day: dt.date, tz: dt.tzinfo) -> dt.datetime:
    """The first moment after ``day`` in the business's timezone, as UTC."""
    return dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=tz).astimezone(dt.timezone.utc)


def issue(tx: Any, account_id: int, service_ids: Iterable[int], *, kind: str, expires_at: dt.datetime,
          max_uses: int | None = None, notice_id: int | None = None) -> tuple[RenewalRequest, str]:
    """Store a new request and return it with its secret (shown once, never stored)."""
    request = RenewalRequest(account_id=account_id, kind=kind, secret_hash="", service_ids=sorted(set(service_ids)),
                             created_at=tx.now, expires_at=expires_at, uses=0, max_uses=max_uses,
                             created_by=tx.actor, notice_id=notice_id)
    if kind == CODE:
        tx.session.add(request)
        tx.session.flush()  # the id is part of the code
        secret = f"{request.id}-" + "".join(secrets.choice(CODE_ALPHABET) for _ in range(8))
        secret = f"{secret[:-4]}-{secret[-4:]}"
        request.secret_hash = digest(normal_code(secret) or "")
    else:
        secret = new_token()
        request.secret_hash = digest(secret)
        tx.session.add(request)
        tx.session.flush()  # callers audit it by id (the sweep issues its many with issue_many)
    return request, secret


def issue_many(tx: Any, grants: Iterable[tuple[int, Iterable[int], dt.datetime, int | None]], *,
               kind: str = REPLY) -> list[str]:
    """Store one reply token (or page link) per ``(account_id, service_ids, expires_at, notice_id)``
    with one statement per few hundred rows; returns the secrets in the same order.

    The same rows :func:`issue` writes, for a sweep issuing thousands; not for activation codes,
    whose secret contains their row's id.
    """
    if kind == CODE:
        raise ValueError("activation codes are issued one by one: the code holds the row's id")
    secrets_, rows = [], []
    for account_id, service_ids, expires_at, notice_id in grants:
        secret = new_token()
        secrets_.append(secret)
        rows.append({"account_id": account_id, "kind": kind, "secret_hash": digest(secret),
                     "service_ids": sorted(set(service_ids)), "created_at": tx.now, "expires_at": expires_at,
                     "uses": 0, "max_uses": None, "created_by": tx.actor, "notice_id": notice_id})
    if rows:
        tx.session.execute(insert(RenewalRequest.__table__), rows)
    return secrets_


def find(tx: Any, token: str, kinds: tuple[str, ...] = (REPLY, LINK)) -> RenewalRequest | None:
    """The request a reply token or page link names, or None (malformed, unknown or another kind)."""
    token = (token or "").strip().lower()
    if not _TOKEN.fullmatch(token):
        return None
    request = tx.session.scalar(select(RenewalRequest).where(RenewalRequest.secret_hash == digest(token)))
    return request if request is not None and request.kind in kinds else None


def problem(tx: Any, request: RenewalRequest | None) -> str | None:
    """Why ``request`` cannot be used now, in words a client may read (None: it can)."""
    if request is None:
        return "unknown"
    if request.expires_at <= tx.now:
        return "expired"
    if request.max_uses is not None and request.uses >= request.max_uses:
        return "used"
    return None


def normal_code(text: str) -> str | None:
    """``"12 - abcd efgh"`` → ``"12-ABCDEFGH"``; None when it is not shaped like a code."""
    m = _CODE.fullmatch(text or "")
    if m is None:
        return None
    secret = re.sub(r"[\s\-]", "", m[2]).upper()
    return f"{int(m[1])}-{secret}" if len(secret) == 8 else None


def check_code(tx: Any, text: str) -> tuple[RenewalRequest | None, str | None]:
    """The activation code's request, or why not: ``malformed``, ``unknown``, ``expired``, ``used``, ``locked``.

    A wrong secret for an existing request counts as a try (an audit row, kept even though the
    caller answers "no"); the fifth wrong try locks the request for good.
    """
    code = normal_code(text)
    if code is None:
        return None, "malformed"
    request = tx.session.get(RenewalRequest, int(code.split("-")[0]))
    if request is None or request.kind != CODE:
        return None, "unknown"
    if wrong_tries(tx, request.id) >= CODE_TRIES:
        return None, "locked"
    if not hmac.compare_digest(request.secret_hash, digest(code)):
        tx.audit("renewal.code_wrong", subject=request, account_id=request.account_id)
        tx.session.flush()
        if wrong_tries(tx, request.id) >= CODE_TRIES:
            tx.audit("renewal.code_locked", subject=request, account_id=request.account_id)
            return None, "locked"
        return None, "unknown"
    why = problem(tx, request)
    return (request, None) if why is None else (None, why)


def wrong_tries(tx: Any, request_id: int) -> int:
    return tx.session.scalar(select(func.count()).select_from(AuditEvent).where(
        AuditEvent.action == "renewal.code_wrong", AuditEvent.subject_type == "renewal_request",
        AuditEvent.subject_id == str(request_id))) or 0


def reply_address(settings: Any, token: str) -> str:
    return f"renew+{token}@{settings.mail_domain}"


def page_url(settings: Any, token: str) -> str:
    return f"{settings.public_url.rstrip('/')}/renew/{token}"


def confirm_url(settings: Any) -> str:
    return f"{settings.public_url.rstrip('/')}/renew/confirm"
