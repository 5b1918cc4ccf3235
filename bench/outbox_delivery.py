"""Outbox throughput: queue N templated mails, deliver them to a local SMTP sink, print the rates.

    python -m bench.outbox_delivery [--n 2000] [--database-url URL]

Prints the queueing rate (render + insert, one transaction each, as operations do) and the
delivery rate (claim, hand over, send, mark sent) over one reused connection.
"""
from __future__ import annotations

import argparse
import json
import time


from bench._database import migrated
from handlers.delivery import Deliverer
from handlers.outbox import queue_email
from handlers.services import Services
from handlers.settings import load_settings
from tests.support.smtp_sink import SmtpSink


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--database-url")
    args = ap.parse_args()
    url = migrated(args.database_url)
    with SmtpSink() as sink:
        services = Services(load_settings({}, database_url=url, secret_key="bench", outbound_smtp_url=sink.url))
        ctx = {"subject": "Your invoice", "body": "Hello,\n\nplease find your invoice.", "recipient_name": "Ann"}
        t0 = time.perf_counter()
        for i in range(args.n):
            services.run(lambda tx: queue_email(tx, "staff_message", ctx, to=[f"client{i}@example.test"]))
        queued = time.perf_counter() - t0
        t1 = time.perf_counter()
        sent = 0
        while sent < args.n:
            sent += Deliverer(services).deliver_due(limit=500).sent
        delivered = time.perf_counter() - t1
        assert len(sink.messages) == args.n, "the sink must have every mail exactly once"
        services.close()
    print(json.dumps({
        "bench": "outbox_delivery", "database": url.split(":")[0], "n": args.n,
        "queue_per_second": round(args.n / queued, 1),
        "deliver_per_second": round(args.n / delivered, 1),
        "deliver_ms_per_mail": round(1000 * delivered / args.n, 2),
    }))


if __name__ == "__main__":
    main()
