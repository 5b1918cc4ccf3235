"""A model-based test of the ledger: random sequences of money operations, the invariants after each step.

Hypothesis drives one account with two domains through invoices issued, payments recorded
(spread or for one invoice), payments voided, invoices voided, manual charges, credit-limit
changes, renewal decisions and the billing and renewal sweeps, with the clock moving forward.
After every step, on SQLite and PostgreSQL:

- the balance is what the operations say: payments still standing − invoices not void − charges
  outside invoices;
- every invoice's paid amount is the sum of the allocations of payments still standing, never
  below zero and never beyond its total;
- no allocation is negative, and an account's credit never is;
- no open invoice is left that the account's credit could pay;
- no overdue suspension stays open for an invoice that is paid or void, and no credit-limit
  suspension stays open for an account within its limit (or with none);
- at most one open renewal invoice per (service, renewal term), whatever the decisions: renew for
  1 to 3 years or decline, one domain or both, repeated in any order, payments voided after a
  renewal completed (that term's invoice reopens beside the next term's);
- nothing of it raises anything but the refusals the operations document.
"""
from __future__ import annotations

import datetime as dt
import itertools

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from sqlalchemy import func, select

from handlers.billing import credit, dunning, ledger, payments
from handlers.billing import invoices as inv_ops
from handlers.errors import RenewdeskError
from handlers.models import (Account, DecisionAction, Invoice, InvoiceLine, InvoiceStatus, LedgerEntry, LedgerKind,
                             Payment, PaymentAllocation, RenewalTerm, Service, Suspension, SuspensionReason)
from handlers.renewals import decisions
from tests.handlers.billing_helpers import account, account_id, load

_refs = itertools.count(1)
AMOUNTS = st.integers(min_value=1, max_value=50_000)
RULES = ["recurring_invoices", "invoice_notices", "overdue_suspensions", "removals", "credit_limits",
         "renewal_automation"]


def _machine(services, clock):
    class Ledger(RuleBasedStateMachine):
        def __init__(self):
            super().__init__()
            self.ref = f"m{next(_refs)}"
            self.now = dt.datetime(2026, 11, 1, 8, tzinfo=dt.timezone.utc)
            clock.set(self.now)
            domains = [{"ref": f"{self.ref}-{d}.test", "kind": "domain", "name": f"{self.ref}-{d}.test",
                        "status": "active", "expires_on": "2027-01-15", "period_years": 1, "price": "12.00"}
                       for d in ("a", "b")]
            load(services, account(self.ref, auto_suspend=True, services=domains))
            self.acc = account_id(services, self.ref)
            self.domains = self._ids(Service, Service.account_id == self.acc)

        def run(self, fn, *args, **kwargs):
            try:
                return services.run(fn, *args, actor="test", **kwargs)
            except RenewdeskError:
                return None  # a documented refusal (conflict, bad input) changes nothing

        def _ids(self, model, *where):
            return services.run(lambda tx: list(tx.session.scalars(select(model.id).where(*where).order_by(model.id))),
                                readonly=True)

        @rule(amount=AMOUNTS, tax=st.integers(min_value=0, max_value=5_000), days=st.integers(0, 30))
        def issue(self, amount, tax, days):
            self.run(inv_ops.issue, self.acc, [inv_ops.Line("Work", amount, tax)],
                     self.now.date() + dt.timedelta(days=days))

        @rule(amount=AMOUNTS, spread=st.booleans(), pick=st.integers(0, 10))
        def pay(self, amount, spread, pick):
            if spread:
                self.run(payments.record, self.acc, amount)
                return
            open_ = self._ids(Invoice, Invoice.account_id == self.acc,
                              Invoice.status.in_([InvoiceStatus.issued, InvoiceStatus.partially_paid]))
            if open_:
                number = services.run(lambda tx: tx.session.get(Invoice, open_[pick % len(open_)]).number,
                                      readonly=True)
                self.run(payments.record, self.acc, amount, invoices=[number], apply_credit=False)

        @rule(pick=st.integers(0, 10))
        def void_payment(self, pick):
            ids = self._ids(Payment, Payment.account_id == self.acc, Payment.method != credit.CREDIT,
                            Payment.voided_at.is_(None))
            if ids:
                self.run(payments.void, ids[pick % len(ids)], "model")

        @rule(pick=st.integers(0, 10))
        def void_invoice(self, pick):
            ids = self._ids(Invoice, Invoice.account_id == self.acc, Invoice.status != InvoiceStatus.void)
            if ids:
                number = services.run(lambda tx: tx.session.get(Invoice, ids[pick % len(ids)]).number, readonly=True)
                self.run(inv_ops.void, number, "model")

        @rule(which=st.sets(st.sampled_from([0, 1]), min_size=1), renew=st.booleans(), years=st.integers(1, 3))
        def decide(self, which, renew, years):
            def op(tx):
                acc = tx.session.get(Account, self.acc)
                choices = [decisions.Choice(tx.session.get(Service, self.domains[i]),
                                            DecisionAction.renew if renew else DecisionAction.decline,
                                            years if renew else None) for i in sorted(which)]
                decisions.apply(tx, acc, choices, decisions.Authority("staff:UMODEL", "staff", "page"))
            self.run(op)

        @rule(amount=AMOUNTS)
        def charge(self, amount):
            self.run(ledger.add_charge, self.acc, amount, "usage")

        @rule(limit=st.none() | st.integers(min_value=-20_000, max_value=20_000))
        def credit_limit(self, limit):
            self.run(ledger.set_credit_limit, self.acc, limit)

        @precondition(lambda self: self.now < dt.datetime(2027, 6, 1, tzinfo=dt.timezone.utc))
        @rule(days=st.integers(1, 20))
        def sweep(self, days):
            self.now += dt.timedelta(days=days)
            clock.set(self.now)
            dunning.run_rules(services, RULES, self.now, False, [self.acc])

        @invariant()
        def money_adds_up(self):
            services.run(self._check, readonly=True)

        def _check(self, tx):
            acc, s = self.acc, tx.session
            standing = s.scalar(select(func.coalesce(func.sum(Payment.amount_minor), 0)).where(
                Payment.account_id == acc, Payment.method != credit.CREDIT, Payment.voided_at.is_(None)))
            invoiced = s.scalar(select(func.coalesce(func.sum(Invoice.total_minor), 0)).where(
                Invoice.account_id == acc, Invoice.status != InvoiceStatus.void))
            charged = s.scalar(select(func.coalesce(func.sum(LedgerEntry.amount_minor), 0)).where(
                LedgerEntry.account_id == acc, LedgerEntry.kind == LedgerKind.charge,
                LedgerEntry.invoice_id.is_(None)))
            assert ledger.balance(tx, acc) == standing - invoiced + charged
            for inv in s.scalars(select(Invoice).where(Invoice.account_id == acc)):
                allocated = s.scalar(select(func.coalesce(func.sum(PaymentAllocation.amount_minor), 0)).join(Payment)
                                     .where(PaymentAllocation.invoice_id == inv.id, Payment.voided_at.is_(None)))
                assert 0 <= inv.paid_minor == allocated <= inv.total_minor, inv.number
            smallest = s.scalar(select(func.min(PaymentAllocation.amount_minor)).join(Payment).where(
                Payment.account_id == acc))
            assert smallest is None or smallest > 0
            assert credit.available(tx, acc) >= 0
            assert credit.covered(tx, acc) == {}, "an open invoice is left that credit could pay"
            open_suspensions = select(Suspension).where(Suspension.account_id == acc, Suspension.lifted_at.is_(None))
            for sus in s.scalars(open_suspensions):
                if sus.reason == SuspensionReason.overdue:
                    inv = s.get(Invoice, sus.invoice_id)
                    assert inv.status not in (InvoiceStatus.paid, InvoiceStatus.void), sus.dedupe_key
                if sus.reason == SuspensionReason.credit_limit:
                    assert ledger.credit_state(tx, s.get(Account, acc)).reached, "suspended within the limit"
            for sid in self.domains:
                # every open renewal invoice for a service is the one invoice of one of its terms (service,
                # expiry renewed): a second invoice for a term, replaced but left open, belongs to none
                open_renewals = set(s.scalars(select(Invoice.id).join(InvoiceLine).where(
                    InvoiceLine.service_id == sid, Invoice.origin == "renewal",
                    Invoice.status.in_([InvoiceStatus.issued, InvoiceStatus.partially_paid]))))
                held = set(s.scalars(select(RenewalTerm.invoice_id).where(RenewalTerm.service_id == sid)))
                assert open_renewals <= held, "an open renewal invoice that no term of the service holds"
    return Ledger


def test_the_ledger_keeps_its_invariants_through_random_operations(services, clock):
    machine = _machine(services, clock)
    machine.TestCase.settings = settings(max_examples=40, stateful_step_count=25, deadline=None,
                                         suppress_health_check=list(HealthCheck))
    machine.TestCase().runTest()
