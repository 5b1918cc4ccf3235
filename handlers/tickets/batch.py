"""What one batch of inbound mail looks up once for all its messages, and writes in few statements.

The inbox processor hands every message of a batch to :func:`handlers.tickets.intake.receive`
in one transaction, each in its own savepoint. Looking things up message by message (the
sender's contacts, the ticket a Message-ID belongs to, the automatic answers an address got in
the window) cost more than acting on the mail, so :class:`Batch` asks once per batch:

- the contacts of every sender, their accounts and those accounts' owners;
- for every Message-ID in In-Reply-To/References, the ticket it belongs to;
- every ticket a message could thread to (those, plus subject tags, address tokens and body
  markers);
- per address, the automatic answers sent and held back in the window (``tx.now`` is fixed for
  the transaction, so the window is the same for the whole batch).

What the batch's own messages add (tickets, client messages, automatic answers) is added to
these answers as it is written, so the tenth message sees what the third did, exactly as if it
had asked the database. When a message fails, its savepoint is rolled back and
:meth:`Batch.forget` drops every answer: the next message asks the database again.

Rows a message adds and changes wait in :attr:`pending`: a new ticket (on SQLite, with the id
the batch gives it), its ticket message and attachments when nothing needs the message's id,
watchers, automatic answers, the acknowledgement's outbox row, audit events, the ticket's new
status and times. The processor's first run of a batch has no savepoints, so they go out once
for the whole batch, one executemany per table at its end (the messages with RETURNING when some
have attachments, which find their message by its inbound mail); the careful run (a message
failed: each one in its own savepoint) writes them when each message ends, inside its savepoint.
Either way they are written before any operation that reads or writes without the batch (bounces, renewal replies, the
answers to unknown senders and to contacts without permission, Slack cards, the note the cap
adds, a message written at once): those ask the database, or add to a ticket, and must find
what the batch's earlier messages did.
"""
from __future__ import annotations

import contextlib
import datetime as dt
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

from sqlalchemy import bindparam, case, func, insert, select, update

from handlers import outbox
from handlers.audit import _jsonable
from handlers.mail_facts import MailFacts
from handlers.models import (Account, Attachment, AuditEvent, AutoAnswer, Contact, OutboundMail, Ticket,
                             TicketMessage, TicketStatus, TicketWatcher)
from handlers.tickets import auto, refs

_T, _M, _O, _A = Ticket.__table__, TicketMessage.__table__, OutboundMail.__table__, AutoAnswer.__table__
_TICKETS = select(_T.c.id, _T.c.account_id, _T.c.subject, _T.c.status, _T.c.archived, _T.c.closed_at,
                  _T.c.updated_at).where(_T.c.id.in_(bindparam("ids", expanding=True)))
_BY_MESSAGE = select(_M.c.message_id, func.min(_M.c.ticket_id)).where(
    _M.c.message_id.in_(bindparam("ids", expanding=True))).group_by(_M.c.message_id)
_BY_OUTBOUND = select(_O.c.message_id, _O.c.ticket_id).where(
    _O.c.message_id.in_(bindparam("ids", expanding=True)), _O.c.ticket_id.is_not(None))
_INSERT_TICKET = insert(_T).returning(_T.c.id)
_LAST_TICKET = select(func.max(_T.c.id))
_INSERT_MESSAGE = insert(_M).returning(_M.c.id)
_MESSAGES_BY_MAIL = insert(_M).returning(_M.c.inbound_mail_id, _M.c.id)
_INSERT_ATTACHMENT = insert(Attachment.__table__)
_SENT = func.sum(case((_A.c.sent.is_(True), 1), else_=0))
_AUTO_BY_RECIPIENT = select(_A.c.recipient, func.count(), _SENT).where(
    _A.c.at > bindparam("since"), _A.c.recipient.in_(bindparam("keys", expanding=True))).group_by(_A.c.recipient)
_AUTO_BY_TICKET = select(_A.c.ticket_id, func.count(), _SENT).where(
    _A.c.at > bindparam("since"), _A.c.ticket_id.in_(bindparam("keys", expanding=True))).group_by(_A.c.ticket_id)
# what a batch's messages add and change, written in this order (a message before nothing that needs it)
_WRITES = {
    "new_ticket": insert(_T),  # SQLite: with the ids the batch gave them (Batch.new_ticket)
    "ticket_message": insert(_M), "ticket_watcher": insert(TicketWatcher.__table__), "auto_answer": insert(_A),
    "outbound_mail": None,  # written by outbox.insert_rows (Batch._write_mail)
    "audit_event": insert(AuditEvent.__table__),
    "ticket": update(_T).where(_T.c.id == bindparam("ticket_id")).values(
        status=bindparam("status"), archived=bindparam("archived"), closed_at=bindparam("closed_at"),
        updated_at=bindparam("updated_at")),
}


@dataclass
class TicketRow:
    """What threading and the reply rules read of a ticket (the ORM object is not needed)."""

    id: int
    account_id: int
    subject: str
    status: TicketStatus
    archived: bool
    closed_at: dt.datetime | None
    updated_at: dt.datetime


class Batch:
    """The lookups and pending rows of one batch; see the module's docstring."""

    def __init__(self, tx: Any, facts: Iterable[MailFacts]):
        self.tx, self.conn = tx, tx.session.connection()
        self.sqlite = self.conn.dialect.name == "sqlite"
        self.facts = [f for f in facts if f is not None]
        self.since = tx.now - dt.timedelta(minutes=tx.settings.auto_answer_window_minutes)
        self.pending: dict[str, list[dict[str, Any]]] = {name: [] for name in _WRITES}
        self.files: dict[int, list[dict[str, Any]]] = {}  # a waiting message's attachments, by its inbound mail
        self.waiting: set[int | None] = set()             # the inbound mail of every waiting message
        self.forget()
        self._prefetch()

    def forget(self, *, pending: bool = False) -> None:
        """Drop every answer, so the database is asked again (after a failed message, whose
        savepoint took back what it wrote, or an operation that wrote without the batch); with
        ``pending``, also the rows a failed message left unwritten."""
        self.next_ticket: int | None = None  # SQLite: the id the batch's next new ticket gets
        self.contacts: dict[str, list[Contact]] = {}
        self.owners: dict[int, Contact | None] = {}
        self.accounts: dict[int, Account] = {}
        self.by_message: dict[str, int | None] = {}
        self.tickets: dict[int, TicketRow | None] = {}
        self.auto_recipient: dict[str, list[int]] = {}   # address -> [sent, held]
        self.auto_ticket: dict[int, list[int]] = {}      # ticket id -> [sent, held]
        if pending:
            for rows in self.pending.values():
                rows.clear()
            self.files.clear()
            self.waiting.clear()

    @contextlib.contextmanager
    def aside(self, *, answers_only: bool = False) -> Iterator[None]:
        """For an operation that reads and writes without the batch: the waiting rows go out
        first, so it finds what the batch's earlier messages did, and afterwards the batch asks
        the database again (with ``answers_only``, only for its automatic-answer counts and the
        next ticket id)."""
        self.write_pending()
        yield
        if answers_only:
            self.auto_recipient.clear()
            self.auto_ticket.clear()
            self.next_ticket = None  # a ticket it made takes the next id
        else:
            self.forget()

    # -- asking once ------------------------------------------------------------------------

    def _prefetch(self) -> None:
        senders = sorted({f.sender for f in self.facts if f.sender})
        self._contacts_of(senders)
        ids = sorted({i for f in self.facts for i in (f.in_reply_to, *f.references) if i})
        self._tickets_of_messages(ids)
        wanted = set(self.by_message.values())
        for f in self.facts:
            wanted.update(self.static_candidates(f).values())
        self._load_tickets(wanted)
        owners = [o.email.lower() for o in self.owners.values() if o is not None]
        self._auto_counts(self.auto_recipient, _AUTO_BY_RECIPIENT, {*senders, *owners})

    def _contacts_of(self, senders: list[str]) -> None:
        if not senders:
            return
        found: dict[str, list[Contact]] = {s: [] for s in senders}
        for c in self.tx.session.scalars(select(Contact).where(Contact.email.in_(senders)).order_by(Contact.id)):
            found[c.email].append(c)
        self.contacts.update(found)
        accounts = {c.account_id for cs in found.values() for c in cs} - set(self.owners)
        if accounts:
            self.accounts.update((a.id, a) for a in self.tx.session.scalars(select(Account).where(
                Account.id.in_(accounts))))
            self.owners.update(dict.fromkeys(accounts))
            for c in self.tx.session.scalars(select(Contact).where(Contact.account_id.in_(accounts),
                                                                   Contact.is_owner.is_(True)).order_by(Contact.id)):
                if self.owners[c.account_id] is None:
                    self.owners[c.account_id] = c

    def _tickets_of_messages(self, ids: list[str]) -> None:
        if not ids:
            return
        found: dict[str, int | None] = dict.fromkeys(ids)
        for mid, tid in self.conn.execute(_BY_OUTBOUND, {"ids": ids}):
            found[mid] = found[mid] or tid
        for mid, tid in self.conn.execute(_BY_MESSAGE, {"ids": ids}):
            found[mid] = tid  # the ticket's own messages first, then the mail we sent
        self.by_message.update(found)

    def _load_tickets(self, ids: Iterable[int | None]) -> None:
        wanted = sorted({i for i in ids if i} - set(self.tickets))
        if not wanted:
            return
        self.tickets.update(dict.fromkeys(wanted))
        for row in self.conn.execute(_TICKETS, {"ids": wanted}):
            self.tickets[row.id] = TicketRow(*row)

    def _auto_counts(self, cache: dict, statement: Any, keys: Iterable[Any]) -> None:
        keys = sorted({k for k in keys if k is not None} - set(cache))
        if not keys:
            return
        cache.update({k: [0, 0] for k in keys})
        for key, total, sent in self.conn.execute(statement, {"since": self.since, "keys": keys}):
            cache[key] = [int(sent or 0), int(total) - int(sent or 0)]

    # -- answers (asked of the database only when the batch did not know) ---------------------

    def contacts_of(self, sender: str) -> list[Contact]:
        if not sender:
            return []
        sender = sender.lower()
        if sender not in self.contacts:
            self._contacts_of([sender])
        return self.contacts[sender]

    def account(self, account_id: int) -> Account:
        if account_id not in self.accounts:
            self.accounts[account_id] = self.tx.session.get(Account, account_id)
        return self.accounts[account_id]

    def owner(self, account_id: int) -> Contact | None:
        if account_id not in self.owners:
            self.owners[account_id] = self.tx.session.scalar(select(Contact).where(
                Contact.account_id == account_id, Contact.is_owner.is_(True)).order_by(Contact.id).limit(1))
        return self.owners[account_id]

    def ticket_of_message(self, message_id: str) -> int | None:
        if message_id not in self.by_message:
            self._tickets_of_messages([message_id])
        return self.by_message[message_id]

    def ticket(self, ticket_id: int) -> TicketRow | None:
        if ticket_id not in self.tickets:
            self._load_tickets([ticket_id])
        return self.tickets[ticket_id]

    def static_candidates(self, facts: MailFacts) -> dict[str, int]:
        """The layers that do not depend on what the batch writes: address token, body marker, tag."""
        found = {"address": refs.ticket_in_address(self.tx, facts.recipient),
                 "body-marker": refs.ticket_in_body(self.tx, facts.text), "subject-tag": refs.tag_in(facts.subject)}
        return {layer: tid for layer, tid in found.items() if tid}

    # -- what the batch's messages add ------------------------------------------------------

    def new_ticket(self, values: dict[str, Any]) -> int:
        """A new ticket's id. On SQLite the row waits with the batch's rows: the batch holds the
        database's one write lock, so the ids after the highest are the batch's to give (SQLite
        gives the same); on PostgreSQL the row is written at once and its sequence gives the id."""
        if not self.sqlite:
            return self.conn.execute(_INSERT_TICKET, values).scalar_one()
        if self.next_ticket is None:
            self.next_ticket = (self.conn.execute(_LAST_TICKET).scalar() or 0) + 1
        ticket_id, self.next_ticket = self.next_ticket, self.next_ticket + 1
        self.pending["new_ticket"].append({**values, "id": ticket_id})
        return ticket_id

    def added_ticket(self, row: TicketRow) -> None:
        self.tickets[row.id] = row
        self.auto_ticket[row.id] = [0, 0]  # a new ticket has had no automatic answer

    def added_message(self, ticket_id: int, message_id: str | None) -> None:
        if message_id and self.by_message.get(message_id) is None:
            self.by_message[message_id] = ticket_id

    def audit(self, action: str, *, subject: tuple[str, Any] | None = None, account_id: int | None = None,
              **detail: Any) -> None:
        """``tx.audit``, written with the message's other rows."""
        kind, ident = subject if subject else (None, None)
        self.pending["audit_event"].append({
            "at": self.tx.now, "actor": self.tx.actor, "action": action, "subject_type": kind,
            "subject_id": None if ident is None else str(ident), "account_id": account_id,
            "detail": _jsonable(detail)})

    def add_message(self, values: dict[str, Any], attachments: list[dict[str, Any]] | None = None) -> bool:
        """A ticket message whose id nothing needs now: it waits and goes out with the batch's rows.

        Its ``attachments`` (rows without their ``message_id``) wait with it; once written, the
        message is found by its inbound mail, which must then be its own. So False (the caller
        writes it at once with :meth:`write_message`) for a message with attachments and no
        inbound mail, or whose inbound mail another waiting message has; and for a message whose
        inbound mail a waiting message with attachments has.
        """
        inbound = values.get("inbound_mail_id")
        if attachments:
            if inbound is None or inbound in self.waiting:
                return False
            self.files[inbound] = attachments
        elif inbound in self.files:
            return False
        self.pending["ticket_message"].append(values)
        self.waiting.add(inbound)
        return True

    def write_message(self, values: dict[str, Any], attachments: list[dict[str, Any]]) -> int:
        """A ticket message written at once, after the waiting rows (a ticket's messages are shown
        in the order of their ids), with its attachments; its id."""
        self.write_pending()
        message_id = self.conn.execute(_INSERT_MESSAGE, values).scalar_one()
        self._attach({message_id: attachments})
        return message_id

    def queue_mail(self, row: dict[str, Any]) -> None:
        """An outbox row built by :func:`handlers.outbox.prepare`: written with the batch's rows,
        skipped there if its dedupe key is already queued, its ``email.queue`` event audited."""
        self.pending["outbound_mail"].append(row)

    def save_ticket(self, ticket: TicketRow) -> None:
        """The ticket's status and times, as they are now, written with the batch's rows (the batch's
        later messages read them from ``ticket``, not from the database)."""
        self.pending["ticket"].append({"ticket_id": ticket.id, "status": ticket.status, "archived": ticket.archived,
                                       "closed_at": ticket.closed_at, "updated_at": ticket.updated_at})

    def watch(self, ticket_id: int, contacts: Iterable[Contact]) -> None:
        self.pending["ticket_watcher"] += [{"ticket_id": ticket_id, "contact_id": c.id} for c in contacts]

    def allow(self, recipient: str, intent: str, ticket_id: int | None) -> bool:
        """:func:`handlers.tickets.auto.allow` on the batch's counts: the same cap, the same hold."""
        recipient = recipient.lower()
        self._auto_counts(self.auto_recipient, _AUTO_BY_RECIPIENT, [recipient])
        self._auto_counts(self.auto_ticket, _AUTO_BY_TICKET, [ticket_id])
        to_recipient = self.auto_recipient[recipient]
        on_ticket = self.auto_ticket[ticket_id] if ticket_id is not None else [0, 0]
        over = max(to_recipient[0], on_ticket[0]) >= self.tx.settings.auto_answer_cap
        held_before = to_recipient[1] + on_ticket[1]
        self.pending["auto_answer"].append({"at": self.tx.now, "recipient": recipient, "ticket_id": ticket_id,
                                            "intent": intent, "sent": not over})
        for counts in (to_recipient, on_ticket):
            counts[1 if over else 0] += 1
        if over:
            if held_before == 0:  # the note tell_staff adds follows the ticket's waiting messages
                self.write_pending()
            auto.tell_staff(self.tx, recipient, intent, ticket_id, held_before, audit=self.audit)
        return not over

    def write_pending(self) -> None:
        """The waiting rows, one executemany per table (in the careful run, inside the message's savepoint)."""
        for name, rows in self.pending.items():
            if not rows:
                continue
            if name == "ticket_message":
                self._write_messages(rows)
            elif name == "outbound_mail":
                self._write_mail(rows)
            else:
                self.conn.execute(_WRITES[name], rows)
            rows.clear()

    def _write_messages(self, rows: list[dict[str, Any]]) -> None:
        """The waiting messages; with RETURNING when some have files, which find theirs by its inbound mail."""
        self.waiting.clear()
        if not self.files:
            self.conn.execute(_WRITES["ticket_message"], rows)
            return
        ids = dict(self.conn.execute(_MESSAGES_BY_MAIL, rows).all())
        self._attach({ids[inbound]: atts for inbound, atts in self.files.items()})
        self.files.clear()

    def _attach(self, files: dict[int, list[dict[str, Any]]]) -> None:
        """Attachment rows (without ``message_id``), by the id of the message they belong to."""
        rows = [{**att, "message_id": message_id} for message_id, atts in files.items() for att in atts]
        if rows:
            self.conn.execute(_INSERT_ATTACHMENT, rows)

    def _write_mail(self, rows: list[dict[str, Any]]) -> None:
        """Outbox rows; their audit events join the batch's (written after them, in the same round)."""
        made = outbox.insert_rows(self.conn, rows)
        if made:
            self.pending["audit_event"] += outbox.queued_audits(self.tx, [r for r in rows if r["message_id"] in made],
                                                                made)
            self.tx.after_commit(self.tx.services.outbox_wakeup.set)
