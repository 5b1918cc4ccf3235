"""The renewal reminder sweep: one email per recipient and account listing what expires, exactly once.

Each day (the scheduler's daily run, or ``renewdesk sweep --at``) the sweep asks the index on
``service.expires_on`` for the expiry dates each occasion covers, so its cost follows the
services due, not the services kept. It claims one ``notice`` row per (service, occasion,
expiry date) under the table's unique key: whoever inserts it sends, so a re-run, a crash
between batches or two schedulers at once sends nothing twice. The notices, the reply token
and the outgoing mail of an account are written in one transaction.

The sweep remembers the last day it covered (``job_run.watermark``). After downtime it covers
every missed day, but sends each service only its most recent missed occasion.
"""
from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Sequence

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import selectinload

from handlers.clock import local_date
from handlers.db import dialect_insert
from handlers.jobs import Sweep, SweepFailed, explain, log_failure, register_sweep
from handlers.models import (Account, DecisionAction, Invoicing, JobRun, Notice, RenewalDecision, Service,
                             ServiceStatus)
from handlers.outbox import Mail, Recipient, queue_many
from handlers.renewals import tokens
from handlers.renewals.occasions import Occasion, due, in_cycle, occasions, phrase
from handlers.renewals.people import renewal_recipients

log = logging.getLogger("renewdesk.renewals")
JOB = "renewal_reminders"
KIND = "renewal_reminder"
ACTOR = "system:scheduler"
REMINDED = (ServiceStatus.active, ServiceStatus.suspended, ServiceStatus.expired)
CATCH_UP_DAYS = 31     # a longer outage is covered from this many days back
ACCOUNTS_PER_BATCH = 500  # one transaction each: a crash loses at most one batch's work, never doubles it
CHUNK = 500            # ids per IN (...) list


@dataclass(frozen=True)
class Due:
    service_id: int
    account_id: int
    expires_on: dt.date
    occasion: Occasion


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


# -- the plan: what is due from ``first`` to ``today`` -----------------------------------------

def window_start(tx: Any, today: dt.date, job: str = JOB) -> dt.date:
    """The first day this run covers: the day after the last covered day, or today."""
    row = tx.session.get(JobRun, job)
    if row is None or row.watermark is None:
        return today
    last = local_date(row.watermark, tx.settings.tz)
    return today if last >= today else max(last + dt.timedelta(days=1), today - dt.timedelta(days=CATCH_UP_DAYS))


def plan(tx: Any, first: dt.date, today: dt.date) -> list[Due]:
    """Every service whose most recent occasion from ``first`` to ``today`` has no notice yet."""
    all_occ = occasions(tx.settings)
    found: dict[int, tuple[int, dt.date]] = {}
    for occ in all_occ:
        lo, hi = occ.expiry_range(first, today)
        if lo > hi:
            continue
        # a service on auto-renew is not asked: the automation renews it at this occasion instead
        rows = tx.session.execute(select(Service.id, Service.account_id, Service.expires_on).where(
            Service.expires_on.between(lo, hi), Service.status.in_(REMINDED), Service.auto_renew.is_(False)))
        found.update((sid, (aid, exp)) for sid, aid, exp in rows)
    planned = [Due(sid, aid, exp, occ) for sid, (aid, exp) in sorted(found.items())
               if (occ := due(all_occ, exp, first, today)) is not None]
    return _without_decided(tx, _without_noticed(tx, planned))


def _without_noticed(tx: Any, planned: list[Due]) -> list[Due]:
    sent: set[tuple[int, str, dt.date]] = set()
    for part in chunks([d.service_id for d in planned], CHUNK):
        sent.update(tx.session.execute(select(Notice.subject_id, Notice.occasion, Notice.occasion_date).where(
            Notice.kind == KIND, Notice.subject_type == "service", Notice.subject_id.in_(part))).all())
    return [d for d in planned if (d.service_id, d.occasion.label, d.expires_on) not in sent]


def _without_decided(tx: Any, planned: list[Due]) -> list[Due]:
    """A service whose client already asked for its renewal gets no more reminders for this expiry."""
    decided: dict[int, list[tuple[dt.datetime, dt.date | None]]] = defaultdict(list)
    for part in chunks([d.service_id for d in planned], CHUNK):
        for sid, at, expiry in tx.session.execute(select(
                RenewalDecision.service_id, RenewalDecision.decided_at, RenewalDecision.for_expiry).where(
                RenewalDecision.service_id.in_(part), RenewalDecision.action == DecisionAction.renew,
                RenewalDecision.completed_at.is_(None))):
            decided[sid].append((at, expiry))
    tz = tx.settings.tz

    def for_this(at: dt.datetime, expiry: dt.date | None, d: Due) -> bool:
        return expiry == d.expires_on if expiry is not None else in_cycle(at, d.expires_on, tz)
    return [d for d in planned if not any(for_this(at, exp, d) for at, exp in decided.get(d.service_id, ()))]


# -- sending --------------------------------------------------------------------------------

def _claim(tx: Any, claims: list[tuple[int, Due, str, str]]) -> dict[int, int]:
    """Insert the notices ``(account_id, due, outcome, detail)`` with one statement per few hundred rows;
    returns {service_id: notice_id} for those this run inserted (the others: someone else did)."""
    table = Notice.__table__
    stmt = dialect_insert(tx.session)(table).on_conflict_do_nothing(
        index_elements=["kind", "subject_type", "subject_id", "occasion", "occasion_date"]).returning(
        table.c.subject_id, table.c.id)
    rows = [{"kind": KIND, "subject_type": "service", "subject_id": d.service_id, "occasion": d.occasion.label,
             "occasion_date": d.expires_on, "account_id": account_id, "created_at": tx.now, "outcome": outcome,
             "detail": detail[:2000]}
            for account_id, d, outcome, detail in claims]
    # (a Result has keys(): dict() would take it for a mapping)
    return {sid: nid for sid, nid in tx.session.execute(stmt, rows)} if rows else {}


def removal_if_unrenewed(settings: Any, expires_on: dt.date, today: dt.date) -> dt.date:
    """When an expired service nobody renews is removed, as far as known today: the day after the grace
    period, and never sooner than ``removal_warning_days`` after today (the warning comes first)."""
    return max(expires_on + dt.timedelta(days=settings.renewal_grace_days + 1),
               today + dt.timedelta(days=settings.removal_warning_days))


def buckets(items: Iterable[tuple[Any, Occasion]], today: dt.date, settings: Any = None) -> list[dict[str, Any]]:
    """Services grouped by how soon they expire, soonest (or longest expired) first.

    With ``settings``, an expired service's entry names the day it is removed unless renewed.
    """
    groups: dict[str, dict[str, Any]] = {}
    for svc, occ in sorted(items, key=lambda p: (p[0].expires_on, p[0].name)):
        days, words = phrase(svc.expires_on, today, occ)
        group = groups.setdefault(words, {"phrase": words, "days": days, "domains": [], "others": []})
        entry = {"name": svc.name, "kind": svc.kind, "expires_on": svc.expires_on.isoformat(),
                 "auto_renew": bool(svc.auto_renew),
                 "remove_on": removal_if_unrenewed(settings, svc.expires_on, today).isoformat()
                 if settings is not None and svc.expires_on < today else None}
        group["domains" if svc.kind == "domain" else "others"].append(entry)
    return sorted(groups.values(), key=lambda g: g["days"])


def mail_outcome(account: Account) -> tuple[str, str, list[Recipient]]:
    """What happens to an account's reminder, known before the claim so each notice is written once, complete."""
    if account.invoicing == Invoicing.paper:
        return "skipped_paper", "paper invoicing: staff handle it by hand", []
    recipients = renewal_recipients(account)
    if not recipients:
        return "no_recipient", "no contact, owner or sales contact to write to", []
    return "sent", "to " + ", ".join(r.email for r in recipients), recipients


def remind(tx: Any, batch: dict[int, list[Due]], today: dt.date) -> list[str]:
    """Send one batch of accounts' reminders in this transaction; lines say what happened.

    Set-wise: one statement per few hundred rows claims the batch's notices, one issues its reply
    tokens and one queues its mails, whatever the number of accounts.
    """
    ids = [d.service_id for dues in batch.values() for d in dues]
    # columns, not ORM objects: only read, and thousands of them
    svcs = {s.id: s for part in chunks(ids, CHUNK) for s in tx.session.execute(
        select(Service.id, Service.name, Service.kind, Service.expires_on, Service.status, Service.auto_renew)
        .where(Service.id.in_(part)))}
    accounts = tx.session.scalars(select(Account).where(Account.id.in_(list(batch)))
                                  .options(selectinload(Account.contacts)).order_by(Account.id))
    todo: list[tuple[Account, list[tuple[Any, Due]], str, str, list[Recipient]]] = []
    for account in accounts:
        # the plan was read in another transaction: keep only what is still true
        items = [(svcs[d.service_id], d) for d in batch[account.id] if d.service_id in svcs
                 and svcs[d.service_id].expires_on == d.expires_on and svcs[d.service_id].status in REMINDED
                 and not svcs[d.service_id].auto_renew]
        if items:
            todo.append((account, items, *mail_outcome(account)))
    claimed = _claim(tx, [(acc.id, d, outcome, detail) for acc, items, outcome, detail, _ in todo for _, d in items])
    lines, writing = [], []
    for account, items, outcome, _, recipients in todo:
        mine = [(svc, d) for svc, d in items if svc.id in claimed]
        if not mine:
            continue
        names = ", ".join(svc.name for svc, _ in mine)
        if outcome == "skipped_paper":
            lines.append(f"{account.name}: paper invoicing, for staff to handle by hand: {names}")
        elif outcome == "no_recipient":
            lines.append(f"{account.name}: nobody to write to about {names}")
        else:
            lines.append(f"{account.name}: reminded {len(recipients)} recipient(s) of {names}")
            writing.append((account, mine, recipients))
    grace = tx.settings.renewal_grace_days
    secrets_ = tokens.issue_many(tx, [
        (account.id, [svc.id for svc, _ in mine], tokens.end_of_day(
            max(svc.expires_on for svc, _ in mine) + dt.timedelta(days=grace), tx.settings.tz),
         min(claimed[svc.id] for svc, _ in mine)) for account, mine, _ in writing], kind=tokens.REPLY)
    mails = []
    for (account, mine, recipients), token in zip(writing, secrets_):
        common = {"account_name": account.name, "buckets": buckets([(svc, d.occasion) for svc, d in mine], today,
                                                                      tx.settings),
                  "count": len(mine), "example": mine[0][0].name, "page_url": tokens.page_url(tx.settings, token),
                  "grace_days": grace}
        # no dedupe_key: the notices claimed above, in this same transaction, already make the mail
        # exactly-once, and a key would cost a lookup per recipient
        mails += [Mail({"recipient_name": r.name, **common}, [r], account_id=account.id,
                       reply_to=tokens.reply_address(tx.settings, token)) for r in recipients]
    queue_many(tx, KIND, mails)
    return lines


def advance(tx: Any, today: dt.date, started: dt.datetime, job: str = JOB) -> None:
    """Record that ``job`` covered every day up to ``today``."""
    row = tx.session.get(JobRun, job)
    if row is None:
        row = JobRun(name=job, runs=0)
        tx.session.add(row)
    mark = dt.datetime.combine(today, dt.time(12), tzinfo=tx.settings.tz).astimezone(dt.timezone.utc)
    if row.watermark is None or row.watermark < mark:
        row.watermark = mark
    row.last_started_at, row.last_finished_at = started, tx.now
    row.last_outcome, row.last_error, row.runs = "ok", None, (row.runs or 0) + 1


def _remind_part(services: Any, batch: dict[int, list[Due]], today: dt.date, failures: list[str]) -> list[str]:
    """One batch in one transaction; if it fails, each of its accounts alone, so one bad account stops no other."""
    try:
        return services.run(remind, batch, today, actor=ACTOR)
    except Exception:  # rolled back as a whole: find the account at fault by doing them one by one
        log.warning("a renewal reminder batch of %d account(s) failed; retrying them one by one", len(batch))
    lines: list[str] = []
    for account_id, dues in batch.items():
        try:
            lines += services.run(remind, {account_id: dues}, today, actor=ACTOR)
        except Exception as exc:
            log_failure(log, exc, "renewal reminders failed for account %s", account_id)
            failures.append(f"account #{account_id} failed: {explain(exc)}")
    return lines


def sweep(services: Any, at: dt.datetime, dry_run: bool = False) -> list[str]:
    """Send the reminders due as of ``at`` (or, with ``dry_run``, say what would go)."""
    today = local_date(at, services.settings.tz)
    started = services.clock.now()
    first = services.run(window_start, today, readonly=True)
    planned = services.run(plan, first, today, readonly=True)
    by_account: dict[int, list[Due]] = defaultdict(list)
    for d in planned:
        by_account[d.account_id].append(d)
    covered = f"{first}" if first == today else f"{first} to {today}"
    if dry_run:
        return [f"{covered}: would remind about {len(planned)} service(s) of {len(by_account)} account(s)"]
    lines: list[str] = []
    failures: list[str] = []
    for part in chunks(sorted(by_account), ACCOUNTS_PER_BATCH):
        lines += _remind_part(services, {a: by_account[a] for a in part}, today, failures)
    if failures:  # the day is not marked covered: the next run tries these accounts again
        raise SweepFailed(lines, failures)
    for attempt in range(2):
        try:
            services.run(advance, today, started, actor=ACTOR)
            break
        except IntegrityError:  # another scheduler created the row first: update theirs
            if attempt:
                raise
    if not planned:
        return [f"{covered}: nothing to do"]
    return [f"{covered}: {len(planned)} service(s) of {len(by_account)} account(s) due", *lines]


SWEEP = register_sweep(Sweep("renewal_reminders", sweep, "renewal reminders and the post-expiry notice"))
