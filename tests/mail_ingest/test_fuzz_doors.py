"""Generated and mutated mail through the doors themselves: `renewdesk pipe` and the SMTP door.

What they prove, for every generated input, on SQLite and PostgreSQL:
- the door never crashes and never answers "try later" while the database is up: each message is
  stored (exit 0 / ``250 2.0.0 Stored as ID``) byte for byte, or refused with a clear reason
  (exit 65 / ``552 5.3.4`` for a message over the size limit, an empty message);
- nothing is lost: every id the door named is a row holding the message's bytes, and after the
  real processor has run each row is done, waiting, or quarantined with its reason, never left
  ``new`` and never quarantined by the processor's own catch-all (classification ``error``).

The pipe is fuzzed through the function `renewdesk pipe` runs (:func:`mail_ingest.pipe.pipe`, with
standard input replaced), since a process per example would cost a second each; a smaller sample
goes through the real command in a subprocess. The SMTP door is the real aiosmtpd server on a
loopback socket, fed by smtplib. Example counts: ``tests.support.mail_fuzz`` (``DB_EXAMPLES`` per
database for each door; ``SUBPROCESS_EXAMPLES`` for the subprocess sample).
"""
from __future__ import annotations

import io
import re
import smtplib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from handlers.models import InboundMail, InboundStatus
from mail_ingest.pipe import EX_DATAERR, EX_OK, pipe
from mail_ingest.process import process_batch
from tests.support import proc
from tests.support.mail_fuzz import DB_EXAMPLES, SUBPROCESS_EXAMPLES, any_message

LIMIT = 10_000  # small enough that some corpus mail is over it (about 1 in 20) and refused
RECIPIENTS = ["support@desk.example.test", "billing@desk.example.test", "renew+abcdefghijklmnop@desk.example.test",
              "support+t1.0123456789@desk.example.test", "SUPPORT@Desk.Example.Test"]
SENDERS = ["", "anna@northwind.test", "mailer-daemon@mx.example.test", "m@mallory.test", "a+b=c@x.test"]

# a quarter of the examples are pushed over the limit, so the refusal is fuzzed too
messages = st.one_of(any_message, any_message, any_message, any_message.map(lambda raw: raw + b"x" * LIMIT))


class Borrowed:
    """The test's services handed to the pipe, which closes what it opens: closing this one leaves
    the fixture's open for the next example."""

    def __init__(self, services):
        self._services = services

    def __getattr__(self, name):
        return getattr(self._services, name)

    def close(self) -> None:
        pass


def settled(services, ids: list[int], expected_raw: bytes) -> None:
    """Every stored row holds the message, and the processor moves each to a state with a reason."""
    while process_batch(services, limit=10):
        pass
    with services.db.transaction(readonly=True) as s:
        rows = list(s.scalars(select(InboundMail).where(InboundMail.id.in_(ids))))
    assert len(rows) == len(set(ids)), (ids, [r.id for r in rows])
    for row in rows:
        assert row.raw == expected_raw, row.id
        assert row.status in (InboundStatus.done, InboundStatus.waiting, InboundStatus.quarantined), row.status
        if row.status == InboundStatus.quarantined:
            assert row.reason and row.reason.strip()
        assert row.classification != "error", (row.reason, row.raw[:300])


def _stored_ids(text: str) -> list[int]:
    found = re.search(r"stored as ([\d, ]+)", text, re.IGNORECASE)
    assert found, text
    return [int(i) for i in found.group(1).replace(",", " ").split()]


def check_pipe_outcome(services, raw: bytes, code: int, said: str) -> None:
    """What an MTA gets back from the pipe, and what the database holds afterwards."""
    if len(raw) > LIMIT:
        assert code == EX_DATAERR and f"message refused: larger than {LIMIT} bytes" in said, (code, said)
    elif not raw.strip():
        assert code == EX_DATAERR and "message refused: standard input was empty" in said, (code, said)
    else:
        assert code == EX_OK, (code, said)
        settled(services, _stored_ids(said), raw)


@pytest.fixture
def limited(services):
    services.settings = services.settings.replace(max_message_bytes=LIMIT)
    return services


@settings(max_examples=DB_EXAMPLES)
@given(raw=messages, recipient=st.one_of(st.none(), st.sampled_from(RECIPIENTS)),
       sender=st.one_of(st.none(), st.sampled_from(SENDERS)))
def test_the_pipe_stores_or_refuses_every_message_with_a_reason(limited, raw, recipient, sender):
    said: list[str] = []
    code = pipe(limited.settings, lambda: Borrowed(limited), io.BytesIO(raw), recipient=recipient, sender=sender,
                err=said.append)
    check_pipe_outcome(limited, raw, code, "\n".join(said))


@settings(max_examples=SUBPROCESS_EXAMPLES)
@given(raw=messages, recipient=st.sampled_from(RECIPIENTS))
def test_the_pipe_command_stores_or_refuses_a_sample_with_a_reason(limited, raw, recipient):
    """The same through the real `renewdesk pipe` process, as an MTA runs it."""
    env = proc.env_for(DATABASE_URL=limited.settings.database_url, RENEWDESK_SECRET_KEY="test-secret",
                       RENEWDESK_MAIL_DOMAIN="desk.example.test", RENEWDESK_MAX_MESSAGE_BYTES=str(LIMIT))
    done = proc.run("pipe", "--recipient", recipient, env=env, input=raw, timeout=60)
    check_pipe_outcome(limited, raw, done.returncode, done.stderr.decode("utf-8", "replace"))


@pytest.fixture
def small_door(limited, request):
    return request.getfixturevalue("door")


@settings(max_examples=DB_EXAMPLES)
@given(raw=messages, recipient=st.sampled_from(RECIPIENTS), sender=st.sampled_from(SENDERS))
def test_the_smtp_door_stores_or_refuses_every_message_with_a_reason(limited, small_door, raw, recipient, sender):
    # An MTA sends lines ending in CRLF (RFC 5321 2.3.8), dot-stuffed after each; smtplib would stuff
    # after a bare LF too, which a server rightly does not undo. So the lines go as an MTA sends them.
    wire = re.sub(rb"\r?\n", b"\r\n", raw)
    with smtplib.SMTP("127.0.0.1", small_door.port, timeout=30) as client:
        client.ehlo("mta.fuzz.test")
        assert client.mail(sender)[0] == 250
        assert client.rcpt(recipient)[0] == 250
        code, text = client.data(wire)
    said = text.decode("utf-8", "replace")
    # smtplib ends the data with CRLF when the message does not: that is what was received
    received = wire if wire.endswith(b"\r\n") else wire + b"\r\n"
    if len(received) > LIMIT:
        assert (code, said) == (552, f"5.3.4 Message too big for this system (the limit is {LIMIT} bytes)")
    else:
        assert code == 250 and said.startswith("2.0.0 Stored as"), (code, said)
        settled(limited, _stored_ids(said), received)
