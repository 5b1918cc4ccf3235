"""The reminder sweep works set-wise: its statements do not grow with the accounts it reminds, a crash
between batches leaves whole batches behind and a re-run finishes the rest without doubling anything,
and the batched reply tokens are the same tokens the pages and replies accept."""
import collections
import datetime as dt

import pytest
from sqlalchemy import event, update

from handlers.models import Contact, Notice, OutboundMail, RenewalRequest
from handlers.renewals import reminders, tokens
from handlers.renewals.occasions import add_months
from tests.support.renewals import D, count, make_account, notices, outbound

UTC = dt.timezone.utc
TODAY = D("2026-11-21")  # the clock fixture's day


def sweep(services, day):
    at = dt.datetime.combine(day, dt.time(8), tzinfo=UTC)
    services.clock.set(at)
    return reminders.sweep(services, at)


def statements_of(services, fn):
    seen = []
    listener = lambda *args: seen.append(args[2])  # noqa: E731  (conn, cursor, statement, ...)
    event.listen(services.db.engine, "before_cursor_execute", listener)
    try:
        fn()
    finally:
        event.remove(services.db.engine, "before_cursor_execute", listener)
    return len(seen)


def test_statements_do_not_grow_with_the_accounts_reminded(services):
    """30 accounts due one day and 90 another cost the same number of statements: notices, tokens,
    mails and their audit entries go in per batch, not per row."""
    for n in range(30):
        make_account(services, f"a{n}", {f"a{n}.test": str(add_months(TODAY, 3))})
    later = TODAY + dt.timedelta(days=7)   # group a's next occasion (-2m) is weeks away
    for n in range(90):
        make_account(services, f"b{n}", {f"b{n}.test": str(later + dt.timedelta(days=5))})
    few = statements_of(services, lambda: sweep(services, TODAY))
    many = statements_of(services, lambda: sweep(services, later))
    assert count(services, Notice) == 120 and len(outbound(services, "renewal_reminder")) == 120
    assert count(services, RenewalRequest) == 120
    assert many == few, (few, many)


def test_a_crash_between_batches_is_finished_by_the_next_run_without_doubling(services, monkeypatch):
    """Batches of two accounts; the second batch meets an unusable address and fails: the first
    batch stays sent, the failed batch is retried account by account, so only the account at fault
    is left (nothing of it behind) and the later batch runs; the sweep says it failed. Once the
    address is fixed, the next run sends exactly what is missing: every recipient gets one reminder."""
    from handlers.jobs import SweepFailed
    monkeypatch.setattr(reminders, "ACCOUNTS_PER_BATCH", 2)
    ids = [make_account(services, f"acc{n}", {f"x{n}.test": str(TODAY + dt.timedelta(days=5))},
                        contacts=[(f"dev@acc{n}.test", ["renewals"], True)])["account"] for n in range(5)]
    services.run(lambda tx: tx.session.execute(update(Contact).where(
        Contact.account_id == ids[3], Contact.email == "dev@acc3.test").values(email="dev at acc3")))
    with pytest.raises(SweepFailed, match=f"account #{ids[3]} failed: InvalidInput: not an email address"):
        sweep(services, TODAY)
    assert len(notices(services)) == 4 and count(services, RenewalRequest) == 4
    assert sorted(m.recipients[0] for m in outbound(services)) == sorted(
        f"{who}@acc{n}.test" for n in (0, 1, 2, 4) for who in ("owner", "dev"))

    services.run(lambda tx: tx.session.execute(update(Contact).where(
        Contact.email == "dev at acc3").values(email="dev@acc3.test")))
    sweep(services, TODAY)
    sent = collections.Counter(m.recipients[0] for m in outbound(services))
    assert sent == {f"{who}@acc{n}.test": 1 for n in range(5) for who in ("owner", "dev")}
    assert len(notices(services)) == 5 and count(services, RenewalRequest) == 5
    sweep(services, TODAY)   # and a third run has nothing left to do
    assert count(services, OutboundMail) == 10


def test_batched_tokens_are_found_and_scoped(services):
    """issue_many stores only hashes; each secret finds its own account's request, scope and expiry."""
    one = make_account(services, "one", {"a.test": "2027-01-10", "b.test": "2027-01-20"})
    two = make_account(services, "two", {"c.test": "2027-02-01"})
    until = dt.datetime(2027, 3, 1, tzinfo=UTC)

    def op(tx):
        secrets = tokens.issue_many(tx, [(one["account"], [one["b.test"], one["a.test"], one["a.test"]], until, None),
                                         (two["account"], [two["c.test"]], until, None)])
        found = [tokens.find(tx, s) for s in secrets]
        return secrets, [(r.account_id, r.service_ids, r.kind, r.created_by, r.expires_at) for r in found]
    secrets, found = services.run(op, actor="system:scheduler")
    assert len(set(secrets)) == 2
    assert found == [(one["account"], sorted([one["a.test"], one["b.test"]]), "reply_token", "system:scheduler", until),
                     (two["account"], [two["c.test"]], "reply_token", "system:scheduler", until)]
    with services.db.transaction(readonly=True) as s:
        stored = s.scalars(RenewalRequest.__table__.select().with_only_columns(RenewalRequest.secret_hash)).all()
    assert sorted(stored) == sorted(tokens.digest(t) for t in secrets)
    with pytest.raises(ValueError, match="one by one"):
        services.run(lambda tx: tokens.issue_many(tx, [(one["account"], [one["a.test"]], until, None)],
                                                  kind=tokens.CODE))
