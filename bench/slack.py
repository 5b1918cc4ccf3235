"""Time to acknowledgement of `/desk`: 20 concurrent signed commands against the running web app.

    python -m bench.slack [--n 20] [--rounds 5] [--database-url URL]

Starts the real web app (`renewdesk web`, its own process) with the Slack endpoint, pointed at
a local stand-in for Slack's Web API in this process, sends ``n`` signed `/desk` commands at once
(``rounds`` times), and prints p50/p99 of the time from sending a command to its HTTP
acknowledgement (Slack allows 3 s; our target is p99 <= 100 ms), and how long the answers took
to reach the response_url.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time

import httpx

from bench._database import migrated
from handlers.services import Services
from handlers.settings import load_settings
from handlers.staff import execute
from tests.support.servers import free_port
from tests.support.slack_api import FakeSlack, SlackSender

SECRET = "bench-secret"


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--database-url")
    args = ap.parse_args()
    url = migrated(args.database_url)
    with FakeSlack() as slack:
        settings = load_settings({}, database_url=url, secret_key="bench", slack_bot_token="xoxb-bench",
                                 slack_signing_secret=SECRET, slack_channel="CSTAFF", slack_api_url=slack.api_url)
        services = Services(settings)
        execute(services, "team add UBENCH admin", as_user=None)
        services.close()
        port = free_port()
        env = {**os.environ, "DATABASE_URL": url, "PORT": str(port), "RENEWDESK_SECRET_KEY": "bench",
               "SLACK_BOT_TOKEN": "xoxb-bench", "SLACK_SIGNING_SECRET": SECRET, "RENEWDESK_SLACK_CHANNEL": "CSTAFF",
               "SLACK_API_URL": slack.api_url, "RENEWDESK_LOG_LEVEL": "WARNING"}
        web = subprocess.Popen([sys.executable, "-m", "renewdesk", "web"], env=env)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{base}/healthz", timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or web.poll() is not None:
                    raise SystemExit("the web app did not start")
                time.sleep(0.05)
        sender = SlackSender(f"{base}/slack/events", SECRET, slack,
                             client=httpx.Client(timeout=10, limits=httpx.Limits(max_connections=args.n * 2)))
        sender.command("help", "UBENCH")  # warm up: the first request asks auth.test
        slack.wait_for("response_url", 1)
        acks: list[float] = []
        commands = ["team list", "ticket list", "invoice list --all", "help invoice", "forecast"]
        for _ in range(args.rounds):
            start_answers = len(slack.of("response_url"))
            barrier = threading.Barrier(args.n)
            lock = threading.Lock()

            def one(i: int) -> None:
                barrier.wait()
                t0 = time.perf_counter()
                response = sender.command(commands[i % len(commands)], "UBENCH")
                elapsed = time.perf_counter() - t0
                assert response.status_code == 200, response.text
                with lock:
                    acks.append(elapsed * 1000)
            threads = [threading.Thread(target=one, args=(i,)) for i in range(args.n)]
            t_round = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            slack.wait_for("response_url", start_answers + args.n, timeout=30)
            answered = (time.perf_counter() - t_round) * 1000
        web.send_signal(signal.SIGTERM)
        web.wait(timeout=30)
    print(json.dumps({
        "bench": "slack_desk_ack", "database": url.split(":")[0], "concurrent": args.n, "rounds": args.rounds,
        "ack_p50_ms": round(statistics.median(acks), 1), "ack_p99_ms": round(_percentile(acks, 0.99), 1),
        "ack_max_ms": round(max(acks), 1), "last_round_all_answered_ms": round(answered, 1),
        "target_p99_ms": 100,
    }))


if __name__ == "__main__":
    main()
