"""Staff payment commands beyond recording: `payment list ACCOUNT`, `payment void P REASON`."""
from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from handlers.actors import actor_name
from handlers.billing import payments
from handlers.staff.accounts import resolve_account
from handlers.staff.commands import Reply, columns, local_time, register

if TYPE_CHECKING:
    from handlers.services import Tx


def _amount(value: dict[str, str]) -> str:
    return payments.formatted(value)


@register("payment list")
def payment_list(tx: "Tx", args: dict[str, Any]) -> Reply:
    """An account's payments, newest first: method, received, ref, where each went, voids with their reason."""
    acc = resolve_account(tx.session, args["account"])
    rows = payments.listing(tx, acc.id)
    money_in = [r for r in rows if r["method"] != payments.CREDIT]
    text = [f"payments of {acc.name} ({len(money_in)}), newest first; credit applied from the account is listed "
            "apart, as it is no new money" if rows else f"no payments for {acc.name}"]
    for row in rows:
        went = ", ".join(f"{a['invoice']} {_amount(a['amount'])}" for a in row["allocations"]) or "credit"
        status = f"VOID {row['voided']['at'][:10]} by {actor_name(tx, row['voided']['by'])}: " \
                 f"{row['voided']['reason']}" if row["voided"] else ""
        received = local_time(tx, dt.datetime.fromisoformat(row["received_at"]))
        label = "  credit applied" if row["method"] == payments.CREDIT else f"P-{row['id']}"
        method = "" if row["method"] == payments.CREDIT else row["method"]
        text += columns([(label, received, _amount(row["amount"]), method, row["ref"] or "", "→ " + went, status)])
    return Reply(title=f"payments of {acc.name}", text="\n".join(text),
                 data={"account": {"id": acc.id, "ref": acc.ref, "name": acc.name}, "payments": rows})


@register("payment void")
def payment_void(tx: "Tx", args: dict[str, Any]) -> Reply:
    """Reverse a payment by another ledger entry: its invoices reopen and the client is told."""
    result = payments.void(tx, args["p"], args["reason"])
    return Reply(title=f"payment P-{result['payment']['id']} voided", text=payments.void_text(result), data=result)
