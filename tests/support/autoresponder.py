"""A client's autoresponder on loopback: an SMTP sink that answers every mail it gets into our SMTP door.

``style`` says how it behaves:

- ``rfc3834``: a proper auto-reply to our Reply-To (``Auto-Submitted: auto-replied``, ``In-Reply-To``,
  "Auto: " + subject);
- ``quoting``: no automatic headers at all, a new mail to our From address whose subject quotes
  ours ("Re: " + subject);
- ``fixed``: no automatic headers, to our From address, a fixed subject of its own and ours quoted
  only in the body (another help desk's acknowledgement: it slips past every loop signal).

Answers are sent from a thread of their own, so the sink's event loop never waits on our door.
"""
from __future__ import annotations

import itertools
import queue
import smtplib
import threading
from email.utils import make_msgid

from tests.support.smtp_sink import Received, SmtpSink

STYLES = ("rfc3834", "quoting", "fixed")
_ids = itertools.count(1)


def answer(got: Received, style: str, sender: str) -> tuple[str, bytes]:
    """The autoresponder's answer to one mail it received: (envelope recipient, message)."""
    original = got.message
    subject = str(original["Subject"] or "")
    to = (original["Reply-To"] if style == "rfc3834" else None) or original["From"]
    to = to.addresses[0].addr_spec
    lines = [f"From: Auto <{sender}>", f"To: {to}",
             f"Message-ID: {make_msgid(f'auto{next(_ids)}', 'client.test')}", "Date: Sat, 21 Nov 2026 09:00:00 +0000"]
    if style == "rfc3834":
        lines += [f"Subject: Auto: {subject}", "Auto-Submitted: auto-replied", f"In-Reply-To: {original['Message-ID']}"]
        body = "I am away and will read your message later."
    elif style == "quoting":
        lines += [f"Subject: Re: {subject}"]
        body = "Thanks, we got your message and will come back to you."
    else:
        lines += ["Subject: Thank you for writing to Acme"]
        body = f'We received your message "{subject}" and will answer within two days.'
    lines += ["Content-Type: text/plain; charset=utf-8", "", body, ""]
    return to, "\r\n".join(lines).encode()


class AutoResponder:
    """``with AutoResponder(door_port, style, sender) as auto:``; ``auto.sink.url`` is our relay."""

    def __init__(self, door_port: int, style: str, sender: str):
        assert style in STYLES
        self.door_port, self.style, self.sender = door_port, style, sender
        self.outbox: queue.Queue = queue.Queue()
        self.answered = 0
        self.errors: list[BaseException] = []
        self.sink = SmtpSink(on_data=self.outbox.put)
        self.thread = threading.Thread(target=self._send_answers, name="autoresponder", daemon=True)

    def _send_answers(self) -> None:
        while True:
            got = self.outbox.get()
            if got is None:
                return
            try:
                to, raw = answer(got, self.style, self.sender)
                with smtplib.SMTP("127.0.0.1", self.door_port, timeout=10) as smtp:
                    smtp.sendmail(self.sender, [to], raw)
                self.answered += 1
            except Exception as exc:  # noqa: BLE001 - the test asserts there were none
                self.errors.append(exc)
            finally:
                self.outbox.task_done()

    def drained(self) -> None:
        """Wait until every mail received so far has been answered into the door."""
        self.outbox.join()

    def __enter__(self) -> "AutoResponder":
        self.sink.__enter__()
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.outbox.put(None)
        self.thread.join(timeout=10)
        self.sink.__exit__(*exc)
