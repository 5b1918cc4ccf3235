"""Memory: `renewdesk run` under mixed load, and the SMTP door taking one big message.

    python -m bench.memory [--minutes 10] [--message-mb 25] [--only steady|big]

(a) steady: `renewdesk run --demo` (the whole bot in one process, as the README starts it) on a
    fresh SQLite database, its outgoing mail going to a loopback SMTP sink and Slack to a local
    stand-in of Slack's Web API. For --minutes it gets a mixed load, every second or so: client
    mail through its SMTP port (new tickets, some with a 200 kB attachment, and replies), a staff
    command through the signed Slack endpoint (lists, account pages, forecast, ticket replies
    that email the client), and every 30 s a sweep (`renewdesk sweep --at` a day later each time)
    whose mail the bot delivers. The resident set (VmRSS) of the process and any children is read
    from /proc every 2 s. The figure is the highest sample of the last fifth of the run (target
    <= 150 MB); the line also has the peak, the sample at half time, and the work done.
(b) big message: `renewdesk smtp` alone (the door process) on a fresh SQLite database. After one
    small message (so every code path is loaded), its VmRSS is the baseline; then one message of
    --message-mb MB (a mail with a base64 attachment) is sent; the peak is VmHWM (the high-water
    mark of the resident set) once the door answered 250. The figure is (peak - baseline) / size
    (target <= 4).

Prints one JSON line per case.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import random
import smtplib
import statistics
import subprocess
import sys
import tempfile
import time
from email.message import EmailMessage
from pathlib import Path

from sqlalchemy import create_engine, text

from tests.support import proc
from tests.support.servers import free_port, wait_for_port
from tests.support.slack_api import FakeSlack, SlackSender
from tests.support.smtp_sink import SmtpSink

SECRET = "bench-memory-secret"
RCPT = "support@desk.example.test"
CLIENTS = ["anna@northwind.test", "accounts@northwind.test", "dev@northwind.test", "olga@bramble.test",
           "shop@bramble.test", "m.reed@harbourlaw.test", "pat@pixelworks.test", "stranger@elsewhere.test"]
COMMANDS = ["ticket list", "account show northwind", "invoice list --all", "forecast", "renewals due",
            "inbox", "team list", "account history northwind"]


def tree_rss_kb(pid: int, field: str = "VmRSS") -> int:
    """``field`` of the process and all its descendants, in kB, from /proc."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        total += next((int(ln.split()[1]) for ln in status.splitlines() if ln.startswith(field + ":")), 0)
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            try:
                todo += [int(c) for c in task.read_text().split()]
            except OSError:
                pass
    return total


def stop(process: subprocess.Popen, log) -> None:  # noqa: ANN001
    """SIGTERM (a clean stop), SIGKILL after 60 s; then close its log file."""
    process.terminate()
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    log.close()


def client_mail(rnd: random.Random, i: int, tickets: list[int]) -> tuple[str, bytes]:
    sender = rnd.choice(CLIENTS)
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Message-ID"] = sender, RCPT, f"<mem-{i}-{rnd.random()}@client.test>"
    reply_to = rnd.choice(tickets) if tickets and rnd.random() < 0.4 else None
    msg["Subject"] = f"Re: [T-{reply_to}] our site" if reply_to else f"Question {i} about our services"
    msg.set_content(f"Hello,\n\nmessage {i}: " + " ".join(rnd.choice(["domain", "invoice", "mail", "hosting",
                                                                       "renewal", "please", "thanks"])
                                                            for _ in range(rnd.randint(20, 400))) + "\n\nRegards\n")
    if rnd.random() < 0.1:
        msg.add_attachment(rnd.randbytes(200_000), maintype="application", subtype="pdf", filename="scan.pdf")
    return sender, msg.as_bytes()


def steady(minutes: float, tmp: Path) -> dict:
    url = f"sqlite:///{tmp}/steady.db"
    port, smtp_port = free_port(), free_port()
    rnd = random.Random(3)
    with SmtpSink() as sink, FakeSlack() as slack:
        env = proc.env_for(DATABASE_URL=url, PORT=str(port), RENEWDESK_SMTP_PORT=str(smtp_port),
                           RENEWDESK_OUTBOUND_SMTP_URL=sink.url, RENEWDESK_SECRET_KEY="bench-memory",
                           RENEWDESK_SENDER_HOURLY_CAP="100000", RENEWDESK_LOG_LEVEL="WARNING",
                           SLACK_BOT_TOKEN="xoxb-bench", SLACK_SIGNING_SECRET=SECRET,
                           RENEWDESK_SLACK_CHANNEL="CSTAFF", SLACK_API_URL=slack.api_url)
        log = open(tmp / "run.log", "wb")
        bot = subprocess.Popen(proc.command("run", "--demo"), env=env, cwd=proc.ROOT, stdout=log,
                               stderr=subprocess.STDOUT)
        try:
            proc.wait_http(f"http://127.0.0.1:{port}/healthz", timeout=60, proc=None)
            wait_for_port(smtp_port, timeout=30)
            added = proc.run("staff", "team", "add", "UBENCH", "admin", env=env)
            if added.returncode:
                sys.exit("bench.memory: could not add the staff member: "
                         f"{added.stdout.decode()}{added.stderr.decode()}")
            sender = SlackSender(f"http://127.0.0.1:{port}/slack/events", SECRET, slack)
            engine = create_engine(url)
            smtp = smtplib.SMTP("127.0.0.1", smtp_port, timeout=60)
            samples: list[tuple[float, int]] = []
            work = {"mails": 0, "staff_commands": 0, "sweeps": 0, "refused": 0}
            t0 = last_sample = time.monotonic()
            last_sweep = t0 - 30  # the first sweep at once
            day, i, tickets = 0, 0, []
            while (now := time.monotonic()) - t0 < minutes * 60:
                if bot.poll() is not None:
                    sys.exit(f"bench.memory: renewdesk run exited {bot.returncode}; see {tmp}/run.log")
                for _ in range(2):
                    i += 1
                    frm, raw = client_mail(rnd, i, tickets)
                    try:
                        smtp.sendmail(frm, [RCPT], raw)
                        work["mails"] += 1
                    except smtplib.SMTPResponseException:
                        work["refused"] += 1
                if i % 20 == 0:
                    with engine.connect() as c:
                        tickets = [t for (t,) in c.execute(text("SELECT id FROM ticket ORDER BY id DESC LIMIT 50"))]
                command = rnd.choice(COMMANDS)
                if tickets and rnd.random() < 0.3:
                    command = f"ticket reply T-{rnd.choice(tickets)} Thanks, we are on it (reply {i})."
                if sender.command(command, "UBENCH").status_code == 200:
                    work["staff_commands"] += 1
                if now - last_sweep >= 30:
                    day += 1
                    at = f"2026-{1 + day // 28 % 12:02d}-{1 + day % 28:02d}T08:00:00"
                    if proc.run("sweep", "--at", at, env=env, timeout=120).returncode == 0:
                        work["sweeps"] += 1
                    last_sweep = now
                if now - last_sample >= 2:
                    samples.append((now - t0, tree_rss_kb(bot.pid)))
                    last_sample = now
                time.sleep(max(0.0, 1.0 - (time.monotonic() - now)))
            samples.append((time.monotonic() - t0, tree_rss_kb(bot.pid)))
            smtp.quit()
            with engine.connect() as c:
                counts = {name: c.execute(text(sql)).scalar_one() for name, sql in (
                    ("tickets", "SELECT count(*) FROM ticket"), ("inbox_rows", "SELECT count(*) FROM inbound_mail"),
                    ("outbox_sent", "SELECT count(*) FROM outbound_mail WHERE status = 'sent'"),
                    ("outbox_waiting", "SELECT count(*) FROM outbound_mail WHERE status IN ('queued', 'sending')"))}
            engine.dispose()
        finally:
            stop(bot, log)
        received = len(sink.messages)
    duration = samples[-1][0]
    tail = [kb for t, kb in samples if t >= duration * 0.8]
    half = min(samples, key=lambda s: abs(s[0] - duration / 2))[1]
    mb = lambda kb: round(kb / 1024, 1)  # noqa: E731
    return {"bench": "memory", "case": "steady", "minutes": round(duration / 60, 2),
            "rss_mb": mb(max(tail)), "rss_median_last_fifth_mb": mb(statistics.median(tail)),
            "rss_at_half_mb": mb(half), "peak_rss_mb": mb(max(kb for _, kb in samples)),
            "first_sample_mb": mb(samples[0][1]), "samples": len(samples),
            "load": f"{work['mails']} client mails, {work['staff_commands']} staff commands, {work['sweeps']} sweeps, "
                    f"{received} mails delivered", **work, **counts, "sink_received": received,
            "target_mb": 150}


def big_mail(size: int) -> bytes:
    """A client mail with one base64 attachment, ``size`` bytes in all (CRLF line ends)."""
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "anna@northwind.test", RCPT, "The full site backup"
    msg["Message-ID"] = f"<big-{os.getpid()}-{time.time()}@client.test>"
    msg.set_content("Hello,\n\nthe backup you asked for is attached.\n\nAnna\n")
    msg.add_attachment(b"", maintype="application", subtype="zip", filename="backup.zip")
    shell = msg.as_bytes().replace(b"\n", b"\r\n")
    b64_len = (size - len(shell)) // 78 * 76  # 76 characters and CRLF per line
    payload = base64.encodebytes(random.Random(5).randbytes(b64_len // 4 * 3)).replace(b"\n", b"\r\n")
    head, tail = shell.rsplit(b"\r\n\r\n", 1)
    raw = head + b"\r\n\r\n" + payload + tail
    return raw


def big(message_mb: float, tmp: Path) -> dict:
    url = f"sqlite:///{tmp}/big.db"
    port = free_port()
    env = proc.env_for(DATABASE_URL=url, RENEWDESK_SMTP_PORT=str(port), RENEWDESK_SECRET_KEY="bench-memory",
                       RENEWDESK_LOG_LEVEL="WARNING", PORT=str(free_port()))
    done = proc.run("db", "upgrade", env=env, timeout=120)
    if done.returncode:
        sys.exit(f"bench.memory: renewdesk db upgrade failed: {done.stderr.decode()[-500:]}")
    raw = big_mail(int(message_mb * 1_000_000))
    log = open(tmp / "smtp.log", "wb")
    door = subprocess.Popen(proc.command("smtp"), env=env, cwd=proc.ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, timeout=30)
        with smtplib.SMTP("127.0.0.1", port, timeout=300) as smtp:
            small = EmailMessage()
            small["From"], small["To"], small["Subject"] = "anna@northwind.test", RCPT, "warm-up"
            small.set_content("Hello")
            smtp.sendmail("anna@northwind.test", [RCPT], small.as_bytes())
            time.sleep(1)
            baseline = tree_rss_kb(door.pid)
            t0 = time.perf_counter()
            smtp.sendmail("anna@northwind.test", [RCPT], raw)
            seconds = time.perf_counter() - t0
        peak = tree_rss_kb(door.pid, "VmHWM")
        after = tree_rss_kb(door.pid)
    finally:
        stop(door, log)
    engine = create_engine(url)
    with engine.connect() as c:
        stored = c.execute(text("SELECT length(raw) FROM inbound_mail ORDER BY id DESC LIMIT 1")).scalar_one()
    engine.dispose()
    mb = lambda kb: round(kb / 1024, 1)  # noqa: E731
    size_mb = len(raw) / 1024 / 1024
    return {"bench": "memory", "case": "big_message", "message_mb": round(len(raw) / 1e6, 2),
            "message_bytes": len(raw), "stored_bytes": stored, "stored_whole": stored == len(raw),
            "baseline_mb": mb(baseline), "peak_mb": mb(peak), "after_mb": mb(after),
            "over_baseline_mb": mb(peak - baseline), "times_size": round((peak - baseline) / 1024 / size_mb, 2),
            "accept_seconds": round(seconds, 2), "target_times_size": 4}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10, help="how long the mixed load runs (default 10)")
    ap.add_argument("--message-mb", type=float, default=25, help="size of the big message in MB (default 25)")
    ap.add_argument("--only", choices=("steady", "big"))
    args = ap.parse_args()
    ok = True
    with tempfile.TemporaryDirectory(prefix="renewdesk-bench-memory-") as tmp:
        if args.only in (None, "big"):
            line = big(args.message_mb, Path(tmp))
            print(json.dumps(line), flush=True)
            ok &= line["stored_whole"]
        if args.only in (None, "steady"):
            print(json.dumps(steady(args.minutes, Path(tmp))), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
