"""The IMAP door: poll one folder, store every new message, and only then mark it done.

Per batch of new UIDs (Promise 1, "accepted means stored"):

1. fetch the sizes, then the bodies with ``BODY.PEEK[]`` (peeking leaves ``\\Seen`` alone, so
   a message we fail to store still looks new on the server);
2. store the batch and advance the cursor (mailbox, UIDVALIDITY, last UID) in one
   transaction, so the cursor never passes a message the inbox does not hold;
3. then apply the after-action: ``\\Seen``, move to a folder, or delete.

A connection lost between 2 and 3 leaves stored messages without their after-action. The
next pass finds them at or below the cursor (still unseen, or still there), checks that the
inbox holds them, and finishes the job without storing them again.

A message larger than ``max_message_bytes`` is never fetched: it is logged, counted, left
unflagged on the server for a person to deal with, and the cursor moves past it so it is not
reconsidered every pass (the catch-up above searches with ``SMALLER`` for the same reason).
"""
from __future__ import annotations

import imaplib
import logging
import select
import ssl
import threading
import time
from collections import Counter
from typing import Any, Iterator

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError

from handlers.errors import RenewdeskError, SettingsError, TemporaryFailure
from handlers import inbox
from mail_ingest.imap_state import _cursor, _known, _set_cursor, _store_batch, envelope_of, parse_url

log = logging.getLogger("renewdesk.imap")

ACTOR = "door:imap"
SEEN, DELETED = b"\\Seen", b"\\Deleted"
TIMEOUT = 60.0        # seconds a command may take before the connection counts as lost
MAX_BACKOFF = 60.0
BATCH_BYTES = 32 << 20  # bodies fetched and stored together at most (one message alone may exceed it)
IDLE_LIMIT = 29 * 60  # RFC 2177: servers may drop an IDLE older than 30 minutes


def _chunks(items: list[int], size: int) -> Iterator[list[int]]:
    for i in range(0, len(items), max(1, size)):
        yield items[i:i + size]


def _buffered(client: IMAPClient) -> bool:
    """True when server lines already wait in imaplib's read buffer (imapclient has no public way to ask)."""
    reader = getattr(getattr(client, "_imap", None), "file", None)
    if not hasattr(reader, "peek"):
        return False
    sock = client.socket()
    sock.setblocking(False)  # peek must not wait for the network, only look at what was read
    try:
        return bool(reader.peek(1))
    except OSError:
        return False
    finally:
        sock.settimeout(TIMEOUT)


def _is_network(exc: BaseException) -> bool:
    return isinstance(exc, (OSError, imaplib.IMAP4.error, IMAPClientError))


class ImapDoor:
    """Poll one IMAP folder into the inbox: ``run_once`` is one pass, ``run_forever`` the process."""

    def __init__(self, services: Any, *, url: str | None = None):
        self.services = services
        url = url or services.settings.imap_url
        if not url:
            raise SettingsError("RENEWDESK_IMAP_URL is not set: there is no mailbox to poll")
        self.where = parse_url(url)
        try:
            self._tls = ssl.create_default_context(cafile=self.where.cafile)
        except (OSError, ssl.SSLError) as exc:  # a wrong cafile is a setting to fix, not a reason to retry
            raise SettingsError(f"RENEWDESK_IMAP_URL: cafile {self.where.cafile!r}: {exc}") from None
        self.after = services.settings.imap_after
        self.client: IMAPClient | None = None
        self.counts: Counter[str] = Counter()  # stored, duplicate, too_big, finished
        # (uidvalidity, uid) at or below the cursor that the inbox lacks: never acted on, asked once
        self._unknown: set[tuple[int, int]] = set()

    # -- connection ----------------------------------------------------------------------------

    def _connect(self) -> IMAPClient:
        w = self.where
        client = IMAPClient(w.host, w.port, ssl=w.tls, ssl_context=self._tls if w.tls else None, timeout=TIMEOUT)
        try:
            how = "TLS" if w.tls else "plain text"
            if not w.tls and client.has_capability("STARTTLS"):
                client.starttls(self._tls)
                how = "STARTTLS"
            client.login(w.user, w.password)
            target = self.after[5:] if self.after.startswith("move:") else None
            if target and not client.folder_exists(target):
                client.create_folder(target)
                log.info("imap: created folder %r for processed mail", target)
        except BaseException:
            self._shutdown(client)
            raise
        log.info("imap: connected to %s:%d as %s (%s)", w.host, w.port, w.user, how)
        return client

    @staticmethod
    def _shutdown(client: IMAPClient) -> None:
        try:
            client.shutdown()
        except Exception:  # already gone: nothing left to close
            pass

    def _drop(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            self._shutdown(client)

    def close(self) -> None:
        """Log out (or just hang up when the connection is already broken)."""
        client, self.client = self.client, None
        if client is None:
            return
        try:
            client.logout()
        except Exception:
            self._shutdown(client)

    # -- one pass ------------------------------------------------------------------------------

    def run_once(self) -> int:
        """One pass over the folder; returns how many messages were new to the inbox.

        Raises TemporaryFailure when the database could not store (nothing was acted on) and the
        IMAP error when the connection broke (it is dropped; the next call reconnects).
        """
        try:
            if self.client is None:
                self.client = self._connect()
            return self._pass(self.client)
        except TemporaryFailure:
            raise
        except BaseException:
            self._drop()
            raise

    def _pass(self, client: IMAPClient) -> int:
        w, settings = self.where, self.services.settings
        uidvalidity = int(client.select_folder(w.folder)[b"UIDVALIDITY"])
        cursor = self.services.run(_cursor, w.mailbox, readonly=True, actor=ACTOR)
        if cursor is None or cursor[0] != uidvalidity:
            if cursor is not None:
                log.warning("imap: %s has a new UIDVALIDITY (%d, was %d): reading it again from the start; "
                            "messages already stored stay single", w.mailbox, uidvalidity, cursor[0])
            self.services.run(_set_cursor, w.mailbox, uidvalidity, 0, actor=ACTOR)
            last = 0
        else:
            last = cursor[1]
        if last:
            self._finish(client, uidvalidity, last)
        # "N:*" always matches the highest UID, even one below N (RFC 3501 6.4.8)
        new = sorted(u for u in client.search(["UID", f"{last + 1}:*"]) if u > last)
        return sum(self._take(client, uidvalidity, chunk) for chunk in _chunks(new, settings.imap_batch))

    def _take(self, client: IMAPClient, uidvalidity: int, uids: list[int]) -> int:
        """Fetch, store and act on one batch of new UIDs; returns how many were new to the inbox."""
        limit = self.services.settings.max_message_bytes
        sizes = client.fetch(uids, ["RFC822.SIZE"])
        fresh, group, total = 0, [], 0
        for uid in uids:
            size = sizes.get(uid, {}).get(b"RFC822.SIZE")  # None: expunged by another client meanwhile
            if size is not None and size > limit:
                self.counts["too_big"] += 1
                log.warning("imap: UID %d in %s is %d bytes, over the %d-byte limit: not imported, left unread "
                            "on the server", uid, self.where.mailbox, size, limit)
                size = None
            # a batch of large messages is split so that memory and one transaction stay bounded
            if group and total + (size or 0) > BATCH_BYTES:
                fresh += self._store_group(client, uidvalidity, group)
                group, total = [], 0
            group.append((uid, size))
            total += size or 0
        return fresh + self._store_group(client, uidvalidity, group)

    def _store_group(self, client: IMAPClient, uidvalidity: int, group: list[tuple[int, int | None]]) -> int:
        small = [uid for uid, size in group if size is not None]
        bodies = client.fetch(small, ["BODY.PEEK[]"]) if small else {}
        messages = []
        for uid in small:
            raw = bodies.get(uid, {}).get(b"BODY[]")
            if raw:  # missing: expunged by another client since the SEARCH
                messages.append((uid, raw, *envelope_of(raw, self.where.user)))
        done = self._commit(uidvalidity, group[-1][0], messages)  # the cursor passes skipped UIDs too
        self._act(client, [uid for uid, _, _ in done])
        fresh = 0
        for uid, sender, stored in done:
            new = any(not s.duplicate for s in stored)
            fresh += new
            self.counts["stored" if new else "duplicate"] += 1
            log.info("imap: %s UID %d from %s (%s)", "stored" if new else "already had", uid, sender or "<>",
                     ", ".join(str(s.id) for s in stored))
        return fresh

    def _commit(self, uidvalidity: int, upto: int, messages: list[tuple]) -> list:
        try:
            return self.services.run(_store_batch, self.where.mailbox, uidvalidity, upto, messages,
                                     self.where.host, actor=ACTOR)
        except RenewdeskError:
            raise
        except Exception as exc:  # whatever kept it from the inbox, the messages stay on the server
            log.exception("imap: could not store %d message(s) from %s", len(messages), self.where.mailbox)
            raise TemporaryFailure(f"could not store the messages: {exc.__class__.__name__}") from exc

    def _finish(self, client: IMAPClient, uidvalidity: int, last: int) -> None:
        """Apply the after-action to stored messages at or below the cursor that still lack it."""
        limit = self.services.settings.max_message_bytes
        state = "UNSEEN" if self.after == "seen" else "ALL"
        pending = [u for u in client.search(["UID", f"1:{last}", state, "SMALLER", limit + 1])
                   if u <= last and (uidvalidity, u) not in self._unknown]
        for chunk in _chunks(pending, self.services.settings.imap_batch):
            data = client.fetch(chunk, ["BODY.PEEK[]", "FLAGS"])
            keys = {}
            for uid in chunk:
                raw = data.get(uid, {}).get(b"BODY[]")
                if raw:
                    digest = inbox.digest(raw)
                    keys[uid] = (inbox.message_id_of(raw, digest), digest)
            known = self.services.run(_known, list(set(keys.values())), readonly=True, actor=ACTOR) if keys else set()
            ok = [u for u in keys if keys[u] in known]
            for uid in (u for u in keys if keys[u] not in known):
                # below the cursor yet not stored (e.g. skipped under a smaller size limit): never act blindly
                self._unknown.add((uidvalidity, uid))
                log.warning("imap: UID %d in %s is behind the cursor but not in the inbox: left alone",
                            uid, self.where.mailbox)
            # copied and flagged before the connection broke: only the expunge is missing
            flagged = [u for u in ok if self.after != "seen" and DELETED in data[u].get(b"FLAGS", ())]
            self._act(client, [u for u in ok if u not in flagged])
            if flagged:
                self._expunge(client, flagged)
            if ok:
                self.counts["finished"] += len(ok)
                log.info("imap: finished the after-action (%s) for %d message(s) stored on an earlier pass",
                         self.after, len(ok))

    def _act(self, client: IMAPClient, uids: list[int]) -> None:
        """Mark ``uids`` done the configured way; only ever called once the inbox holds them."""
        if not uids:
            return
        if self.after == "seen":
            client.add_flags(uids, [SEEN], silent=True)
        elif self.after.startswith("move:") and client.has_capability("MOVE"):
            client.move(uids, self.after[5:])  # RFC 6851: atomic, no copy left behind
        else:
            if self.after.startswith("move:"):
                client.copy(uids, self.after[5:])
            client.add_flags(uids, [DELETED], silent=True)
            self._expunge(client, uids)

    @staticmethod
    def _expunge(client: IMAPClient, uids: list[int]) -> None:
        if client.has_capability("UIDPLUS"):
            client.uid_expunge(uids)  # RFC 4315: only these messages
        else:
            client.expunge()  # without UIDPLUS this also removes anything else flagged \Deleted

    # -- the process -----------------------------------------------------------------------------

    def run_forever(self, stop: threading.Event) -> None:
        """Pass after pass until ``stop`` is set, waiting with IDLE between passes; back off after errors."""
        log.info("imap: polling %s (after storing: %s)", self.where.mailbox, self.after)
        delay = 1.0
        while not stop.is_set():
            try:
                self.run_once()
                delay = 1.0
                self._wait(stop)
                continue
            except TemporaryFailure as exc:
                log.warning("imap: could not store (%s); messages stay on the server untouched; retrying in %.0fs",
                            exc.message, delay)
            except Exception as exc:
                self._drop()
                log.warning("imap: %s: %s: %s; reconnecting in %.0fs", self.where.mailbox,
                            exc.__class__.__name__, exc, delay, exc_info=not _is_network(exc))
            stop.wait(delay)
            delay = min(delay * 2, MAX_BACKOFF)
        self.close()
        log.info("imap: stopped (%s)", ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items())) or "idle")

    def _wait(self, stop: threading.Event) -> None:
        """Until the server announces news, the poll interval passes or ``stop`` is set."""
        seconds = min(self.services.settings.imap_poll_seconds, IDLE_LIMIT)
        client = self.client
        if client is None or not client.has_capability("IDLE"):
            stop.wait(seconds)
            return
        deadline = time.monotonic() + seconds
        client.idle()
        # news that came with the IDLE's "+" sits in imaplib's buffer already, where select() cannot see it
        if _buffered(client):
            deadline = 0
        while not stop.is_set() and (left := deadline - time.monotonic()) > 0:
            # short slices, so a stop request is noticed within a second
            if not select.select([client.socket()], [], [], min(1.0, left))[0]:
                continue
            news = client.idle_check(timeout=0)
            if not news:  # readable but nothing to read: the server hung up
                raise ConnectionError("the server closed the connection during IDLE")
            if any(r[:1] != (b"OK",) for r in news):  # EXISTS, EXPUNGE, ...: not just "still here"
                break
        client.idle_done()
