"""The inbox processor: drains ``new`` rows: flood control, parsing, the classifier's rules, then
the one operation that acts on the message.

1. own mail → done, no action; 2. bounce → the contact is marked bouncing, the bounce linked
to our mail; 3. auto-reply or bulk → stored on its ticket if it threads, never answered;
4. mail to ``renew+<token>@`` → the renewals operation; 5–7. replies thread onto their
ticket, new mail from a contact opens a ticket on the master account, unknown senders follow
``RENEWDESK_UNKNOWN_SENDERS``. Mail that cannot be read, or whose processing fails, is
quarantined with the reason (Promise 2), and one bad message neither blocks nor spoils the
others in its batch: a batch runs without savepoints, and when a message fails there it is
rolled back and run again with each message in its own savepoint. A database error that is not the
message's fault (down, lock timeout, deadlock) is not a reason: the whole batch is rolled back
and its messages stay new for the next round.

Rows are claimed with ``FOR UPDATE SKIP LOCKED`` so several processors (threads, or
processes on PostgreSQL) never take the same message.

A batch costs few statements: one claims the rows, one judges flood control for all of them,
the messages are parsed once each, :class:`handlers.tickets.batch.Batch` looks up contacts,
threads and answer counts for all of them at once, and at the end one executemany per table
writes the rows the messages added and changed (ticket messages, watchers, automatic answers,
audit events, tickets' status) and one records
every row's outcome (a row's outcome is plain data until then, so a message whose savepoint
is rolled back keeps the outcome that says why).
"""
from __future__ import annotations

import datetime as dt
import functools
import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, select, text, update

from handlers.bounces import record_bounce
from handlers.db import is_transient
from handlers.mail_facts import FactAttachment, MailFacts
from handlers.models import InboundMail, InboundStatus
from handlers.models.base import UTCDateTime
from handlers.renewals.replies import handle_reply as renewal_reply
from handlers.slack_cards import queue_quarantine_card
from handlers.tickets.batch import Batch
from handlers.tickets.intake import receive
from mail_ingest import authres
from mail_ingest.classify import Envelope, Verdict, classify
from mail_ingest.parse import ParsedMail, parse
from mail_ingest.strip import strip_reply

log = logging.getLogger("renewdesk.inbox")
AUTOMATIC = ("auto_reply", "bulk")
_IN = InboundMail.__table__
# what the processor may change on a row, written back for the whole batch in one executemany
OUTCOME = ("status", "classification", "rule", "reason", "throttled", "attempts", "processed_at", "sender",
           "ticket_id", "auth_results", "outbound_mail_id")
_READ = ("id", "raw", "mail_from", "recipient", "received_at", "digest", "message_id", "account_id", *OUTCOME)
_HOUR, _TIME = dt.timedelta(hours=1), UTCDateTime()
# flood control for a whole batch: per row, the sender's other messages (distinct digests) in the hour
# before it, counted up to the cap; the rows' own values come in as a VALUES list
_FLOOD = """WITH b(row_id, mail_from, digest, since, at) AS (VALUES ROWS)
SELECT b.row_id, (SELECT count(*) FROM (SELECT DISTINCT i.digest FROM inbound_mail i
    WHERE i.mail_from = b.mail_from AND i.digest <> b.digest AND i.received_at > b.since
      AND (i.received_at < b.at OR (i.received_at = b.at AND i.id < b.row_id)) LIMIT :cap) AS e)
FROM b"""
_WRITE = update(_IN).where(_IN.c.id == bindparam("row_id")).values({k: bindparam(k) for k in OUTCOME})


@dataclass
class Claimed:
    """A claimed ``inbound_mail`` row as plain data: what the operations read and set."""

    id: int
    raw: bytes
    mail_from: str
    recipient: str
    received_at: dt.datetime
    digest: str
    message_id: str
    account_id: int | None
    status: InboundStatus
    classification: str | None
    rule: str | None
    reason: str | None
    throttled: bool
    attempts: int
    processed_at: dt.datetime | None
    sender: str | None
    ticket_id: int | None
    auth_results: dict[str, Any] | None
    outbound_mail_id: int | None


@dataclass
class Read:
    """What parsing and classifying one message found (no database involved), or why it failed."""

    parsed: ParsedMail | None = None
    verdict: Verdict | None = None
    facts: MailFacts | None = None
    auth: dict[str, str] | None = None
    error: Exception | None = None


_NEW = select(*(_IN.c[name] for name in _READ)).where(_IN.c.status == InboundStatus.new).order_by(_IN.c.id)
_RAW = select(_IN.c.id, _IN.c.raw).where(_IN.c.id.in_(bindparam("ids", expanding=True)))


def _peek(tx: Any, limit: int, after: int = 0) -> list[Claimed]:
    """The next new rows (with an id above ``after``), read without claiming them (a read-only transaction)."""
    return [Claimed(*r) for r in tx.session.connection().execute(_NEW.where(_IN.c.id > after).limit(limit))]


def _claim(tx: Any, limit: int, known: dict[int, Read]) -> list[Claimed]:
    """Claim the next new rows; their raw bytes are read only for rows not already read."""
    q = (select(*(_IN.c[name] for name in _READ if name != "raw")).where(_IN.c.status == InboundStatus.new)
         .order_by(_IN.c.id).limit(limit).with_for_update(skip_locked=True))
    rows = [Claimed(raw=b"", **r._mapping) for r in tx.session.connection().execute(q)]
    missing = [r.id for r in rows if r.id not in known]
    if missing:
        raws = dict(tx.session.connection().execute(_RAW, {"ids": missing}).all())
        for r in rows:
            r.raw = raws.get(r.id, b"")
    return rows


def _judge_floods(tx: Any, rows: list[Claimed]) -> None:
    """Flood control for the whole batch in one statement: a row is throttled when its sender had
    already sent ``sender_hourly_cap`` other messages in the hour before it. Distinct messages
    (digests) count, not rows: one mail to three of our addresses is one. The count stops at
    the cap, and the index covers (sender, time, digest), so a flood costs no more to judge
    than a trickle. Throttled mail is kept, but never answered automatically."""
    judged = [r for r in rows if r.mail_from]
    for r in rows:
        r.throttled = False
    if not judged:
        return
    params: dict[str, Any] = {"cap": tx.settings.sender_hourly_cap}
    size = -(-len(judged) // FLOOD_ROWS_STEP) * FLOOD_ROWS_STEP
    for n in range(size):
        if n < len(judged):
            r = judged[n]
            params.update({f"i{n}": r.id, f"f{n}": r.mail_from, f"d{n}": r.digest, f"s{n}": r.received_at - _HOUR,
                           f"a{n}": r.received_at})
        else:  # padding: a NULL sender equals no row, so it counts nothing, from the index, at once
            params.update({f"i{n}": -1, f"f{n}": None, f"d{n}": None, f"s{n}": None, f"a{n}": None})
    over = {row_id for row_id, n in tx.session.connection().execute(_flood_statement(size), params)
            if n >= params["cap"]}
    for r in judged:
        r.throttled = r.id in over
        if r.throttled:
            log.info("inbox: message %s from %s is over the hourly cap: kept, never auto-answered",
                     r.id, r.mail_from)


FLOOD_ROWS_STEP = 8  # the flood statement's VALUES list is padded to a multiple of this many rows


@functools.lru_cache(maxsize=32)
def _flood_statement(size: int) -> Any:
    """The flood statement for ``size`` rows, built once: each new shape of it costs SQLAlchemy a
    compilation of a few milliseconds, inside the write transaction the doors wait on, and a
    batch has any size up to its limit; padded to steps of FLOOD_ROWS_STEP, there are few shapes."""
    rows_sql = ", ".join(f"(:i{n}, :f{n}, :d{n}, :s{n}, :a{n})" for n in range(size))
    return text(_FLOOD.replace("ROWS", rows_sql)).bindparams(
        *(bindparam(f"{k}{n}", type_=_TIME) for n in range(size) for k in "sa"))


def _read(settings: Any, row: Claimed) -> Read:
    """Parse and classify one message: no database involved, so the processor does it for a batch
    before it opens the batch's write transaction."""
    try:
        parsed = parse(row.raw, max_attachment_bytes=settings.max_attachment_bytes)
        if parsed.unreadable_reason:
            return Read(parsed)
        sender = (parsed.from_addr or "").lower()[:320] or None
        verdict = classify(parsed, Envelope(row.mail_from, row.recipient), settings)
        if verdict.kind in ("own", "bounce"):
            return Read(parsed, verdict)
        auth = authres.results(parsed.headers.get_all("authentication-results"),
                               authres.trusted_ids(settings.trusted_authserv_ids))
        facts = facts_of(row, parsed, automatic=verdict.kind in AUTOMATIC, auth=auth, sender=sender)
        return Read(parsed, verdict, facts, auth)
    except Exception as exc:  # noqa: BLE001  (acted on in the message's own turn: it is quarantined)
        return Read(error=exc)


class _Careful(Exception):
    """A message failed in a batch run without savepoints: the batch is rolled back and run again."""


def _take(tx: Any, limit: int, known: dict[int, Read], careful: bool = False) -> int:
    """Claim and act on a batch. Without ``careful``, messages run without savepoints (which cost
    a tenth of the write transaction, held while the doors wait); the first one that fails rolls
    the whole batch back with :class:`_Careful`, and the caller runs it again with ``careful``:
    each message in its own savepoint, so the failed one is quarantined and the rest are kept."""
    rows = _claim(tx, limit, known)
    if not rows:
        return 0
    _judge_floods(tx, rows)
    reads = [known.get(row.id) or _read(tx.settings, row) for row in rows]
    batch = Batch(tx, [r.facts for r in reads if r.facts is not None and not _to_renewals(r.facts)])
    for row, read in zip(rows, reads):
        row.attempts += 1
        row.processed_at = tx.now
        if read.error is not None:  # reading it failed: nothing of it was written
            log.error("inbox: message %s could not be read", row.id, exc_info=read.error)
            _failed(row, read.error)
        elif not careful:
            try:
                _understand(tx, row, read, batch)  # its waiting rows go out with the batch's, below
            except Exception as exc:
                if is_transient(exc):
                    raise
                raise _Careful(row.id) from exc
        else:
            before = {name: getattr(row, name) for name in OUTCOME}
            try:
                with tx.session.begin_nested():
                    # the SAVEPOINT goes out when the nested transaction first asks for the
                    # connection; the batch writes through a connection it took earlier
                    tx.session.connection()
                    _understand(tx, row, read, batch)
                    batch.write_pending()
            except Exception as exc:  # one message must not block the queue: keep it, say why
                if is_transient(exc):
                    # the database's trouble, not the message's: the batch rolls back, the rows stay
                    # new, and the next round takes them again (the caller sees a TemporaryFailure)
                    raise
                log.exception("inbox: message %s could not be processed", row.id)
                batch.forget(pending=True)  # its savepoint took back what it wrote: the batch asks again
                for name, value in before.items():
                    setattr(row, name, value)
                _failed(row, exc)
        if row.status == InboundStatus.quarantined:
            queue_quarantine_card(tx, row)  # shown to staff at once (Promise 2)
    batch.write_pending()
    tx.session.connection().execute(_WRITE, [{"row_id": r.id, **{k: getattr(r, k) for k in OUTCOME}} for r in rows])
    return len(rows)


def _failed(row: Claimed, exc: BaseException) -> None:
    row.status, row.classification = InboundStatus.quarantined, "error"
    row.reason = f"processing failed: {exc.__class__.__name__}: {exc}"[:2000]


def _understand(tx: Any, row: Claimed, read: Read, batch: Batch) -> None:
    parsed = read.parsed
    if parsed.unreadable_reason:
        row.status, row.classification, row.reason = InboundStatus.quarantined, "unreadable", parsed.unreadable_reason
        log.warning("inbox: message %s quarantined: %s", row.id, parsed.unreadable_reason)
        return
    row.sender = (parsed.from_addr or "").lower()[:320] or None
    verdict = read.verdict
    row.classification, row.rule = verdict.kind, verdict.rule or None
    if verdict.kind == "own":
        row.status, row.reason = InboundStatus.done, "our own mail came back: stored, no action"
        return
    if verdict.kind == "bounce":
        with batch.aside():  # contacts and notes change underneath the batch's answers
            row.status, row.reason = InboundStatus.done, record_bounce(tx, row, verdict.detail)
        return
    row.auth_results = read.auth or None
    if _to_renewals(read.facts):
        with batch.aside():
            _renewal(tx, row, read.facts)
        return
    outcome = receive(tx, row, read.facts, quiet=row.throttled, batch=batch)
    row.status, row.rule, row.reason = InboundStatus(outcome.status), outcome.rule, outcome.reason
    row.ticket_id = outcome.ticket_id


def _to_renewals(facts: MailFacts) -> bool:
    return facts.recipient.split("@")[0].startswith("renew+")


def _renewal(tx: Any, row: Claimed, facts: MailFacts) -> None:
    row.rule = "renewal_reply"
    if facts.automatic:
        row.status, row.reason = InboundStatus.done, "automatic mail to a renewal address: no decision, no answer"
    else:
        token = row.recipient.split("@")[0].split("+", 1)[1]
        row.status, row.reason = InboundStatus.done, renewal_reply(tx, facts, token)


def facts_of(row: Any, parsed: ParsedMail, *, automatic: bool, auth: dict[str, str],
             sender: str | None = None) -> MailFacts:
    """The plain values operations need (``handlers`` never sees parser objects)."""
    return MailFacts(
        inbound_id=row.id, recipient=row.recipient.lower(), sender=(sender if sender is not None else row.sender) or "",
        sender_name=parsed.from_name or "", subject=parsed.subject or "", message_id=parsed.message_id,
        in_reply_to=parsed.in_reply_to, references=tuple(parsed.references), text=parsed.text or "",
        reply_text=strip_reply(parsed.text or ""), received_at=row.received_at, automatic=automatic, auth=auth,
        attachments=tuple(FactAttachment(a.filename or "attachment", a.content_type, a.size, a.content,
                                         a.dropped_reason) for a in parsed.attachments))


PEEK_ROUNDS = 3  # reads of new rows before a batch's write transaction, each for what arrived meanwhile


def process_batch(services: Any, limit: int = 50) -> int:
    """Take up to ``limit`` new messages and move each on; returns how many were taken.

    The messages are read and parsed before the write transaction begins: on SQLite that
    transaction holds the database's one write lock, which the doors need to store mail. What
    the doors store meanwhile is read and parsed too (up to PEEK_ROUNDS reads, up to ``limit``).
    A message another processor claims in between was parsed for nothing, never acted on twice.
    """
    peeked = services.run(_peek, limit, readonly=True)
    if not peeked:
        return 0
    known = {row.id: _read(services.settings, row) for row in peeked}
    for _ in range(PEEK_ROUNDS - 1):
        # mail stored while this batch was parsed is parsed now too, still outside the write lock
        # (a row claimed unread is parsed inside it), and the batch fills up
        more = services.run(_peek, limit - len(known), max(known), readonly=True) if len(known) < limit else []
        if not more:
            break
        known.update((row.id, _read(services.settings, row)) for row in more)
    try:
        taken = services.run(_take, limit, known, actor="system:inbox")
    except _Careful as failed:
        log.info("inbox: message %s failed in its batch: running the batch again, message by message", failed)
        taken = services.run(_take, limit, known, careful=True, actor="system:inbox")
    if taken:
        log.info("inbox: %d message(s) processed (%d read before the write transaction)", taken, len(known))
    return taken

