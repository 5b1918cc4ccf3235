"""A population of accounts with something due for every daily sweep, and what the sweeps did to it.

``world(n, day0)`` is an import document (the real importer builds the rows): account ``i`` has
domains reaching reminder occasions, an unpaid invoice at a dunning occasion, and on some
accounts auto-suspension, auto-renewal or paper invoicing. ``outcome(services)`` reads back,
by name rather than by row id, every notice, suspension, service status and outgoing mail, so
two databases fed the same document can be compared.
"""
from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any

from sqlalchemy import select

from handlers.models import Account, Invoice, Notice, OutboundMail, Service, Suspension

LINES = [{"text": "Hosting, one month", "amount": "10.00", "tax": "1.90"}]


def _day(day0: dt.date, offset: int) -> str:
    return (day0 + dt.timedelta(days=offset)).isoformat()


def account_doc(i: int, day0: dt.date) -> dict[str, Any]:
    """Account ``a<i>``: something for the reminder, dunning, suspension and automation sweeps on ``day0``."""
    ref = f"a{i:04d}"
    services = [
        {"ref": "d5", "kind": "domain", "name": f"{ref}-five.test", "status": "active",
         "expires_on": _day(day0, 5), "period_years": 1, "price": "12.00"},        # -5d today
        {"ref": "d15", "kind": "domain", "name": f"{ref}-fifteen.test", "status": "active",
         "expires_on": _day(day0, 15), "period_years": 1, "price": "12.00"},       # -15d today
        {"ref": "host", "kind": "hosting", "name": f"Hosting {ref}", "status": "active",
         "expires_on": _day(day0, 200), "period_years": 1, "price": "10.00"},
    ]
    if i % 4 == 1:  # on auto-renew, at its first occasion (three months before) today (the 28th at the latest)
        months = day0.replace(day=min(day0.day, 28), year=day0.year + (day0.month + 2) // 12,
                              month=(day0.month + 2) % 12 + 1)
        services.append({"ref": "auto", "kind": "domain", "name": f"{ref}-auto.test", "status": "active",
                         "expires_on": months.isoformat(), "period_years": 1, "price": "12.00",
                         "auto_renew": True})
    invoices = [
        {"number": f"{ref}-1", "issued_on": _day(day0, -30), "due_on": _day(day0, -1), "lines": LINES,
         "paid": "0.00"},                                                             # +1d overdue today
        {"number": f"{ref}-2", "issued_on": _day(day0, -10), "due_on": _day(day0, 5), "lines": LINES,
         "paid": "0.00"},                                                             # -5d reminder today
    ]
    if i % 3 == 0:  # a flagged late payer, 3 days past the pay-by date: suspended today
        invoices.append({"number": f"{ref}-3", "issued_on": _day(day0, -30), "due_on": _day(day0, -3),
                         "lines": LINES, "paid": "0.00"})
    return {"ref": ref, "name": f"Account {ref}", "currency": "EUR",
            "owner": {"email": f"owner@{ref}.test", "name": "Owner"},
            "contacts": [{"email": f"bill@{ref}.test", "name": "Billing", "permissions": ["billing", "renewals"]}],
            "credit_limit": "1000.00", "invoicing": "paper" if i % 10 == 7 else "electronic",
            "auto_suspend": i % 3 == 0, "sales_contact": f"sales@{ref}.test", "services": services,
            "invoices": invoices}


def world(n: int, day0: dt.date) -> dict[str, Any]:
    return {"accounts": [account_doc(i, day0) for i in range(n)]}


def outcome(services: Any) -> dict[str, Any]:
    """What the sweeps did, by name: notices, suspensions, service statuses, outgoing mail."""
    def op(tx: Any) -> dict[str, Any]:
        s = tx.session
        refs = dict(s.execute(select(Account.id, Account.ref)).all())
        services_ = {sid: f"{refs[aid]}/{name}" for sid, aid, name in s.execute(
            select(Service.id, Service.account_id, Service.name))}
        invoices = dict(s.execute(select(Invoice.id, Invoice.number)).all())
        suspensions = {}
        for sus in s.scalars(select(Suspension)):
            label = sus.dedupe_key or ""
            if label.startswith("overdue:invoice:"):
                label = "overdue:" + invoices[int(label.rsplit(":", 1)[1])]
            suspensions[sus.id] = f"{refs[sus.account_id]}/{sus.reason.value}/{label.split(':')[0]}" \
                if not label.startswith("overdue:") else f"{refs[sus.account_id]}/{label}"
        names = {"service": services_, "invoice": invoices, "account": refs, "suspension": suspensions}
        notices = Counter(
            (n.kind, names.get(n.subject_type, {}).get(n.subject_id, f"{n.subject_type}:{n.subject_id}"), n.occasion,
             n.occasion_date.isoformat() if n.occasion_date else None, n.outcome)
            for n in s.scalars(select(Notice)))
        mails = Counter((m.intent, tuple(m.recipients), refs.get(m.account_id), m.subject,
                         m.created_at.date().isoformat()) for m in s.scalars(select(OutboundMail)))
        return {"notices": notices, "suspensions": Counter(suspensions.values()),
                "statuses": {label: status.value for label, status in (
                    (services_[sid], st) for sid, st in s.execute(select(Service.id, Service.status)))},
                "accounts": {refs[aid]: st.value for aid, st in s.execute(select(Account.id, Account.status))},
                "mails": mails}
    return services.run(op, readonly=True)


def doubled(counter: Counter) -> list:
    return [k for k, v in counter.items() if v > 1]
