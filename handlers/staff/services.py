"""Staff commands for suspensions, holds and the automation: `suspend`, `unsuspend`, `hold`, `unhold`,
`forecast`, `digest`."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from handlers.billing import digest as digest_ops
from handlers.billing import dunning, holds
from handlers.billing import suspensions as sus_ops
from handlers.billing.common import lock_account
from handlers.errors import Conflict, InvalidInput, NotFound
from handlers.models import Account, Service, ServiceStatus, SuspensionReason
from handlers.staff.accounts import resolve_account
from handlers.staff.commands import Reply, iso, local_time, register

if TYPE_CHECKING:
    from handlers.services import Tx


def resolve_target(session: Session, text: str) -> tuple[Account, Service | None]:
    """``ACCOUNT/SERVICE``, a service named exactly (name or ref, any case) if only one has that name,
    else an account as `account show` names it."""
    wanted = (text or "").strip()
    q = select(Service).where(Service.status != ServiceStatus.removed).order_by(Service.id).limit(6)
    if "/" in wanted:
        owner, _, name = wanted.rpartition("/")
        acc = resolve_account(session, owner)
        found = list(session.scalars(q.where(Service.account_id == acc.id, or_(
            func.lower(Service.name) == name.strip().lower(), func.lower(Service.ref) == name.strip().lower()))))
        if not found:
            raise NotFound(f"{acc.name} has no service `{name}`", hint="account show lists its services")
        return acc, found[0]
    if wanted and not wanted.isdigit():
        found = list(session.scalars(q.where(
            or_(func.lower(Service.name) == wanted.lower(), func.lower(Service.ref) == wanted.lower()))))
        if len(found) == 1:
            return session.get(Account, found[0].account_id), found[0]
        if len(found) > 1:
            where = ", ".join(f"#{s.id} on account #{s.account_id}" for s in found[:5])
            raise InvalidInput(f"`{text}` names several services ({where})",
                               hint="name it as ACCOUNT/SERVICE, e.g. acme/hosting")
    return resolve_account(session, wanted), None


def _scope(acc: Account, svc: Service | None) -> str:
    return f"{svc.name} ({acc.name})" if svc else acc.name


@register("suspend")
def suspend(tx: "Tx", args: dict[str, Any]) -> Reply:
    """A manual suspension with a reason; emailed to the client; only staff lift it."""
    acc, svc = resolve_target(tx.session, args["account_or_service"])
    acc = lock_account(tx, acc.id)
    reason = (args.get("reason") or "").strip()
    same = [s for s in sus_ops.open_suspensions(tx, acc.id)
            if s.reason == SuspensionReason.manual and s.service_id == (svc.id if svc else None)]
    if same:
        raise Conflict(f"{_scope(acc, svc)} is suspended by staff already (since "
                       f"{local_time(tx, same[0].started_at)})", hint="unsuspend lifts it")
    if svc is not None and svc.status not in sus_ops.ACTIVE_OR_SUSPENDED:
        raise Conflict(f"{svc.name} is {svc.status.value}; only an active service can be suspended")
    # the reason is staff's own note unless they say the client should read it
    sus = sus_ops.suspend(tx, acc, reason=SuspensionReason.manual, text=reason, service=svc,
                          tell_client=bool(args.get("tell_client")))
    services = [s.name for s in acc.services if s.status == ServiceStatus.suspended]
    return Reply(title=f"suspended {_scope(acc, svc)}",
                 text=f"suspended {_scope(acc, svc)}" + (f": {reason}" if reason else "")
                      + f"\nsuspended services: {', '.join(services) or 'none'}",
                 data={"suspension": {"id": sus.id, "reason": "manual", "text": reason,
                                      "started_at": iso(sus.started_at)},
                       "account": {"id": acc.id, "name": acc.name, "status": acc.status.value},
                       "service": svc.name if svc else None, "suspended_services": services})


@register("unsuspend")
def unsuspend(tx: "Tx", args: dict[str, Any]) -> Reply:
    """Lift every open suspension of the account (or of that one service), whatever its reason."""
    acc, svc = resolve_target(tx.session, args["account_or_service"])
    acc = lock_account(tx, acc.id)
    opened = sus_ops.open_suspensions(tx, acc.id)
    mine = [s for s in opened if s.service_id == (svc.id if svc else None)]
    if not mine:
        raise Conflict(f"{_scope(acc, svc)} has no open suspension",
                       hint="account show lists the account's suspensions")
    restored = sus_ops.lift(tx, acc, mine, why="lifted by staff")
    left = [s for s in opened if s not in mine]
    text = f"lifted {len(mine)} suspension(s) of {_scope(acc, svc)}; active again: {', '.join(restored) or 'nothing'}"
    if left:
        text += "\nstill open: " + ", ".join(f"{s.reason.value}" + (" (one service)" if s.service_id else "")
                                             for s in left)
    return Reply(title=f"unsuspended {_scope(acc, svc)}", text=text,
                 data={"lifted": [{"id": s.id, "reason": s.reason.value} for s in mine], "restored": restored,
                       "still_open": [{"id": s.id, "reason": s.reason.value} for s in left],
                       "account": {"id": acc.id, "name": acc.name, "status": acc.status.value}})


@register("hold")
def hold(tx: "Tx", args: dict[str, Any]) -> Reply:
    """No automatic suspension or removal for the account, until the date (inclusive) or `unhold`."""
    acc = resolve_account(tx.session, args["account"])
    row = holds.hold(tx, acc.id, until=args.get("until"), reason=args.get("reason") or "")
    until = f" until the end of {args['until']}" if args.get("until") else " until `unhold`"
    return Reply(title=f"hold on {acc.name}", text=f"held {acc.name}{until}"
                 + (f": {row.reason}" if row.reason else "") + "; reminders still go out",
                 data={"id": row.id, "account": {"id": acc.id, "name": acc.name}, "until": iso(row.until),
                       "reason": row.reason})


@register("unhold")
def unhold(tx: "Tx", args: dict[str, Any]) -> Reply:
    acc = resolve_account(tx.session, args["account"])
    lifted = holds.unhold(tx, acc.id)
    return Reply(title=f"hold lifted on {acc.name}",
                 text=f"hold lifted on {acc.name}; the next sweep acts on it again",
                 data={"account": {"id": acc.id, "name": acc.name}, "lifted": [h.id for h in lifted]})


@register("forecast")
def forecast(tx: "Tx", args: dict[str, Any]) -> Reply:
    """What the sweeps will do in the next days, by day and account; nothing is changed."""
    days = dunning.forecast(tx, args.get("days") or 1)
    return Reply(title="forecast", text=dunning.forecast_text(days), data={"days": days})


@register("digest")
def digest(tx: "Tx", args: dict[str, Any]) -> Reply:
    """The staff digest, now: built, emailed to the staff address if one is set, and returned."""
    content = digest_ops.send_digest(tx, manual=True)
    return Reply(title=content["title"], text=content["text"], data=content)
