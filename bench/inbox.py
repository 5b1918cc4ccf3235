"""The inbox processor alone, in one process: what it costs per message, independent of the machine's load.

    python -m bench.inbox [--n 2000] [--batch 50] [--profile 25]

The corpus is bench.ingest's (django-helpdesk's gen_emails.py, the same seeds: about 60% new
tickets, 40% replies citing our acknowledgements), stored straight into a fresh SQLite
database, not sent through the SMTP door. The seed's tickets are made first, not measured.
Then the N messages are processed with :func:`mail_ingest.process.process_batch` (``--batch``
per transaction) while counting:

- SQL statements sent to the database (an executemany counts once), and ORM flushes that wrote
  something, per message;
- CPU milliseconds per message (``time.process_time``) and the wall rate;
- with ``--profile K``, a second fresh run under cProfile: its total ms per message and the K
  functions with the most cumulative time.

Prints one JSON line (and the profile as text after it).
"""
from __future__ import annotations

import argparse
import cProfile
import io
import json
import logging
import pstats
import tempfile
import time
from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.orm import Session

from bench import _ingest_corpus as C
from bench._database import migrated
from bench.ingest import our_tickets
from handlers.importer import import_document
from handlers.inbox import Incoming, store_many
from handlers.services import Services
from handlers.settings import load_settings
from mail_ingest.process import process_batch


def prepared(args: argparse.Namespace, tmp: Path) -> tuple[Services, list[tuple[str, bytes]]]:
    """A database with the seed's tickets made, and the measured messages stored, not processed."""
    peer = C.peer_dir(args.peer_dir)
    url = migrated(f"sqlite:///{tmp}/inbox.db")
    settings = load_settings({}, database_url=url, secret_key="bench-inbox", sender_hourly_cap=1000)
    services = Services(settings)
    seed_pool = C.client_pool(peer, 10_001, args.seed_tickets)
    services.run(import_document, C.account_document([seed_pool, C.client_pool(peer, 1, args.n)]))
    C.generate(peer, tmp / "seed", args.seed_tickets, 10_001, 1)
    seed = C.messages(tmp / "seed")
    _store(services, seed)
    while process_batch(services, limit=args.batch):
        pass
    engine = create_engine(url)
    tickets, refs = our_tickets(engine)
    engine.dispose()
    C.ids_file(tmp / "ids.txt", tickets, seed)
    C.generate(peer, tmp / "measured", args.n, 1, args.seed_tickets + 1, tmp / "ids.txt")
    msgs = C.messages(tmp / "measured")
    C.thread_replies(msgs, refs)
    _store(services, msgs)
    return services, msgs


def _store(services: Services, msgs: list[tuple[str, bytes]]) -> None:
    for i in range(0, len(msgs), 200):
        services.run(store_many, [Incoming(raw, "smtp", frm, (C.RCPT,)) for frm, raw in msgs[i:i + 200]])


def measure(args: argparse.Namespace, profile: cProfile.Profile | None = None) -> dict:
    with tempfile.TemporaryDirectory(prefix="renewdesk-bench-inbox-") as tmp:
        services, msgs = prepared(args, Path(tmp))
        counts = {"statements": 0, "flushes": 0}

        def statement(*_a: object) -> None:
            counts["statements"] += 1

        def flushed(*_a: object) -> None:
            counts["flushes"] += 1

        event.listen(services.db.engine, "before_cursor_execute", statement)
        event.listen(Session, "after_flush", flushed)
        try:
            cpu, wall, done = time.process_time(), time.perf_counter(), 0
            if profile:
                profile.enable()
            while (k := process_batch(services, limit=args.batch)):
                done += k
            if profile:
                profile.disable()
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        finally:
            event.remove(Session, "after_flush", flushed)
        services.close()
    return {"messages": done, "statements_per_msg": round(counts["statements"] / done, 2),
            "flushes_per_msg": round(counts["flushes"] / done, 2), "cpu_ms_per_msg": round(1000 * cpu / done, 3),
            "msgs_per_s": round(done / wall, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description="the inbox processor's cost per message")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--seed-tickets", type=int, default=200)
    ap.add_argument("--batch", type=int, default=50, help="messages per processing transaction")
    ap.add_argument("--profile", type=int, default=0, metavar="K", help="also a cProfile run; show K functions")
    ap.add_argument("--peer-dir")
    args = ap.parse_args()
    # every mail of the corpus copies the one account owner, so past the automatic-answer cap each
    # acknowledgement logs that the owner's copy was held back: true, and one line per message
    logging.getLogger("renewdesk.tickets").setLevel(logging.ERROR)
    line = {"bench": "inbox", "n": args.n, "batch": args.batch, **measure(args)}
    text = ""
    if args.profile:
        prof = cProfile.Profile()
        profiled = measure(args, prof)
        stats = pstats.Stats(prof, stream=(out := io.StringIO()))
        line["profiled_ms_per_msg"] = round(1000 * stats.total_tt / profiled["messages"], 3)
        stats.sort_stats("cumulative").print_stats(args.profile)
        text = out.getvalue()
    print(json.dumps(line), flush=True)
    if text:
        print(text)


if __name__ == "__main__":
    main()
