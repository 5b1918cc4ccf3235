"""`renewals due`, `renewal link`, `renewal confirm`, `renewal auto` and `renewal done`: what expires soon, an
audited renewal page link for a client, an emailed confirmation request with an activation code, automatic
renewal, and a renewal staff completed by hand."""
from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, or_, select

from handlers.actors import actor_name
from handlers.billing.common import lock_account
from handlers.errors import Conflict, InvalidInput, NotFound
from handlers.models import Account, Invoicing, Service, ServiceStatus
from handlers.renewals import terms as term_ops
from handlers.renewals import tokens
from handlers.renewals.completion import complete
from handlers.renewals.confirm import request_confirmation
from handlers.renewals.listing import RENEWABLE, accounts_of, renewable
from handlers.renewals.people import renewal_recipients
from handlers.renewals.reminders import REMINDED
from handlers.staff.accounts import resolve_account
from handlers.staff.commands import Reply, columns, iso, register
from handlers.staff.services import resolve_target

if TYPE_CHECKING:
    from handlers.services import Tx

DUE_LIMIT = 200
DONE_HINT = ("renewal done SERVICE [--expires DATE]: SERVICE is a service's name or ref, or ACCOUNT/SERVICE "
             "when the name is not unique")


def _when(days: int) -> str:
    if days in (0, 1):
        return ("today", "tomorrow")[days]
    return f"in {days} days" if days > 0 else f"{-days} day{'s' if days < -1 else ''} ago"


@register("renewals due")
def renewals_due(tx: "Tx", args: dict[str, Any]) -> Reply:
    """Services expiring in the next DAYS days (and expired ones still renewable), with decisions so far."""
    account = resolve_account(tx.session, args["account"]) if args.get("account") else None
    days = min(int(args.get("days") or 90), 3660)
    rows = renewable(tx, account_id=account.id if account else None, days=days, limit=DUE_LIMIT + 1)
    more = len(rows) > DUE_LIMIT
    rows = rows[:DUE_LIMIT]
    accounts = accounts_of(tx, rows)
    data = [{"service_id": r.service.id, "name": r.service.name, "kind": r.service.kind,
             "status": r.service.status.value, "expires_on": iso(r.service.expires_on), "days_left": r.days_left,
             "account": accounts[r.service.account_id].ref, "decision": r.decided or None,
             "paper": accounts[r.service.account_id].invoicing == Invoicing.paper,
             "auto_renew": bool(r.service.auto_renew)} for r in rows]
    scope = f" for {account.name}" if account else ""
    if not rows:
        return Reply("Renewals due", f"nothing expires in the next {days} days{scope}", data)
    text = [f"{len(rows)}{'+' if more else ''} service(s) expiring in the next {days} days{scope} "
            "(and expired ones still renewable):"]
    text += columns([(r.service.expires_on, _when(r.days_left), accounts[r.service.account_id].ref, r.service.name,
                      r.service.kind, r.service.status.value, r.decided or "undecided",
                      "paper: by hand" if accounts[r.service.account_id].invoicing == Invoicing.paper else "",
                      "auto-renew" if r.service.auto_renew else "") for r in rows])
    if more:
        text.append(f"  ... more than {DUE_LIMIT}; narrow with --days or --account")
    return Reply("Renewals due", "\n".join(text), data)


@register("renewal link")
def renewal_link(tx: "Tx", args: dict[str, Any]) -> Reply:
    """A renewal page link for the client, valid RENEWDESK_RENEWAL_LINK_DAYS; decisions through it record you."""
    account = resolve_account(tx.session, args["account"])
    rows = renewable(tx, account_id=account.id)
    expires_at = tx.now + dt.timedelta(days=tx.settings.renewal_link_days)
    request, token = tokens.issue(tx, account.id, [r.service.id for r in rows], kind=tokens.LINK,
                                  expires_at=expires_at)
    tx.audit("renewal.link", subject=request, account_id=account.id, services=len(rows))
    url = tokens.page_url(tx.settings, token)
    text = (f"renewal page for {account.name}, acting for the client (decisions record you, "
            f"{actor_name(tx, tx.actor)}); "
            f"valid until {expires_at.astimezone(tx.settings.tz):%Y-%m-%d %H:%M}, "
            f"{len(rows)} service(s) listed now:\n{url}")
    return Reply("Renewal link", text, {"account": account.ref, "url": url, "expires_at": iso(expires_at),
                                        "services": len(rows)})


@register("renewal confirm")
def renewal_confirm(tx: "Tx", args: dict[str, Any]) -> Reply:
    """Email the account's renewal contacts an activation code for one service, or for everything on its
    renewal page now; the code itself is never shown to staff."""
    account, service = resolve_target(tx.session, args["account_or_service"])
    if service is not None:
        if service.status not in RENEWABLE or service.expires_on is None:
            raise Conflict(f"{service.name} is {service.status.value}"
                           + ("" if service.expires_on else " and has no expiry date") + "; nothing to confirm")
        services = [service]
    else:
        services = [r.service for r in renewable(tx, account_id=account.id)]
        if not services:
            raise Conflict(f"{account.name} has nothing expiring in the next 3 months or still renewable",
                           hint="renewals due --account ACCOUNT --days 365 shows later expiries")
    request_confirmation(tx, account.id, [s.id for s in services])
    to = [r.email for r in renewal_recipients(account, with_sales=False)]
    expires_at = tx.now + dt.timedelta(days=tx.settings.renewal_link_days)
    names = ", ".join(s.name for s in services)
    text = (f"emailed an activation code for {names} to {', '.join(to) or 'nobody (no contact to write to)'}; "
            f"it works once, until {expires_at.astimezone(tx.settings.tz):%Y-%m-%d %H:%M}")
    if account.invoicing == Invoicing.paper:
        text += f"\n{account.name} is on paper invoicing: tell the client to expect the email"
    return Reply("Renewal confirmation request", text, {
        "account": account.ref, "services": [s.name for s in services], "to": to, "expires_at": iso(expires_at)})


@register("renewal auto")
def renewal_auto(tx: "Tx", args: dict[str, Any]) -> Reply:
    """Switch automatic renewal for one service, or for every service of an account that still gets
    reminders. A service on auto-renew is renewed and invoiced at its next reminder occasion instead of
    being asked; a decision already made for the current expiry stands."""
    account, service = resolve_target(tx.session, args["account_or_service"])
    switch = str(args.get("on_or_off") or "").strip().lower()
    if switch not in ("on", "off"):
        raise InvalidInput(f"say `on` or `off`, not `{args.get('on_or_off')}`", path="on|off",
                           hint="renewal auto ACCOUNT|SERVICE on|off")
    wanted = switch == "on"
    if service is not None:
        if service.status not in REMINDED:
            raise Conflict(f"{service.name} is {service.status.value}; automatic renewal does not apply to it")
        targets = [service]
    else:
        targets = [s for s in account.services if s.status in REMINDED]
        if not targets:
            raise Conflict(f"{account.name} has no active, suspended or expired service to renew")
    changed = [s for s in sorted(targets, key=lambda s: (s.name, s.id)) if bool(s.auto_renew) != wanted]
    for s in changed:
        s.auto_renew = wanted
    names = [s.name for s in changed]
    unchanged = [s.name for s in targets if s not in changed]
    if changed:
        tx.audit("renewal.auto", subject=service, account_id=account.id, services=names, on=wanted)
    text = (f"auto-renew {switch} for {', '.join(names)} ({account.name})" if changed
            else f"nothing to change: auto-renew is already {switch}")
    if unchanged and changed:
        text += f"; already {switch}: {', '.join(unchanged)}"
    if changed and wanted:
        text += ("\nat the next reminder occasion each is renewed (the default period), invoiced and the "
                 "renewal contacts are emailed, instead of being asked")
    return Reply("Automatic renewal", text, {"account": account.ref, "on": wanted, "changed": names,
                                             "unchanged": unchanged})


def _no_renewal(tx: "Tx", service: Any) -> Conflict:
    """Why `renewal done` without --expires has nothing to complete."""
    last = term_ops.last_completed(tx, service.id)
    if last is not None and last.new_expires_on == service.expires_on:
        return Conflict(f"the renewal of {service.name} was completed on "
                        f"{last.completed_at.astimezone(tx.settings.tz):%Y-%m-%d} "
                        f"by {actor_name(tx, last.completed_by)}; it expires on {service.expires_on} now",
                        hint="renewal done SERVICE --expires DATE sets another expiry")
    return Conflict(f"no renewal is requested for {service.name}'s expiry on {service.expires_on}; "
                    "give the new expiry with --expires DATE", hint="renewal done SERVICE [--expires DATE]")


def _removed(tx: "Tx", text: str) -> Service | None:
    """The latest removed service ``text`` names (``NAME`` or ``ACCOUNT/NAME``), if any."""
    owner, _, name = text.strip().rpartition("/")
    name = name.strip().lower()
    q = select(Service).where(Service.status == ServiceStatus.removed, or_(
        func.lower(Service.name) == name, func.lower(Service.ref) == name))
    if owner:
        q = q.where(Service.account_id == resolve_account(tx.session, owner).id)
    return tx.session.scalars(q.order_by(Service.id.desc()).limit(1)).first() if name else None


def _service_to_complete(tx: "Tx", text: str) -> tuple[Account, Service]:
    """The account and live service `renewal done` names; a removed service, a name that is no service, or an
    account are refused as such (the command takes a SERVICE, so a missing one is not a missing account)."""
    try:
        account, service = resolve_target(tx.session, text)
    except NotFound:
        removed = _removed(tx, text)
        if removed is not None:
            owner = tx.session.get(Account, removed.account_id)
            raise Conflict(f"{removed.name} ({owner.name}) was removed; there is nothing to complete",
                           hint=DONE_HINT) from None
        if "/" in text:
            raise  # its ACCOUNT part, or that account has no such service: it says which
        raise NotFound(f"no service matches `{text.strip()}`", hint=DONE_HINT) from None
    if service is None:
        raise InvalidInput(f"`{text}` is an account; name one of its services", hint=DONE_HINT)
    return account, service


@register("renewal done")
def renewal_done(tx: "Tx", args: dict[str, Any]) -> Reply:
    """Staff completed a renewal by hand (a service billed by hand, or renewed at the registry): the expiry moves
    forward by the years decided, or to --expires DATE; the service's history and the audit log say so."""
    account, service = _service_to_complete(tx, args["service"])
    lock_account(tx, account.id)
    tx.session.refresh(service)
    if service.expires_on is None:
        raise Conflict(f"{service.name} has no expiry date to move")
    expires = args.get("expires")
    if expires is not None and expires <= service.expires_on:
        raise InvalidInput(f"--expires: the new expiry must be after the current one ({service.expires_on}), "
                           f"not {expires}", hint="renewal done SERVICE [--expires DATE]")
    term = term_ops.find(tx, service.id, service.expires_on)
    if expires is None and (term is None or not term.years or term.completed_at is not None):
        raise _no_renewal(tx, service)
    if term is None:
        term = term_ops.term_for(tx, service)
    old = service.expires_on
    if complete(tx, term, f"completed by hand by {actor_name(tx, tx.actor)}", new_expiry=expires) is None:
        raise _no_renewal(tx, service)
    tx.audit("renewal.done", subject=service, account_id=account.id, expiry=str(old),
             new_expiry=str(service.expires_on))
    text = f"{service.name} ({account.name}) renewed: expires {service.expires_on} (was {old})"
    return Reply("Renewal done", text, {"account": account.ref, "service": service.name, "expiry": iso(old),
                                        "new_expiry": iso(service.expires_on)})
