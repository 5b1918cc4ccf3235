"""The renewal reminder sweep on SQLite: does its cost follow the services due, not the services kept?

    python -m bench.sweep [--sizes 100000,1000000] [--due 1000] [--big-due 10000]

(a) For each size, a database with that many services of which ``--due`` expire in 5 days (one
    account each, so one email each) and the rest far away: seconds for one sweep, and the ratio
    between the largest and the smallest size (target <= 2).
(b) The largest size with ``--big-due`` due: seconds for the sweep with its notices, reply tokens
    and outbox rows (target <= 5 s).
Only the sweep is timed, not building the data. Each line also gives the sweep's CPU seconds
(this process) and the SQL statements it issued: on a shared machine the wall clock counts
other people's work too.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import tempfile
import time

from sqlalchemy import create_engine, event, func, insert, select

from handlers.clock import FixedClock
from handlers.models import Account, Contact, Notice, OutboundMail, Service
from handlers.renewals import reminders
from handlers.services import Services
from handlers.settings import load_settings
from renewdesk.migrate import upgrade

AT = dt.datetime(2026, 11, 21, 8, tzinfo=dt.timezone.utc)
TODAY = AT.date()
ACCOUNTS_FAR = 10_000   # the far-away services are spread over these accounts


def build(total: int, due: int) -> str:
    url = f"sqlite:///{tempfile.mkdtemp()}/sweep.db"
    engine = create_engine(url)
    upgrade(engine)
    rnd = random.Random(7)
    n_accounts = ACCOUNTS_FAR + due
    with engine.begin() as conn:
        conn.execute(insert(Account), [{"id": i, "ref": f"a{i}", "name": f"Account {i}", "currency": "EUR",
                                        "created_at": AT} for i in range(1, n_accounts + 1)])
        conn.execute(insert(Contact), [{"account_id": i, "email": f"owner{i}@example.test", "name": "Owner",
                                        "is_owner": True, "permissions": [], "email_prefs": {}, "subscriptions": [],
                                        "created_at": AT} for i in range(1, n_accounts + 1)])
    rows, batch = 0, []
    with engine.begin() as conn:
        for i in range(total):
            if i < due:   # each due service on its own account: one email each
                account, expires = ACCOUNTS_FAR + 1 + i, TODAY + dt.timedelta(days=5)
            else:         # not on any occasion: 7 months to 10 years away
                account, expires = rnd.randint(1, ACCOUNTS_FAR), TODAY + dt.timedelta(days=rnd.randint(200, 3650))
            batch.append({"account_id": account, "ref": f"s{i}", "kind": "domain", "name": f"name{i}.test",
                          "expires_on": expires, "status": "active", "period_years": 1, "price_minor": 1200,
                          "currency": "EUR", "auto_renew": False, "created_at": AT})
            if len(batch) == 50_000:
                conn.execute(insert(Service), batch)
                rows, batch = rows + len(batch), []
        if batch:
            conn.execute(insert(Service), batch)
    engine.dispose()
    return url


def timed_sweep(url: str) -> dict:
    services = Services(load_settings({}, database_url=url, secret_key="bench"), clock=FixedClock(AT))
    statements = []

    def count(*_: object) -> None:
        statements.append(1)
    event.listen(services.db.engine, "before_cursor_execute", count)
    t0, cpu0 = time.perf_counter(), time.process_time()
    lines = reminders.sweep(services, AT)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    event.remove(services.db.engine, "before_cursor_execute", count)
    with services.db.transaction(readonly=True) as s:
        notices = s.scalar(select(func.count()).select_from(Notice))
        mails = s.scalar(select(func.count()).select_from(OutboundMail))
    services.close()
    # CPU seconds and statements too: on a busy machine the wall clock also counts others' work
    return {"seconds": round(seconds, 3), "cpu_seconds": round(cpu, 3), "statements": len(statements),
            "notices": notices, "emails": mails, "summary": lines[0]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--due", type=int, default=1000)
    ap.add_argument("--big-due", type=int, default=10_000)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    per_size = {}
    for size in sizes:
        per_size[size] = timed_sweep(build(size, args.due))
        print(json.dumps({"bench": "sweep", "services": size, "due": args.due, **per_size[size]}), flush=True)
    small, large = per_size[min(sizes)]["seconds"], per_size[max(sizes)]["seconds"]
    cpu_small, cpu_large = per_size[min(sizes)]["cpu_seconds"], per_size[max(sizes)]["cpu_seconds"]
    print(json.dumps({"bench": "sweep", "ratio_largest_to_smallest": round(large / small, 2),
                      "cpu_ratio": round(cpu_large / cpu_small, 2), "target": "<= 2"}), flush=True)
    big = timed_sweep(build(max(sizes), args.big_due))
    print(json.dumps({"bench": "sweep", "services": max(sizes), "due": args.big_due, **big, "target_seconds": 5}))


if __name__ == "__main__":
    main()
