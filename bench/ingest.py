"""Mail in to tickets out: the peer's generated corpus through our SMTP door until it is all committed.

    python -m bench.ingest [--n 2000] [--senders 8] [--until tickets|processed]
                           [--peer-dir DIR] [--peer-venv VENV] [--no-peer] [--keep]

The corpus is django-helpdesk's benchmark generator (gen_emails.py in --peer-dir, else
RENEWDESK_PEER_DIR, else ../shared/peers/django-helpdesk), run as the peer's bench.py runs it:
seed mails with seed 10001, then N mails with seed 1 of which about 40% are replies to the
seeded tickets. What one run does:

1. a fresh SQLite database (`renewdesk db upgrade`), one master account (`renewdesk import`)
   whose contacts are the generator's two client pools, so every mail is from a known contact;
2. `renewdesk smtp` and `renewdesk worker` as subprocesses (outgoing mail to a local sink),
   each time waited for until both have started (idle: see Renewdesk._settle), since a
   running service has its start-up behind it;
3. not timed: the seed's new-ticket mails through the door until processed and their
   acknowledgements delivered, so the measured run starts with nothing queued (otherwise the
   seed's acknowledgements, long overdue, would be delivered during the measured burst: the
   delivery loop's hold lets mail wait only so long); then both processes are restarted, so
   their peak RSS is the measured batch's;
4. the N mails are generated with --reply-ids listing our tickets and their openers; a reply
   cites the ticket's acknowledgement in In-Reply-To/References, as a client's mailer does
   (the generator cites a Message-ID only the peer world has; the peer threads by its subject
   tag instead); nothing else in the mail changes;
5. timed: --senders threads (8: a sending MTA opens several connections to one destination,
   Postfix up to 20), one SMTP connection each, send all N; the clock stops when every
   stored row has left status `new` (--until processed) and, with --until tickets (default),
   when the tickets and `ticket_ack` outbox rows expected from the new-ticket mails exist;
6. not timed: the script waits until every acknowledgement has reached the sink and prints
   when that was (acks_delivered_s, from the first mail sent): the delivery loop holds due
   mail back while the inbox has a backlog (RENEWDESK_OUTBOX_BURST_HOLD_SECONDS).

Prints JSON lines: the seed, the measured run (msgs/s, wall, accept-only rate, peak RSS as
VmHWM and CPU milliseconds per message of each renewdesk process, and of this script itself as
"bench": its senders and sink stand for the world outside but run on the same cores; the counts
it checked) and, when the peer's virtualenv exists
(bench/setup_peer.sh makes .peer/venv), the peer's bench.py on the same N and seed, and the
ratio ours/peer (target: at least 10). The peer's rate is taken without its start-up, like
ours: its bench times Django's start-up on an empty folder too, and that is taken off.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import smtplib
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from sqlalchemy import create_engine, text

from bench import _ingest_corpus as C
from tests.support import proc
from tests.support.servers import free_port, wait_for_port
from tests.support.smtp_sink import SmtpSink

TARGET_RATIO = 10.0
FINAL = ("done", "waiting", "quarantined")
SETTLE_QUIET_S = 0.5   # a started process uses less than
SETTLE_CPU_S = 0.03    # this much CPU in that long


class Renewdesk:
    """`renewdesk smtp` and `renewdesk worker` as the Procfile runs them, logging to files."""

    def __init__(self, env: dict[str, str], port: int, logs: Path):
        self.env, self.port, self.logs, self.procs = env, port, logs, {}

    def start(self) -> None:
        for name in ("smtp", "worker"):
            log = open(self.logs / f"{name}.log", "ab")
            self.procs[name] = subprocess.Popen(proc.command(name), env=self.env, cwd=proc.ROOT,
                                                stdout=log, stderr=subprocess.STDOUT)
            log.close()
        wait_for_port(self.port, timeout=30)
        self._settle()

    def _settle(self, quiet: float = SETTLE_QUIET_S, timeout: float = 60) -> None:
        """Wait until both processes have started: the door's port answers before the worker has
        finished importing and starting its loops and scheduler (a quarter of a second of CPU),
        and the clock must not count a start-up a running service has long behind it. Started
        means idle: each used less than SETTLE_CPU_S of CPU in the last ``quiet`` seconds
        (the worker's idle polling of the inbox uses far less)."""
        deadline = time.monotonic() + timeout
        last = self.cpu_seconds()
        while True:
            time.sleep(quiet)
            for name, p in self.procs.items():
                if p.poll() is not None:
                    sys.exit(f"bench.ingest: renewdesk {name} exited {p.returncode}; see {self.logs}/{name}.log")
            now = self.cpu_seconds()
            if all(now[k] - last[k] < SETTLE_CPU_S for k in now):
                return
            if time.monotonic() > deadline:
                sys.exit(f"bench.ingest: renewdesk did not settle in {timeout:.0f} s: CPU {last} -> {now}")
            last = now

    def peak_rss_mb(self) -> dict[str, float]:
        """VmHWM (the resident set's high-water mark) of each process, from /proc."""
        out = {}
        for name, p in self.procs.items():
            for line in Path(f"/proc/{p.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    out[name] = round(int(line.split()[1]) / 1024, 1)
        return out

    def cpu_seconds(self) -> dict[str, float]:
        """User + system CPU time each process has used so far, from /proc."""
        tick = os.sysconf("SC_CLK_TCK")
        out = {}
        for name, p in self.procs.items():
            fields = Path(f"/proc/{p.pid}/stat").read_text().rsplit(")", 1)[1].split()
            out[name] = (int(fields[11]) + int(fields[12])) / tick
        return out

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for name, p in self.procs.items():
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs = {}


def _own_cpu() -> float:
    """This process's CPU seconds so far (its sender threads and its SMTP sink)."""
    t = os.times()
    return t.user + t.system


def counts(engine) -> dict:  # noqa: ANN001
    with engine.connect() as c:
        status = dict(c.execute(text("SELECT status, count(*) FROM inbound_mail GROUP BY status")).all())
        return {
            "rows": sum(status.values()), "status": status,
            "unprocessed": sum(v for k, v in status.items() if k not in FINAL),
            "tickets": c.execute(text("SELECT count(*) FROM ticket")).scalar_one(),
            "acks": c.execute(text("SELECT count(*) FROM outbound_mail WHERE intent = 'ticket_ack'")).scalar_one(),
        }


def details(engine) -> dict:  # noqa: ANN001
    """What the run left behind, for the report (not part of the completion condition)."""
    with engine.connect() as c:
        q = lambda sql: c.execute(text(sql)).all()  # noqa: E731
        return {
            "classification": {k or "-": v for k, v in q(
                "SELECT classification, count(*) FROM inbound_mail GROUP BY classification")},
            "rule": {k or "-": v for k, v in q("SELECT rule, count(*) FROM inbound_mail GROUP BY rule")},
            "throttled": c.execute(text("SELECT count(*) FROM inbound_mail WHERE throttled")).scalar_one(),
            "ticket_messages": c.execute(text("SELECT count(*) FROM ticket_message")).scalar_one(),
            "acks_sent": c.execute(text(
                "SELECT count(*) FROM outbound_mail WHERE intent = 'ticket_ack' AND status = 'sent'")).scalar_one(),
            "quarantine_reasons": [r for (r,) in q(
                "SELECT DISTINCT reason FROM inbound_mail WHERE status = 'quarantined' LIMIT 3")],
        }


def our_tickets(engine) -> tuple[list[tuple[int, str]], dict[int, tuple[str | None, str]]]:  # noqa: ANN001
    """(ticket id, opener's email) per ticket, and ticket id -> (client's Message-ID, ack's Message-ID)."""
    with engine.connect() as c:
        tickets = [(i, e or "") for i, e in c.execute(text(
            "SELECT t.id, c.email FROM ticket t LEFT JOIN contact c ON c.id = t.opened_by_contact_id ORDER BY t.id"))]
        refs = {i: (orig, ack) for i, orig, ack in c.execute(text(
            "SELECT t.id,"
            " (SELECT m.message_id FROM ticket_message m WHERE m.ticket_id = t.id AND m.kind = 'client'"
            "  ORDER BY m.id LIMIT 1),"
            " (SELECT o.message_id FROM outbound_mail o WHERE o.ticket_id = t.id AND o.intent = 'ticket_ack'"
            "  ORDER BY o.id LIMIT 1) FROM ticket t")) if ack}
    return tickets, refs


def send_all(port: int, msgs: list[tuple[str, bytes]], senders: int) -> tuple[float, int]:
    """Send with ``senders`` threads, one connection each; (seconds, refused). Nothing is retried."""
    refused, lock = [0], threading.Lock()

    def one(part: list[tuple[str, bytes]]) -> None:
        bad = 0
        with smtplib.SMTP("127.0.0.1", port, local_hostname="mta.bench.invalid", timeout=120) as smtp:
            for sender, raw in part:
                try:
                    bad += bool(smtp.sendmail(sender, [C.RCPT], raw))
                except smtplib.SMTPResponseException:
                    bad += 1
        with lock:
            refused[0] += bad

    threads = [threading.Thread(target=one, args=(msgs[i::senders],)) for i in range(senders)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0, refused[0]


def acks_delivered(engine, acks: int, t0: float, timeout: float) -> float | None:  # noqa: ANN001
    """Seconds from the first mail sent until all ``acks`` acknowledgements had reached the sink
    (after the clock stopped; the delivery loop holds back during a burst). None: not in ``timeout``."""
    q = text("SELECT count(*) FROM outbound_mail WHERE intent = 'ticket_ack' AND status = 'sent'")
    while time.perf_counter() - t0 < timeout:
        with engine.connect() as c:
            if c.execute(q).scalar_one() >= acks:
                return round(time.perf_counter() - t0, 3)
        time.sleep(0.05)
    return None


def wait_until(engine, done, timeout: float, settle: float) -> tuple[bool, dict, float]:  # noqa: ANN001
    """Poll the counts until ``done(counts)``; give up after ``timeout``, or ``settle`` seconds after
    everything is processed with no count moving (the expected rows are then never coming)."""
    start, last, still_since = time.perf_counter(), None, None
    while True:
        now_counts = counts(engine)
        now = time.perf_counter()
        if done(now_counts):
            return True, now_counts, now
        if now_counts != last:
            last, still_since = now_counts, now
        elif now_counts["unprocessed"] == 0 and now - still_since > settle:
            return False, now_counts, now
        if now - start > timeout:
            return False, now_counts, now
        time.sleep(0.02)


def main() -> int:
    ap = argparse.ArgumentParser(description="mail in to tickets out, against django-helpdesk")
    ap.add_argument("--n", type=int, default=2000, help="measured messages (the peer's sizes: 200, 2000)")
    ap.add_argument("--seed", type=int, default=1, help="the measured corpus's seed; the seed mails use 10000+SEED")
    ap.add_argument("--seed-tickets", type=int, default=200)
    ap.add_argument("--senders", type=int, default=8, help="concurrent SMTP connections")
    ap.add_argument("--until", choices=("tickets", "processed"), default="tickets",
                    help="tickets: every expected ticket and acknowledgement committed (default); "
                         "processed: every stored message out of status new")
    ap.add_argument("--inbox-poll", type=float, default=0.05,
                    help="RENEWDESK_INBOX_POLL_SECONDS of the worker (the door is another process)")
    ap.add_argument("--sender-hourly-cap", type=int, default=1000,
                    help="RENEWDESK_SENDER_HOURLY_CAP: the corpus's Dates span days, but it arrives in seconds, "
                         "and a few clients send 40 mails; the default cap (30) would hold their mail unanswered")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--settle", type=float, default=5, help="seconds to wait for tickets once all is processed")
    ap.add_argument("--peer-dir")
    ap.add_argument("--peer-venv")
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (database, logs, corpus)")
    args = ap.parse_args()
    peer = C.peer_dir(args.peer_dir)
    tmp = Path(tempfile.mkdtemp(prefix="renewdesk-bench-ingest-"))
    try:
        ok, ours = run_ours(args, peer, tmp)
        peer_line = peer_side(args, peer, tmp)
        if peer_line.get("msgs_per_s"):
            peer_rate = peer_running_rate(peer_line)
            ratio = round(ours["msgs_per_s"] / peer_rate, 1)
            print(json.dumps({"bench": "ingest", "summary": True, "n": args.n, "ours_msgs_per_s": ours["msgs_per_s"],
                              "peer_msgs_per_s": peer_rate, "peer_msgs_per_s_with_startup": peer_line["msgs_per_s"],
                              "ratio": ratio,
                              "target_ratio_ge_10": ratio >= TARGET_RATIO, "ours_ok": ok,
                              "peer_ok": peer_line.get("ok")}), flush=True)
        return 0 if ok else 1
    finally:
        if args.keep:
            print(f"bench.ingest: kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def run_ours(args: argparse.Namespace, peer: Path, tmp: Path) -> tuple[bool, dict]:
    url, port, logs = f"sqlite:///{tmp}/ingest.db", free_port(), tmp / "logs"
    logs.mkdir()
    seed_pool = C.client_pool(peer, 10_000 + args.seed, args.seed_tickets)
    doc = tmp / "account.json"
    doc.write_text(json.dumps(C.account_document([seed_pool, C.client_pool(peer, args.seed, args.n)])))
    with SmtpSink() as sink:
        env = proc.env_for(DATABASE_URL=url, RENEWDESK_SMTP_PORT=str(port), RENEWDESK_OUTBOUND_SMTP_URL=sink.url,
                           RENEWDESK_INBOX_POLL_SECONDS=str(args.inbox_poll), RENEWDESK_SECRET_KEY="bench-ingest",
                           RENEWDESK_SENDER_HOURLY_CAP=str(args.sender_hourly_cap),
                           RENEWDESK_LOG_LEVEL="WARNING", PORT=str(free_port()))
        for step in (("db", "upgrade"), ("import", str(doc))):
            done = proc.run(*step, env=env, timeout=300)
            if done.returncode:
                sys.exit(f"bench.ingest: renewdesk {' '.join(step)} failed: {done.stderr.decode()[-800:]}")
        engine = create_engine(url)
        servers = Renewdesk(env, port, logs)
        try:
            # --- the seed, not timed
            C.generate(peer, tmp / "seed", args.seed_tickets, 10_000 + args.seed, 1)
            seed_msgs = C.messages(tmp / "seed")
            servers.start()
            send_all(port, seed_msgs, 1)  # one sender: tickets numbered in the seed's order, like the peer's
            seeded, seed_counts, _ = wait_until(
                engine, lambda c: c["rows"] == len(seed_msgs) and c["unprocessed"] == 0, args.timeout, args.settle)
            seed_delivered = acks_delivered(engine, seed_counts["acks"], time.perf_counter(), args.timeout)
            servers.stop()
            tickets, refs = our_tickets(engine)
            ids_source = C.ids_file(tmp / "ticket-ids.txt", tickets, seed_msgs)
            print(json.dumps({"bench": "ingest", "phase": "seed", "mails": len(seed_msgs), **seed_counts,
                              "acks_delivered_s": seed_delivered, "reply_ids_from": ids_source}), flush=True)
            if not seeded or seed_delivered is None:
                sys.exit("bench.ingest: the seed mails were not all processed and acknowledged; see --keep's logs")
            if args.until == "tickets" and seed_counts["tickets"] != args.seed_tickets:
                print(json.dumps({"bench": "ingest", "ok": False, "error": (
                    f"the seed's {args.seed_tickets} new-ticket mails made {seed_counts['tickets']} tickets: "
                    "the ticket flow is not complete; `--until processed` measures what exists")}), flush=True)
                return False, {"msgs_per_s": 0}

            # --- the measured batch
            gen = C.generate(peer, tmp / "measured", args.n, args.seed, args.seed_tickets + 1, tmp / "ticket-ids.txt")
            msgs = C.messages(tmp / "measured")
            replies, rethreaded = C.thread_replies(msgs, refs)
            new = len(msgs) - replies
            expect_rows, expect_tickets = len(seed_msgs) + len(msgs), seed_counts["tickets"] + new
            expect_acks = seed_counts["acks"] + new
            before = counts(engine)

            def complete(c: dict) -> bool:
                processed = c["rows"] == expect_rows and c["unprocessed"] == 0
                return processed and (args.until == "processed"
                                      or (c["tickets"] >= expect_tickets and c["acks"] >= expect_acks))

            servers.start()
            cpu0, own0 = servers.cpu_seconds(), _own_cpu()
            t0 = time.perf_counter()
            accept_s, refused = send_all(port, msgs, args.senders)
            finished, after, t_end = wait_until(engine, complete, args.timeout, args.settle)
            wall = t_end - t0
            cpu = {k: round(1000 * (v - cpu0[k]) / len(msgs), 3) for k, v in servers.cpu_seconds().items()}
            cpu["bench"] = round(1000 * (_own_cpu() - own0) / len(msgs), 3)
            rss = servers.peak_rss_mb()
            delivered_s = acks_delivered(engine, after["acks"], t0, args.timeout) if finished else None
            servers.stop()
        finally:
            servers.stop()
        ok = (finished and not refused and after["tickets"] - before["tickets"] == new
              if args.until == "tickets" else finished and not refused)
        more = details(engine)
        engine.dispose()
    line = {
        "bench": "ingest", "phase": "measured", "ok": ok, "until": args.until, "n": len(msgs),
        "senders": args.senders, "wall_s": round(wall, 3), "msgs_per_s": round(len(msgs) / wall, 1),
        "accept_s": round(accept_s, 3), "accept_msgs_per_s": round(len(msgs) / accept_s, 1), "refused": refused,
        "acks_delivered_s": delivered_s,
        "peak_rss_mb": rss, "peak_rss_mb_total": round(sum(rss.values()), 1), "cpu_ms_per_msg": cpu,
        "generated": gen["kinds"], "replies": replies, "replies_rethreaded": rethreaded,
        "expected": {"rows": expect_rows, "new_tickets": new, "tickets": expect_tickets, "acks": expect_acks},
        "got": {"rows": after["rows"], "status": after["status"], "new_tickets": after["tickets"] - before["tickets"],
                "tickets": after["tickets"], "acks": after["acks"]},
        **more, "inbox_poll_s": args.inbox_poll, "sender_hourly_cap": args.sender_hourly_cap,
    }
    print(json.dumps(line), flush=True)
    return ok, line


def peer_running_rate(line: dict) -> float:
    """The peer's rate without its start-up, as ours is measured: its bench times one import
    process (Django's start-up included) and the same process on an empty folder; the second is
    taken off the first (the peer's own msgs_per_s_excl_startup)."""
    wall, startup = line["wall_s"], line.get("baseline_empty_wall_s") or 0.0
    return round(line["n"] / max(wall - startup, 1e-9), 1)


def peer_side(args: argparse.Namespace, peer: Path, tmp: Path) -> dict:
    if args.no_peer:
        return {}
    venv = C.peer_venv(args.peer_venv, peer)
    if venv is None:
        print(json.dumps({"bench": "ingest", "peer": "not set up", "how": (
            "bench/setup_peer.sh (or `make peer`) makes .peer/venv from the peer's requirements.txt; "
            "or give --peer-venv")}), flush=True)
        return {}
    if args.seed != 1:
        print(json.dumps({"bench": "ingest", "peer": "note: the peer's bench.py uses seed 1 (its first repeat); "
                                                    f"ours used {args.seed}: not the same corpus"}), flush=True)
    work = tmp / "peer"
    work.mkdir()
    line = C.run_peer(peer, venv, work / "runs", args.n, args.seed_tickets)
    print(json.dumps({"bench": "ingest", "peer": "django-helpdesk", "venv": str(venv), **line}), flush=True)
    return line


if __name__ == "__main__":
    sys.exit(main())
