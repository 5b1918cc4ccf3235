"""Staff billing commands: `invoice list|show|create|paid|remind|void`, `payment record`, `charge add`,
`credit-limit`."""
from __future__ import annotations

import datetime as dt
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from handlers.billing import invoices as inv_ops
from handlers.billing import ledger, payments
from handlers.billing.common import OPEN_STATUSES, billing_recipients, money
from handlers.errors import InvalidInput
from handlers.models import Account, Invoice, InvoiceStatus, Payment
from handlers.money import fmt, to_minor
from handlers.staff.accounts import resolve_account
from handlers.staff.commands import Reply, columns, iso, local_time, register, today

if TYPE_CHECKING:
    from handlers.services import Tx

LIST_LIMIT = 200


def _invoice_json(inv: Invoice, account: Account, day: Any) -> dict[str, Any]:
    return {"number": inv.number, "account": {"id": account.id, "ref": account.ref, "name": account.name},
            "status": inv.status.value, "issued_on": iso(inv.issued_on), "due_on": iso(inv.due_on),
            "total": money(inv.total_minor, inv.currency), "paid": money(inv.paid_minor, inv.currency),
            "due": money(inv.due_minor, inv.currency),
            "overdue": inv.status in OPEN_STATUSES and inv.due_on < day, "void_reason": inv.void_reason}


@register("invoice list")
def invoice_list(tx: "Tx", args: dict[str, Any]) -> Reply:
    """Due invoices (default), overdue, paid or all, for everyone or one account."""
    day = today(tx)
    q = select(Invoice, Account).join(Account, Account.id == Invoice.account_id)
    which = next((w for w in ("overdue", "paid", "all") if args.get(w)), "due")
    if which in ("due", "overdue"):
        q = q.where(Invoice.status.in_(OPEN_STATUSES))
    if which == "overdue":
        q = q.where(Invoice.due_on < day)
    elif which == "paid":
        q = q.where(Invoice.status == InvoiceStatus.paid)
    if args.get("account"):
        q = q.where(Invoice.account_id == resolve_account(tx.session, args["account"]).id)
    rows = list(tx.session.execute(q.order_by(Invoice.due_on, Invoice.id).limit(LIST_LIMIT + 1)).all())
    shown = rows[:LIST_LIMIT]
    data = [_invoice_json(inv, acc, day) for inv, acc in shown]
    text = [f"{which} invoices ({len(shown)}{'+' if len(rows) > LIST_LIMIT else ''})" if shown else
            f"no {which} invoices"]
    text += columns([(inv.number, acc.name[:30], inv.status.value, f"due {inv.due_on}",
                      f"{fmt(inv.due_minor, inv.currency)} of {fmt(inv.total_minor, inv.currency)}",
                      "OVERDUE" if d["overdue"] else "") for (inv, acc), d in zip(shown, data)])
    return Reply(title=f"{which} invoices", text="\n".join(text),
                 data={"filter": which, "invoices": data, "truncated": len(rows) > LIST_LIMIT})


@register("invoice show")
def invoice_show(tx: "Tx", args: dict[str, Any]) -> Reply:
    """One invoice with its lines, tax and the payments that went to it."""
    inv = inv_ops.find(tx, args["n"])
    acc, cur = tx.session.get(Account, inv.account_id), inv.currency
    paid = inv_ops.payments_of(tx, inv)
    data = _invoice_json(inv, acc, today(tx)) | {
        "lines": [{"text": ln.text, "amount": money(ln.amount_minor, cur), "tax": money(ln.tax_minor, cur)}
                  for ln in inv.lines],
        "payments": [{"id": p.id, "ref": p.ref, "method": p.method, "received_at": iso(p.received_at),
                      "amount": money(part, cur), "voided": p.voided_at is not None} for p, part in paid]}
    text = [f"invoice {inv.number} - {inv.status.value}" + (f" ({inv.void_reason})" if inv.void_reason else ""),
            f"{acc.name} (#{acc.id}) · issued {inv.issued_on} · pay by {inv.due_on}"]
    text += columns([(ln.text, fmt(ln.amount_minor, cur), f"tax {fmt(ln.tax_minor, cur)}") for ln in inv.lines])
    text.append(f"total {fmt(inv.total_minor, cur)} · paid {fmt(inv.paid_minor, cur)} · "
                f"left {fmt(inv.due_minor, cur)}")
    if paid:
        text.append("payments:")
        text += columns([(local_time(tx, p.received_at), fmt(part, cur), f"P-{p.id}", p.method, p.ref or "",
                          f"VOID: {p.void_reason}" if p.voided_at is not None else "") for p, part in paid])
    return Reply(title=f"invoice {inv.number}", text="\n".join(text), data=data)


def _how(tx: "Tx", args: dict[str, Any]) -> dict[str, Any]:
    """``--method`` and ``--received`` as the payment's method and the moment it was received."""
    from handlers.billing.common import day_start
    how: dict[str, Any] = {"method": (args.get("method") or "manual").strip().lower()}
    if args.get("received"):
        how["received_at"] = day_start(tx, args["received"])
    return how


def tax_of(amount_minor: int, rate: Decimal) -> int:
    """``rate`` percent of an amount in minor units, rounded half up to a whole minor unit (no float)."""
    return int((Decimal(amount_minor) * rate / 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _usage(name: str) -> str:
    from handlers.staff.grammar import COMMANDS
    return next(c for c in COMMANDS if c.name == name).hint()


@register("invoice create")
def invoice_create(tx: "Tx", args: dict[str, Any]) -> Reply:
    """An invoice for ad-hoc work: one line, tax at RATE percent, pay by DATE (default in 14 days)."""
    acc = resolve_account(tx.session, args["account"])
    amount = to_minor(args["amount"], acc.currency, path="AMOUNT")
    if amount <= 0:
        raise InvalidInput("AMOUNT: an invoice must be more than zero", hint=_usage("invoice create"))
    rate: Decimal = args.get("tax") or Decimal(0)
    day = today(tx)
    due: dt.date = args.get("due") or day + dt.timedelta(days=inv_ops.PAY_WITHIN_DAYS)
    if due < day:
        raise InvalidInput(f"--due: {due} is before the issue date {day}", hint=_usage("invoice create"))
    text = args["text"].strip()
    inv = inv_ops.issue(tx, acc.id, [inv_ops.Line(text, amount, tax_of(amount, rate))], due)
    tx.audit("invoice.create", subject=inv, account_id=acc.id, number=inv.number, text=text,
             amount=money(amount, acc.currency), tax_rate=str(rate), total=money(inv.total_minor, acc.currency))
    cur, to = acc.currency, [r.email for r in billing_recipients(acc)]
    tax = inv.lines[0].tax_minor
    data = _invoice_json(inv, acc, day) | {"net": money(amount, cur), "tax": money(tax, cur), "tax_rate": str(rate),
                                           "text": text, "emailed_to": to}
    mailed = f"emailed to {', '.join(to)}" if to else "not emailed (paper invoicing or no billing contact)"
    return Reply(title=f"invoice {inv.number}", data=data, text=(
        f"invoice {inv.number} for {acc.name}: {text} {fmt(amount, cur)} + tax {fmt(tax, cur)} ({rate}%) = "
        f"{fmt(inv.total_minor, cur)}, pay by {due}; {mailed}"
        + (f"; credit on the account paid {fmt(inv.paid_minor, cur)}, left to pay {fmt(inv.due_minor, cur)}"
           if inv.paid_minor else "")))


@register("invoice paid")
def invoice_paid(tx: "Tx", args: dict[str, Any]) -> Reply:
    """A payment for one invoice: the amount left unless AMOUNT says less (the rest stays due)."""
    inv = inv_ops.find(tx, args["n"])
    ref = (args.get("ref") or "").strip()
    earlier = tx.session.scalar(select(Payment).where(Payment.ref == ref)) if ref else None
    if inv.status not in OPEN_STATUSES and earlier is None:
        from handlers.errors import Conflict
        raise Conflict(f"invoice {inv.number} is {inv.status.value}; nothing is left to pay")
    amount = inv.due_minor if args.get("amount") is None else to_minor(args["amount"], inv.currency, path="AMOUNT")
    if earlier is not None and args.get("amount") is None:
        amount = earlier.amount_minor  # the same payment again (a retry): answered with its first summary
    summary = payments.record(tx, inv.account_id, amount, invoices=[inv.number], ref=args.get("ref"),
                              apply_credit=False, **_how(tx, args))
    return Reply(title=f"invoice {inv.number} paid", text=payments.summary_text(summary)
                 + (" (recorded earlier with this ref; nothing changed)" if summary["replayed"] else ""), data=summary)


@register("invoice remind")
def invoice_remind(tx: "Tx", args: dict[str, Any]) -> Reply:
    """The reminder (before the pay-by date) or overdue notice (after), now."""
    inv, kind = inv_ops.remind(tx, args["n"])
    label = "reminder" if kind == "invoice_reminder" else "overdue notice"
    acc = tx.session.get(Account, inv.account_id)
    to = [r.email for r in billing_recipients(acc)]
    return Reply(title=f"invoice {inv.number}", text=f"{label} for {inv.number} queued to {', '.join(to)}",
                 data={"number": inv.number, "kind": kind, "to": to})


@register("invoice void")
def invoice_void(tx: "Tx", args: dict[str, Any]) -> Reply:
    """Void an invoice; it keeps its number and history, and what was paid on it becomes credit."""
    inv = inv_ops.void(tx, args["n"], args.get("reason") or "")
    credit = f"; {fmt(inv.paid_minor, inv.currency)} paid on it is now credit" if inv.paid_minor else ""
    return Reply(title=f"invoice {inv.number} void", text=f"invoice {inv.number} is void{credit}",
                 data=_invoice_json(inv, tx.session.get(Account, inv.account_id), today(tx)))


@register("payment record")
def payment_record(tx: "Tx", args: dict[str, Any]) -> Reply:
    """One payment over several invoices (listed, else oldest first), credit applied first."""
    acc = resolve_account(tx.session, args["account"])
    amount = to_minor(args["amount"], acc.currency, path="AMOUNT")
    summary = payments.record(tx, acc.id, amount, invoices=args.get("invoices"), ref=args.get("ref"), **_how(tx, args))
    text = payments.summary_text(summary)
    if summary["replayed"]:
        text += "\n(recorded earlier with this ref; nothing changed)"
    if summary.get("lifted"):
        text += "\nsuspension lifted: " + ", ".join(s["reason"] for s in summary["lifted"])
    return Reply(title=f"payment for {acc.name}", text=text, data=summary)


@register("charge add")
def charge_add(tx: "Tx", args: dict[str, Any]) -> Reply:
    """A manual charge (design work, a one-off fee), invoiced at once."""
    acc = resolve_account(tx.session, args["account"])
    entry = ledger.add_charge(tx, acc.id, to_minor(args["amount"], acc.currency, path="AMOUNT"), args["text"])
    inv = tx.session.get(Invoice, entry.invoice_id)
    state = ledger.credit_state(tx, acc)
    text = f"charged {acc.name} {fmt(-entry.amount_minor, acc.currency)}: {entry.text} " \
           f"(invoice {inv.number}, pay by {inv.due_on})\n" + ledger.describe(state, acc.currency)
    if state.reached:
        text += ("\nthe credit limit is passed: the client is warned, and a later sweep suspends the account unless "
                 "it is held or paid" if acc.auto_suspend else
                 "\nthe credit limit is passed; automatic suspension is off, so the client is warned, not suspended")
    return Reply(title=f"charge for {acc.name}", text=text, data={
        "id": entry.id, "account": {"id": acc.id, "name": acc.name}, "amount": money(-entry.amount_minor, acc.currency),
        "text": entry.text, "invoice": inv.number, "due_on": iso(inv.due_on),
        "balance": money(ledger.balance(tx, acc.id), acc.currency),
        "position": money(state.position, acc.currency), "limit_reached": state.reached})


@register("credit-limit")
def credit_limit(tx: "Tx", args: dict[str, Any]) -> Reply:
    """Set how much the account may owe outside invoices (negative: how much it must keep); none: no limit."""
    acc = resolve_account(tx.session, args["account"])
    raw = args["amount_or_none"]
    limit = None if raw == "none" else to_minor(raw, acc.currency, path="AMOUNT", allow_negative=True)
    previous, _ = ledger.set_credit_limit(tx, acc.id, limit)
    state = ledger.credit_state(tx, acc)
    cur = acc.currency
    return Reply(title=f"credit limit of {acc.name}",
                 text=f"credit limit of {acc.name}: {ledger.limit_text(limit, cur)} "
                      f"(was {ledger.limit_text(previous, cur)})\n" + ledger.describe(state, cur),
                 data={"account": {"id": acc.id, "name": acc.name},
                       "limit": None if limit is None else money(limit, cur),
                       "previous": None if previous is None else money(previous, cur),
                       "position": money(state.position, cur),
                       "headroom": None if state.headroom is None else money(state.headroom, cur),
                       "limit_reached": state.reached})
