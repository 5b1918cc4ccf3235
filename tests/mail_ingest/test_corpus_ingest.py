"""Every real-world message of the corpora goes through the store and the processor on both
databases, and each ends done, held for staff (waiting) or quarantined, always with a reason:
nothing crashes, nothing is dropped."""

import pytest
from sqlalchemy import select

from handlers.inbox import Incoming, store_many
from handlers.models import InboundMail, InboundStatus
from mail_ingest.process import process_batch

from tests.support.corpus import CORPUS
SKIP_NAMES = {"LICENSE", "MIT-LICENSE", "SOURCE.md", "expected.json", ".gitattributes"}


def corpus_messages() -> list[bytes]:
    files = [p for folder in ("ruby-mail", "sisimai-set-of-emails") for p in sorted((CORPUS / folder).rglob("*"))
             if p.is_file() and p.name not in SKIP_NAMES]
    return [p.read_bytes() for p in files]


@pytest.mark.skipif(not CORPUS.exists(), reason=f"the mail corpus is not at {CORPUS} (set RENEWDESK_CORPUS)")
def test_every_corpus_message_is_stored_and_ends_with_a_reason(services):
    raws = [raw for raw in corpus_messages() if raw]  # the doors refuse empty input outright
    assert len(raws) > 900
    for start in range(0, len(raws), 100):
        chunk = raws[start:start + 100]
        services.run(store_many, [Incoming(raw, "pipe", "", ("support@desk.example.test",)) for raw in chunk])
    while process_batch(services, limit=200):
        pass
    with services.db.transaction(readonly=True) as s:
        rows = list(s.scalars(select(InboundMail)))
    assert len({r.digest for r in rows}) == len(set(raws))          # every distinct message is kept
    outcomes = {r.status for r in rows}
    assert outcomes <= {InboundStatus.done, InboundStatus.waiting, InboundStatus.quarantined}
    assert all(r.reason for r in rows)
    crashed = [(r.id, r.reason) for r in rows if r.classification == "error"]
    assert crashed == []
