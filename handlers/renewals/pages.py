"""The renewal selection page (``/renew/<token>``): what it shows and how a submitted form is applied.

The web route only adapts HTTP; everything here is an operation. The form is protected by a
double-submit token: the route keeps a random nonce in a cookie, the form carries its HMAC
(:func:`form_token`), and a POST is accepted only when the two agree. A page opened from a
staff member's link records that staff member on every decision; that link never leaves the staff
member: the confirmation emailed to the client carries a link of the client's own (:func:`client_url`).
"""
from __future__ import annotations

import datetime as dt
import hmac
import secrets
from dataclasses import dataclass, field
from typing import Any, Mapping

from handlers.actors import actor_name
from handlers.models import Account, DecisionAction, RenewalRequest
from handlers.renewals import tokens
from handlers.renewals.decisions import Authority, Choice, apply, confirm, describe
from handlers.renewals.grammar import MAX_YEARS, MIN_YEARS
from handlers.renewals.listing import Row, renewable
from handlers.renewals.people import renewal_recipients

CSRF_PURPOSE = "renewal-form"


def new_nonce() -> str:
    return secrets.token_urlsafe(24)


def form_token(services: Any, nonce: str) -> str:
    return services.sign(CSRF_PURPOSE, nonce, length=32)


def form_token_ok(services: Any, nonce: str | None, submitted: str | None) -> bool:
    if not nonce or not submitted:
        return False
    return hmac.compare_digest(form_token(services, nonce), submitted)


@dataclass
class PageResult:
    """``status``: ok, unknown, expired (the page says which, and nothing else about the account)."""

    status: str
    account_name: str = ""
    rows: list[dict[str, Any]] = field(default_factory=list)
    acting_staff: str | None = None   # who acts for the client, in words ("our staff"); None: the client
    expires_at: str = ""
    applied: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _when(days: int) -> str:
    if days in (0, 1):
        return ("today", "tomorrow")[days]
    return f"in {days} days" if days > 0 else f"expired {-days} day{'s' if days < -1 else ''} ago"


def _row(r: Row) -> dict[str, Any]:
    s = r.service
    return {"id": s.id, "name": s.name, "kind": s.kind, "expires_on": s.expires_on.isoformat(),
            "days_left": r.days_left, "when": _when(r.days_left), "status": s.status.value,
            "decided": r.decided, "years": r.decision.period_years if r.decision and r.decision.period_years
            else r.default_years, "auto_renew": bool(s.auto_renew)}


def _open(tx: Any, token: str) -> tuple[RenewalRequest | None, str]:
    request = tokens.find(tx, token, kinds=(tokens.REPLY, tokens.LINK))
    why = tokens.problem(tx, request)
    return (request, "ok") if why is None else (None, "unknown" if why == "unknown" else "expired")


def acting_staff(tx: Any, actor: str) -> str:
    """The staff member behind a staff link, for the client to read: their name, else "our staff" (the command
    line, or a member without a name); never an actor id."""
    name = actor_name(tx, actor)
    return "our staff" if name == actor or name.startswith("our staff") else f"{name} of our staff"


def _result(tx: Any, request: RenewalRequest, account: Account, status: str = "ok") -> PageResult:
    rows = renewable(tx, account_id=account.id)
    staff = acting_staff(tx, request.created_by) if request.kind == tokens.LINK else None
    return PageResult(status, account.name, [_row(r) for r in rows], staff,
                      (request.expires_at - dt.timedelta(seconds=1)).astimezone(tx.settings.tz).strftime("%Y-%m-%d"))


def show_page(tx: Any, token: str) -> PageResult:
    """What ``GET /renew/<token>`` shows."""
    request, status = _open(tx, token)
    if request is None:
        return PageResult(status)
    return _result(tx, request, tx.session.get(Account, request.account_id))


def _choices(form: Mapping[str, str], rows: list[Row]) -> tuple[list[Choice], list[str]]:
    by_id = {str(r.service.id): r for r in rows}
    choices, errors = [], []
    for key, value in form.items():
        if not key.startswith("decision_") or not value:
            continue
        sid = key.removeprefix("decision_")
        row = by_id.get(sid)
        if row is None:
            errors.append("a service on the form is no longer up for renewal; reload the page")
            continue
        if value not in ("renew", "decline"):
            errors.append(f"{row.service.name}: choose renew or decline")
            continue
        years = None
        if value == "renew":
            raw = (form.get(f"years_{sid}") or "").strip()
            if not raw.isdigit() or not MIN_YEARS <= int(raw) <= MAX_YEARS:
                errors.append(f"{row.service.name}: the period must be {MIN_YEARS} to {MAX_YEARS} years")
                continue
            years = int(raw)
        choices.append(Choice(row.service, DecisionAction(value), years))
    if not choices and not errors:
        errors.append("choose renew or decline for at least one service")
    return choices, errors


def client_url(tx: Any, request: RenewalRequest, token: str, account: Account, rows: list[Row]) -> str:
    """The page link a confirmation email may carry: the client's own. A reminder's token is theirs already;
    a staff link is not, so the client gets a new reply token for the account, as a reminder would give them
    (the services listed, until the grace period after the last of them expires), with the client's
    authority and not the staff member's."""
    if request.kind != tokens.LINK:
        return tokens.page_url(tx.settings, token.strip().lower())
    last = max(r.service.expires_on for r in rows)
    client, secret = tokens.issue(tx, account.id, [r.service.id for r in rows], kind=tokens.REPLY,
                                  expires_at=tokens.end_of_day(last + dt.timedelta(days=tx.settings.renewal_grace_days),
                                                               tx.settings.tz))
    tx.audit("renewal.client_link", subject=client, account_id=account.id, staff_link=request.id)
    return tokens.page_url(tx.settings, secret)


def submit_page(tx: Any, token: str, form: Mapping[str, str]) -> PageResult:
    """Apply a submitted selection (the route has checked the form token). All or nothing."""
    request, status = _open(tx, token)
    if request is None:
        return PageResult(status)
    account = tx.session.get(Account, request.account_id)
    rows = renewable(tx, account_id=account.id)
    choices, errors = _choices(form, rows)
    if errors:
        result = _result(tx, request, account, "invalid")
        result.errors = errors
        return result
    if request.kind == tokens.LINK:
        auth = Authority(request.created_by, "staff", "page", request)
    else:
        auth = Authority(f"account:{account.id}", tokens.REPLY, "page", request)
    applied = apply(tx, account, choices, auth)
    services = {c.service.id: c.service for c in choices}
    if applied.changed:  # nothing changed: no confirmation, so no new link either
        confirm(tx, account, applied, services, renewal_recipients(account, with_sales=False),
                page_url=client_url(tx, request, token, account, rows))
    result = _result(tx, request, account, "applied")
    result.applied = [describe(d, services[d.service_id]) for d in applied.decisions]
    return result
