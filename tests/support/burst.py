"""A burst of client mail at the SMTP door run as a real process, and what must hold afterwards.

- :func:`corpus`: N messages from the contacts of one imported account, each with its own
  Message-ID; some are replies to a given ticket (its subject tag), the rest open tickets.
- :class:`DoorProcess`: `renewdesk smtp` (or `renewdesk worker`) as a subprocess logging to a
  file, which a test can SIGKILL and start again on the same port.
- :class:`Senders`: sending MTAs: threads with one SMTP connection each that retry every
  message not answered 250 (refused or reset connection, 4xx) until it is, and record the
  answers. One of them can be told to lose the answer to its next message: it sends the
  message, waits, and drops the connection without reading the reply, as happens when the
  server dies between its commit and the 250 reaching the sender.
- :func:`check_stored`, :func:`check_processed`: the counts in the database.
"""
from __future__ import annotations

import hashlib
import json
import queue
import re
import signal
import smtplib
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import text

from tests.support import proc
from tests.support.servers import wait_for_port

RCPT = "support@desk.example.test"
ACCOUNT = "burst-clients"
_STORED_AS = re.compile(r"Stored as (\d+)")


@dataclass(frozen=True)
class Message:
    mid: str
    sender: str
    raw: bytes
    reply: bool

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.raw).hexdigest()


def contacts(n: int = 100) -> list[str]:
    return [f"client{i:03d}@clients.test" for i in range(n)]


def import_account(env: dict[str, str], folder: Path, addresses: list[str]) -> None:
    """One account whose contacts may open tickets, through `renewdesk import` as an operator does."""
    doc = {"accounts": [{"ref": ACCOUNT, "name": "Burst Clients Ltd", "currency": "EUR",
                         "owner": {"email": "owner@clients.test", "name": "Owner"},
                         "contacts": [{"email": a, "name": a.split("@")[0], "permissions": ["tickets"]}
                                      for a in addresses]}]}
    path = folder / "account.json"
    path.write_text(json.dumps(doc))
    done = proc.run("import", str(path), env=env, timeout=120)
    assert done.returncode == 0, done.stderr.decode()


def corpus(n: int, addresses: list[str], *, reply_to: int | None = None, reply_every: int = 5,
           tag: str = "burst") -> list[Message]:
    """``n`` distinct messages; with ``reply_to`` every ``reply_every``-th one carries that ticket's tag."""
    out = []
    for i in range(n):
        sender = addresses[i % len(addresses)]
        reply = reply_to is not None and i % reply_every == 0
        subject = f"Re: [#T-{reply_to}] the first question" if reply else f"Question {i} from {sender}"
        mid = f"<{tag}-{i}@clients.test>"
        raw = "\r\n".join([f"From: Client {i % len(addresses)} <{sender}>", f"To: {RCPT}", f"Subject: {subject}",
                           f"Message-ID: {mid}", "Date: Sat, 21 Nov 2026 09:00:00 +0000",
                           "Content-Type: text/plain; charset=utf-8", "",
                           f"Message {i} of the burst.", "Please have a look.", ""]).encode()
        out.append(Message(mid, sender, raw, reply))
    return out


class DoorProcess:
    """One `renewdesk` process (``smtp`` by default) logging to a file; start, SIGKILL, start again."""

    def __init__(self, env: dict[str, str], log: Path, *args: str, port: int | None = None):
        self.env, self.log, self.args, self.port = env, log, args or ("smtp",), port
        self.popen: subprocess.Popen | None = None
        self.kills = 0

    def start(self, timeout: float = 60) -> None:
        with open(self.log, "ab") as out:
            self.popen = subprocess.Popen(proc.command(*self.args), env=self.env, cwd=proc.ROOT,
                                          stdout=out, stderr=subprocess.STDOUT)
        if self.port is None:
            return
        deadline = time.monotonic() + timeout
        while True:
            assert self.popen.poll() is None, (f"renewdesk {self.args[0]} exited {self.popen.returncode}:\n"
                                               f"{self.output()}")
            try:
                wait_for_port(self.port, timeout=0.5)
                return
            except TimeoutError:
                assert time.monotonic() < deadline, f"renewdesk {self.args[0]} did not listen:\n{self.output()}"

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind, as when the machine or the OOM killer takes the process."""
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(30)
        self.kills += 1

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM and the exit code (killed if it does not stop in time)."""
        if self.popen is None or self.popen.poll() is not None:
            return self.popen.returncode if self.popen else 0
        self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
            raise AssertionError(f"renewdesk {self.args[0]} did not stop on SIGTERM:\n{self.output()[-3000:]}")

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def wait_log(self, line: str, timeout: float = 60) -> None:
        """Until the process has logged ``line`` (it is then surely past its start-up)."""
        deadline = time.monotonic() + timeout
        while line not in self.output():
            assert self.alive(), f"renewdesk {self.args[0]} exited {self.popen.returncode}:\n{self.output()[-3000:]}"
            assert time.monotonic() < deadline, f"renewdesk {self.args[0]} never logged {line!r}"
            time.sleep(0.05)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def stop_all(*processes: DoorProcess) -> tuple[int | None, ...]:
    """SIGTERM each (even when an earlier one would not stop); their exit codes, None for a hang."""
    codes = []
    for p in processes:
        try:
            codes.append(p.stop())
        except AssertionError:
            codes.append(None)
    return tuple(codes)


@dataclass
class Outcome:
    """What the sending side saw for one message."""

    answer: str = ""                 # the 250 line, once it came
    stored_as: int | None = None     # the row id the 250 names
    failures: list[str] = field(default_factory=list)  # every attempt that did not end in 250


class Senders:
    """``n`` threads, one SMTP connection each, sending their share of ``messages`` with retries."""

    def __init__(self, port: int, messages: list[Message], n: int = 4, *, timeout: float = 240):
        self.port, self.messages = port, messages
        self.deadline = time.monotonic() + timeout
        self.outcomes = {m.mid: Outcome() for m in messages}
        self.errors: list[str] = []            # a 5xx or running out of time: the test fails
        self.codes: Counter[int] = Counter()   # every non-250 answer by code
        self.disconnects = 0
        self._lock = threading.Lock()
        self._lose_next = threading.Event()
        self._lost: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._resume = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(messages[i::n],), name=f"sender-{i}", daemon=True)
                        for i in range(n)]

    def start(self) -> "Senders":
        for t in self.threads:
            t.start()
        return self

    def join(self) -> None:
        for t in self.threads:
            t.join(max(0.0, self.deadline - time.monotonic()) + 5)
        assert not any(t.is_alive() for t in self.threads), "the senders did not finish in time"
        assert not self.errors, self.errors[:10]

    def answered(self) -> int:
        return sum(1 for o in self.outcomes.values() if o.answer)

    def wait_answered(self, count: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while self.answered() < count:
            assert time.monotonic() < deadline, f"only {self.answered()} answered, waited for {count}: {self.errors}"
            assert not self.errors, self.errors
            time.sleep(0.02)

    def lose_next_answer(self, timeout: float = 30) -> str:
        """The first sender sends its next message but does not read the reply until :meth:`resume`;
        returns that message's Message-ID once its last byte has gone out."""
        self._resume.clear()
        self._lose_next.set()
        try:
            return self._lost.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("the first sender never sent a message whose answer it was to lose") from None

    def resume(self) -> None:
        """The sender waiting on a lost answer drops its connection (unread reply and all) and retries."""
        self._resume.set()

    # -- one sending MTA --------------------------------------------------------------------

    def _run(self, part: list[Message]) -> None:
        conn: smtplib.SMTP | None = None
        first = threading.current_thread().name == "sender-0"
        for m in part:
            out = self.outcomes[m.mid]
            while not out.answer:
                if time.monotonic() > self.deadline:
                    self._error(f"{m.mid}: not answered 250 in time; attempts: {out.failures[-5:]}")
                    return
                try:
                    if conn is None:
                        conn = smtplib.SMTP("127.0.0.1", self.port, local_hostname="mta.clients.test", timeout=30)
                    if first and self._lose_next.is_set():
                        self._lose_next.clear()
                        self._send_and_lose(conn, m)
                        conn = None
                        out.failures.append("answer lost: connection dropped after the message was sent")
                        continue
                    code, reply = self._send(conn, m)
                except smtplib.SMTPResponseException as exc:
                    code, reply = exc.smtp_code, exc.smtp_error.decode(errors="replace")
                except OSError as exc:  # refused, reset, closed: the server is gone; try again
                    out.failures.append(f"{exc.__class__.__name__}: {exc}")
                    with self._lock:
                        self.disconnects += 1
                    conn = _drop(conn)
                    time.sleep(0.05)
                    continue
                if code == 250:
                    out.answer = reply
                    found = _STORED_AS.search(reply)
                    out.stored_as = int(found.group(1)) if found else None
                    continue
                out.failures.append(f"{code} {reply}")
                with self._lock:
                    self.codes[code] += 1
                if code >= 500:
                    self._error(f"{m.mid}: refused for good: {code} {reply}")
                    return
                conn = _drop(conn)  # 4xx: a sending MTA tries again a little later
                time.sleep(0.05)
        _drop(conn)

    @staticmethod
    def _send(conn: smtplib.SMTP, m: Message) -> tuple[int, str]:
        conn.ehlo_or_helo_if_needed()
        for code, reply in (conn.mail(m.sender), conn.rcpt(RCPT)):
            if not 200 <= code < 300:
                return code, reply.decode(errors="replace")
        code, reply = conn.data(m.raw)
        return code, reply.decode(errors="replace")

    def _send_and_lose(self, conn: smtplib.SMTP, m: Message) -> None:
        conn.ehlo_or_helo_if_needed()
        assert conn.mail(m.sender)[0] == 250 and conn.rcpt(RCPT)[0] == 250
        code, reply = conn.docmd("DATA")
        assert code == 354, (code, reply)
        conn.send(re.sub(rb"(?m)^\.", b"..", m.raw) + b".\r\n")  # the raw ends in CRLF
        self._lost.put(m.mid)
        self._resume.wait(120)
        conn.sock.close()  # the 250 (if the server wrote one) is never read
        conn.sock = None

    def _error(self, line: str) -> None:
        with self._lock:
            self.errors.append(line)


def _drop(conn: smtplib.SMTP | None) -> None:
    if conn is not None:
        try:
            conn.close()
        except OSError:
            pass
    return None


def row_id(engine, mid: str, timeout: float = 30) -> int:  # noqa: ANN001
    """The inbound row of ``mid`` once it is committed."""
    deadline = time.monotonic() + timeout
    while True:
        with engine.connect() as c:
            found = c.execute(text("SELECT id FROM inbound_mail WHERE message_id = :m"), {"m": mid}).scalars().all()
        if found:
            assert len(found) == 1, (mid, found)
            return found[0]
        assert time.monotonic() < deadline, f"{mid} was never committed"
        time.sleep(0.02)


def wait_processed(engine, rows: int, timeout: float, worker: "DoorProcess | None" = None) -> None:  # noqa: ANN001
    """Until ``rows`` messages are stored and none is left ``new`` (failing early if ``worker`` died)."""
    deadline = time.monotonic() + timeout
    while True:
        with engine.connect() as c:
            stored, new = c.execute(text(
                "SELECT count(*), coalesce(sum(CASE WHEN status = 'new' THEN 1 ELSE 0 END), 0) "
                "FROM inbound_mail")).one()
        if stored >= rows and not new:
            return
        assert worker is None or worker.alive(), f"the worker exited:\n{worker.output()[-3000:]}"
        assert time.monotonic() < deadline, f"{new} of {stored} stored messages still unprocessed after {timeout}s"
        time.sleep(0.1)


def row_ticket(engine, mid: str) -> int:  # noqa: ANN001
    """The ticket the processor filed message ``mid`` on."""
    with engine.connect() as c:
        return c.execute(text("SELECT ticket_id FROM inbound_mail WHERE message_id = :m"), {"m": mid}).scalar_one()


def check_stored(engine, messages: list[Message], senders: Senders, *, others: int = 0) -> None:  # noqa: ANN001
    """Every message answered 250 and stored exactly once, as the row its 250 named, bytes intact
    (``others``: how many other rows the table holds)."""
    assert not senders.errors, senders.errors[:10]
    unanswered = [m.mid for m in messages if not senders.outcomes[m.mid].answer]
    assert not unanswered, f"{len(unanswered)} messages never answered 250: {unanswered[:5]}"
    with engine.connect() as c:
        everything = c.execute(text("SELECT id, message_id, digest, raw FROM inbound_mail")).all()
    ours = {m.mid for m in messages}
    rows = [r for r in everything if r.message_id in ours]
    by_mid = Counter(r.message_id for r in rows)
    by_digest = Counter(r.digest for r in everything)
    twice = [mid for mid, k in by_mid.items() if k > 1]
    assert not twice, f"{len(twice)} messages stored more than once: {twice[:5]}"
    assert not [d for d, k in by_digest.items() if k > 1], "the same bytes stored twice"
    missing = {m.mid for m in messages} - set(by_mid)
    assert not missing, f"{len(missing)} answered 250 but not stored: {sorted(missing)[:5]}"
    assert len(rows) == len(messages) and len(everything) == len(messages) + others, (len(everything), others)
    ids = {r.message_id: r.id for r in rows}
    for r in rows:
        assert hashlib.sha256(r.raw).hexdigest() == r.digest
    wrong = [(m.mid, senders.outcomes[m.mid].stored_as, ids[m.mid]) for m in messages
             if senders.outcomes[m.mid].stored_as != ids[m.mid]]
    assert not wrong, f"a 250 named another row than the one stored: {wrong[:5]}"
    digests = {r.message_id: r.digest for r in rows}
    changed = [m.mid for m in messages if digests[m.mid] != m.digest]
    assert not changed, f"stored bytes differ from what was sent: {changed[:5]}"


def check_processed(engine, messages: list[Message], *, reply_ticket: int | None = None,  # noqa: ANN001
                    earlier_tickets: int = 0) -> dict:
    """Each stored message done, with exactly one ticket message: a new ticket's first, or a reply."""
    with engine.connect() as c:
        status = dict(c.execute(text("SELECT status, count(*) FROM inbound_mail GROUP BY status")).all())
        per_mail = Counter(dict(c.execute(text(
            "SELECT i.message_id, count(t.id) FROM inbound_mail i LEFT JOIN ticket_message t"
            " ON t.inbound_mail_id = i.id GROUP BY i.message_id")).all()))
        tickets = c.execute(text("SELECT count(*) FROM ticket")).scalar_one()
        on_reply_ticket = c.execute(text(
            "SELECT count(*) FROM ticket_message WHERE ticket_id = :t AND inbound_mail_id IS NOT NULL"),
            {"t": reply_ticket or -1}).scalar_one()
    ours = {m.mid for m in messages}
    assert set(status) == {"done"}, status
    assert ours <= set(per_mail), f"not stored: {sorted(ours - set(per_mail))[:5]}"
    not_one = {mid: k for mid, k in per_mail.items() if mid in ours and k != 1}
    assert not not_one, f"{len(not_one)} messages without exactly one ticket message: {list(not_one.items())[:5]}"
    replies = sum(m.reply for m in messages)
    assert tickets == earlier_tickets + len(messages) - replies, (tickets, earlier_tickets, len(messages), replies)
    if reply_ticket is not None:
        assert on_reply_ticket == replies + 1, (on_reply_ticket, replies)  # + the message that opened it
    return {"status": status, "tickets": tickets, "replies": replies}
