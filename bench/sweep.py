"""The whole daily run of the sweeps on SQLite: does its cost follow what is due, not what is kept?

    python -m bench.sweep [--sizes 100000,1000000] [--due 1000] [--big-due 10000]

Every sweep kind the scheduler runs, in its order and with the default settings, exactly as the
worker's daily job runs them (``handlers.jobs.run_sweeps_report``): renewal reminders, renewal
automation, recurring invoices, invoice notices, overdue suspensions, removals, plan charges,
credit limits and the staff digest (with its forecast of tomorrow).

(a) For each size (services), a database with ``size / 10`` accounts of which ``--due`` have
    something to do today: seconds for the whole run, and the ratio between the largest and the
    smallest size (target <= 2).
(b) The largest size with ``--big-due`` due (1% of 1,000,000 services by default): seconds for
    the whole run (target <= 5 s).

The day is 1 December 2026, 08:00 UTC (the digest hour), so the month-end plan charges are due.
Each due item has an account of its own; the mix of what is due (shares of ``--due``):

- 40% renewal reminders: a domain expiring in 5 days, not on auto-renew (one email each);
- 5% automatic renewals: a domain on auto-renew expiring in 5 days (decision, invoice, email);
- 20% recurring invoices: a monthly hosting plan whose next period is due in 14 days;
- 15% invoice notices: an open invoice, two thirds due in 5 days (reminder), one third due
  yesterday (first overdue notice; its reminder was sent);
- 5% overdue suspensions: an account flagged for automatic suspension with an invoice 3 days
  past its pay-by date (its notices sent);
- 5% removals: an account suspended for an unpaid invoice, half warned of removal today (removal
  in 3 days), half removed today (warned 3 days ago);
- 5% credit limits: an account with a limit of 100.00 that spent 90.00 over the last 30 days
  (warning: the limit is reached in about 3 days);
- 5% plan charges: a subscription to a monthly plan whose November is to be charged and invoiced.

What is kept and not due (it grows with the size): the other accounts, one owner each; 60% of
the services domains expiring 7 months to 10 years away (30% on auto-renew), 40% hosting
billed yearly, next due 1 to 11 months away; a paid invoice and its ledger entries for one
account in 5; an open invoice due in 10 days (no notice today) for one account in 100; a credit
limit without recent spending for one account in 50 (half flagged for automatic suspension).

Only the run is timed, not building the data. Each line gives wall and CPU seconds (this
process) and SQL statements, in total and per sweep kind: on a shared machine the wall clock
counts other people's work too.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import functools
import json
import random
import tempfile
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import create_engine, event, func, insert, select

from handlers import jobs
from handlers.clock import FixedClock
from handlers.models import (
    Account,
    AccountStatus,
    Contact,
    Invoice,
    InvoiceStatus,
    LedgerEntry,
    LedgerKind,
    Notice,
    OutboundMail,
    Plan,
    PlanLine,
    PlanLineKind,
    Service,
    Subscription,
    Suspension,
    SuspensionReason,
)
from handlers.services import Services
from handlers.settings import load_settings
from renewdesk.migrate import upgrade

AT = dt.datetime(2026, 12, 1, 8, tzinfo=dt.UTC)
TODAY = AT.date()
SERVICES_PER_ACCOUNT = 10
BATCH = 50_000
# the mix of what is due, as shares of --due (see the docstring)
MIX = (("reminder", 0.40), ("auto_renew", 0.05), ("recurring", 0.20), ("notice", 0.15), ("suspend", 0.05),
       ("removal", 0.05), ("credit", 0.05), ("plan", 0.05))
TARGET_RATIO, TARGET_SECONDS = 2, 5


def _days(n: int) -> dt.date:
    return TODAY + dt.timedelta(days=n)


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), dt.UTC)


def _mix(due: int) -> list[str]:
    """One kind per due item, in the shares of MIX (the rounding goes to renewal reminders)."""
    counts = {kind: int(due * share) for kind, share in MIX}
    counts["reminder"] += due - sum(counts.values())
    return [kind for kind, _ in MIX for _ in range(counts[kind])]


class _Rows:
    """Rows to insert, table by table, in batches."""

    def __init__(self, conn: Any) -> None:
        self.conn, self.rows = conn, {}  # type: dict[Any, list[dict[str, Any]]]

    def add(self, model: Any, **row: Any) -> None:
        key = (model, tuple(sorted(row)))  # one executemany per table and set of columns
        batch = self.rows.setdefault(key, [])
        batch.append(row)
        if len(batch) >= BATCH:
            self.flush(key)

    def flush(self, key: Any = None) -> None:
        for k in [key] if key is not None else list(self.rows):
            if self.rows.get(k):
                self.conn.execute(insert(k[0]), self.rows[k])
                self.rows[k] = []


def build(total: int, due: int) -> str:
    """A fresh SQLite database with ``total`` services, ``total / 10`` accounts and ``due`` of them due today."""
    url = f"sqlite:///{tempfile.mkdtemp()}/sweep.db"
    engine = create_engine(url)
    upgrade(engine)
    rnd = random.Random(7)
    kinds = _mix(due)
    n_accounts = max(total // SERVICES_PER_ACCOUNT, len(kinds) + 1_000)
    ids = iter(range(1, 10**9))
    inv_ids, sus_ids, notice_ids = iter(range(1, 10**9)), iter(range(1, 10**9)), iter(range(1, 10**9))
    with engine.begin() as conn:
        rows = _Rows(conn)
        conn.execute(insert(Plan), [{"id": 1, "ref": "basic", "name": "Basic", "currency": "EUR", "created_at": AT}])
        conn.execute(insert(PlanLine), [{"plan_id": 1, "position": 1, "kind": PlanLineKind.fee, "code": "base",
                                         "text": "Basic plan", "unit": "", "price_micros": 1_000 * 1_000_000}])
        flagged = {i + 1 for i, k in enumerate(kinds) if k in ("suspend", "removal")}
        for a in range(1, n_accounts + 1):
            kept_limit = a > len(kinds) and a % 50 == 0
            rows.add(Account, id=a, ref=f"a{a}", name=f"Account {a}", currency="EUR", created_at=AT,
                     credit_limit_minor=10_000 if kept_limit or (a <= len(kinds) and kinds[a - 1] == "credit")
                     else None,
                     auto_suspend=a in flagged or (kept_limit and a % 100 == 0),
                     status=AccountStatus.suspended if a <= len(kinds) and kinds[a - 1] == "removal"
                     else AccountStatus.active)
            rows.add(Contact, account_id=a, email=f"owner{a}@example.test", name="Owner", is_owner=True,
                     permissions=[], email_prefs={}, subscriptions=[], created_at=AT)
            if kept_limit:  # a limit, money paid and spent long ago, nothing recent
                rows.add(LedgerEntry, account_id=a, at=_midnight(_days(-90)), kind=LedgerKind.payment,
                         amount_minor=5_000, currency="EUR", text="Payment", source="manual", actor="bench")
                rows.add(LedgerEntry, account_id=a, at=_midnight(_days(-80)), kind=LedgerKind.charge,
                         amount_minor=-4_000, currency="EUR", text="Setup", source="manual", actor="bench")
            if a > len(kinds) and a % 5 == 0:   # history: a paid invoice
                _invoice(rows, next(inv_ids), a, _days(-200), _days(-186), 2_400, paid=True)
            if a > len(kinds) and a % 100 == 1:  # open, due in 10 days: no notice today
                _invoice(rows, next(inv_ids), a, _days(-4), _days(10), 2_400)
        for i, kind in enumerate(kinds):
            a = i + 1
            _due_item(rows, kind, a, next(ids), inv_ids, sus_ids, notice_ids)
        rows.flush()
        for i in range(total - len(kinds)):
            sid = next(ids)
            a = rnd.randint(1, n_accounts)
            if rnd.random() < 0.6:   # a domain expiring 7 months to 10 years away
                rows.add(Service, id=sid, account_id=a, ref=f"s{sid}", kind="domain", name=f"name{sid}.test",
                         expires_on=_days(rnd.randint(200, 3650)), status="active", period_years=1, price_minor=1200,
                         currency="EUR", auto_renew=rnd.random() < 0.3, created_at=AT)
            else:                    # hosting billed yearly, next due 1 to 11 months away
                nxt = _days(rnd.randint(30, 330))
                rows.add(Service, id=sid, account_id=a, ref=f"s{sid}", kind="hosting", name=f"host{sid}",
                         expires_on=None, status="active", period_years=1, price_minor=9_900, currency="EUR",
                         auto_renew=False, billing_period="1y", next_due_on=nxt, due_day=nxt.day, created_at=AT)
        rows.flush()
    engine.dispose()
    return url


def _invoice(rows: _Rows, iid: int, account: int, issued: dt.date, due_on: dt.date, total: int, *,
             paid: bool = False) -> int:
    rows.add(Invoice, id=iid, account_id=account, number=f"H-{iid}", currency="EUR", issued_on=issued,
             due_on=due_on, total_minor=total, paid_minor=total if paid else 0,
             status=InvoiceStatus.paid if paid else InvoiceStatus.issued, origin="invoice",
             created_at=_midnight(issued))
    rows.add(LedgerEntry, account_id=account, at=_midnight(issued), kind=LedgerKind.charge, amount_minor=-total,
             currency="EUR", text=f"Invoice H-{iid}", source="invoice", invoice_id=iid, actor="bench")
    if paid:
        rows.add(LedgerEntry, account_id=account, at=_midnight(due_on), kind=LedgerKind.payment, amount_minor=total,
                 currency="EUR", text="Payment", source="manual", actor="bench")
    return iid


def _notice(rows: _Rows, nid: int, kind: str, subject_type: str, subject_id: int, occasion: str,
            occasion_date: dt.date, account: int, sent: dt.date, detail: str | None = None) -> None:
    rows.add(Notice, id=nid, kind=kind, subject_type=subject_type, subject_id=subject_id, occasion=occasion,
             occasion_date=occasion_date, account_id=account, created_at=_midnight(sent) + dt.timedelta(hours=8),
             outcome="sent", detail=detail)


def _due_item(rows: _Rows, kind: str, a: int, sid: int, inv_ids: Any, sus_ids: Any, notice_ids: Any) -> None:
    """What makes account ``a`` due today, as ``kind`` (see MIX)."""
    svc = {"id": sid, "account_id": a, "ref": f"s{sid}", "status": "active", "period_years": 1, "currency": "EUR",
           "created_at": AT}
    if kind in ("reminder", "auto_renew"):
        rows.add(Service, **svc, kind="domain", name=f"due{sid}.test", expires_on=_days(5), price_minor=1200,
                 auto_renew=kind == "auto_renew")
        return
    if kind == "recurring":
        rows.add(Service, **svc, kind="hosting", name=f"host{sid}", expires_on=None, price_minor=1_500,
                 auto_renew=False, billing_period="1m", next_due_on=_days(14), due_day=_days(14).day)
        return
    # every other kind: a hosting service billed yearly, not due
    rows.add(Service, **{**svc, "status": "suspended" if kind == "removal" else "active"}, kind="hosting",
             name=f"host{sid}", expires_on=None, price_minor=9_900, auto_renew=False, billing_period="1y",
             next_due_on=_days(200), due_day=_days(200).day)
    if kind == "notice":
        due_on = _days(5) if a % 3 else _days(-1)
        iid = _invoice(rows, next(inv_ids), a, due_on - dt.timedelta(days=14), due_on, 2_400)
        if due_on < TODAY:
            _notice(rows, next(notice_ids), "invoice_reminder", "invoice", iid, "-5d", due_on, a,
                    due_on - dt.timedelta(5))
    elif kind == "suspend":
        due_on = _days(-3)
        iid = _invoice(rows, next(inv_ids), a, due_on - dt.timedelta(days=14), due_on, 2_400)
        _notice(rows, next(notice_ids), "invoice_reminder", "invoice", iid, "-5d", due_on, a, due_on - dt.timedelta(5))
        _notice(rows, next(notice_ids), "invoice_overdue", "invoice", iid, "+1d", due_on, a, due_on + dt.timedelta(1))
    elif kind == "removal":
        due_on, warned = _days(-33), a % 2 == 0
        iid = _invoice(rows, next(inv_ids), a, due_on - dt.timedelta(days=14), due_on, 2_400)
        for occasion, off in (("-5d", -5), ("+1d", 1), ("+5d", 5), ("+10d", 10)):
            _notice(rows, next(notice_ids), "invoice_reminder" if off < 0 else "invoice_overdue", "invoice", iid,
                    occasion, due_on, a, due_on + dt.timedelta(off))
        sus = next(sus_ids)
        remove_on = TODAY if warned else _days(3)
        rows.add(Suspension, id=sus, account_id=a, reason=SuspensionReason.overdue, text="", invoice_id=iid,
                 started_at=_midnight(remove_on - dt.timedelta(days=30)) + dt.timedelta(hours=8),
                 started_by="system:scheduler", remove_after=_midnight(remove_on),
                 dedupe_key=f"overdue:invoice:{iid}")
        if warned:
            _notice(rows, next(notice_ids), "removal_warning", "suspension", sus, "-3d", remove_on, a, _days(-3),
                    detail=f"removal on {remove_on}")
    elif kind == "credit":   # 90.00 spent over the last 30 days against a limit of 100.00
        for d in range(1, 31, 3):
            rows.add(LedgerEntry, account_id=a, at=_midnight(_days(-d)) + dt.timedelta(hours=12),
                     kind=LedgerKind.charge, amount_minor=-900, currency="EUR", text="Usage", source="manual",
                     actor="bench")
    elif kind == "plan":     # on the plan since October, October charged: November is due today
        rows.add(Subscription, id=a, account_id=a, plan_id=1, starts_on=dt.date(2026, 10, 1), ends_on=None,
                 created_at=dt.datetime(2026, 9, 20, tzinfo=dt.UTC), actor="bench")
        _notice(rows, next(notice_ids), "plan_month", "subscription", a, "2026-10", dt.date(2026, 10, 1), a,
                dt.date(2026, 11, 1), detail="basic: 10.00")


@dataclasses.dataclass
class _Meter:
    """Wall, CPU seconds and statements of each sweep kind, and of the whole run."""

    statements: int = 0
    kinds: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

    def count(self, *_: object) -> None:
        self.statements += 1

    def wrap(self, sweep: jobs.Sweep) -> jobs.Sweep:
        run: Callable[..., list[str]] = sweep.run

        @functools.wraps(run)  # keeps __module__: the registry orders the sweeps by it
        def timed(services: Any, at: dt.datetime, dry_run: bool) -> list[str]:
            t0, cpu0, st0 = time.perf_counter(), time.process_time(), self.statements
            try:
                return run(services, at, dry_run)
            finally:
                self.kinds[sweep.name] = {"seconds": round(time.perf_counter() - t0, 3),
                                          "cpu_seconds": round(time.process_time() - cpu0, 3),
                                          "statements": self.statements - st0}
        return dataclasses.replace(sweep, run=timed)


def timed_run(url: str) -> dict[str, Any]:
    """The daily run as the worker's scheduler runs it, timed in total and per sweep kind."""
    services = Services(load_settings({}, database_url=url, secret_key="bench"), clock=FixedClock(AT))
    jobs.sweep_names()  # import (register) every sweep before wrapping them
    meter, registered = _Meter(), list(jobs.SWEEPS)
    jobs.SWEEPS[:] = [meter.wrap(s) for s in registered]
    event.listen(services.db.engine, "before_cursor_execute", meter.count)
    try:
        t0, cpu0 = time.perf_counter(), time.process_time()
        report = jobs.run_sweeps_report(services, AT)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    finally:
        event.remove(services.db.engine, "before_cursor_execute", meter.count)
        jobs.SWEEPS[:] = registered
    with services.db.transaction(readonly=True) as s:
        notices = s.scalar(select(func.count()).select_from(Notice).where(Notice.created_at >= AT))
        mails = s.scalar(select(func.count()).select_from(OutboundMail))
        invoices = s.scalar(select(func.count()).select_from(Invoice).where(Invoice.created_at >= AT))
        suspensions = s.scalar(select(func.count()).select_from(Suspension).where(Suspension.started_at >= AT))
        accounts = s.scalar(select(func.count()).select_from(Account))
    services.close()
    return {"accounts": accounts, "seconds": round(seconds, 3), "cpu_seconds": round(cpu, 3),
            "statements": meter.statements, "notices": notices, "emails": mails, "invoices": invoices,
            "suspensions": suspensions, "failed": report.failed, "kinds": meter.kinds}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--due", type=int, default=1000)
    ap.add_argument("--big-due", type=int, default=10_000)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    per_size = {}
    for size in sizes:
        per_size[size] = timed_run(build(size, args.due))
        print(json.dumps({"bench": "sweep", "services": size, "due": args.due, **per_size[size]}), flush=True)
    small, large = per_size[min(sizes)], per_size[max(sizes)]
    ratio = round(large["seconds"] / small["seconds"], 2)
    print(json.dumps({"bench": "sweep", "ratio_largest_to_smallest": ratio,
                      "cpu_ratio": round(large["cpu_seconds"] / small["cpu_seconds"], 2),
                      "statements_ratio": round(large["statements"] / small["statements"], 2),
                      "target": f"<= {TARGET_RATIO}", "verdict": "met" if ratio <= TARGET_RATIO else "not met"}),
          flush=True)
    big = timed_run(build(max(sizes), args.big_due))
    print(json.dumps({"bench": "sweep", "services": max(sizes), "due": args.big_due, **big,
                      "target_seconds": TARGET_SECONDS,
                      "verdict": "met" if big["seconds"] <= TARGET_SECONDS and not big["failed"] else "not met"}))


if __name__ == "__main__":
    main()
