"""A small local stand-in for Slack's Web API on 127.0.0.1, and a signer for requests to our app.

``FakeSlack`` records every call with its body; answers auth.test, chat.postMessage,
chat.postEphemeral, chat.update, views.open, views.update, views.publish, response_url posts and
apps.connections.open (with ``socket_url``, a local Socket Mode server: see slack_socket.py);
can answer 429 with Retry-After, or an error, for chosen calls; and refuses what real Slack
refuses (too many blocks, texts over their limits), recording the violation so a test fails
when we break a limit. ``SlackSender`` signs requests as Slack does (v0 HMAC-SHA256 of
``v0:{timestamp}:{body}``) and sends them to our web app.
"""
from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

MESSAGE_BLOCKS, VIEW_BLOCKS = 50, 100
MESSAGE_METHODS = ("chat.postMessage", "chat.postEphemeral", "chat.update", "response_url")
VIEW_METHODS = ("views.open", "views.update", "views.publish", "views.push")


@dataclass
class Call:
    method: str
    body: dict[str, Any]
    at: float
    answered: int = 200
    auth: str = ""   # the Authorization header: which token the call used


@dataclass
class Planned:
    status: int = 429
    retry_after: int = 1
    error: str = "ratelimited"


def _text_of(obj: Any) -> str:
    return obj.get("text", "") if isinstance(obj, dict) else str(obj or "")


def check_block(block: dict[str, Any], where: str) -> list[str]:
    """Slack's documented per-field limits for the blocks we use."""
    bad: list[str] = []

    def limit(value: Any, n: int, what: str) -> None:
        if len(_text_of(value)) > n:
            bad.append(f"{where}: {what} longer than {n} characters")

    kind = block.get("type")
    if len(block.get("block_id", "")) > 255:
        bad.append(f"{where}: block_id longer than 255")
    if kind == "section":
        limit(block.get("text"), 3000, "section text")
        if not _text_of(block.get("text")) and not block.get("fields"):
            bad.append(f"{where}: empty section")
        for f in block.get("fields", []):
            limit(f, 2000, "field")
        if len(block.get("fields", [])) > 10:
            bad.append(f"{where}: more than 10 fields")
    elif kind == "header":
        limit(block.get("text"), 150, "header")
    elif kind == "context" and len(block.get("elements", [])) > 10:
        bad.append(f"{where}: more than 10 context elements")
    elif kind == "actions" and len(block.get("elements", [])) > 25:
        bad.append(f"{where}: more than 25 elements")
    elif kind == "input":
        limit(block.get("label"), 2000, "input label")
    elements = block.get("elements", []) if kind == "actions" else [block.get("element") or block.get("accessory")]
    for el in [e for e in elements if e]:
        if el.get("type") == "button":
            limit(el.get("text"), 75, "button text")
            if len(el.get("value", "")) > 2000:
                bad.append(f"{where}: button value longer than 2000")
        if len(el.get("action_id", "")) > 255:
            bad.append(f"{where}: action_id longer than 255")
        options = el.get("options", [])
        if len(options) > 100:
            bad.append(f"{where}: more than 100 options")
        for o in options:
            limit(o.get("text"), 75, "option text")
            if len(o.get("value", "")) > 150:
                bad.append(f"{where}: option value longer than 150")
        confirm = el.get("confirm")
        if confirm:
            limit(confirm.get("title"), 100, "confirm title")
            limit(confirm.get("text"), 300, "confirm text")
    return bad


def violations_of(method: str, body: dict[str, Any]) -> list[str]:
    bad: list[str] = []
    if method in MESSAGE_METHODS:
        blocks = body.get("blocks") or []
        if isinstance(blocks, str):
            blocks = json.loads(blocks)
        if len(blocks) > MESSAGE_BLOCKS:
            bad.append(f"{method}: {len(blocks)} blocks (at most {MESSAGE_BLOCKS})")
        if len(body.get("text") or "") > 40000:
            bad.append(f"{method}: text longer than 40000")
        if not blocks and not body.get("text") and method != "response_url":
            bad.append(f"{method}: neither text nor blocks")
        for i, b in enumerate(blocks):
            bad += check_block(b, f"{method} block {i}")
    elif method in VIEW_METHODS:
        view = body.get("view") or {}
        if isinstance(view, str):
            view = json.loads(view)
        blocks = view.get("blocks", [])
        if len(blocks) > VIEW_BLOCKS:
            bad.append(f"{method}: {len(blocks)} blocks (at most {VIEW_BLOCKS})")
        for key, n in (("title", 24), ("submit", 24), ("close", 24)):
            if len(_text_of(view.get(key))) > n:
                bad.append(f"{method}: {key} longer than {n}")
        if len(view.get("private_metadata", "")) > 3000:
            bad.append(f"{method}: private_metadata longer than 3000")
        for i, b in enumerate(blocks):
            bad += check_block(b, f"{method} block {i}")
    return bad


class FakeSlack:
    """Start with ``with FakeSlack() as slack:``; ``slack.api_url`` goes into SLACK_API_URL."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.violations: list[str] = []
        self.plans: dict[str, list[Planned]] = {}
        self.socket_url: str | None = None   # what apps.connections.open answers (Socket Mode)
        self.lock = threading.Lock()
        self._ts = itertools.count(1)
        self._views = itertools.count(1)
        self._responses = itertools.count(1)
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                if "json" in (self.headers.get("Content-Type") or ""):
                    body = json.loads(raw or "{}")
                else:
                    body = {k: v[-1] for k, v in urllib.parse.parse_qs(raw).items()}
                path = self.path.split("?")[0]
                method = "response_url" if path.startswith("/response/") else path.rsplit("/", 1)[-1]
                status, headers, answer = fake.answer(method, body, path, self.headers.get("Authorization", ""))
                data = json.dumps(answer).encode() if not isinstance(answer, bytes) else answer
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json" if method != "response_url" else "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    def response_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/response/{next(self._responses)}"

    def plan(self, method: str, count: int = 1, *, status: int = 429, retry_after: int = 1,
             error: str = "ratelimited") -> None:
        """The next ``count`` calls of ``method`` answer ``status`` (429 with Retry-After, or an error)."""
        with self.lock:
            self.plans.setdefault(method, []).extend(Planned(status, retry_after, error) for _ in range(count))

    def answer(self, method: str, body: dict[str, Any], path: str, auth: str = "") -> tuple[int, dict[str, str], Any]:
        with self.lock:
            call = Call(method, body, time.monotonic(), auth=auth)
            self.calls.append(call)
            planned = self.plans.get(method)
            if planned:
                p = planned.pop(0)
                call.answered = p.status
                headers = {"Retry-After": str(p.retry_after)} if p.status == 429 else {}
                return p.status, headers, {"ok": False, "error": p.error}
            bad = violations_of(method, body)
            if bad:
                self.violations += bad
                call.answered = 400
                return 200, {}, {"ok": False, "error": "invalid_blocks", "errors": bad}
            if method == "response_url":
                return 200, {}, b"ok"
            if method == "auth.test":
                return 200, {}, {"ok": True, "user_id": "UBOT", "bot_id": "BBOT", "team_id": "T1", "team": "Test",
                                 "user": "renewdesk", "url": "https://test.slack.com/"}
            if method == "chat.postMessage":
                ts = f"1790000000.{next(self._ts):06d}"
                return 200, {}, {"ok": True, "channel": body.get("channel"), "ts": ts,
                                 "message": {"ts": ts, "text": body.get("text"), "bot_id": "BBOT"}}
            if method == "chat.postEphemeral":
                return 200, {}, {"ok": True, "message_ts": f"1790000000.{next(self._ts):06d}"}
            if method == "chat.update":
                return 200, {}, {"ok": True, "channel": body.get("channel"), "ts": body.get("ts")}
            if method == "apps.connections.open":
                if self.socket_url and auth.startswith("Bearer xapp-"):
                    return 200, {}, {"ok": True, "url": self.socket_url}
                return 200, {}, {"ok": False, "error": "not_allowed_token_type" if self.socket_url else "not_enabled"}
            if method in VIEW_METHODS:
                view = body.get("view")
                view = json.loads(view) if isinstance(view, str) else view
                return 200, {}, {"ok": True, "view": {**(view or {}), "id": f"V{next(self._views)}"}}
            return 200, {}, {"ok": False, "error": "unknown_method"}

    def of(self, method: str, ok_only: bool = True) -> list[Call]:
        with self.lock:
            return [c for c in self.calls if c.method == method and (c.answered == 200 or not ok_only)]

    def wait_for(self, method: str, count: int = 1, timeout: float = 10.0) -> list[Call]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.of(method)
            if len(found) >= count:
                return found
            time.sleep(0.02)
        raise AssertionError(f"expected {count} {method} call(s), got {len(self.of(method))}: "
                             f"{[c.method for c in self.calls]}")

    def __enter__(self) -> "FakeSlack":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


def signature(secret: str, timestamp: str, body: str) -> str:
    """Slack's request signature: ``v0=`` + HMAC-SHA256 of ``v0:{timestamp}:{body}``."""
    return "v0=" + hmac.new(secret.encode(), f"v0:{timestamp}:{body}".encode(), hashlib.sha256).hexdigest()


@dataclass
class SlackSender:
    """Sends signed requests to our app's ``/slack/events`` as Slack would."""

    url: str
    secret: str
    slack: FakeSlack
    client: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=10))

    def post(self, body: str, content_type: str, *, timestamp: int | None = None, secret: str | None = None,
             headers: dict[str, str] | None = None) -> httpx.Response:
        ts = str(int(time.time()) if timestamp is None else timestamp)
        sig = signature(secret or self.secret, ts, body)
        return self.client.post(self.url, content=body.encode(), headers={
            "Content-Type": content_type, "X-Slack-Request-Timestamp": ts, "X-Slack-Signature": sig,
            **(headers or {})})

    def command(self, text: str, user: str, **kw: Any) -> httpx.Response:
        form = desk_command(text, user, self.slack.response_url())
        return self.post(urllib.parse.urlencode(form), "application/x-www-form-urlencoded", **kw)

    def interaction(self, payload: dict[str, Any], **kw: Any) -> httpx.Response:
        payload = {"team": {"id": "T1"}, "api_app_id": "A1", "token": "legacy", **payload}
        return self.post(urllib.parse.urlencode({"payload": json.dumps(payload)}),
                         "application/x-www-form-urlencoded", **kw)

    def action(self, user: str, action_id: str, value: str, *, block_id: str = "b", channel: str = "CSTAFF",
               message_ts: str = "1.000001", response_url: bool = True, **kw: Any) -> httpx.Response:
        payload = button_press(user, action_id, value, block_id=block_id, channel=channel, message_ts=message_ts,
                               response_url=self.slack.response_url() if response_url else None)
        return self.interaction(payload, **kw)

    def submit(self, user: str, view: dict[str, Any], values: dict[str, Any], **kw: Any) -> httpx.Response:
        """A view_submission of ``view`` (as we opened it) with ``values`` {block_id: {action_id: value}}."""
        state: dict[str, Any] = {}
        for block_id, actions in values.items():
            state[block_id] = {}
            for action_id, value in actions.items():
                if isinstance(value, list):
                    state[block_id][action_id] = {"type": "multi_static_select",
                                                  "selected_options": [{"value": v} for v in value]}
                else:
                    state[block_id][action_id] = {"type": "plain_text_input", "value": value}
        payload = {"type": "view_submission", "user": {"id": user, "team_id": "T1"}, "trigger_id": "trig.3",
                   "view": {**view, "id": "V1", "state": {"values": state}}}
        return self.interaction(payload, **kw)

    def event(self, event: dict[str, Any], event_id: str, **kw: Any) -> httpx.Response:
        body = json.dumps({"token": "legacy", "team_id": "T1", "api_app_id": "A1", "type": "event_callback",
                           "event_id": event_id, "event_time": int(time.time()), "event": event,
                           "authorizations": [{"team_id": "T1", "user_id": "UBOT", "is_bot": True}]})
        return self.post(body, "application/json", **kw)


def desk_command(text: str, user: str, response_url: str) -> dict[str, str]:
    """A `/desk` slash command's fields, as Slack sends them (a form over HTTP, a payload in Socket Mode)."""
    return {"command": "/desk", "text": text, "user_id": user, "user_name": user.lower(), "team_id": "T1",
            "channel_id": "CSTAFF", "channel_name": "staff", "trigger_id": "trig.1",
            "response_url": response_url, "api_app_id": "A1", "token": "legacy"}


def button_press(user: str, action_id: str, value: str, *, block_id: str = "b", channel: str = "CSTAFF",
                 message_ts: str = "1.000001", response_url: str | None = None) -> dict[str, Any]:
    """A block_actions payload: ``user`` clicked the button ``action_id`` on the message ``message_ts``."""
    payload: dict[str, Any] = {
        "type": "block_actions", "team": {"id": "T1"}, "api_app_id": "A1", "token": "legacy",
        "user": {"id": user, "team_id": "T1"}, "trigger_id": "trig.2",
        "container": {"type": "message", "channel_id": channel, "message_ts": message_ts},
        "channel": {"id": channel}, "message": {"ts": message_ts, "text": "card"},
        "actions": [{"type": "button", "action_id": action_id, "block_id": block_id, "value": value,
                     "action_ts": str(time.time())}]}
    if response_url:
        payload["response_url"] = response_url
    return payload
