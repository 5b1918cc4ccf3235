"""The billing sweeps' candidate queries never miss an account a rule would act on.

A small random population (services billed by period, invoices in every state with some notices
sent, credit, recent and old charges, suspensions near their removal with and without warnings,
subscriptions with some months charged, credit warnings and re-arms, holds, closed accounts) is
planned by brute force, every rule on every open account, at several moments; the candidates of
each rule must hold every account with a planned action, and where the rule depends on nothing
the query leaves out (credit, currency, spending far from the limit) be exactly those accounts.
"""
from __future__ import annotations

import datetime as dt
import random

import pytest

from handlers.billing import candidates
from handlers.billing.credit import covered
from handlers.billing.rules import RULES
from handlers.models import (
    Account,
    AccountStatus,
    Hold,
    Invoice,
    InvoiceStatus,
    LedgerEntry,
    LedgerKind,
    Notice,
    Plan,
    PlanLine,
    PlanLineKind,
    Service,
    ServiceStatus,
    Subscription,
    Suspension,
    SuspensionReason,
)

UTC = dt.UTC
DAY = dt.date(2027, 3, 1)
EXACT = ("recurring_invoices", "removals", "plan_charges")  # no credit, currency or spending rate involved


def _at(day: dt.date, hour: int = 8) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour), UTC)


def _populate(tx, rnd: random.Random, n: int = 60) -> None:
    s = tx.session
    plan = Plan(ref="p", name="Plan", currency="EUR", created_at=_at(DAY - dt.timedelta(days=400)))
    plan.lines = [PlanLine(position=1, kind=PlanLineKind.fee, code="base", text="Base", unit="",
                           price_micros=1_000_000_000)]
    s.add(plan)
    s.flush()

    def day(lo: int, hi: int) -> dt.date:
        return DAY + dt.timedelta(days=rnd.randint(lo, hi))

    def notice(kind: str, stype: str, sid: int, occasion: str, when: dt.date, acc: int, **kw) -> None:
        s.add(Notice(kind=kind, subject_type=stype, subject_id=sid, occasion=occasion, occasion_date=when,
                     account_id=acc, created_at=_at(DAY - dt.timedelta(days=rnd.randint(0, 40))), outcome="sent", **kw))

    keys: set[str] = set()
    for i in range(1, n + 1):
        acc = Account(ref=f"r{i}", name=f"Acc {i:03d}", currency="EUR", created_at=_at(DAY - dt.timedelta(days=500)),
                      auto_suspend=rnd.random() < 0.5,
                      status=rnd.choice([AccountStatus.active] * 8 + [AccountStatus.suspended, AccountStatus.closed]),
                      credit_limit_minor=rnd.choice([None, None, 0, 5_000, -1_000, 20_000]))
        s.add(acc)
        s.flush()
        for k in range(rnd.randint(0, 3)):
            nxt = day(-70, 60)
            s.add(Service(account_id=acc.id, ref=f"s{k}", kind=rnd.choice(["hosting", "hosting", "vps", "domain"]),
                          name=f"svc{i}-{k}", status=rnd.choice(list(ServiceStatus)), expires_on=None,
                          price_minor=rnd.choice([0, 1_000, 2_500]), currency=rnd.choice(["EUR"] * 5 + ["USD"]),
                          billing_period=rnd.choice([None, "1m", "3m", "1y"]), next_due_on=nxt, due_day=nxt.day,
                          created_at=_at(DAY - dt.timedelta(days=400))))
        invoices = []
        for k in range(rnd.randint(0, 3)):
            due_on = day(-50, 20)
            total = rnd.choice([1_000, 2_000])
            status = rnd.choice([InvoiceStatus.issued, InvoiceStatus.issued, InvoiceStatus.partially_paid,
                                 InvoiceStatus.paid, InvoiceStatus.void])
            inv = Invoice(account_id=acc.id, number=f"T-{i}-{k}", currency="EUR", status=status,
                          issued_on=due_on - dt.timedelta(days=rnd.choice([0, 3, 14, 30])), due_on=due_on,
                          total_minor=total, paid_minor={InvoiceStatus.paid: total,
                                                         InvoiceStatus.partially_paid: 500}.get(status, 0),
                          origin=rnd.choice(["invoice", "recurring", "charge", "plan"]),
                          created_at=_at(DAY - dt.timedelta(days=60)))
            s.add(inv)
            s.flush()
            invoices.append(inv)
            s.add(LedgerEntry(account_id=acc.id, at=_at(inv.issued_on), kind=LedgerKind.charge, amount_minor=-total,
                              currency="EUR", text="inv", source="invoice", invoice_id=inv.id, actor="t"))
            for kind, occasion, off in (("invoice_reminder", "-5d", -5), ("invoice_overdue", "+1d", 1),
                                        ("invoice_overdue", "+5d", 5), ("invoice_overdue", "+10d", 10)):
                if rnd.random() < 0.4:
                    notice(kind, "invoice", inv.id, occasion, due_on, acc.id)
        for _ in range(rnd.randint(0, 3)):  # payments (credit) and charges, recent or old
            if rnd.random() < 0.4:
                s.add(LedgerEntry(account_id=acc.id, at=_at(day(-90, -1)), kind=LedgerKind.payment,
                                  amount_minor=rnd.choice([500, 3_000, 10_000]), currency="EUR", text="pay",
                                  source="manual", actor="t"))
            else:
                s.add(LedgerEntry(account_id=acc.id, at=_at(day(-60, 3)), kind=LedgerKind.charge,
                                  amount_minor=-rnd.choice([300, 2_000, 9_000]), currency="EUR", text="use",
                                  source=rnd.choice(["manual", "plan"]), actor="t"))
        for k in range(rnd.randint(0, 2)):
            inv = rnd.choice(invoices) if invoices and rnd.random() < 0.7 else None
            reason = SuspensionReason.overdue if inv else rnd.choice([SuspensionReason.credit_limit,
                                                                      SuspensionReason.manual])
            rday = day(-8, 8) if rnd.random() < 0.8 else None
            sus = Suspension(account_id=acc.id, reason=reason, invoice_id=inv.id if inv else None,
                             started_at=_at(DAY - dt.timedelta(days=30)), started_by="t",
                             remove_after=None if rday is None else _at(rday, 0),
                             lifted_at=_at(DAY - dt.timedelta(days=1)) if rnd.random() < 0.2 else None,
                             dedupe_key=f"overdue:invoice:{inv.id}" if inv and rnd.random() < 0.6 else None)
            if sus.dedupe_key in keys:
                sus.dedupe_key = None
            keys.add(sus.dedupe_key or "")
            s.add(sus)
            s.flush()
            if rday is not None and rnd.random() < 0.5:
                warned_for = rday + dt.timedelta(days=rnd.choice([0, 0, 2]))
                notice("removal_warning", "suspension", sus.id, "-3d", rday, acc.id, detail=f"removal on {warned_for}")
                if rnd.random() < 0.3:
                    notice("removal", "suspension", sus.id, "0d", rday, acc.id)
        if rnd.random() < 0.3:
            starts = DAY.replace(day=1) - dt.timedelta(days=rnd.choice([0, 20, 45, 100]))
            starts = starts.replace(day=1) if rnd.random() < 0.7 else starts
            ends = rnd.choice([None, None, starts + dt.timedelta(days=rnd.randint(10, 90))])
            sub = Subscription(account_id=acc.id, plan_id=plan.id, starts_on=starts, ends_on=ends, actor="t",
                               created_at=_at(starts - dt.timedelta(days=rnd.choice([1, -40]))))
            s.add(sub)
            s.flush()
            month = max(starts, sub.created_at.date()).replace(day=1)
            # some of the months charged: only ended ones (at every moment checked) within the plan
            while month < (DAY - dt.timedelta(days=3)).replace(day=1) and (ends is None or month <= ends):
                if rnd.random() < 0.6:
                    notice("plan_month", "subscription", sub.id, f"{month:%Y-%m}", month, acc.id)
                month = (month + dt.timedelta(days=32)).replace(day=1)
        if acc.credit_limit_minor is not None and rnd.random() < 0.4:
            notice("credit_warning", "account", acc.id, rnd.choice(["7d", "1d"]), day(-20, -1), acc.id)
            if rnd.random() < 0.4:
                s.add(Notice(kind="credit_rearm", subject_type="account", subject_id=acc.id, occasion="ok",
                             occasion_date=day(-1, -1), account_id=acc.id, created_at=_at(DAY), outcome="recorded"))
        if rnd.random() < 0.1:
            s.add(Hold(account_id=acc.id, started_at=_at(DAY - dt.timedelta(days=3)), started_by="t", reason="talks"))
    s.flush()


def _planned(tx, rule: str) -> set[int]:
    """Brute force: every open account whose rule plans an action now."""
    accounts = tx.session.query(Account).filter(Account.status != AccountStatus.closed).all()
    return {acc.id for acc in accounts if RULES[rule](tx, acc, set())}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_candidates_hold_every_account_a_rule_acts_on(services, seed):
    rnd = random.Random(seed)
    services.run(_populate, rnd, actor="test")
    seen: dict[str, set[int]] = {rule: set() for rule in RULES}
    for offset in (-3, 0, 1, 4, 11):
        at = _at(DAY + dt.timedelta(days=offset))

        def check(tx, at: dt.datetime) -> None:
            tx.now = at
            for rule in RULES:
                planned, found = _planned(tx, rule), set(candidates.accounts_for(tx, [rule], credit=False))
                assert planned <= found, (rule, at, sorted(planned - found))
                seen[rule] |= planned
                if rule in EXACT:
                    assert planned == found, (rule, at, sorted(found - planned))
            paying = {a.id for a in tx.session.query(Account).filter(Account.status != AccountStatus.closed)
                      if covered(tx, a.id)}
            assert candidates.open_accounts(tx, candidates.credit_to_apply(tx)) == paying
        services.run(check, at, readonly=True)
    # the population gives every billing rule something to do (renewals have their own tests)
    assert all(seen[rule] for rule in RULES if rule != "renewal_automation"), {r: len(a) for r, a in seen.items()}
