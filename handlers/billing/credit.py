"""Credit pays: money on the account beyond its invoices goes to its open invoices, oldest first.

Credit is the positive part of the position (the balance outside open invoices). It is applied
when an invoice is issued, when an invoice is voided (what was paid on it becomes credit) and
at every sweep, so a client whose credit covers what is due is never reminded, dunned,
suspended or removed for it. Applying credit moves no money: it is a payment row of method
``credit`` whose allocations mark the invoices paid, with no ledger entry (the money is on the
ledger already). :func:`covered` answers the same question without writing, for the forecast
and the dry run.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from handlers.billing.common import money, open_invoices, transaction_set
from handlers.models import Account, Invoice, Payment, PaymentAllocation

if TYPE_CHECKING:
    from handlers.services import Tx

CREDIT = "credit"
def known_none(tx: "Tx") -> set[int]:
    """Accounts this transaction knows, under their locks, to have no credit (the sweep finds them per batch and
    forgets an account before any action that may move its money other than issuing it an invoice)."""
    return transaction_set(tx, "billing.no_credit")


def available(tx: "Tx", account_id: int) -> int:
    """The credit on the account: what it has paid beyond its invoices and charges (never negative)."""
    from handlers.billing.ledger import credit
    return credit(tx, account_id)


def covered(tx: "Tx", account_id: int, invoices: list[Invoice] | None = None) -> dict[int, int]:
    """Invoice id → the part of what is due on it that the account's credit pays, oldest first.

    ``invoices``: the account's open invoices as :func:`open_invoices` just loaded them (fresh, so what
    is left on them is what the database sums); without open invoices no credit is looked up.
    """
    from handlers.billing.ledger import balance
    if invoices is None:
        invoices = open_invoices(tx, account_id)
    if not invoices:
        return {}
    # ledger.credit, with the open invoices' sum taken from the rows at hand
    credit, out = max(0, balance(tx, account_id) + sum(inv.due_minor for inv in invoices)), {}
    for inv in invoices:
        part = min(credit, inv.due_minor)
        if part <= 0:
            break
        out[inv.id] = part
        credit -= part
    return out


def owed_after_credit(tx: "Tx", account_id: int) -> int:
    """What the client still has to pay on open invoices once the credit is used."""
    invoices = open_invoices(tx, account_id)
    return sum(inv.due_minor for inv in invoices) - sum(covered(tx, account_id, invoices).values())


def apply_credit(tx: "Tx", acc: Account, *, why: str) -> list[tuple[Invoice, int]]:
    """Pay the account's open invoices from its credit, oldest pay-by date first; what was paid.

    The caller holds the account lock. Invoices that become paid run the paid hooks and may lift
    an overdue suspension, as a payment would.
    """
    from handlers.billing.invoices import status_for
    from handlers.billing.payments import after_paid

    invoices = open_invoices(tx, acc.id)
    parts = covered(tx, acc.id, invoices)
    if not parts:
        return []
    used = [(inv, parts[inv.id]) for inv in invoices if inv.id in parts]
    for inv, part in used:
        inv.paid_minor += part
        inv.status = status_for(inv.total_minor, inv.paid_minor)
    row = Payment(account_id=acc.id, amount_minor=sum(p for _, p in used), currency=acc.currency,
                  received_at=tx.now, method=CREDIT, ref=None, actor=tx.actor,
                  allocations=[PaymentAllocation(invoice_id=inv.id, amount_minor=part) for inv, part in used])
    tx.session.add(row)
    tx.session.flush()
    tx.audit("credit.apply", subject=row, account_id=acc.id, why=why,
             invoices=[{"number": inv.number, "amount": money(part, acc.currency)} for inv, part in used])
    after_paid(tx, acc, [inv for inv, _ in used], why=f"credit applied ({why})")
    return used
