"""The IMAP door against a real Dovecot: stored first, marked done after, never twice, never lost.

Every test runs on SQLite and on PostgreSQL (the ``services`` fixture). A small TCP proxy
between the door and Dovecot drops connections on demand or after N bytes from the server.
"""
from __future__ import annotations

import logging
import socket
import threading
import time

import pytest
from imapclient import IMAPClient
from sqlalchemy import select

from handlers.errors import TemporaryFailure
from handlers.models import ImapCursor, InboundMail
from handlers.services import Services
from mail_ingest import imap, imap_state
from mail_ingest.imap import ImapDoor
from tests.support.dovecot import PASSWORD

pytestmark = pytest.mark.usefixtures("dovecot_server")


class CuttingProxy:
    """A TCP relay on 127.0.0.1 that can drop every connection now, or after N more bytes from the server."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.pairs: list[tuple[socket.socket, socket.socket]] = []
        self.budget: int | None = None  # server bytes still passed before the cut
        self.accepted = 0
        self.cuts = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self.lock:
                self.pairs.append((client, upstream))
                self.accepted += 1
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, from_server: bool) -> None:
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                break
            if not data:
                break
            exhausted = False
            if from_server:
                with self.lock:
                    if self.budget is not None:
                        data = data[:self.budget]
                        self.budget -= len(data)
                        exhausted = self.budget <= 0
            try:
                dst.sendall(data)
            except OSError:
                break
            if exhausted:
                self.cut()
                break
        for s in (src, dst):
            _close(s)

    def cut_after(self, n: int) -> None:
        with self.lock:
            self.budget = n

    def cut(self) -> None:
        """Drop every open connection, the way a network failure would."""
        with self.lock:
            pairs, self.pairs = self.pairs, []
            self.budget = None
            self.cuts += 1
        for pair in pairs:
            for s in pair:
                _close(s)

    def close(self) -> None:
        _close(self.listener)
        self.cut()


def _close(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    s.close()


@pytest.fixture
def proxy(dovecot_server):
    p = CuttingProxy(dovecot_server.port)
    yield p
    p.close()


@pytest.fixture
def make_door(services, dovecot_server):
    """ImapDoor(Services with these settings changed, sharing the test's database)."""
    doors = []

    def make(user: str, *, folder: str = "INBOX", port: int | None = None, base: Services | None = None,
             **changes) -> ImapDoor:
        base = base or services
        svc = Services(base.settings.replace(**changes), clock=base.clock, db=base.db)
        door = ImapDoor(svc, url=dovecot_server.url(user, folder, port))
        doors.append(door)
        return door

    yield make
    for door in doors:
        door.close()


def message(n: int, user: str, *, padding: int = 0, delivered_to: str | None = None) -> bytes:
    lines = [f"Return-Path: <client{n}@customer.test>",
             *([f"Delivered-To: {delivered_to}"] if delivered_to else []),
             f"From: Client {n} <client{n}@customer.test>", "To: support@desk.example.test",
             f"Subject: Question {n}", f"Message-ID: <{n}.{user}@customer.test>",
             "Date: Sat, 21 Nov 2026 09:00:00 +0000", "", f"Hello, this is message {n}.",
             *("x" * 70 for _ in range(padding // 72))]
    return ("\r\n".join(lines) + "\r\n").encode()


def connect(server, user: str) -> IMAPClient:
    client = IMAPClient(server.host, server.port, ssl=False, timeout=30)
    client.login(user, PASSWORD)
    return client


def append(server, user: str, messages: list[bytes], folder: str = "INBOX") -> None:
    with connect(server, user) as client:
        if not client.folder_exists(folder):
            client.create_folder(folder)
        for raw in messages:
            client.append(folder, raw)


def on_server(server, user: str, folder: str = "INBOX") -> list[tuple[bytes, tuple]]:
    """(raw, flags) of every message in ``folder``, read over a fresh connection."""
    with connect(server, user) as client:
        if not client.folder_exists(folder):
            return []
        client.select_folder(folder, readonly=True)
        uids = client.search()
        data = client.fetch(uids, ["BODY.PEEK[]", "FLAGS"]) if uids else {}
        return [(d[b"BODY[]"], d[b"FLAGS"]) for _, d in sorted(data.items())]


def stored(services, recipient: str | None = None) -> list[InboundMail]:
    def op(tx):
        q = select(InboundMail).where(InboundMail.door == "imap").order_by(InboundMail.id)
        if recipient is not None:
            q = q.where(InboundMail.recipient == recipient)
        return list(tx.session.scalars(q))
    return services.run(op, readonly=True)


def cursor(services, door: ImapDoor) -> ImapCursor | None:
    return services.run(lambda tx: tx.session.get(ImapCursor, door.where.mailbox), readonly=True)


def test_new_messages_are_stored_byte_for_byte_and_marked_seen(services, dovecot_server, imap_user, make_door):
    """Each APPENDed message becomes one inbox row with identical bytes and its envelope, then turns \\Seen."""
    sent = [message(1, imap_user, delivered_to="billing@desk.example.test"), message(2, imap_user),
            message(3, imap_user, padding=4000)]
    append(dovecot_server, imap_user, sent)
    door = make_door(imap_user)

    assert door.run_once() == 3

    rows = stored(services)
    assert [r.raw for r in rows] == sent
    assert {r.door for r in rows} == {"imap"} and {r.peer for r in rows} == {"127.0.0.1"}
    assert [r.mail_from for r in rows] == ["client1@customer.test", "client2@customer.test", "client3@customer.test"]
    # Delivered-To when the delivering MTA wrote one, else the login (an address)
    assert [r.recipient for r in rows] == ["billing@desk.example.test", imap_user, imap_user]
    assert [b"\\Seen" in flags for _, flags in on_server(dovecot_server, imap_user)] == [True] * 3
    assert cursor(services, door).last_uid == 3
    assert door.services.inbox_wakeup.is_set()  # the inbox processor is woken


def test_a_second_pass_imports_nothing_new(services, dovecot_server, imap_user, make_door):
    """A pass with no new UIDs stores nothing; a later message is picked up by the next pass alone."""
    append(dovecot_server, imap_user, [message(1, imap_user), message(2, imap_user)])
    door = make_door(imap_user)
    assert door.run_once() == 2
    assert door.run_once() == 0
    assert len(stored(services)) == 2
    append(dovecot_server, imap_user, [message(3, imap_user)])
    assert door.run_once() == 1
    assert [r.message_id for r in stored(services)] == [f"<{n}.{imap_user}@customer.test>" for n in (1, 2, 3)]


def test_move_after_store_moves_every_message_to_the_folder(services, dovecot_server, imap_user, make_door):
    """With `move:Processed` the folder is created and receives every stored message; INBOX is left empty."""
    sent = [message(n, imap_user) for n in range(1, 6)]
    append(dovecot_server, imap_user, sent)
    door = make_door(imap_user, imap_after="move:Processed", imap_batch=2)

    assert door.run_once() == 5

    assert [r.raw for r in stored(services)] == sent
    assert on_server(dovecot_server, imap_user) == []
    assert [raw for raw, _ in on_server(dovecot_server, imap_user, "Processed")] == sent


def test_delete_after_store_removes_every_message(services, dovecot_server, imap_user, make_door):
    """With `delete` each stored message is expunged from the folder, and only after it is in the inbox."""
    sent = [message(n, imap_user) for n in range(1, 5)]
    append(dovecot_server, imap_user, sent)
    door = make_door(imap_user, imap_after="delete", imap_batch=3)

    assert door.run_once() == 4

    assert [r.raw for r in stored(services)] == sent
    assert on_server(dovecot_server, imap_user) == []


@pytest.mark.slow
def test_connections_cut_at_every_point_of_a_pass_lose_nothing_and_store_nothing_twice(
        services, dovecot_server, make_door, proxy):
    """Cut after N server bytes for N across a whole pass (7 messages, batches of 2): resuming stores each
    message exactly once and leaves none unflagged, wherever the cut fell (login, fetch, commit, STORE)."""
    step, n, completed_uncut, cuts_seen = 300, 0, False, 0
    while not completed_uncut:
        n += step
        user = dovecot_server.new_user()
        sent = [message(i, user, padding=600) for i in range(1, 8)]
        append(dovecot_server, user, sent)
        door = make_door(user, port=proxy.port, imap_batch=2)
        proxy.cut_after(n)
        try:
            door.run_once()
            completed_uncut = True
        except TemporaryFailure:
            raise
        except Exception:  # the connection was cut: whatever imapclient or the socket raised
            cuts_seen += 1
        proxy.cut_after(None)
        for _ in range(3):
            try:
                door.run_once()
                break
            except TemporaryFailure:
                raise
            except Exception:  # a cut that landed just as the last pass ended; once more
                continue
        rows = stored(services, recipient=user)
        assert sorted(r.raw for r in rows) == sorted(sent), f"cut after {n} bytes"
        assert all(b"\\Seen" in flags for _, flags in on_server(dovecot_server, user)), f"cut after {n} bytes"
        assert door.run_once() == 0
    assert cuts_seen >= 10  # the sweep really did cut many passes short


@pytest.mark.parametrize("after", ["seen", "move:Processed", "delete"])
def test_a_cut_between_commit_and_after_action_is_finished_on_the_next_pass(
        services, dovecot_server, imap_user, make_door, proxy, monkeypatch, after):
    """The connection drops right after batch 2 commits: those messages are stored but not marked done;
    the next pass applies the after-action to them without storing them again, then goes on."""
    sent = [message(n, imap_user) for n in range(1, 8)]
    append(dovecot_server, imap_user, sent)
    door = make_door(imap_user, port=proxy.port, imap_batch=2, imap_after=after)
    real_run, commits = door.services.run, []

    def run(op, *args, **kwargs):
        result = real_run(op, *args, **kwargs)
        if op is imap_state._store_batch:
            commits.append(args)
            if len(commits) == 2:
                proxy.cut()
        return result

    monkeypatch.setattr(door.services, "run", run)
    with pytest.raises(Exception) as failed:
        door.run_once()
    assert not isinstance(failed.value, TemporaryFailure)
    assert len(stored(services)) == 4 and cursor(services, door).last_uid == 4
    left = on_server(dovecot_server, imap_user)
    if after == "seen":
        assert [b"\\Seen" in f for _, f in left] == [True, True, False, False, False, False, False]
    else:
        assert [raw for raw, _ in left] == sent[2:]  # 1 and 2 done; 3 and 4 stored but still here

    assert door.run_once() == 3

    rows = stored(services)
    assert sorted(r.raw for r in rows) == sorted(sent)
    assert door.counts["finished"] == 2 and door.counts["duplicate"] == 0
    left = on_server(dovecot_server, imap_user)
    if after == "seen":
        assert all(b"\\Seen" in f for _, f in left) and len(left) == 7
    else:
        assert left == []
    if after.startswith("move:"):
        assert sorted(raw for raw, _ in on_server(dovecot_server, imap_user, "Processed")) == sorted(sent)


def test_a_new_uidvalidity_rescans_the_folder_without_duplicate_rows(services, dovecot_server, imap_user, make_door):
    """After the folder is recreated (same old messages, new UIDVALIDITY, UIDs reused) the door starts over:
    a new message at UID 1 is stored, the old ones land on their existing rows and are marked seen."""
    old = [message(n, imap_user) for n in (1, 2, 3)]
    append(dovecot_server, imap_user, old, folder="Feed")
    door = make_door(imap_user, folder="Feed")
    assert door.run_once() == 3
    before = cursor(services, door).uidvalidity
    door.close()

    with connect(dovecot_server, imap_user) as client:
        client.delete_folder("Feed")
    new = message(4, imap_user)
    append(dovecot_server, imap_user, [new, *old], folder="Feed")

    assert door.run_once() == 1

    assert cursor(services, door).uidvalidity != before
    assert sorted(r.raw for r in stored(services)) == sorted([*old, new])
    assert door.counts["duplicate"] == 3
    assert all(b"\\Seen" in f for _, f in on_server(dovecot_server, imap_user, "Feed"))


def test_an_unreachable_database_stores_nothing_and_leaves_the_mail_unread(
        services, dovecot_server, imap_user, make_door, tmp_path):
    """With the database unreachable a pass raises TemporaryFailure and touches nothing on the server;
    the next pass with a working database imports every message."""
    sent = [message(n, imap_user) for n in (1, 2, 3)]
    append(dovecot_server, imap_user, sent)
    broken = Services(services.settings.replace(database_url=f"sqlite:///{tmp_path}/no/such/dir/x.db"),
                      clock=services.clock)
    try:
        with pytest.raises(TemporaryFailure):
            make_door(imap_user, base=broken).run_once()
    finally:
        broken.close()
    assert stored(services) == []
    assert [b"\\Seen" in f for _, f in on_server(dovecot_server, imap_user)] == [False] * 3

    assert make_door(imap_user).run_once() == 3
    assert [r.raw for r in stored(services)] == sent
    assert all(b"\\Seen" in f for _, f in on_server(dovecot_server, imap_user))


def test_a_commit_that_fails_mid_pass_leaves_that_batch_unread_for_the_next_pass(
        services, dovecot_server, imap_user, make_door, monkeypatch):
    """The database fails on batch 2: batch 1 is stored and seen, batch 2 and later stay unread and are
    neither stored nor acted on; the next pass picks them up."""
    sent = [message(n, imap_user) for n in range(1, 6)]
    append(dovecot_server, imap_user, sent)
    door = make_door(imap_user, imap_batch=2)
    real_run, calls = door.services.run, []

    def run(op, *args, **kwargs):
        if op is imap_state._store_batch:
            calls.append(args)
            if len(calls) == 2:
                raise TemporaryFailure("database unavailable: injected")
        return real_run(op, *args, **kwargs)

    monkeypatch.setattr(door.services, "run", run)
    with pytest.raises(TemporaryFailure):
        door.run_once()
    assert [r.raw for r in stored(services)] == sent[:2]
    assert [b"\\Seen" in f for _, f in on_server(dovecot_server, imap_user)] == [True, True, False, False, False]

    assert door.run_once() == 3
    assert [r.raw for r in stored(services)] == sent
    assert all(b"\\Seen" in f for _, f in on_server(dovecot_server, imap_user))


def test_an_oversized_message_is_skipped_once_and_left_unread(services, dovecot_server, imap_user, make_door, caplog):
    """A message over max_message_bytes is never fetched or stored, stays unread, is logged and counted once,
    and the cursor moves past it so later passes neither retry nor flag it."""
    small1, big, small2 = message(1, imap_user), message(2, imap_user, padding=5000), message(3, imap_user)
    append(dovecot_server, imap_user, [small1, big, small2])
    door = make_door(imap_user, max_message_bytes=2000)

    with caplog.at_level(logging.WARNING, logger="renewdesk.imap"):
        assert door.run_once() == 2
        assert door.run_once() == 0
    assert [r.raw for r in stored(services)] == [small1, small2]
    assert [b"\\Seen" in f for _, f in on_server(dovecot_server, imap_user)] == [True, False, True]
    assert door.counts["too_big"] == 1
    assert sum("over the 2000-byte limit" in r.getMessage() for r in caplog.records) == 1
    assert cursor(services, door).last_uid == 3


def test_run_forever_wakes_on_idle_and_reconnects_after_a_drop(services, dovecot_server, imap_user, make_door,
                                                               proxy, caplog):
    """The loop imports a message announced during IDLE, survives a dropped connection by reconnecting,
    imports the next one, and stops when asked."""
    door = make_door(imap_user, port=proxy.port, imap_poll_seconds=300)
    stop = threading.Event()
    thread = threading.Thread(target=door.run_forever, args=(stop,), daemon=True)

    def wait_for_rows(count: int) -> None:
        deadline = time.monotonic() + 20
        while len(stored(services)) < count:
            assert time.monotonic() < deadline, f"only {len(stored(services))} of {count} messages arrived"
            time.sleep(0.05)

    with caplog.at_level(logging.INFO, logger="renewdesk.imap"):
        thread.start()
        try:
            append(dovecot_server, imap_user, [message(1, imap_user)])
            wait_for_rows(1)   # well before the 300 s poll interval: IDLE woke the loop
            proxy.cut()
            append(dovecot_server, imap_user, [message(2, imap_user)])
            wait_for_rows(2)
        finally:
            stop.set()
            thread.join(timeout=10)
    assert not thread.is_alive()
    assert proxy.accepted >= 2
    assert any("reconnecting in" in r.getMessage() for r in caplog.records)
    assert all(b"\\Seen" in f for _, f in on_server(dovecot_server, imap_user))
    assert door.client is None  # closed on the way out


def test_a_raised_size_limit_never_deletes_a_message_that_was_skipped_unstored(
        services, dovecot_server, imap_user, make_door, caplog):
    """A message once skipped as too big sits behind the cursor; after the limit is raised the catch-up
    finds it lacking from the inbox and leaves it on the server instead of deleting it unstored."""
    small, big = message(1, imap_user), message(2, imap_user, padding=5000)
    append(dovecot_server, imap_user, [small, big])
    assert make_door(imap_user, imap_after="delete", max_message_bytes=2000).run_once() == 1
    assert [raw for raw, _ in on_server(dovecot_server, imap_user)] == [big]

    door = make_door(imap_user, imap_after="delete")  # the default limit: big now fits
    with caplog.at_level(logging.WARNING, logger="renewdesk.imap"):
        assert door.run_once() == 0
        assert door.run_once() == 0
    assert [raw for raw, _ in on_server(dovecot_server, imap_user)] == [big]
    assert [r.raw for r in stored(services)] == [small]
    assert sum("not in the inbox: left alone" in r.getMessage() for r in caplog.records) == 1


def test_a_batch_of_large_messages_is_stored_in_groups_bounded_by_bytes(
        services, dovecot_server, imap_user, make_door, monkeypatch):
    """Within one batch, bodies are fetched and committed in groups of at most BATCH_BYTES (a message
    bigger than that goes alone), so memory and transactions stay bounded; every message still lands once."""
    sent = [message(n, imap_user, padding=1000) for n in range(1, 6)]  # about 1.2 kB each
    append(dovecot_server, imap_user, sent)
    monkeypatch.setattr(imap, "BATCH_BYTES", 2600)
    door = make_door(imap_user, imap_batch=10)
    real_run, groups = door.services.run, []

    def run(op, *args, **kwargs):
        if op is imap_state._store_batch:
            groups.append([m[0] for m in args[3]])
        return real_run(op, *args, **kwargs)

    monkeypatch.setattr(door.services, "run", run)
    assert door.run_once() == 5
    assert groups == [[1, 2], [3, 4], [5]]
    assert [r.raw for r in stored(services)] == sent
    assert all(b"\\Seen" in f for _, f in on_server(dovecot_server, imap_user))
