"""Staff commands for tickets and held inbound mail: `ticket ...`, `inbox`, `inbox retry`, `inbox attach`."""
from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from handlers import inbox
from handlers.staff.accounts import resolve_account
from handlers.staff.commands import Reply, caller, columns, local_time, register
from handlers.tickets import ops

if TYPE_CHECKING:
    from handlers.services import Tx

BODY_PREVIEW = 1500   # characters of each message shown by `ticket show`


def _when(tx: "Tx", iso_text: str) -> str:
    return local_time(tx, dt.datetime.fromisoformat(iso_text))


@register("ticket list")
def ticket_list(tx: "Tx", args: dict[str, Any]) -> Reply:
    which = "archived" if args["archived"] else "all" if args["all"] else "open"
    account = resolve_account(tx.session, args["account"]) if args["account"] else None
    rows = ops.listing(tx, which, account.id if account else None)
    scope = f" of {account.name}" if account else ""
    if not rows:
        return Reply(f"{which} tickets{scope}", f"no {which} tickets{scope}", rows)
    table = columns([(r["ref"], r["status"], r["account"], _when(tx, r["updated_at"]), r["assignee"] or "-",
                      r["subject"][:70]) for r in rows])
    return Reply(f"{which} tickets{scope}", "\n".join([f"{len(rows)} {which} ticket(s){scope}", *table]), rows)


@register("ticket show")
def ticket_show(tx: "Tx", args: dict[str, Any]) -> Reply:
    d = ops.show(tx, args["t"])
    lines = [f"{d['tag']} {d['subject']}",
             f"status {d['status']} · account {d['account_name']} ({d['account']}) · opened by {d['opened_by'] or '-'}"
             f" · assigned to {d['assignee'] or 'nobody'}",
             f"copies go to: {', '.join(w['email'] for w in d['watchers']) or 'nobody'}"]
    if d["previous_ticket"]:
        lines.append(f"follows T-{d['previous_ticket']}")
    for m in d["messages"]:
        label = {"client": "client", "reply": "reply (emailed)", "note": "internal note", "auto": "automatic mail"}
        lines += ["", f"— {label.get(m['kind'], m['kind'])} · {m['author']} · {_when(tx, m['at'])}"]
        body = m["body"] if len(m["body"]) <= BODY_PREVIEW else m["body"][:BODY_PREVIEW] + " …"
        lines += ["  " + line for line in body.splitlines()]
        lines += [f"  [attachment] {a['filename']} ({a['content_type']}, {a['size']} bytes)"
                  + (f" not kept: {a['dropped']}" if a["dropped"] else "") for a in m["attachments"]]
    return Reply(f"ticket T-{d['id']}", "\n".join(lines), d)


@register("ticket reply")
def ticket_reply(tx: "Tx", args: dict[str, Any]) -> Reply:
    d = ops.reply(tx, args["t"], args["text"])
    to = ", ".join(d["emailed_to"]) or "nobody (no contact wants ticket mail)"
    return Reply(f"reply on T-{d['ticket']}", f"T-{d['ticket']}: reply queued to {to}", d)


@register("ticket note")
def ticket_note(tx: "Tx", args: dict[str, Any]) -> Reply:
    d = ops.note(tx, args["t"], args["text"])
    return Reply(f"note on T-{d['ticket']}", f"T-{d['ticket']}: internal note added (not emailed)", d)


@register("ticket assign")
def ticket_assign(tx: "Tx", args: dict[str, Any]) -> Reply:
    who = args["staff_or_me"]
    who = caller(tx) if who in (None, "me") else who
    d = ops.assign(tx, args["t"], who)
    return Reply(f"T-{d['ticket']} assigned", f"T-{d['ticket']} is assigned to <@{d['assignee']}>", d)


def _state(action: str, fn: Any) -> Any:
    def handler(tx: "Tx", args: dict[str, Any]) -> Reply:
        d = fn(tx, args["t"])
        return Reply(f"T-{d['ticket']} {d['status']}", f"T-{d['ticket']}: {d['status_from']} → {d['status']}", d)
    handler.__name__ = f"ticket_{action}"
    return register(f"ticket {action}")(handler)


for _action, _fn in (("close", ops.close), ("hold", ops.hold), ("archive", ops.archive),
                     ("unarchive", ops.unarchive)):
    _state(_action, _fn)


@register("inbox")
def inbox_list(tx: "Tx", args: dict[str, Any]) -> Reply:
    rows = inbox.listing(tx, quarantined=args["quarantined"], held=not args["quarantined"])
    title = "quarantined mail" if args["quarantined"] else "mail waiting for staff"
    return Reply(title, inbox.listing_text(rows) if rows else f"no {title}", rows)


@register("inbox retry")
def inbox_retry(tx: "Tx", args: dict[str, Any]) -> Reply:
    ids = inbox.retry(tx, args["id"])
    return Reply("inbox retry", f"message {ids[0]} will be processed again", {"ids": ids})


@register("inbox attach")
def inbox_attach(tx: "Tx", args: dict[str, Any]) -> Reply:
    account = resolve_account(tx.session, args["account"])
    d = inbox.attach(tx, args["id"], account.id)
    made = "is now a contact" if d["contact_created"] else "was already a contact"
    return Reply("inbox attach", f"{d['contact']} {made} of {account.name}; message {d['id']} "
                 "will be processed again as theirs", d)
