"""The one place every door hands a message to: store it durably, or say "try later".

:func:`receive` stores one message now (the pipe, IMAP). :class:`GroupCommitter` does the
same for the SMTP door's many sessions at once: a single writer thread takes every message
waiting, stores them in one transaction, and only then lets each session answer 250. One
writer means no race for SQLite's write lock; one commit for many messages means the door's
cost per message stays close to aiosmtpd's own.
"""
from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable, Iterable

from handlers import inbox
from handlers.errors import RenewdeskError, TemporaryFailure

log = logging.getLogger("renewdesk.inbox")


def _store(services: Any, messages: list[inbox.Incoming]) -> list[list[inbox.Stored]]:
    """Store ``messages`` in one transaction; any failure to store becomes TemporaryFailure.

    A Core transaction, not ``services.run``: this is the doors' hot path, and storing raw
    mail needs no ORM objects, audit row or outbox.
    """
    try:
        with services.db.core_transaction() as conn:
            results = inbox.insert_many(conn, messages, services.clock.now())
    except RenewdeskError:
        raise
    except Exception as exc:  # disk full, a bug: the sender must retry, never bounce
        log.exception("could not store %d message(s)", len(messages))
        raise TemporaryFailure(f"could not store the message: {exc.__class__.__name__}") from exc
    services.inbox_wakeup.set()
    for m, stored in zip(messages, results):
        _log_stored(m, stored)
    return results


def _log_stored(m: inbox.Incoming, stored: list[inbox.Stored]) -> None:
    if not log.isEnabledFor(logging.INFO):
        return
    new = any(not s.duplicate for s in stored)
    log.info("%s: %s message from %s for %s (%d bytes)", m.door, "stored" if new else "already had",
             m.mail_from or "<>", ", ".join(s.recipient or "-" for s in stored), len(m.raw))


def receive(services: Any, raw: bytes, *, door: str, mail_from: str, recipients: Iterable[str],
            peer: str = "") -> list[inbox.Stored]:
    """Commit ``raw`` to the inbox (one row per recipient) and return what was stored.

    Raises :class:`TemporaryFailure` for anything that kept it from being stored, whatever
    the cause (database down, disk full, a bug): each door turns that into "try again later"
    (451, exit 75, leave it on the IMAP server), so a message is never lost on our side.
    """
    inbox.require_content(raw)
    return _store(services, [inbox.Incoming(raw, door, mail_from, tuple(recipients), peer)])[0]


class GroupCommitter:
    """One writer thread storing what many SMTP sessions received, a batch per transaction."""

    def __init__(self, services: Any, *, max_batch: int = 64, start: bool = True,
                 linger: float = 0.0, pending: Callable[[], int] | None = None):
        """``pending()`` says how many more messages are on their way (the SMTP sessions in the
        middle of a mail transaction); while there are any, the writer waits up to ``linger``
        seconds for them (as a database's commit delay does), so one commit serves them all."""
        self.services = services
        self.max_batch = max_batch
        self.linger = linger
        self.pending = pending
        self._queue: queue.SimpleQueue[tuple[inbox.Incoming, Any] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="inbox-writer", daemon=True)
        if start:
            self.start()

    def start(self) -> None:
        self._thread.start()

    def submit(self, message: inbox.Incoming) -> Future:
        """A future that resolves to the message's Stored list once its transaction has committed."""
        future: Future = Future()
        self._put(message, future)
        return future

    def submit_async(self, message: inbox.Incoming) -> asyncio.Future:
        """The same for an asyncio caller; a batch wakes the caller's event loop once, not per message."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._put(message, (loop, future))
        return future

    def _put(self, message: inbox.Incoming, waiter: Any) -> None:
        try:
            inbox.require_content(message.raw)  # refused before it could share a batch with others
        except RenewdeskError as exc:
            _settle_all([(waiter, exc)])
            return
        self._queue.put((message, waiter))

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            try:
                batch = self._gather(first)
                self._commit(batch)
            except BaseException as exc:  # noqa: BLE001  (the writer must outlive any one batch)
                log.exception("inbox writer: %s", exc)
                _settle_all([(waiter, TemporaryFailure(f"could not store the message: {exc!r}"))
                             for _, waiter in batch if not _settled(waiter)])

    def _gather(self, first: tuple[inbox.Incoming, Any]) -> list[tuple[inbox.Incoming, Any]]:
        """The batch: what is waiting now, plus what sessions still sending theirs hand over within ``linger``."""
        batch = [first]
        deadline = time.monotonic() + self.linger
        while len(batch) < self.max_batch:
            coming = self.pending() if self.pending and self.linger else 0
            wait = deadline - time.monotonic() if coming > 0 else 0
            try:
                item = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self._queue.put(None)  # stop after this batch
                break
            batch.append(item)
        return batch

    def _commit(self, batch: list[tuple[inbox.Incoming, Any]]) -> None:
        try:
            outcomes: list[Any] = _store(self.services, [m for m, _ in batch])
        except TemporaryFailure as exc:
            if len(batch) > 1 and not _database_down(exc):
                # one bad message must not take the others with it: store them one by one
                for item in batch:
                    self._commit([item])
                return
            outcomes = [exc] * len(batch)
        _settle_all([(waiter, outcome) for (_, waiter), outcome in zip(batch, outcomes)])


def _settle_all(items: list[tuple[Any, Any]]) -> None:
    """Give each waiter its result (or exception): thread futures at once, asyncio ones per loop."""
    by_loop: dict[Any, list[tuple[asyncio.Future, Any]]] = {}
    for waiter, outcome in items:
        if isinstance(waiter, Future):
            if isinstance(outcome, BaseException):
                waiter.set_exception(outcome)
            else:
                waiter.set_result(outcome)
        else:
            loop, future = waiter
            by_loop.setdefault(loop, []).append((future, outcome))
    for loop, futures in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle_in_loop, futures)
        except RuntimeError:
            pass  # the loop has closed: its sessions are gone, their mail is stored all the same


def _settled(waiter: Any) -> bool:
    return waiter.done() if isinstance(waiter, Future) else waiter[1].done()


def _settle_in_loop(futures: list[tuple[asyncio.Future, Any]]) -> None:
    for future, outcome in futures:
        if future.cancelled():
            continue  # the session went away; the message is stored all the same
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)


def _database_down(exc: TemporaryFailure) -> bool:
    return exc.message.startswith("database unavailable")
