"""Slack's signed requests, checked before slack-bolt sees one: signature, five-minute window, no replay.

Slack signs each request with ``v0=HMAC-SHA256(secret, "v0:{timestamp}:{body}")`` and says to refuse one
whose timestamp is more than five minutes from now. That alone lets anyone who saw a request (a log, a
proxy) send it again within those five minutes, and the command would run twice. So the signatures of
the requests accepted recently are remembered, and a second request with one of them is refused.

A replay must carry its original timestamp, which is accepted only within five minutes of now; a
request that arrived at A has a timestamp no earlier than A - 5 min, so its replay can arrive no later
than A + 10 min: that is how long a signature is kept. The memory is per web process: behind several
web processes, route Slack's requests to one, or accept that a replay could reach another.
"""
from __future__ import annotations

import collections
import hashlib
import hmac
import threading
import time
from typing import Callable

WINDOW = 5 * 60  # seconds: Slack's own rule for the timestamp


class SignedRequests:
    """Decides whether one request to ``POST /slack/events`` may go on to the Slack app."""

    def __init__(self, signing_secret: str, *, now: Callable[[], float] = time.time):
        self._secret = signing_secret.encode()
        self._now = now
        self._seen: set[str] = set()
        self._arrivals: collections.deque[tuple[float, str]] = collections.deque()
        self._lock = threading.Lock()

    def refusal(self, body: bytes, timestamp: str | None, signature: str | None) -> str | None:
        """None when the request is Slack's and new; otherwise why it is refused."""
        if not timestamp or not signature:
            return "not signed by Slack: the signature headers are missing"
        try:
            sent = int(timestamp)
        except ValueError:
            return "not signed by Slack: the timestamp is not a number"
        now = self._now()
        if abs(now - sent) > WINDOW:
            return "the request's timestamp is more than five minutes from now"
        expected = "v0=" + hmac.new(self._secret, b"v0:" + timestamp.encode() + b":" + body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace")):
            return "not signed by Slack: the signature does not match"
        with self._lock:
            while self._arrivals and self._arrivals[0][0] < now - 2 * WINDOW:
                self._seen.discard(self._arrivals.popleft()[1])
            if signature in self._seen:
                return "this request was received already (a replay)"
            self._seen.add(signature)
            self._arrivals.append((now, signature))
        return None
