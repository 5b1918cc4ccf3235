"""Renewal automation: automatic renewal, the sweep's confirmation requests, and removal after expiry.

Planned like billing's rules (:mod:`handlers.billing.rules`): for one account at one moment the
plan is a list of actions, each with its key; the sweep applies them, ``--dry-run`` and
``forecast`` only print them. Every action is claimed by ``notice`` rows, one per service and
expiry, so a re-run or a second scheduler does nothing twice:

- ``renewal_auto`` (``auto``): a service on auto-renew is renewed at its first reminder occasion
  instead of being asked: the decision is recorded (``auto_renew``, by the automation), the
  invoice raised and the sales contact told, and the account's renewal contacts are emailed;
- ``renewal_confirm`` (``code``): ``RENEWDESK_RENEWAL_CONFIRM_DAYS`` before expiry an undecided
  domain's account is also emailed a confirmation request with an activation code;
- ``renewal_removal`` (``declined``): a declined service is removed on its expiry day;
- ``renewal_removal_warning`` (``lapsed``): ``RENEWDESK_REMOVAL_WARNING_DAYS`` before an expired
  service nobody decided about is removed, its account is warned, with the removal date;
- ``renewal_removal`` (``lapsed``): that service is removed once ``RENEWDESK_RENEWAL_GRACE_DAYS``
  have passed, and never before the warning days have passed since the warning went out: a warning
  sent late (downtime, a hold) moves the removal, and the notice records the day (its ``detail``).
  A hold stops the warning and both removals.
- ``renewal_expire``: an active service past its expiry and not renewed becomes ``expired`` (its
  status is the claim: only an active one changes) until a renewal completes or it is removed.

Renewals and requests follow the days the sweep covers (after downtime, the missed ones); a
lapsed service is warned for ``LOOKBACK_DAYS`` after its removal was due (a longer hold or outage
leaves it to staff).
"""
from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any, Iterable

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from handlers.actors import actor_name
from handlers.billing.common import active_hold, claim_notice, today
from handlers.billing.rules import Action, Key
from handlers.clock import local_date
from handlers.jobs import Sweep, register_sweep
from handlers.models import (Account, DecisionAction, Invoicing, Notice, RenewalDecision, Service, ServiceEvent,
                             ServiceStatus)
from handlers.outbox import our_address, queue_soon
from handlers.renewals import confirm as confirm_ops
from handlers.renewals import decisions as decision_ops
from handlers.renewals.invoicing import context, invoice_of
from handlers.renewals.lapse import WARN, announced, removal_due, removal_on
from handlers.renewals.occasions import occasions
from handlers.renewals.people import renewal_recipients
from handlers.renewals.reminders import REMINDED, advance, window_start

if TYPE_CHECKING:
    from handlers.services import Services, Tx

JOB = RULE = "renewal_automation"
AUTO, CONFIRM, REMOVAL, EXPIRE = "renewal_auto", "renewal_confirm", "renewal_removal", "renewal_expire"
LOOKBACK_DAYS = 92
PLANNED = (*REMINDED, ServiceStatus.cancelled)


# -- which days and expiries --------------------------------------------------------------------

def _occasion_ranges(tx: "Tx", first: dt.date, day: dt.date) -> list[tuple[dt.date, dt.date]]:
    """The expiry dates with a reminder occasion from ``first`` to ``day``."""
    return [r for occ in occasions(tx.settings) if (r := occ.expiry_range(first, day))[0] <= r[1]]


def _confirm_range(tx: "Tx", first: dt.date, day: dt.date) -> tuple[dt.date, dt.date] | None:
    n = tx.settings.confirm_days
    if n is None:
        return None
    return max(first + dt.timedelta(days=n), day), day + dt.timedelta(days=n)


def _removal_ranges(tx: "Tx", day: dt.date) -> tuple[tuple[dt.date, dt.date], tuple[dt.date, dt.date]]:
    """(declined: expired up to today, lapsed: expiries whose warning or removal may be due today).

    A lapsed service is warned once its removal is ``removal_warning_days`` away, for ``LOOKBACK_DAYS``
    after it was due; a late warning moves its removal by at most ``removal_warning_days``.
    """
    lapsed_last = day - dt.timedelta(days=tx.settings.renewal_grace_days + 1)
    warn_days = dt.timedelta(days=tx.settings.removal_warning_days)
    return ((day - dt.timedelta(days=LOOKBACK_DAYS), day),
            (lapsed_last - dt.timedelta(days=LOOKBACK_DAYS) - warn_days, lapsed_last + warn_days))


def candidates(tx: "Tx", first: dt.date, day: dt.date) -> list[int]:
    """Accounts with something possibly due, by indexed range queries on ``service.expires_on``."""
    found: set[int] = set()

    def ask(lo: dt.date, hi: dt.date, statuses: Iterable[ServiceStatus], *extra: Any) -> None:
        if lo <= hi:
            found.update(tx.session.scalars(select(Service.account_id).distinct().where(
                Service.expires_on.between(lo, hi), Service.status.in_(list(statuses)), *extra)))
    for lo, hi in _occasion_ranges(tx, first, day):
        ask(lo, hi, REMINDED, Service.auto_renew.is_(True))
    if (r := _confirm_range(tx, first, day)) is not None:
        ask(*r, REMINDED, Service.kind == "domain", Service.auto_renew.is_(False))
    declined, lapsed = _removal_ranges(tx, day)
    ask(*declined, (ServiceStatus.cancelled,))
    ask(*lapsed, REMINDED, Service.auto_renew.is_(False))
    ask(*_expire_range(day), (ServiceStatus.active,))
    return sorted(found)


def _expire_range(day: dt.date) -> tuple[dt.date, dt.date]:
    """Expiries that have passed (up to LOOKBACK_DAYS back): their active services become expired."""
    return day - dt.timedelta(days=LOOKBACK_DAYS), day - dt.timedelta(days=1)


# -- the plan for one account ---------------------------------------------------------------------

def _done(tx: "Tx", ids: list[int], assumed: set[Key]) -> set[tuple[str, str, int, dt.date]]:
    """(kind, occasion, service, expiry) claimed already, or assumed done by a forecast's earlier day."""
    done = set(tx.session.execute(select(Notice.kind, Notice.occasion, Notice.subject_id, Notice.occasion_date).where(
        Notice.kind.in_((AUTO, CONFIRM, REMOVAL)), Notice.subject_type == "service",
        Notice.subject_id.in_(ids))).all())
    for key in assumed:
        if key and key[0] in (AUTO, CONFIRM, REMOVAL, EXPIRE):
            done.update((key[0], key[1], sid, exp) for sid, exp in key[3])
    return done


def _names(services: list[Service]) -> str:
    return ", ".join(f"{s.name} ({s.expires_on})" for s in services)


def _to(acc: Account) -> str:
    if acc.invoicing == Invoicing.paper:
        return "no email: paper invoicing"
    people = renewal_recipients(acc, with_sales=False)
    return "to " + ", ".join(r.email for r in people) if people else "no email: nobody to write to"


def plan_account(tx: "Tx", acc: Account, assumed: set[Key]) -> list[Action]:
    """What the renewal automation does for ``acc`` as of ``tx.now`` (see the module's docstring)."""
    day = today(tx)
    first = window_start(tx, day, JOB)
    ranges = _occasion_ranges(tx, first, day)
    confirm_range = _confirm_range(tx, first, day)
    (declined_lo, declined_hi), (lapsed_lo, lapsed_hi) = _removal_ranges(tx, day)
    hi = max([declined_hi, *(r[1] for r in ranges), *([confirm_range[1]] if confirm_range else [])])
    svcs = list(tx.session.scalars(select(Service).where(
        Service.account_id == acc.id, Service.expires_on.between(lapsed_lo, hi), Service.status.in_(PLANNED))
        .order_by(Service.expires_on, Service.name, Service.id)))
    if not svcs:
        return []
    latest = decision_ops.current(tx, [s.id for s in svcs])
    decided = {s.id: decision_ops.cycle_decision(latest.get(s.id), s, tx.settings.tz) for s in svcs}
    done = _done(tx, [s.id for s in svcs], assumed)

    def due(kind: str, occasion: str, s: Service) -> bool:
        return (kind, occasion, s.id, s.expires_on) not in done

    auto = [s for s in svcs if s.auto_renew and s.status in REMINDED and decided[s.id] is None
            and any(lo <= s.expires_on <= hi_ for lo, hi_ in ranges) and due(AUTO, "auto", s)]
    codes = [s for s in svcs if confirm_range and s.kind == "domain" and not s.auto_renew and s.status in REMINDED
             and decided[s.id] is None and confirm_range[0] <= s.expires_on <= confirm_range[1]
             and acc.invoicing != Invoicing.paper and due(CONFIRM, "code", s)]
    declined = [s for s in svcs if s.status == ServiceStatus.cancelled and declined_lo <= s.expires_on <= declined_hi
                and decided[s.id] is not None and decided[s.id].action == DecisionAction.decline
                and due(REMOVAL, "declined", s)]
    lapsed = [s for s in svcs if s.status in REMINDED and not s.auto_renew and decided[s.id] is None
              and lapsed_lo <= s.expires_on <= lapsed_hi and due(REMOVAL, "lapsed", s)]
    expire_lo, expire_hi = _expire_range(day)
    expired = [s for s in svcs if s.status == ServiceStatus.active and expire_lo <= s.expires_on <= expire_hi
               and due(EXPIRE, "expired", s)]
    warned = announced(tx, [s.id for s in lapsed], assumed)
    warn_from = day - dt.timedelta(days=LOOKBACK_DAYS)
    to_warn = [s for s in lapsed if (s.id, s.expires_on) not in warned and removal_due(tx, s.expires_on) > warn_from
               and due(WARN, "lapsed", s)]
    lapsed = [s for s in lapsed if warned.get((s.id, s.expires_on), dt.date.max) <= day]
    actions = []
    if expired:
        actions.append(_action(acc, EXPIRE, "expired", expired, f"{acc.name}: expired, not renewed: "
                               f"{_names(expired)}", _expire))
    if auto:
        actions.append(_action(acc, AUTO, "auto", auto, f"{acc.name}: renew automatically {_names(auto)}, "
                               + ("raising the invoice, " if tx.settings.invoice_renewals else "")
                               + _to(acc), _renew))
    if codes:
        actions.append(_action(acc, CONFIRM, "code", codes, f"{acc.name}: confirmation request with an "
                               f"activation code for {_names(codes)}, {_to(acc)}", _request))
    held = active_hold(tx, acc.id) if declined or lapsed or to_warn else None
    grace = tx.settings.renewal_grace_days
    if to_warn:
        actions.append(_warning_action(tx, acc, to_warn, held))
    for group, occasion, what in ((declined, "declined", "remove on expiry, renewal declined:"),
                                  (lapsed, "lapsed", f"remove, expired and not renewed within {grace} days:")):
        if not group:
            continue
        text = f"{acc.name}: {what} {_names(group)}"
        if held is not None:
            actions.append(_action(acc, REMOVAL, occasion, group, f"{text} - held, not removing"
                                   + (f" ({held.reason})" if held.reason else ""), None))
        else:
            actions.append(_action(acc, REMOVAL, occasion, group, f"{text}, {_to(acc)}", _remove))
    return actions


def _warning_action(tx: "Tx", acc: Account, group: list[Service], held: Any) -> Action:
    """Warn of the removal of lapsed services; each one's removal day is at least the warning days away."""
    when = tuple(removal_on(tx, s.expires_on, today(tx)) for s in group)
    listed = ", ".join(f"{s.name} (expired {s.expires_on}, removal on {w}"
                       + (f", moved from {removal_due(tx, s.expires_on)}: the warning goes out late"
                          if w != removal_due(tx, s.expires_on) else "") + ")" for s, w in zip(group, when))
    text = f"{acc.name}: warn of removal, expired and not renewed: {listed}"
    if held is not None:
        text += " - held, not acting" + (f" ({held.reason})" if held.reason else "")
    else:
        text += f", {_to(acc)}"
    action = _action(acc, WARN, "lapsed", group, text, None if held is not None else _warn)
    action.key = (*action.key, when)
    return action


def _action(acc: Account, kind: str, occasion: str, group: list[Service], text: str, fn: Any) -> Action:
    items = tuple((s.id, s.expires_on) for s in group)
    key = (kind, occasion, acc.id, items)
    apply = None if fn is None else (lambda tx: fn(tx, acc, kind, occasion, items))
    return Action(RULE, acc, key, text, apply)


# -- doing it ---------------------------------------------------------------------------------------

def _claim(tx: "Tx", acc: Account, kind: str, occasion: str, items: tuple[tuple[int, dt.date], ...],
           still: Any) -> list[tuple[Service, Notice]]:
    """The services still as planned (``still(service)``), each with the notice this run claimed for it."""
    outcome = "skipped_paper" if acc.invoicing == Invoicing.paper else "sent"
    out = []
    for sid, exp in items:
        svc = tx.session.get(Service, sid)
        if svc is None or svc.expires_on != exp or not still(svc):
            continue
        notice = claim_notice(tx, kind=kind, subject_type="service", subject_id=sid, occasion=occasion,
                              occasion_date=exp, account_id=acc.id, outcome=outcome)
        if notice is not None:
            out.append((svc, notice))
    return out


def _undecided(tx: "Tx", svc: Service) -> bool:
    d = decision_ops.current(tx, [svc.id]).get(svc.id)
    return decision_ops.cycle_decision(d, svc, tx.settings.tz) is None


def _email(tx: "Tx", acc: Account, intent: str, mine: list[tuple[Service, Notice]], extra: dict[str, Any]) -> None:
    if acc.invoicing == Invoicing.paper:
        return
    services = [{"name": s.name, "kind": s.kind, "expires_on": s.expires_on.isoformat()} for s, _ in mine]
    for r in renewal_recipients(acc, with_sales=False):
        queue_soon(tx, intent, {"recipient_name": r.name, "account_name": acc.name, "services": services,
                                "contact_address": our_address(tx.settings), **extra},
                   to=[r], account_id=acc.id, dedupe_key=f"{intent}:{mine[0][1].id}:{r.email.lower()}")


def _renew(tx: "Tx", acc: Account, kind: str, occasion: str, items: Any) -> str | None:
    mine = _claim(tx, acc, kind, occasion, items,
                  lambda s: s.auto_renew and s.status in REMINDED and _undecided(tx, s))
    if not mine:
        return None
    choices = [decision_ops.Choice(s, DecisionAction.renew) for s, _ in mine]
    made = decision_ops.apply(tx, acc, choices, decision_ops.Authority(tx.actor, "auto_renew", "automation"))
    invoice = made.invoice or invoice_of(tx, made.decisions)
    years = {d.service_id: d.period_years for d in made.decisions}
    _email(tx, acc, "renewal_auto", mine, {"invoice": context(invoice),
                                           "years": {s.name: years[s.id] for s, _ in mine}})
    return f"invoice {invoice.number}" if invoice is not None else ""


def _request(tx: "Tx", acc: Account, kind: str, occasion: str, items: Any) -> str | None:
    mine = _claim(tx, acc, kind, occasion, items,
                  lambda s: s.status in REMINDED and not s.auto_renew and _undecided(tx, s))
    if not mine:
        return None
    confirm_ops.request_confirmation(tx, acc.id, [s.id for s, _ in mine])
    return ""


def _expire(tx: "Tx", acc: Account, kind: str, occasion: str, items: Any) -> str | None:
    """Active services whose expiry has passed become ``expired`` (no email: the post-expiry notice tells)."""
    day = today(tx)
    done = []
    for sid, exp in items:
        svc = tx.session.get(Service, sid, populate_existing=True)
        if svc is None or svc.status != ServiceStatus.active or svc.expires_on != exp or exp >= day:
            continue
        tx.session.add(ServiceEvent(service_id=svc.id, at=tx.now, from_status=svc.status.value,
                                    to_status=ServiceStatus.expired.value,
                                    reason=f"expired on {exp}: not renewed", actor=tx.actor))
        svc.status = ServiceStatus.expired
        done.append(svc.name)
    if not done:
        return None
    tx.session.flush()
    tx.audit("renewal.expired", account_id=acc.id, services=done)
    return "expired"


def _warn(tx: "Tx", acc: Account, kind: str, occasion: str, items: Any) -> str | None:
    """Claim each service's warning (its removal day in ``detail``) and email the account once."""
    if active_hold(tx, acc.id) is not None:
        return None
    day = today(tx)
    outcome = "skipped_paper" if acc.invoicing == Invoicing.paper else "sent"
    mine = []
    for sid, exp in items:
        svc = tx.session.get(Service, sid)
        if svc is None or svc.expires_on != exp or svc.status not in REMINDED or svc.auto_renew \
                or not _undecided(tx, svc):
            continue
        when = removal_on(tx, exp, day)
        notice = claim_notice(tx, kind=kind, subject_type="service", subject_id=sid, occasion=occasion,
                              occasion_date=exp, account_id=acc.id, outcome=outcome, detail=f"removal on {when}")
        if notice is not None:
            mine.append((svc, notice, when))
    if not mine:
        return None
    tx.audit("renewal.removal_warning", account_id=acc.id, services={s.name: w.isoformat() for s, _, w in mine})
    _email(tx, acc, "renewal_removal_warning", [(s, n) for s, n, _ in mine],
           {"grace_days": tx.settings.renewal_grace_days,
            "remove_on": {s.name: w.isoformat() for s, _, w in mine}})
    return ""


def _is_warned_and_due(tx: "Tx", svc: Service) -> bool:
    when = announced(tx, [svc.id], set()).get((svc.id, svc.expires_on))
    return when is not None and when <= today(tx)


def _remove(tx: "Tx", acc: Account, kind: str, occasion: str, items: Any) -> str | None:
    if active_hold(tx, acc.id) is not None:
        return None
    grace = tx.settings.renewal_grace_days
    if occasion == "declined":
        mine = _claim(tx, acc, kind, occasion, items, lambda s: s.status == ServiceStatus.cancelled)
    else:
        mine = _claim(tx, acc, kind, occasion, items, lambda s: s.status in REMINDED and not s.auto_renew
                      and _undecided(tx, s) and _is_warned_and_due(tx, s))
    if not mine:
        return None
    for svc, _ in mine:
        if occasion == "declined":
            d = tx.session.scalar(select(RenewalDecision).where(RenewalDecision.service_id == svc.id)
                                  .order_by(RenewalDecision.id.desc()).limit(1))
            why = (f"removed on expiry ({svc.expires_on}): renewal declined by {actor_name(tx, d.actor)} "
                   f"({d.auth_method}) on "
                   f"{local_date(d.decided_at, tx.settings.tz)}")
        else:
            why = f"removed: expired on {svc.expires_on} and not renewed within {grace} days"
        tx.session.add(ServiceEvent(service_id=svc.id, at=tx.now, from_status=svc.status.value,
                                    to_status=ServiceStatus.removed.value, reason=why, actor=tx.actor))
        svc.status = ServiceStatus.removed
    tx.session.flush()
    names = [s.name for s, _ in mine]
    tx.audit("renewal.removed", account_id=acc.id, services=names, why=occasion)
    _email(tx, acc, f"renewal_removed_{occasion}", mine, {"removed_on": today(tx).isoformat(), "grace_days": grace})
    return "removed"


# -- the sweep ----------------------------------------------------------------------------------------

def sweep(services: "Services", at: dt.datetime, dry_run: bool = False) -> list[str]:
    """Apply (or, with ``dry_run``, list) the automation due as of ``at``, one transaction per account."""
    from handlers.billing.dunning import run_rules
    day = local_date(at, services.settings.tz)
    started = services.clock.now()
    first = services.run(window_start, day, JOB, readonly=True)
    ids = services.run(candidates, first, day, readonly=True)
    lines = run_rules(services, [RULE], at, dry_run, account_ids=ids) if ids else []
    for attempt in range(0 if dry_run else 2):
        try:
            services.run(advance, day, started, JOB, actor="system:scheduler")
            break
        except IntegrityError:  # another scheduler created the row first: update theirs
            if attempt:
                raise
    return lines


SWEEP = register_sweep(Sweep(RULE, sweep, "automatic renewal, confirmation requests, removal after expiry"))
