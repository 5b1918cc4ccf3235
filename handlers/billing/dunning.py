"""The billing sweeps: recurring invoices, invoice notices, suspension of flagged late payers, removal, month-end plan
charges, credit limits.

Each sweep walks the accounts in batches, one transaction per batch (each account's row locked
as it is reached), so a crash mid-sweep keeps the batches done and a re-run does the rest; a
batch that fails is done again one account per transaction, so one account stops no other; the notice and suspension
keys make a second scheduler's work a no-op. ``dry_run`` plans in a read-only transaction
and changes nothing. The forecast plans the coming days the same way.
"""
from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING, Any, Sequence

from sqlalchemy import select

from handlers.billing import candidates
from handlers.billing.common import SCHEDULER, day_start, lock_account, lock_accounts, today
from handlers.billing.credit import apply_credit, known_none
from handlers.billing.rules import RULES, Action, Key
from handlers.errors import TemporaryFailure
from handlers.jobs import Sweep, SweepFailed, explain, log_failure, register_sweep
from handlers.models import Account, AccountStatus, Service
from handlers.money import fmt
from handlers.outbox import gathering

if TYPE_CHECKING:
    from handlers.services import Services, Tx

log = logging.getLogger("renewdesk.billing")


def _account_ids(tx: "Tx", rules: Sequence[str], at: dt.datetime, dry_run: bool) -> list[int]:
    """The open accounts ``rules`` may act on as of ``at``, and (a real run) those whose credit pays an invoice."""
    tx.now = at
    return candidates.accounts_for(tx, rules, credit=not dry_run)


def sweep_account(tx: "Tx", account_id: int, rules: Sequence[str], at: dt.datetime, dry_run: bool, *,
                  credit: bool = True) -> list[str]:
    """Plan (and unless ``dry_run`` apply) the rules for one account as of ``at``; lines say what.

    ``credit=False``: the caller knows, under the account's lock, that its credit pays nothing now.
    """
    tx.now = at  # the sweep runs "as of" its moment: notices, suspensions and audit rows carry it
    acc = tx.session.get(Account, account_id) if dry_run else lock_account(tx, account_id)
    lines = []
    if not dry_run and credit:  # credit pays first, so nothing below reminds, dunns or suspends for what it covers
        lines += [f"{acc.name}: credit paid {fmt(part, acc.currency)} of {inv.number}"
                  for inv, part in apply_credit(tx, acc, why="sweep")]
    for name in rules:
        for action in RULES[name](tx, acc, set()):
            if dry_run or action.apply is None:
                lines.append(action.text)
                continue
            if name != "recurring_invoices":  # another action may move money: its credit is asked again
                known_none(tx).discard(acc.id)
            done = action.apply(tx)
            if done is not None:
                lines.append(action.text + (f"; {done}" if done else ""))
    return lines


ACCOUNTS_PER_BATCH = 100  # accounts per transaction: a crash loses at most one batch's work, never doubles it


def sweep_accounts(tx: "Tx", account_ids: Sequence[int], rules: Sequence[str], at: dt.datetime,
                   dry_run: bool) -> list[str]:
    """:func:`sweep_account` for each of ``account_ids`` in this one transaction (the candidate queries give
    the ids ascending, so the account locks are taken in one order)."""
    lines: list[str] = []
    loaded = lock_accounts(tx, account_ids, lock=not dry_run)  # noqa: F841 (kept: the identity map holds them weakly)
    # whose credit pays something, for the whole batch at once: under the locks, and one account's
    # actions never touch another's ledger, so it holds until each account's turn
    credit = set() if dry_run else candidates.credit_among(tx, account_ids)
    if not dry_run:  # and who has no credit at all: issuing them a recurring invoice asks for none
        known_none(tx).update(candidates.without_credit(tx, account_ids))
    with gathering(tx):  # the batch's mail is written at its end, a few statements in all
        for account_id in account_ids:
            lines += sweep_account(tx, account_id, rules, at, dry_run, credit=account_id in credit)
    return lines


def run_rules(services: "Services", rules: Sequence[str], at: dt.datetime, dry_run: bool,
              account_ids: Sequence[int] | None = None) -> list[str]:
    """Run ``rules`` over the open accounts that may have something to do (or the given ones). Which
    accounts: :mod:`handlers.billing.candidates`, so the cost follows what is due.

    One transaction per batch of accounts; a batch that fails is rolled back as a whole and done
    again one account per transaction, so one account's trouble stops no other.
    """
    ids = list(account_ids) if account_ids is not None else \
        services.run(_account_ids, rules, at, dry_run, readonly=True)
    lines: list[str] = []
    failures: list[str] = []
    for i in range(0, len(ids), ACCOUNTS_PER_BATCH):
        batch = ids[i:i + ACCOUNTS_PER_BATCH]
        if len(batch) > 1:
            try:
                lines += services.run(sweep_accounts, batch, rules, at, dry_run, actor=SCHEDULER,
                                      readonly=dry_run)
                continue
            except TemporaryFailure:
                raise  # the database is away: no account is at fault, the whole sweep waits for the next run
            except Exception:  # rolled back as a whole: find the account at fault by doing them one by one
                log.warning("a billing sweep batch of %d account(s) failed; retrying them one by one", len(batch))
        for account_id in batch:
            try:
                lines += services.run(sweep_accounts, [account_id], rules, at, dry_run, actor=SCHEDULER,
                                      readonly=dry_run)
            except Exception as exc:  # one account's trouble must not stop the others; the next run retries it
                log_failure(log, exc, "billing sweep failed for account %s", account_id)
                failures.append(f"account {_account_name(services, account_id)} failed: "
                                f"{explain(exc)}")
    if failures:
        raise SweepFailed(lines, failures)  # the others are done; the sweep as a whole says it failed
    return lines


def _account_name(services: "Services", account_id: int) -> str:
    try:
        name = services.run(lambda tx: tx.session.scalar(select(Account.name).where(Account.id == account_id)),
                            readonly=True)
    except Exception:  # naming the account must not hide the failure itself
        name = None
    return f"{name} (#{account_id})" if name else f"#{account_id}"


def _sweep(rule: str, description: str) -> Sweep:
    return register_sweep(Sweep(rule, lambda services, at, dry_run: run_rules(services, [rule], at, dry_run),
                                description))


RECURRING_INVOICES = _sweep("recurring_invoices", "invoices for services billed by period, "
                            "RENEWDESK_INVOICE_ADVANCE_DAYS before they are due")
INVOICE_NOTICES = _sweep("invoice_notices", "invoice reminders before the pay-by date, overdue notices after it")
OVERDUE_SUSPENSIONS = _sweep("overdue_suspensions", "suspend accounts flagged for it once an invoice is overdue")
REMOVALS = _sweep("removals", "warn before removal, then remove the services of accounts still suspended")
PLAN_CHARGES = _sweep("plan_charges", "month-end charges from charging plans: monthly fees and metered usage")
CREDIT_LIMITS = _sweep("credit_limits", "credit-limit warnings, suspension on reaching the limit, re-arming")


# -- forecast ---------------------------------------------------------------------------------

def sweep_moment(tx: "Tx", day: dt.date) -> dt.datetime:
    """When the daily sweeps run on ``day``: the digest hour in the business's timezone."""
    return day_start(tx, day) + dt.timedelta(hours=tx.settings.digest_hour)


def forecast(tx: "Tx", days: int = 1, rules: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """What the sweeps will do on each of the next ``days`` days, by day and account; changes nothing.

    Day 1 is the next sweep: today's if it has not run yet (before the digest hour), else tomorrow's.
    Each day assumes the earlier days' actions were done, so a notice is forecast once. ``rules``:
    only these billing rules, and no renewal reminders (default: every rule and the reminders).
    Each day looks only at the accounts the rules may act on (:mod:`handlers.billing.candidates`).
    """
    if not 1 <= days <= 366:
        from handlers.errors import InvalidInput
        raise InvalidInput("--days: 1 to 366")
    real_now, start = tx.now, today(tx)
    if real_now >= sweep_moment(tx, start):
        start += dt.timedelta(days=1)
    assumed: set[Key] = set()
    out = []
    names = list(RULES) if rules is None else [r for r in RULES if r in rules]
    try:
        for i in range(days):
            day = start + dt.timedelta(days=i)
            tx.now = sweep_moment(tx, day)
            reminded = _reminders_due(tx, day, assumed, catch_up=i == 0) if rules is None else {}
            accounts = _ordered(tx, candidates.accounts_for(tx, names, credit=False) + list(reminded))
            planned: list[Action] = _renewal_reminders(tx, accounts, reminded, day, assumed)
            for acc in accounts:
                for name in names:
                    planned += RULES[name](tx, acc, assumed)
            assumed |= {a.key for a in planned if a.apply is not None}  # what a hold blocks is still to come
            out.append({"day": day.isoformat(), "at": tx.now.isoformat(), "actions": [
                {"rule": a.rule, "account": {"id": a.account.id, "name": a.account.name}, "text": a.text,
                 "blocked_by_hold": a.apply is None, "destructive": _destructive(a)} for a in planned]})
    finally:
        tx.now = real_now
    return out


_ORDER_IN_SQL = 20_000  # up to this many accounts are ordered by one query on their ids


def _ordered(tx: "Tx", ids: Sequence[int]) -> list[Account]:
    """The open accounts of ``ids`` in the forecast's order (by name, as the database collates names)."""
    wanted = set(ids)
    if not wanted:
        return []
    if len(wanted) <= _ORDER_IN_SQL:
        return list(tx.session.scalars(select(Account).where(Account.id.in_(sorted(wanted)),
                                                             Account.status != AccountStatus.closed)
                                       .order_by(Account.name, Account.id)))
    order = [a for a in tx.session.scalars(select(Account.id).where(Account.status != AccountStatus.closed)
                                           .order_by(Account.name, Account.id)) if a in wanted]
    loaded = {a.id: a for part in candidates.chunks(order)
              for a in tx.session.scalars(select(Account).where(Account.id.in_(part)))}
    return [loaded[a] for a in order]


def _reminders_due(tx: "Tx", day: dt.date, assumed: set[Key], *, catch_up: bool) -> dict[int, list[Any]]:
    """The renewal reminders due on ``day`` not assumed sent, by account.

    The next run (``catch_up``) also covers the days missed before it, as the sweep does.
    """
    from handlers.renewals import reminders
    first = reminders.window_start(tx, day) if catch_up else day
    by_account: dict[int, list[reminders.Due]] = {}
    for due in reminders.plan(tx, first, day):
        if ("renewal_reminder", due.service_id, due.occasion.label, due.expires_on) not in assumed:
            by_account.setdefault(due.account_id, []).append(due)
    return by_account


def _renewal_reminders(tx: "Tx", accounts: list[Account], by_account: dict[int, list[Any]], day: dt.date,
                       assumed: set[Key]) -> list[Action]:
    """The renewal reminders the sweep sends on ``day``: one action per account, as its one email."""
    from handlers.renewals import reminders
    names = dict(tx.session.execute(select(Service.id, Service.name).where(
        Service.id.in_([d.service_id for dues in by_account.values() for d in dues]))).all()) if by_account else {}
    actions = []
    for acc in accounts:
        for due in by_account.get(acc.id, []):
            assumed.add(("renewal_reminder", due.service_id, due.occasion.label, due.expires_on))
        if acc.id not in by_account:
            continue
        listed = ", ".join(f"{names[d.service_id]} ({d.occasion.label}, expires {d.expires_on})"
                           for d in by_account[acc.id])
        _, detail, _ = reminders.mail_outcome(acc)
        actions.append(Action("renewal_reminders", acc, ("renewal_reminders", acc.id, day), f"{acc.name}: renewal "
                              f"reminder for {listed}, {detail}", lambda tx: None))
    return actions


def _destructive(action: Action) -> bool:
    """A suspension or a removal (not a warning, a notice or an invoice)."""
    return bool(action.key) and action.key[0] in ("suspension", "removal")


def forecast_text(days: list[dict[str, Any]]) -> str:
    lines = []
    for d in days:
        lines.append(f"{d['day']}: " + ("nothing" if not d["actions"] else f"{len(d['actions'])} action(s)"))
        lines += [f"  {a['text']}" for a in d["actions"]]
    return "\n".join(lines)
