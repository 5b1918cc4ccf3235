"""Building accounts with services for the renewal tests (real rows through real operations' tables)."""
from __future__ import annotations

import datetime as dt
import email
import email.policy

from sqlalchemy import func, select

from handlers.models import Account, Contact, Invoicing, Notice, Service, ServiceStatus
from tests.support.mailflow import outbound  # noqa: F401  (shared with the renewal tests)

D = dt.date.fromisoformat


def make_account(services, ref, domains, *, invoicing="electronic", sales=None, owner_wants=True,
                 others=(), contacts=()):
    """An account ``ref`` with owner ``owner@<ref>.test``, domains {name: "YYYY-MM-DD" or (date, status)},
    and extra contacts as (email, permissions, wants_renewals). Returns {"account": id, name: service id}."""
    def op(tx):
        acc = Account(ref=ref, name=ref.capitalize() + " Ltd", currency="EUR", created_at=tx.now,
                      invoicing=Invoicing(invoicing), sales_contact=sales)
        tx.session.add(acc)
        tx.session.flush()
        tx.session.add(Contact(account_id=acc.id, email=f"owner@{ref}.test", name="Owner", is_owner=True,
                               email_prefs={"renewals": owner_wants}, created_at=tx.now))
        for addr, perms, wants in contacts:
            tx.session.add(Contact(account_id=acc.id, email=addr, name=addr.split("@")[0].title(),
                                   permissions=list(perms), email_prefs={"renewals": wants}, created_at=tx.now))
        ids = {"account": acc.id}
        for name, spec in {**domains, **dict(others)}.items():
            when, status = (spec, "active") if isinstance(spec, str) else spec
            kind = "domain" if name in domains else "hosting"
            svc = Service(account_id=acc.id, ref=name, kind=kind, name=name, expires_on=D(when),
                          status=ServiceStatus(status), price_minor=1200, currency="EUR", created_at=tx.now)
            tx.session.add(svc)
            tx.session.flush()
            ids[name] = svc.id
        return ids
    return services.run(op)


def parsed(row):
    return email.message_from_bytes(row.raw, policy=email.policy.default)


def text_of(row):
    return parsed(row).get_body(("plain",)).get_content().replace("\r\n", "\n")


def notices(services):
    with services.db.transaction(readonly=True) as s:
        return s.execute(select(Notice.subject_id, Notice.occasion, Notice.occasion_date, Notice.outcome)
                         .order_by(Notice.id)).all()


def count(services, model):
    with services.db.transaction(readonly=True) as s:
        return s.scalar(select(func.count()).select_from(model))


def reminder_token(services, day, **kw):
    """Run the reminder sweep on ``day`` and return the reply token of the last reminder queued."""
    from handlers.renewals import reminders
    at = dt.datetime.combine(day, dt.time(8), tzinfo=dt.timezone.utc)
    services.clock.set(at)
    reminders.sweep(services, at)
    mail = outbound(services, "renewal_reminder")[-1]
    return parsed(mail)["Reply-To"].addresses[0].addr_spec.split("@")[0].removeprefix("renew+")


def store_inbound(services, raw, recipient):
    """Store ``raw`` through the inbox's own store; returns the row id (decisions point at it)."""
    from handlers.inbox import Incoming, store_many
    return services.run(lambda tx: store_many(tx, [Incoming(raw, "smtp", "x@y.test", (recipient,))]))[0][0].id
