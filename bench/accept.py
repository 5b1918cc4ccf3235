"""SMTP accept speed: renewdesk's door (stores before 250) against a no-op aiosmtpd server.

    python -m bench.accept [--n 2000] [--database-url URL | --postgres]

The corpus is N realistic client emails from ../shared/peers/django-helpdesk/gen_emails.py
(run with the system python, seed 1). Each server gets all N messages with 1 sender, then with 8
concurrent senders; every sender is a thread with one persistent smtplib connection, as an MTA
reuses its connections. Per message it times sendmail() from start to return (the accept
latency) and the whole pass (the rate); nothing is retried, anything but 250 is a failure.

Each server runs in a child process, so the 8 client threads do not share a GIL with it. Our
door gets a freshly migrated database per pass: SQLite in a temp dir (default), the URL given
(rows are then counted as a difference), or a throwaway PostgreSQL (--postgres). Flood control
is set out of the way. After each pass the inbox table must hold exactly N new rows.

Prints one JSON line per pass, then a summary line of medians over `--repeat` passes (default 3).
Targets (SQLite, 8 senders): our rate at least 0.60 of the no-op server's, and our p99 accept latency at most 20 ms.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import shutil
import smtplib
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from email.parser import BytesHeaderParser
from email.utils import formatdate, parseaddr
from pathlib import Path

from sqlalchemy import create_engine, text

from tests.support.servers import PostgresServer, free_port

ROOT = Path(__file__).resolve().parent.parent
GENERATOR = ROOT / ".." / "shared" / "peers" / "django-helpdesk" / "gen_emails.py"
RCPT = "support@desk.example.test"
SENDERS = (1, 8)
TARGET_RATIO, TARGET_P99_MS = 0.60, 20.0


def corpus(n: int, tmp: Path) -> list[tuple[str, bytes]]:
    """N messages as (envelope sender, CRLF bytes), each with a Received line unique to this run."""
    gen = GENERATOR.resolve()
    if not gen.is_file():
        sys.exit(f"bench.accept: the email generator is missing: {gen} "
                 "(expected ../shared/peers/django-helpdesk/gen_emails.py next to the project)")
    python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else (shutil.which("python3") or sys.executable)
    out = tmp / "corpus"
    subprocess.run([python, str(gen), "--out", str(out), "--count", str(n), "--seed", "1", "--to", RCPT],
                   check=True, stdout=subprocess.DEVNULL)
    token, parser = uuid.uuid4().hex[:12], BytesHeaderParser()
    msgs = []
    for i, path in enumerate(sorted(out.glob("*.eml"))):
        raw = path.read_bytes()
        sender = parseaddr(str(parser.parsebytes(raw, headersonly=True).get("From", "")))[1]
        # what any MTA hop adds; also keeps reruns against one --database-url from being duplicates
        received = f"Received: from mta.bench.invalid by desk.example.test with ESMTP id {token}{i:06d};\n" \
                   f"\t{formatdate()}\n".encode()
        msgs.append((sender, (received + raw).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")))
    if len(msgs) != n:
        sys.exit(f"bench.accept: the generator wrote {len(msgs)} files, not {n}")
    return msgs


class NoOp:
    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: ANN001
        return "250 OK"


def serve(kind: str, url: str | None, port: int, conn) -> None:  # noqa: ANN001  (child process)
    try:
        services = None
        if kind == "noop":
            from aiosmtpd.controller import Controller
            ctl = Controller(NoOp(), hostname="127.0.0.1", port=port)
        else:
            from handlers.services import Services
            from handlers.settings import load_settings
            from mail_ingest.smtp import DoorController
            services = Services(load_settings({}, database_url=url, secret_key="bench", sender_hourly_cap=10**9))
            ctl = DoorController(services, host="127.0.0.1", port=port)
        ctl.start()
    except Exception as exc:  # noqa: BLE001
        conn.send(f"{kind} server did not start: {exc!r}")
        return
    conn.send("ready")
    conn.recv()
    ctl.stop()
    if services is not None:
        services.close()
    conn.send("stopped")


def sender_thread(port: int, msgs: list, start: threading.Barrier, out: dict) -> None:
    latencies, failures = [], Counter()
    smtp = smtplib.SMTP("127.0.0.1", port, local_hostname="mta.bench.invalid", timeout=60)
    smtp.ehlo()
    start.wait()
    for mail_from, raw in msgs:
        t0 = time.perf_counter()
        try:
            if smtp.sendmail(mail_from, [RCPT], raw):
                failures["refused"] += 1
        except smtplib.SMTPResponseException as exc:
            failures[str(exc.smtp_code)] += 1
        except (smtplib.SMTPException, OSError) as exc:
            failures[type(exc).__name__] += 1
            smtp.close()  # the next message (not this one) goes over a new connection
            smtp = smtplib.SMTP("127.0.0.1", port, local_hostname="mta.bench.invalid", timeout=60)
        latencies.append(time.perf_counter() - t0)
    try:
        smtp.quit()
    except (smtplib.SMTPException, OSError):
        pass
    out["latencies"], out["failures"] = latencies, failures


def one_pass(kind: str, url: str | None, msgs: list, senders: int) -> dict:
    """Start a server in a child process, send everything with ``senders`` threads, stop it."""
    port = free_port()
    ctx = multiprocessing.get_context("spawn")
    here, there = ctx.Pipe()
    child = ctx.Process(target=serve, args=(kind, url, port, there), daemon=True)
    child.start()
    status = here.recv() if here.poll(60) else "server start timed out"
    if status != "ready":
        child.kill()
        sys.exit(f"bench.accept: {status}")
    try:
        outs = [{} for _ in range(senders)]
        start = threading.Barrier(senders + 1, timeout=60)  # a sender that cannot connect breaks it
        threads = [threading.Thread(target=sender_thread, args=(port, msgs[i::senders], start, outs[i]))
                   for i in range(senders)]
        for t in threads:
            t.start()
        start.wait()
        t0 = time.perf_counter()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - t0
    finally:
        here.send("stop")
        here.poll(30)
        child.join(10)
    lat = sorted(x * 1000 for o in outs for x in o.get("latencies", []))
    failures = sum((o.get("failures", Counter()) for o in outs), Counter())
    cuts = statistics.quantiles(lat, n=100, method="inclusive") if len(lat) > 1 else lat * 99
    return {"server": kind, "senders": senders, "n": len(msgs), "seconds": round(elapsed, 3),
            "per_second": round(len(msgs) / elapsed, 1), "p50_ms": round(cuts[49], 2),
            "p90_ms": round(cuts[89], 2), "p99_ms": round(cuts[98], 2), "max_ms": round(lat[-1], 2),
            "failures": sum(failures.values()), "failure_kinds": dict(failures)}


def inbox_counts(url: str) -> tuple[int, int, int]:
    """(rows, distinct messages, throttled rows) in the inbox table."""
    engine = create_engine(url)
    try:
        with engine.connect() as c:
            return tuple(c.execute(text(
                "SELECT count(*), count(DISTINCT digest), "
                "coalesce(sum(CASE WHEN throttled THEN 1 ELSE 0 END), 0) FROM inbound_mail")).one())
    finally:
        engine.dispose()


def fresh_database(args: argparse.Namespace, pg: PostgresServer | None, tmp: Path, name: str) -> str:
    from renewdesk.migrate import upgrade
    if args.database_url:
        url = args.database_url
    elif pg is not None:
        admin = create_engine(pg.url(), isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.execute(text(f"CREATE DATABASE bench_accept_{name}"))
        admin.dispose()
        url = pg.url(f"bench_accept_{name}")
    else:
        url = f"sqlite:///{tmp}/ours-{name}.db"
    engine = create_engine(url)
    upgrade(engine)
    engine.dispose()
    return url


def _median_run(passes: list[dict]) -> dict:
    """Median rate and latencies over the passes of one configuration; failures add up."""
    out = dict(passes[0])
    for field in ("per_second", "p50_ms", "p90_ms", "p99_ms", "max_ms"):
        out[field] = round(statistics.median(p[field] for p in passes), 2)
    out["failures"] = sum(p["failures"] for p in passes)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description="SMTP accept speed: renewdesk's door against a no-op server")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=3,
                    help="passes per configuration, ours and no-op interleaved; the summary takes medians")
    where = ap.add_mutually_exclusive_group()
    where.add_argument("--database-url", help="an existing database (default: a fresh SQLite file per pass)")
    where.add_argument("--postgres", action="store_true", help="start a throwaway PostgreSQL for our door")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="renewdesk-bench-accept-"))
    pg = None
    try:
        msgs = corpus(args.n, tmp)
        if args.postgres:
            try:
                pg = PostgresServer().start()
            except BaseException as exc:  # its "unavailable" is a pytest skip outside of pytest
                sys.exit(f"bench.accept: cannot start PostgreSQL: {exc}")
        runs: dict[tuple[str, int], list[dict]] = {}
        rows_ok, kind = True, "sqlite"
        for rep in range(args.repeat):
            for senders in SENDERS:  # ours then no-op, back to back: both see the same machine
                url = fresh_database(args, pg, tmp, f"{senders}_{rep}")
                kind = url.split(":")[0].split("+")[0]
                before = inbox_counts(url)
                res = one_pass("ours", url, msgs, senders)
                after = inbox_counts(url)
                rows, distinct, throttled = (a - b for a, b in zip(after, before))
                ok = rows == distinct == args.n
                rows_ok &= ok
                print(json.dumps({"bench": "accept", "database": kind, **res}), flush=True)
                print(json.dumps({"bench": "accept", "check": "inbox_rows", "senders": senders, "expected": args.n,
                                  "new_rows": rows, "distinct_messages": distinct, "throttled": throttled,
                                  "ok": ok}), flush=True)
                runs.setdefault(("ours", senders), []).append(res)
                res = one_pass("noop", None, msgs, senders)
                print(json.dumps({"bench": "accept", "database": None, **res}), flush=True)
                runs.setdefault(("noop", senders), []).append(res)
        results = {k: _median_run(v) for k, v in runs.items()}
    finally:
        if pg is not None:
            pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    summary = {"bench": "accept", "summary": True, "database": kind, "n": args.n, "repeat": args.repeat}
    for s in SENDERS:
        ours, noop = results["ours", s], results["noop", s]
        summary.update({f"ours_per_s_{s}": ours["per_second"], f"noop_per_s_{s}": noop["per_second"],
                        f"ratio_{s}": round(ours["per_second"] / noop["per_second"], 3),
                        f"ours_p50_ms_{s}": ours["p50_ms"], f"ours_p99_ms_{s}": ours["p99_ms"],
                        f"noop_p50_ms_{s}": noop["p50_ms"], f"noop_p99_ms_{s}": noop["p99_ms"]})
    failures = {k: sum(results[k, s]["failures"] for s in SENDERS) for k in ("ours", "noop")}
    ratio_ok = summary[f"ratio_{SENDERS[-1]}"] >= TARGET_RATIO
    p99_ok = summary[f"ours_p99_ms_{SENDERS[-1]}"] <= TARGET_P99_MS
    summary.update({"failures": failures, "inbox_rows_ok": rows_ok,
                    "target_ratio_8_ge_0.60": ratio_ok, "target_p99_8_le_20ms": p99_ok,
                    "targets_apply": kind == "sqlite", "targets_met": ratio_ok and p99_ok})
    print(json.dumps(summary), flush=True)
    return 0 if rows_ok and not any(failures.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
