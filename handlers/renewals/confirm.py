"""Confirmation requests: an emailed activation code, entered at ``/renew/confirm`` to confirm or decline.

A code is random, stored hashed, good for one decision, expires after ``RENEWDESK_RENEWAL_LINK_DAYS``,
and locks after five wrong tries (see :func:`handlers.renewals.tokens.check_code`).
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from sqlalchemy import select

from handlers.errors import InvalidInput, NotFound
from handlers.models import Account, DecisionAction, Service
from handlers.outbox import queue_email
from handlers.renewals import tokens
from handlers.renewals.decisions import Authority, Choice, apply, confirm, default_years, describe
from handlers.renewals.grammar import MAX_YEARS, MIN_YEARS
from handlers.renewals.listing import RENEWABLE
from handlers.renewals.people import renewal_recipients

MESSAGES = {
    "malformed": "That does not look like an activation code: it reads like 12-ABCD-EFGH.",
    "unknown": "That activation code is not valid. Please check it against the email.",
    "expired": "That activation code has expired. Please ask us for a new one.",
    "used": "That activation code has already been used; the decision it carried is recorded.",
    "locked": "That activation code is locked after five wrong tries. Please ask us for a new one.",
}


@dataclass
class ConfirmResult:
    status: str                                   # ask | ok | applied | invalid | malformed | unknown | ...
    code: str = ""
    account_name: str = ""
    rows: list[dict[str, Any]] = field(default_factory=list)
    applied: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def message(self) -> str:
        return MESSAGES.get(self.status, "")


def request_confirmation(tx: Any, account_id: int, service_ids: Sequence[int]) -> str:
    """Email the account's renewal contacts an activation code for these services; returns the code."""
    account = tx.session.get(Account, account_id)
    if account is None:
        raise NotFound(f"no account #{account_id}")
    services = list(tx.session.scalars(select(Service).where(Service.id.in_(list(service_ids)),
                                                             Service.account_id == account.id)))
    if not services or len(services) != len(set(service_ids)):
        raise InvalidInput("name services of this account", path="service_ids")
    expires_at = tx.now + dt.timedelta(days=tx.settings.renewal_link_days)
    request, code = tokens.issue(tx, account.id, [s.id for s in services], kind=tokens.CODE, max_uses=1,
                                 expires_at=expires_at)
    for r in renewal_recipients(account, with_sales=False):
        queue_email(tx, "renewal_confirmation_request", {
            "recipient_name": r.name, "account_name": account.name, "code": code,
            "confirm_url": tokens.confirm_url(tx.settings),
            "services": [{"name": s.name, "expires_on": s.expires_on.isoformat() if s.expires_on else ""}
                         for s in services],
            "expires_on": expires_at.astimezone(tx.settings.tz).strftime("%Y-%m-%d")},
            to=[r], account_id=account.id, dedupe_key=f"renewal_code:{request.id}:{r.email.lower()}")
    tx.audit("renewal.code_sent", subject=request, account_id=account.id, services=[s.id for s in services])
    return code


def _scope(tx: Any, request: Any) -> tuple[Account, list[Service]]:
    account = tx.session.get(Account, request.account_id)
    services = list(tx.session.scalars(select(Service).where(
        Service.id.in_(request.service_ids or [-1]), Service.account_id == account.id,
        Service.status.in_(RENEWABLE)).order_by(Service.expires_on, Service.name)))
    return account, services


def _rows(services: list[Service]) -> list[dict[str, Any]]:
    return [{"id": s.id, "name": s.name, "kind": s.kind, "expires_on": s.expires_on.isoformat() if s.expires_on
             else "", "years": default_years(s)} for s in services]


def check(tx: Any, code: str) -> ConfirmResult:
    """Step one: is the code good? Then show what it is about. A wrong code counts as a try."""
    request, why = tokens.check_code(tx, code)
    if request is None:
        return ConfirmResult(why or "unknown")
    account, services = _scope(tx, request)
    return ConfirmResult("ok", tokens.normal_code(code) or "", account.name, _rows(services))


def decide(tx: Any, code: str, form: Mapping[str, str]) -> ConfirmResult:
    """Step two: apply the confirm or decline chosen for each service of the code, and use the code up."""
    request, why = tokens.check_code(tx, code)
    if request is None:
        return ConfirmResult(why or "unknown")
    account, services = _scope(tx, request)
    choices, errors = [], []
    for s in services:
        value = form.get(f"decision_{s.id}", "")
        if value == "decline":
            choices.append(Choice(s, DecisionAction.decline))
        elif value == "renew":
            raw = (form.get(f"years_{s.id}") or "").strip()
            if not raw.isdigit() or not MIN_YEARS <= int(raw) <= MAX_YEARS:
                errors.append(f"{s.name}: the period must be {MIN_YEARS} to {MAX_YEARS} years")
            else:
                choices.append(Choice(s, DecisionAction.renew, int(raw)))
        elif value:
            errors.append(f"{s.name}: choose confirm or decline")
    if not choices and not errors:
        errors.append("choose confirm or decline")
    normal = tokens.normal_code(code) or ""
    if errors:
        return ConfirmResult("invalid", normal, account.name, _rows(services), errors=errors)
    applied = apply(tx, account, choices, Authority(f"code:{request.id}", tokens.CODE, "page", request))
    by_id = {s.id: s for s in services}
    confirm(tx, account, applied, by_id, renewal_recipients(account, with_sales=False), page_url=None)
    return ConfirmResult("applied", "", account.name,
                         applied=[describe(d, by_id[d.service_id]) for d in applied.decisions])
